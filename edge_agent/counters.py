"""PLC part counters: monotonic registers turned into deltas, and deltas into count events.

Pure: no I/O and no clock. :class:`CounterTracker` turns one counter's readings into
deltas that survive rollover and resets; :class:`Counts` accumulates the deltas of a
machine's counters between flushes and makes one CountEvent of them, with the rules that
keep an event consistent when the tags of one PLC scan land in different flush windows:

- a reject (or good) delta the total does not cover yet waits for the next event;
- reject reasons: reason deltas go into the event of the window they are seen in, up to
  that event's ``reject``, oldest first; the excess waits for the next event. So the
  reasons emitted never add up to more than the rejects emitted, whatever the arrival
  order; a reason counted after its reject was emitted is attributed to the next event
  with rejects (a little later in time, possibly another product), and rejects no reason
  counter saw stay unattributed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.config import Counter
from edge_agent.contract import CountEvent, Quality, Sample, Value
from edge_agent.logs import FailureGate

__all__ = ["CounterTracker", "Counts", "Reading"]


# ---------------------------------------------------------------- one counter


@dataclass(frozen=True, slots=True)
class Reading:
    """A counter value and its source time: the baseline of the next delta."""

    value: int
    ts: int


class CounterTracker:
    """One monotonic PLC counter turned into non-negative deltas.

    With ``prev`` the last good value, ``cur`` the new one, ``R = 2**bits`` and ``bound``
    the plausibility bound (``R // 2``, or with ``max_rate`` the smaller of that and
    ``max_rate * (elapsed_s + 1)``, one second of grace for scan jitter):

    - ``cur >= prev``: delta ``cur - prev``;
    - ``cur < prev`` and ``(cur - prev) mod R <= bound``: a rollover, delta ``(cur - prev) mod R``;
    - ``cur < prev`` otherwise: a reset (the PLC cleared it), delta ``cur``;
    - a delta over ``bound`` is absurd (a swapped register, a preset, a wrong ``bits``):
      logged, never emitted; ``cur`` becomes the new baseline, delta 0.

    A reset of a counter in the upper half of its range that comes back below ``bound``
    parts looks exactly like a rollover; ``max_rate`` narrows the bound and tells them
    apart. The first value is only a baseline. BAD samples are ignored, so counting
    resumes from the last good value when the link comes back.
    """

    def __init__(self, counter: Counter, log: Any) -> None:
        self.tag = counter.tag
        self.bits = counter.bits
        self.max_rate = counter.max_rate
        self._log = log.bind(counter=counter.tag)
        self._gate = FailureGate(self._log, what="counter value")
        self.prev: Reading | None = None

    def delta(self, s: Sample) -> int:
        """Parts counted since the previous good value of this counter (0 if none)."""
        if s.quality is Quality.BAD:
            return 0
        value = self._valid(s.value)
        if value is None:
            return 0
        prev, self.prev = self.prev, Reading(value, s.ts)
        if prev is None:
            return 0
        return self._step(prev, value, s.ts)

    def _valid(self, value: Value) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._gate.failed(f"{value!r} is not an integer", tag=self.tag)
            return None
        if not 0 <= value < 1 << self.bits:
            self._gate.failed(f"{value} is outside 0..2**{self.bits}-1", tag=self.tag)
            return None
        self._gate.ok(tag=self.tag)
        return value

    def _bound(self, elapsed_ms: int) -> int:
        half = 1 << (self.bits - 1)
        if self.max_rate is None:
            return half
        return min(half, int(self.max_rate * (max(elapsed_ms, 0) / 1000 + 1)))

    def _step(self, prev: Reading, cur: int, ts: int) -> int:
        bound = self._bound(ts - prev.ts)
        if cur >= prev.value:
            delta, kind = cur - prev.value, "increase"
        elif (wrapped := (cur - prev.value) % (1 << self.bits)) <= bound:
            delta, kind = wrapped, "rollover"
            self._log.info("counter rolled over", previous=prev.value, value=cur, delta=delta)
        else:
            delta, kind = cur, "reset"
            self._log.info("counter reset", previous=prev.value, value=cur, delta=delta)
        if delta > bound:
            self._log.warning(
                "implausible counter jump ignored; taking it as a new baseline",
                previous=prev.value,
                value=cur,
                delta=delta,
                bound=bound,
                kind=kind,
            )
            return 0
        return delta


# ---------------------------------------------------------------- counts


class Counts:
    """Deltas per role and per reject reason between flushes; ``take`` makes the event."""

    def __init__(self, roles: frozenset[str]) -> None:
        # With all three given, total and reject govern and good is derived.
        self.roles: tuple[str, ...]
        if {"total", "reject"} <= roles:
            self.roles = ("total", "reject")
        elif {"good", "reject"} <= roles:
            self.roles = ("good", "reject")
        elif {"total", "good"} <= roles:
            self.roles = ("total", "good")
        else:
            self.roles = ("total",) if "total" in roles else ("good",)
        self.pending = dict.fromkeys(self.roles, 0)
        # Reason deltas not emitted yet, in the order they were first seen (oldest first).
        self.reasons: dict[str, int] = {}
        self.ts: int | None = None

    def add(self, role: str, delta: int, ts: int) -> None:
        """Add the delta of a total, good or reject counter."""
        if role in self.pending and delta:
            self.pending[role] += delta
            self._seen(ts)

    def add_reason(self, reason: str, delta: int, ts: int) -> None:
        """Add the delta of a reject-reason counter."""
        if delta:
            self.reasons[reason] = self.reasons.get(reason, 0) + delta
            self._seen(ts)

    def take(self, product: str | None) -> CountEvent | None:
        """One CountEvent of what is pending, or None; an uncovered excess waits."""
        total, good, carry = self._split()
        if total == 0 or self.ts is None:
            return None
        event = CountEvent(
            ts=self.ts,
            total=total,
            good=good,
            reject=total - good,
            product=product,
            rejects=self._attribute(total - good),
        )
        self.pending = dict.fromkeys(self.roles, 0) | carry
        if not any(self.pending.values()):
            self.ts = None
        return event

    def _seen(self, ts: int) -> None:
        self.ts = ts if self.ts is None else max(self.ts, ts)

    def _split(self) -> tuple[int, int, dict[str, int]]:
        """(total, good, carry) of the pending deltas."""
        p = self.pending
        if len(self.roles) == 1:
            return p[self.roles[0]], p[self.roles[0]], {}
        if self.roles == ("good", "reject"):
            return p["good"] + p["reject"], p["good"], {}
        # The tags of one scan may land in different windows: a part can show up as a
        # reject (or good) before it shows up in the total. Emit what the total covers.
        other = self.roles[1]
        part = min(p[other], p["total"])
        good = p["total"] - part if other == "reject" else part
        return p["total"], good, {other: p[other] - part}

    def _attribute(self, reject: int) -> tuple[tuple[str, int], ...]:
        """Pending reason counts up to ``reject``, oldest first; the excess stays pending."""
        room = reject
        out: list[tuple[str, int]] = []
        left: dict[str, int] = {}
        for reason, n in self.reasons.items():
            k = min(n, room)
            room -= k
            if k:
                out.append((reason, k))
            if n > k:
                left[reason] = n - k
        self.reasons = left
        return tuple(out)
