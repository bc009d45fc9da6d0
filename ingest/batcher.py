"""Batching by size and by time, pure: no threads, no I/O, the clock is injected.

A batch is due when it holds ``max_items`` items, or their weights (samples) add up to
``max_weight``, or ``max_age`` seconds have passed since its first item arrived. The
caller asks ``due()`` after each ``add`` and when ``time_left()`` runs out, then ``take()``s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Accumulates items until a size, weight or age limit; ``take()`` hands the batch over."""

    def __init__(
        self,
        *,
        max_items: int,
        max_weight: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_items < 1 or max_weight < 1 or max_age <= 0:
            raise ValueError("max_items and max_weight must be >= 1 and max_age > 0")
        self.max_items = max_items
        self.max_weight = max_weight
        self.max_age = max_age
        self._clock = clock
        self._items: list[T] = []
        self._weight = 0
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        """The summed weight (samples) of the open batch."""
        return self._weight

    def add(self, item: T, weight: int = 1) -> bool:
        """Add one item; True when the batch is now due."""
        if self._started is None:
            self._started = self._clock()
        self._items.append(item)
        self._weight += max(0, weight)
        return self.due()

    def full(self) -> bool:
        """The size or weight limit is reached (the age limit aside)."""
        return len(self._items) >= self.max_items or self._weight >= self.max_weight

    def due(self) -> bool:
        """Something is waiting and a limit is reached: size, weight or age."""
        if not self._items:
            return False
        return self.full() or self.time_left() <= 0

    def time_left(self) -> float:
        """Seconds until the open batch is due by age; ``max_age`` when it is empty."""
        if self._started is None:
            return self.max_age
        return max(0.0, self._started + self.max_age - self._clock())

    def take(self) -> list[T]:
        """The open batch (possibly empty), in arrival order; a new one starts empty."""
        items = self._items
        self._items = []
        self._weight = 0
        self._started = None
        return items
