"""Structured logging: JSON in production, console in development; no secrets."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg

    @classmethod
    def factory(cls, *_args: Any) -> _StderrLogger:
        return cls()


def setup_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Configure structlog and the stdlib root logger once per process."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_StderrLogger.factory,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if level.lower() != "debug":
        # The protocol libraries log every reconnect attempt (asyncua with tracebacks); our
        # sources already report a failure once and its recovery, so keep theirs for debug.
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class FailureGate:
    """Log a failure loudly once, then quietly (debug) until it recovers, then say so."""

    def __init__(self, log: Any, *, what: str, repeat_after: float = 300.0) -> None:
        self._log = log
        self._what = what
        self._failing_since: float | None = None
        self._last_loud = 0.0
        self._repeat_after = repeat_after
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def failed(self, err: BaseException | str, **kw: Any) -> None:
        now = time.monotonic()
        self.failures += 1
        if self._failing_since is None or now - self._last_loud > self._repeat_after:
            if self._failing_since is None:
                self._failing_since = now
            self._last_loud = now
            self._log.warning(f"{self._what} failed", error=str(err), failures=self.failures, **kw)
        else:
            self._log.debug(f"{self._what} still failing", error=str(err), **kw)

    def ok(self, **kw: Any) -> None:
        if self._failing_since is not None:
            down = time.monotonic() - self._failing_since
            self._log.info(
                f"{self._what} recovered", after_s=round(down, 1), failures=self.failures, **kw
            )
        self._failing_since = None
        self.failures = 0
