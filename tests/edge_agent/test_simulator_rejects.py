"""The simulator's reject-reason counters: a part of the rejects, by share, like a PLC's."""

from __future__ import annotations

import dataclasses

import pytest

from edge_agent.simulator import DEFAULT_LINE, LineModel
from edge_agent.simulator.line import MachineSpec, SimulatorError

SPECS = {spec.name: spec for spec in DEFAULT_LINE}


def run(model: LineModel, ticks: int) -> list[dict[str, tuple[int, dict[str, int]]]]:
    """Per tick and machine: (reject counter, reason counters)."""
    out = []
    for _ in range(ticks):
        snap = model.step()
        out.append({m.name: (m.reject, dict(m.rejects)) for m in snap})
    return out


@pytest.mark.parametrize("frozen", [False, True])
def test_reasons_are_a_share_of_the_rejects_and_never_more(frozen: bool) -> None:
    model = LineModel(seed=3, tick=1.0, frozen=frozen)
    history = run(model, 20_000)  # about 5.5 simulated hours
    for name, spec in SPECS.items():
        rejects = [h[name][0] for h in history]
        reasons = [h[name][1] for h in history]
        assert set(reasons[-1]) == set(spec.reject_reasons), name
        for r in range(len(history)):
            # cumulative, like the PLC: the reason counters never outrun the reject counter
            assert sum(reasons[r].values()) <= rejects[r], (name, r)
        if not spec.reject_reasons:
            continue
        made = rejects[-1]
        assert made > 100, name
        for reason, share in spec.reject_reasons.items():
            assert abs(reasons[-1][reason] / made - share) < 0.1, (name, reason)


def test_reasons_leave_every_other_trajectory_as_it_was() -> None:
    """Reasons draw from streams of their own: a seed makes the same line with or without."""
    plain = tuple(dataclasses.replace(s, reject_reasons={}) for s in DEFAULT_LINE)
    a, b = LineModel(seed=8, tick=0.5), LineModel(seed=8, tick=0.5, machines=plain)
    for _ in range(3000):
        sa, sb = a.step(), b.step()
        for ma, mb in zip(sa, sb, strict=True):
            assert dataclasses.replace(ma, rejects=()) == mb


def test_reason_counters_wrap_reset_and_can_be_preset() -> None:
    model = LineModel(seed=1, tick=1.0, counters={"labeler.reject.label_missing": 65_530})
    assert model.machine("labeler").reject_counter("label_missing") == 65_530
    with pytest.raises(SimulatorError, match="16-bit counter"):
        model.set_reason_counter("labeler", "label_missing", 65_536)
    with pytest.raises(SimulatorError, match="no reject reason 'jam'"):
        model.set_reason_counter("labeler", "jam", 1)
    with pytest.raises(SimulatorError, match=r"choose one of \(none\)"):
        model.set_reason_counter("packer", "x", 1)
    before = model.machine("labeler").reject
    for _ in range(20_000):  # until it wraps (about 6 parts later)
        if model.step()["labeler"].reject_counter("label_missing") < 65_530:
            break
    after = model.machine("labeler")
    assert after.reject_counter("label_missing") < 65_530
    assert after.reject - before >= 6  # at least the 6 parts up to the wrap were rejects
    model.set_reason_counter("capper", "cap_missing", 7)
    model.reset_counter("capper", "total")  # the total alone: reasons stay
    assert model.machine("capper").reject_counter("cap_missing") == 7
    model.reset_counter("capper", "reject")  # the rejects: their reasons with them
    assert model.machine("capper").rejects == (("cap_missing", 0), ("cap_skewed", 0))


@pytest.mark.parametrize(
    "reasons",
    [{"a": 0.7, "b": 0.4}, {"a": -0.1}, {str(i): 0.1 for i in range(5)}],
)
def test_impossible_reason_shares_are_refused(reasons: dict[str, float]) -> None:
    with pytest.raises(SimulatorError, match="reject reasons"):
        MachineSpec("m", rate=60.0, reject_ratio=0.1, reject_reasons=reasons)
