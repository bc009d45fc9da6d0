"""Helpers that compute a site's lines side by side, each on a connection of its own.

A site's OEE is the sum of its lines', and each line is a few queries and some numpy work
that do not depend on the others. The request's own thread always takes part, so a
request never waits for a helper: helpers that are busy with other requests are simply
not used, and a process never holds more helper connections than ``workers`` (they come
from an engine of their own, never from the requests' pool). Each item is computed once,
by whichever thread takes it first; the results come back in the items' order, and an
error in any item is raised in the caller (the remaining items are dropped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

T = TypeVar("T")
R = TypeVar("R")


class Helpers:
    """Up to ``workers`` helper threads with a connection each, shared by a process."""

    def __init__(self, engine: Engine, workers: int) -> None:
        self.engine = engine
        self.workers = workers
        self._free = threading.BoundedSemaphore(workers) if workers else None
        self._pool = ThreadPoolExecutor(workers, "oee-helper") if workers else None

    def map(
        self,
        session: Session,
        fn: Callable[[Session, T], R],
        items: Sequence[T],
        *,
        setup: Callable[[Session], Any] | None = None,
    ) -> list[R]:
        """``fn(session, item)`` for every item: the caller's session does its share, each
        free helper does the rest on its own session (``setup`` runs on that first)."""
        results: list[Any] = [None] * len(items)
        next_item = iter(range(len(items)))
        lock = threading.Lock()
        failed = threading.Event()

        def take() -> int | None:
            with lock:
                return None if failed.is_set() else next(next_item, None)

        def run(s: Session) -> None:
            while (i := take()) is not None:
                try:
                    results[i] = fn(s, items[i])
                except BaseException:
                    failed.set()
                    raise

        futures: list[Future[None]] = []
        for _ in range(min(self.workers, len(items) - 1)):
            assert self._free is not None and self._pool is not None
            if not self._free.acquire(blocking=False):
                break
            futures.append(self._pool.submit(self._helper, run, setup))
        try:
            run(session)
        finally:
            errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err
        return results

    def _helper(
        self, run: Callable[[Session], None], setup: Callable[[Session], Any] | None
    ) -> None:
        try:
            with Session(self.engine) as s:
                if setup is not None:
                    setup(s)
                run(s)
        finally:
            assert self._free is not None
            self._free.release()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.engine.dispose()
