"""What a stop is: its loss class, planned or not, its category, micro-stop or not. Pure.

A *stop* is a piece (see :mod:`api.downtime.overlay`) of a state interval whose state is
not of the loss class ``running``. Its classification follows the OEE module
(:mod:`api.oee.calc`) so that the downtime views and OEE agree:

* Loss class of the state: :data:`api.oee.calc.DEFAULT_STATE_CLASSES`, overridden by the
  global rows of ``state_loss_classes`` (asset NULL), overridden by the asset's own rows.
  A state nobody mapped is an unplanned stop (OEE flags it ``unmapped_state``).
* Planned: the effective reason (the operator's where one was assigned, else the
  machine's) is a planned one in ``downtime_reasons``, or the state's class is
  ``planned_down``. A planned stop is taken out of planned production time: it is not a
  failure and not a micro-stop.
* Category: the effective reason's category in ``downtime_reasons`` (None when the code
  is not in the reason tree, or there is no code).
* Micro-stop: an unplanned stop whose *whole* stop is shorter than the machine's
  ``machine_settings.micro_stop_s``. The whole stop is the machine's state interval,
  neither clipped to the range asked for nor cut by operators' reasons (splitting a
  five-minute jam into two reasons does not make two micro-stops); an open one is
  measured up to ``now``, as OEE does. A micro-stop costs performance, not availability:
  it is no failure for MTBF and MTTR.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from api.downtime.overlay import Piece
from api.oee.calc import DEFAULT_STATE_CLASSES, LossClass

_US = timedelta(microseconds=1)
# States whose stops another machine of the line causes (see api.downtime.rootcause).
INDUCED_STATES = frozenset({"starved", "blocked"})


def state_classes(
    global_rows: Mapping[str, str], asset_rows: Mapping[str, str]
) -> Mapping[str, LossClass]:
    """The state → loss class map of one asset: defaults < global rows < the asset's rows."""
    classes = dict(DEFAULT_STATE_CLASSES)
    classes.update({state: LossClass(c) for state, c in global_rows.items()})
    classes.update({state: LossClass(c) for state, c in asset_rows.items()})
    return MappingProxyType(classes)


def loss_class(state: str, classes: Mapping[str, LossClass]) -> LossClass:
    """The loss class of a state; one nobody mapped counts as an unplanned stop."""
    return classes.get(state, LossClass.UNPLANNED_DOWN)


@dataclass(frozen=True, slots=True)
class Stop:
    """A classified stop piece of one asset."""

    asset_id: int
    piece: Piece
    loss_class: LossClass
    planned: bool
    micro: bool
    whole_s: float  # length of the machine's whole stop (open: up to now)

    @property
    def induced(self) -> bool:
        """Starved or blocked: waiting for another machine."""
        return self.piece.state in INDUCED_STATES

    @property
    def failure(self) -> bool:
        """Counts for MTBF and MTTR: unplanned and not a micro-stop."""
        return not self.planned and not self.micro


def classify(
    asset_id: int,
    piece: Piece,
    *,
    classes: Mapping[str, LossClass],
    micro_stop_s: float,
    now: datetime,
) -> Stop | None:
    """The stop a piece is, or None when its state is a running one."""
    cls = loss_class(piece.state, classes)
    if cls is LossClass.RUNNING:
        return None
    planned = piece.reason.planned or cls is LossClass.PLANNED_DOWN
    interval = piece.interval
    whole = (interval.end or max(now, interval.start)) - interval.start
    micro = not planned and whole // _US < threshold_us(micro_stop_s)
    return Stop(asset_id, piece, cls, planned, micro, whole.total_seconds())


def threshold_us(micro_stop_s: float) -> float:
    """The micro-stop threshold in microseconds, rounded as OEE rounds it."""
    # The column allows 'infinity' and NaN (NaN >= 0 holds in PostgreSQL): no 500 on either.
    if math.isnan(micro_stop_s):
        return 0
    return math.inf if math.isinf(micro_stop_s) else round(micro_stop_s * 1_000_000)


def classify_all(
    asset_id: int,
    pieces: Iterable[Piece],
    *,
    classes: Mapping[str, LossClass],
    micro_stop_s: float,
    now: datetime,
) -> list[Stop]:
    """The stops among ``pieces`` (running pieces left out), in their order."""
    out = []
    for piece in pieces:
        stop = classify(asset_id, piece, classes=classes, micro_stop_s=micro_stop_s, now=now)
        if stop is not None:
            out.append(stop)
    return out
