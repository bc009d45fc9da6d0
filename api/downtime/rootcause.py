"""Which machine made a line stop: starved and blocked time attributed to its root. Pure.

Machines of a line wait on each other: a machine is *starved* (nothing comes in) or
*blocked* (its output is full) because another machine stopped. Such a stop is *induced*;
any other unplanned stop is the machine's *own* (a fault, a jam, an unexplained idle).
A *planned* stop (a changeover, a cleaning, a break on one machine) is no loss of its own,
but the others may starve or block while it lasts: it can be a root like an own stop, and
the time rooted in it is shown apart (``caused_planned``), so nobody reads a filler's
changeover as the packer's unexplained stop.

Attribution of an induced stop that began at ``t`` (the start of the whole stop, not of a
part an operator gave another reason, nor of the range asked for):

1. The candidates are the stops of the *other* machines of the line going on at ``t``
   (begun at or before ``t``, not yet ended). The most recently begun one is the cause;
   on a tie an own stop wins over an induced one, then the lower asset id.
2. An own stop is the root. An induced one has a cause of its own: look again from the
   moment it began (a chain: the packer starved because the labeler starved because the
   capper faulted), never returning to a machine already on the chain.
3. No candidate (or a chain that runs out): the stop is *unknown*.

A planned stop is only ever a cause: it is neither attributed nor counted as a stop.

Figures over the range (every duration clipped to it): per machine, its own stops (count
and time), its starved and blocked time, and the induced time its own stops caused on the
others; and, for the line's output machine (``is_line_output``), its unplanned stop time
split by root: its own stops are its own, its induced stops go to their root or to
unknown, so the machines' shares and unknown add up to the output's down time. Micro-stops
are included: here what matters is who stopped the line, however briefly.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class Event:
    """A stop (or a part of one with one reason) of one machine of the line."""

    asset_id: int
    began: datetime  # the start of the whole stop: when causes are looked for
    start: datetime
    end: datetime  # an open stop: now
    state: str
    induced: bool
    ref: Hashable = None  # the caller's handle on the stop (for episode lists)
    planned: bool = False  # a planned stop: a possible root, never a loss (induced is False)


@dataclass(slots=True)
class MachineFigures:
    """One machine's figures over the range."""

    own_stops: int = 0
    own: timedelta = ZERO
    starved: timedelta = ZERO
    blocked: timedelta = ZERO
    caused_stops: int = 0
    caused: timedelta = ZERO  # induced time on the other machines
    caused_planned: timedelta = ZERO  # the part of ``caused`` rooted in its planned stops
    output_down: timedelta = ZERO  # the output machine's stop time this machine caused


@dataclass(slots=True)
class Episode:
    """A root stop and the induced stops attributed to it."""

    root: Event
    effects: list[Event] = field(default_factory=list)
    caused: timedelta = ZERO


@dataclass(slots=True)
class RootCause:
    """The attribution over the range."""

    machines: dict[int, MachineFigures]
    unknown: MachineFigures  # caused_stops, caused and output_down of unattributed stops
    output_down: timedelta | None  # the output machine's unplanned stop time; None: no output
    episodes: list[Episode]  # by root start


class _Index:
    """Per machine, its events by start: which one is going on at an instant."""

    def __init__(self, events: Sequence[Event]) -> None:
        by_asset: dict[int, list[Event]] = defaultdict(list)
        for e in events:
            by_asset[e.asset_id].append(e)
        self._events = {a: sorted(es, key=lambda e: e.start) for a, es in by_asset.items()}
        self._starts = {a: [e.start for e in es] for a, es in self._events.items()}

    def cause_at(self, t: datetime, exclude: set[int]) -> Event | None:
        """The most recently begun stop of another machine going on at ``t``."""
        best: Event | None = None
        for asset_id, starts in self._starts.items():
            if asset_id in exclude:
                continue
            i = bisect_right(starts, t) - 1
            if i < 0:
                continue
            e = self._events[asset_id][i]
            if e.end > t and e.began <= t and (best is None or _rank(e) > _rank(best)):
                best = e
        return best


def _rank(e: Event) -> tuple[datetime, bool, int]:
    return (e.began, not e.induced, -e.asset_id)


def attribute(events: Sequence[Event]) -> dict[Event, Event | None]:
    """For each induced event, its root own stop (None: unknown)."""
    index = _Index(events)
    roots: dict[Event, Event | None] = {}
    for e in events:
        if e.induced and not e.planned:
            roots[e] = _root(index, e)
    return roots


def _root(index: _Index, event: Event) -> Event | None:
    chain = {event.asset_id}
    current = event
    while True:
        cause = index.cause_at(current.began, chain)
        if cause is None or not cause.induced:
            return cause
        chain.add(cause.asset_id)
        current = cause


def _inside(e: Event, start: datetime, end: datetime) -> timedelta:
    return max(ZERO, min(e.end, end) - max(e.start, start))


def summarise(
    events: Sequence[Event],
    roots: dict[Event, Event | None],
    *,
    start: datetime,
    end: datetime,
    output_asset: int | None,
) -> RootCause:
    """The figures of :class:`RootCause` over [start, end)."""
    machines: dict[int, MachineFigures] = defaultdict(MachineFigures)
    unknown = MachineFigures()
    episodes: dict[Event, Episode] = {}
    output_down = None if output_asset is None else ZERO
    for e in events:
        inside = _inside(e, start, end)
        if inside <= ZERO or e.planned:
            continue
        on_output = e.asset_id == output_asset
        if on_output and output_down is not None:
            output_down += inside
        if not e.induced:
            _own(machines[e.asset_id], inside, on_output)
            continue
        _waiting(machines[e.asset_id], e.state, inside)
        root = roots.get(e)
        target = unknown if root is None else machines[root.asset_id]
        target.caused_stops += 1
        target.caused += inside
        if root is not None and root.planned:
            target.caused_planned += inside
        if on_output:
            target.output_down += inside
        if root is not None:
            episode = episodes.setdefault(root, Episode(root))
            episode.effects.append(e)
            episode.caused += inside
    ordered = sorted(episodes.values(), key=lambda ep: (ep.root.start, ep.root.asset_id))
    return RootCause(dict(machines), unknown, output_down, ordered)


def _own(figures: MachineFigures, inside: timedelta, on_output: bool) -> None:
    figures.own_stops += 1
    figures.own += inside
    if on_output:
        figures.output_down += inside


def _waiting(figures: MachineFigures, state: str, inside: timedelta) -> None:
    if state == "blocked":
        figures.blocked += inside
    else:
        figures.starved += inside
