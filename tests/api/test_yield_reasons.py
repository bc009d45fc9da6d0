"""Rejects by reason as pure arithmetic: attribution per machine and product, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.production.reasons import Attribution, Cell, attribute
from api.production.service import reason_rows

cells = st.tuples(st.integers(1, 3), st.sampled_from(["A", "B", None]))
rejects_st = st.dictionaries(cells, st.integers(0, 1000), max_size=6)
reasons_st = st.lists(
    st.tuples(cells, st.sampled_from(["scratch", "dent", "short"]), st.integers(1, 500)),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(rejects_st, reasons_st)
def test_reasons_plus_unattributed_minus_excess_is_the_reject_count(
    rejects: dict[Cell, int], reasons: list[tuple[Cell, str, int]]
) -> None:
    got = attribute(rejects, reasons)
    named = sum(n for _, _, n in reasons)
    assert sum(n for _, n in got.reasons) == named
    assert got.unattributed >= 0 and got.over_attributed >= 0
    assert named + got.unattributed - got.over_attributed == sum(rejects.values())
    # Clamped per cell, never less than the whole's own gap.
    assert got.unattributed >= max(0, sum(rejects.values()) - named)
    counts = [n for _, n in got.reasons]
    assert counts == sorted(counts, reverse=True) and all(n > 0 for n in counts)


@settings(max_examples=300, deadline=None)
@given(rejects_st, reasons_st)
def test_products_add_up_to_the_whole(
    rejects: dict[Cell, int], reasons: list[tuple[Cell, str, int]]
) -> None:
    whole = attribute(rejects, reasons)
    products = {c[1] for c in rejects} | {c[1] for c, _, _ in reasons}
    parts = [
        attribute(
            {c: n for c, n in rejects.items() if c[1] == p}, [r for r in reasons if r[0][1] == p]
        )
        for p in products
    ]
    assert sum(a.unattributed for a in parts) == whole.unattributed
    assert sum(a.over_attributed for a in parts) == whole.over_attributed


@settings(max_examples=300, deadline=None)
@given(rejects_st, reasons_st, st.integers(0, 5000))
def test_shares_sum_to_one_and_rates_to_the_scrap_rate(
    rejects: dict[Cell, int], reasons: list[tuple[Cell, str, int]], good: int
) -> None:
    got = attribute(rejects, reasons)
    reject = sum(rejects.values())
    total = reject + good
    rows = reason_rows(got, total=total)
    assert [r.reason for r in rows if r.reason is None] == ([None] if got.unattributed else [])
    if not rows:
        return
    assert rows[-1].reason is None or got.unattributed == 0
    shares = [r.share for r in rows]
    assert all(s is not None and 0 <= s <= 1 for s in shares)
    assert math.fsum(s for s in shares if s is not None) == pytest.approx(1.0)
    if total == 0:
        assert all(r.rate is None for r in rows)
    elif got.over_attributed == 0:
        assert math.fsum(r.rate or 0.0 for r in rows) == pytest.approx(reject / total)


@pytest.mark.parametrize(
    ("rejects", "reasons", "expected"),
    [
        ({}, [], Attribution([], 0, 0)),
        # Nothing counted by reason: all unattributed.
        ({(1, "A"): 7}, [], Attribution([], 7, 0)),
        # One machine fully explained, another short by 2, a third over by 3: the excess
        # does not cancel the gap.
        (
            {(1, "A"): 5, (2, "A"): 6, (3, "A"): 0},
            [((1, "A"), "dent", 5), ((2, "A"), "dent", 4), ((3, "A"), "scratch", 3)],
            Attribution([("dent", 9), ("scratch", 3)], 2, 3),
        ),
        # Ties by name; a product only the reason counters saw is all excess.
        (
            {(1, None): 4},
            [((1, None), "b", 2), ((1, None), "a", 2), ((1, "X"), "a", 1)],
            Attribution([("a", 3), ("b", 2)], 0, 1),
        ),
    ],
)
def test_attribution_table(
    rejects: dict[Cell, int], reasons: list[tuple[Cell, str, int]], expected: Attribution
) -> None:
    assert attribute(rejects, reasons) == expected


def test_negative_reason_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        attribute({}, [((1, None), "dent", -1)])
