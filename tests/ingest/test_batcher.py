"""The batcher: flush on count, on weight (samples) and on age, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.batcher import Batcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, *, items: int = 3, weight: int = 100, age: float = 0.25) -> Batcher[str]:
    return Batcher(max_items=items, max_weight=weight, max_age=age, clock=clock)


def test_empty_batch_is_never_due() -> None:
    clock = FakeClock()
    b = make(clock)
    clock.now += 100
    assert not b.due()
    assert b.time_left() == 0.25
    assert b.take() == []


def test_due_on_message_count() -> None:
    b = make(FakeClock(), items=3)
    assert not b.add("a")
    assert not b.add("b")
    assert b.add("c")
    assert b.take() == ["a", "b", "c"]
    assert len(b) == 0 and b.weight == 0


def test_due_on_weight() -> None:
    b = make(FakeClock(), items=100, weight=1000)
    assert not b.add("a", 600)
    assert b.weight == 600
    assert b.add("b", 400)
    assert b.take() == ["a", "b"]


def test_one_heavy_item_is_a_batch_of_its_own() -> None:
    b = make(FakeClock(), weight=10)
    assert b.add("huge", 5000)
    assert b.take() == ["huge"]


def test_due_on_age_since_the_first_item() -> None:
    clock = FakeClock()
    b = make(clock, items=100, age=0.25)
    b.add("a")
    clock.now += 0.2
    b.add("b")
    assert not b.due()
    assert b.time_left() == pytest.approx(0.05)
    clock.now += 0.05
    assert b.due()
    assert b.time_left() == 0
    assert b.take() == ["a", "b"]
    # the next batch's age starts with its own first item
    clock.now += 10
    b.add("c")
    assert not b.due()
    assert b.time_left() == pytest.approx(0.25)


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Batcher(max_items=0, max_weight=1, max_age=1)
    with pytest.raises(ValueError):
        Batcher(max_items=1, max_weight=1, max_age=0)


@given(
    st.lists(st.tuples(st.integers(0, 300), st.floats(0, 0.2)), max_size=60),
    st.integers(1, 10),
    st.integers(1, 1000),
)
def test_batches_keep_order_and_respect_limits(
    steps: list[tuple[int, float]], items: int, weight: int
) -> None:
    """Taking whenever due: nothing lost or reordered, and no batch over a limit by more than
    its last item."""
    clock = FakeClock()
    b: Batcher[int] = Batcher(max_items=items, max_weight=weight, max_age=0.25, clock=clock)
    out: list[list[int]] = []
    weights: dict[int, int] = {}
    for i, (w, dt) in enumerate(steps):
        clock.now += dt
        if b.due():
            out.append(b.take())
        weights[i] = w
        if b.add(i, w):
            out.append(b.take())
    out.append(b.take())
    assert [i for batch in out for i in batch] == list(range(len(steps)))
    for batch in out:
        assert len(batch) <= items
        assert sum(weights[i] for i in batch[:-1]) < weight
