"""Report by exception: which samples are worth publishing, and heartbeats for quiet tags.

Pure: no I/O and no clock of its own. The agent offers every sample it reads and publishes
what :meth:`TagEngine.offer` returns, and calls :meth:`TagEngine.heartbeats` now and then
with its clock.

The rules, per tag, always against the LAST REPORTED sample of that tag:

- the first sample of a tag is reported;
- a quality change is reported (so a device that drops, or comes back, is never missed);
- a BAD sample after a BAD one is not reported, whatever its value;
- bool, str, None and mixed types: any change is reported;
- numbers: reported when the change exceeds the deadband, strictly:
  ``|v - last| > absolute``, or ``|v - last| > percent / 100 * |last|`` (with
  ``last == 0`` any change counts). Strict, so that a deadband of 0 means "any change"
  and a value equal to the last reported one is never re-sent (until its heartbeat);
- no deadband: any change.

A tag's heartbeat (``tag.heartbeat``, else the gateway's ``heartbeat``) re-sends the last
reported value, with its quality and ``ts = now_ms``, when the tag has not been reported
for at least that long.

Samples of tags that are not in the config pass through unfiltered and get no heartbeat:
the agent may publish values of its own, and dropping them silently would be worse than
publishing them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard

from edge_agent.config import Deadband, GatewayConfig
from edge_agent.contract import Quality, Sample, Value

__all__ = ["TagEngine", "exceeds_deadband"]


def exceeds_deadband(value: Value, last: Value, deadband: Deadband | None) -> bool:
    """Whether ``value`` differs enough from the last reported ``last`` to be reported."""
    if not _is_number(value) or not _is_number(last):
        return type(value) is not type(last) or value != last
    if not (math.isfinite(value) and math.isfinite(last)):
        return not (math.isnan(value) and math.isnan(last)) and value != last
    change = abs(value - last)  # exact for ints: a uint64 counter may not fit a float
    if deadband is None or change == 0:
        return change > 0
    if deadband.absolute is not None:
        return change > deadband.absolute
    if last == 0:
        return True
    return change > (deadband.percent or 0.0) / 100.0 * abs(last)


def _is_number(value: Value) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _TagState:
    """What the engine remembers of one configured tag."""

    __slots__ = ("deadband", "heartbeat_ms", "last", "sent_at")

    def __init__(self, deadband: Deadband | None, heartbeat_ms: int) -> None:
        self.deadband = deadband
        self.heartbeat_ms = heartbeat_ms
        self.last: Sample | None = None
        self.sent_at = 0  # gateway-clock ms of the last report (see TagEngine._stamp)


class TagEngine:
    """Per-tag report-by-exception filter with heartbeats."""

    def __init__(self, config: GatewayConfig) -> None:
        self._tags: dict[str, _TagState] = {}
        for _device, tag in config.all_tags():
            beat = tag.heartbeat if tag.heartbeat is not None else config.heartbeat
            self._tags[tag.name] = _TagState(tag.deadband, max(1, round(beat * 1000)))
        self._clock = 0  # the latest now_ms given to heartbeats()

    def offer(self, samples: Iterable[Sample]) -> list[Sample]:
        """Return, in order, the samples that should be reported."""
        out: list[Sample] = []
        for s in samples:
            state = self._tags.get(s.tag)
            if state is None:
                out.append(s)
            elif self._should_report(state, s):
                state.last = s
                state.sent_at = self._stamp(s.ts)
                out.append(s)
        return out

    def heartbeats(self, now_ms: int) -> list[Sample]:
        """The last reported value, re-stamped ``now_ms``, of tags quiet for their heartbeat."""
        self._clock = max(self._clock, now_ms)
        out: list[Sample] = []
        for state in self._tags.values():
            last = state.last
            if last is None or now_ms - state.sent_at < state.heartbeat_ms:
                continue
            beat = Sample(tag=last.tag, ts=now_ms, value=last.value, quality=last.quality)
            state.last = beat
            state.sent_at = now_ms
            out.append(beat)
        return out

    def last_reported(self, tag: str) -> Sample | None:
        """The last sample reported (or heartbeat sent) for a configured tag."""
        state = self._tags.get(tag)
        return None if state is None else state.last

    def _stamp(self, source_ts: int) -> int:
        # Heartbeats run on the gateway clock; a source clock that lags it would otherwise
        # make every reported tag look overdue at once. The latest now_ms seen is a lower
        # bound of the gateway time of this report.
        return max(source_ts, self._clock)

    @staticmethod
    def _should_report(state: _TagState, s: Sample) -> bool:
        last = state.last
        if last is None or s.quality is not last.quality:
            return True
        if s.quality is Quality.BAD:
            return False
        return exceeds_deadband(s.value, last.value, state.deadband)
