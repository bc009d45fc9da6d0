"""Rejects by reason: what the reason counters saw, and what none of them did.

``production_rejects`` holds what per-reason counters counted: a subset of the reject
counter's parts. The rest is *unattributed*: reject − Σ reasons. The two sides are
compared per cell, one machine and one product, because that is where the counters
belong together; a cell whose reason counters counted more than its reject counter (a
part with two defects counted twice, counts on either side of the range edge) has no
unattributed rejects (never a negative count) and its excess is reported as
*over-attributed*. Summed over cells: Σ reasons + unattributed − over-attributed = reject.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# One machine making one product (None: counted without a product).
Cell = tuple[int, str | None]


@dataclass(frozen=True)
class Attribution:
    """Rejects per reason (most first, ties by name), unattributed and over-attributed."""

    reasons: list[tuple[str, int]]
    unattributed: int
    over_attributed: int


def attribute(rejects: Mapping[Cell, int], reasons: Iterable[tuple[Cell, str, int]]) -> Attribution:
    """Compare ``rejects`` (reject count per cell) with ``reasons`` ((cell, reason, count))."""
    per_reason: Counter[str] = Counter()
    per_cell: Counter[Cell] = Counter()
    for cell, reason, count in reasons:
        if count < 0:
            raise ValueError(f"a negative reject count for {reason!r} in {cell}")
        per_reason[reason] += count
        per_cell[cell] += count
    unattributed = over = 0
    for cell in rejects.keys() | per_cell.keys():
        gap = rejects.get(cell, 0) - per_cell[cell]
        unattributed += max(gap, 0)
        over += max(-gap, 0)
    ranked = sorted(per_reason.items(), key=lambda item: (-item[1], item[0]))
    return Attribution(reasons=ranked, unattributed=unattributed, over_attributed=over)
