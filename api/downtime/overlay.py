"""Operators' reasons laid over the machine's state intervals: pure, no database.

A state interval carries the reason the machine reported (its ``code`` and ``reason``). An
operator's assignment (a ``stop_reasons`` row) gives a reason to a time range of an asset's
stop time and wins over the machine's own there. :func:`overlay` cuts each interval at the
assignments' edges into *pieces*; every piece has one effective reason and says whether an
operator assigned it (and which assignment did).

Rules:

* The pieces of an interval tile it exactly: the first starts where the interval starts,
  each next one where the previous ended, the last ends where the interval ends (``None``
  for an open interval). No time is lost or counted twice.
* An assignment applies only to intervals that are stops (``is_stop(state)``; the caller
  decides with the asset's loss classes). Ingest rebuilds intervals when late events
  arrive, so an assignment may come to cover running time: there it has no effect.
* Assignments of one asset never overlap (the table's exclusion constraint), so at most
  one applies to any instant.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Reason:
    """A downtime reason as a stop shows it: code, text, category and whether planned."""

    code: str | None = None
    reason: str | None = None
    category: str | None = None
    planned: bool = False


@dataclass(frozen=True, slots=True)
class Interval:
    """A state interval of one asset; ``end`` None while it is still open."""

    start: datetime
    end: datetime | None
    state: str
    reason: Reason = Reason()


@dataclass(frozen=True, slots=True)
class Assignment:
    """An operator's reason for ``[start, end)`` of one asset."""

    id: int
    start: datetime
    end: datetime
    reason: Reason


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of an interval with one effective reason."""

    start: datetime
    end: datetime | None  # None: the open end of an open interval
    interval: Interval
    reason: Reason  # the assignment's where one applies, else the machine's
    assignment_id: int | None = None

    @property
    def state(self) -> str:
        """The machine state (an assignment changes the reason, never the state)."""
        return self.interval.state

    @property
    def assigned(self) -> bool:
        """An operator gave this piece its reason."""
        return self.assignment_id is not None


def is_not_running(state: str) -> bool:
    """The default notion of a stop: any state but ``running``."""
    return state != "running"


def overlay(
    intervals: Iterable[Interval],
    assignments: Iterable[Assignment],
    *,
    is_stop: Callable[[str], bool] = is_not_running,
) -> list[Piece]:
    """The pieces of ``intervals`` (one asset's) with ``assignments`` applied, in time order."""
    ordered = sorted(assignments, key=lambda a: a.start)
    ends = [a.end for a in ordered]
    pieces: list[Piece] = []
    for interval in sorted(intervals, key=lambda i: i.start):
        if is_stop(interval.state):
            # The first assignment that ends after the interval starts.
            first = bisect_right(ends, interval.start)
            pieces += _cut(interval, ordered, first)
        else:
            pieces.append(Piece(interval.start, interval.end, interval, interval.reason))
    return pieces


def _cut(interval: Interval, ordered: Sequence[Assignment], first: int) -> list[Piece]:
    """One interval cut at the assignments from index ``first`` on that overlap it."""
    out: list[Piece] = []
    cursor = interval.start
    for a in ordered[first:]:
        if interval.end is not None and a.start >= interval.end:
            break
        if a.start > cursor:
            out.append(Piece(cursor, a.start, interval, interval.reason))
        end = a.end if interval.end is None else min(a.end, interval.end)
        out.append(Piece(max(cursor, a.start), end, interval, a.reason, a.id))
        cursor = end
        if interval.end is not None and cursor >= interval.end:
            return out
    out.append(Piece(cursor, interval.end, interval, interval.reason))
    return out
