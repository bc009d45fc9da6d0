"""The root-cause view of a line: load its machines' stops, attribute, shape the answer.

The rules are in :mod:`api.downtime.rootcause`. The causes of the stops in the range may
have begun before it, so the stops are loaded from the earliest start of any interval
overlapping the range (at most :data:`LOOKBACK` earlier). A chain through stops that
began even earlier than that is cut there, and what it would have explained is unknown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api.downtime import repository as repo
from api.downtime.classify import Stop
from api.downtime.effective import MachineStops, load
from api.downtime.rootcause import Event, MachineFigures, RootCause, attribute, summarise
from api.downtime.schemas import (
    RootCauseEffect,
    RootCauseEpisode,
    RootCauseMachine,
    RootCausePublic,
    RootCauseUnknown,
)
from api.downtime.service import MAX_RANGE, asset_or_404
from api.errors import Invalid
from api.timeseries.service import check_range

LOOKBACK = timedelta(days=7)
DEFAULT_EPISODES = 100
MAX_EPISODES = 1000
MAX_EFFECTS = 50  # per episode


def _earlier(dt: datetime, delta: timedelta) -> datetime:
    """``dt - delta``, or the earliest datetime there is (no OverflowError near year 1)."""
    try:
        return dt - delta
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _machines(
    session: Session,
    line: dict[str, Any],
    members: dict[int, str],
    *,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[MachineStops]:
    """The line's machines' stops, from early enough to hold the causes of those in range."""
    loaded = [
        m for m in load(session, line, start=start, end=end, now=now) if m.asset_id in members
    ]
    earliest = min((m.pieces[0].start for m in loaded if m.pieces), default=start)
    if earliest < start:
        lo = max(earliest, _earlier(start, LOOKBACK))
        loaded = [
            m for m in load(session, line, start=lo, end=end, now=now) if m.asset_id in members
        ]
    return loaded


def _event(stop: Stop, now: datetime) -> Event:
    piece = stop.piece
    return Event(
        asset_id=stop.asset_id, began=piece.interval.start, start=piece.start,
        end=piece.end or max(now, piece.start), state=piece.state,
        induced=stop.induced and not stop.planned, ref=stop, planned=stop.planned,
    )  # fmt: skip


def _output(session: Session, members: dict[int, str]) -> tuple[int | None, list[str]]:
    settings = repo.machine_settings(session, list(members))
    outputs = sorted(a for a, s in settings.items() if s["is_line_output"])
    if len(outputs) == 1:
        return outputs[0], []
    return None, ["no_line_output" if not outputs else "several_line_outputs"]


def root_cause(
    session: Session,
    *,
    asset_id: int,
    start: datetime,
    end: datetime,
    limit: int = DEFAULT_EPISODES,
    now: datetime | None = None,
) -> RootCausePublic:
    """Who caused a line's starved and blocked time and its output machine's stops."""
    check_range(start, end, longest=MAX_RANGE)
    line = asset_or_404(session, asset_id)
    if line["level"] != "line":
        raise Invalid(
            f"the root-cause view is per line; asset {asset_id} is a {line['level']}",
            field="asset_id",
        )
    now = now or datetime.now(UTC)
    members = {int(m["id"]): str(m["path"]) for m in repo.line_machines(session, asset_id)}
    output, flags = _output(session, members)
    machines = _machines(session, line, members, start=start, end=end, now=now)
    events = [_event(s, now) for m in machines for s in m.stops]
    result = summarise(events, attribute(events), start=start, end=end, output_asset=output)
    return _public(
        line, members, result, start=start, end=end, output=output, flags=flags, limit=limit
    )


def _seconds(td: timedelta) -> float:
    return td.total_seconds()


def _public(
    line: dict[str, Any],
    paths: dict[int, str],
    result: RootCause,
    *,
    start: datetime,
    end: datetime,
    output: int | None,
    flags: list[str],
    limit: int,
) -> RootCausePublic:
    has_output = output is not None
    machines = [
        _machine(a, paths[a], result.machines.get(a, MachineFigures()), output, has_output)
        for a in paths
    ]
    unknown = RootCauseUnknown(
        stops=result.unknown.caused_stops, seconds=_seconds(result.unknown.caused),
        output_down_s=_seconds(result.unknown.output_down) if has_output else None,
    )  # fmt: skip
    episodes = [
        _episode(ep.root, ep.effects, ep.caused, paths, start, end)
        for ep in result.episodes[:limit]
    ]
    return RootCausePublic(
        asset_id=int(line["id"]), start=start, end=end, output_asset_id=output,
        output_down_s=None if result.output_down is None else _seconds(result.output_down),
        machines=machines, unknown=unknown, episodes=episodes,
        episodes_truncated=len(result.episodes) > limit, flags=flags,
    )  # fmt: skip


def _machine(
    asset_id: int, path: str, f: MachineFigures, output: int | None, has_output: bool
) -> RootCauseMachine:
    return RootCauseMachine(
        asset_id=asset_id, path=path, is_line_output=asset_id == output,
        own_stops=f.own_stops, own_s=_seconds(f.own), starved_s=_seconds(f.starved),
        blocked_s=_seconds(f.blocked), caused_stops=f.caused_stops, caused_s=_seconds(f.caused),
        caused_planned_s=_seconds(f.caused_planned),
        output_down_s=_seconds(f.output_down) if has_output else None,
    )  # fmt: skip


def _episode(
    root: Event,
    effects: list[Event],
    caused: timedelta,
    paths: dict[int, str],
    start: datetime,
    end: datetime,
) -> RootCauseEpisode:
    stop = root.ref
    assert isinstance(stop, Stop)  # set by _event
    reason = stop.piece.reason
    shown = [
        RootCauseEffect(
            asset_id=e.asset_id, path=paths[e.asset_id], state=e.state, start=max(e.start, start),
            end=min(e.end, end), duration_s=_seconds(min(e.end, end) - max(e.start, start)),
        )
        for e in effects[:MAX_EFFECTS]
    ]  # fmt: skip
    return RootCauseEpisode(
        asset_id=root.asset_id, path=paths[root.asset_id], state=root.state,
        reason=reason.reason, code=reason.code, planned=root.planned, start=root.start,
        end=stop.piece.end,
        caused_s=_seconds(caused), effects=shown, effects_truncated=len(effects) > MAX_EFFECTS,
    )  # fmt: skip
