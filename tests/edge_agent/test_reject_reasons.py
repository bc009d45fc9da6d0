"""Reject-reason counters: config, the machine model's attribution rule, rollover, restart."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.config import GatewayConfig, MachineConfig
from edge_agent.contract import CountEvent, Event, Quality, Sample
from edge_agent.machine import MachineModel

T0 = 1_700_000_000_000
COUNTERS = {"total": "total", "reject": "reject"}
REASONS = {"underfill": "rej_under", "cap missing": {"tag": "rej_cap", "bits": 16}}


def machine(**config: Any) -> MachineModel:
    base = {"name": "m1", "counters": COUNTERS, "reject_reasons": REASONS}
    return MachineModel(MachineConfig.model_validate(base | config))


def step(model: MachineModel, ts: int, **values: int) -> list[Event]:
    names = {"under": "rej_under", "cap": "rej_cap"}
    return model.update([Sample(names.get(k, k), T0 + ts, v) for k, v in values.items()])


def flush(model: MachineModel) -> list[tuple[int, int, dict[str, int]]]:
    """(total, reject, rejects by reason) of what a flush emits; checks each event's sums."""
    out = []
    for e in model.flush(T0):
        assert isinstance(e, CountEvent)
        assert sum(n for _, n in e.rejects) <= e.reject and all(n > 0 for _, n in e.rejects)
        out.append((e.total, e.reject, dict(e.rejects)))
    return out


# ---------------------------------------------------------------- config


def test_reason_counters_are_listened_to_and_take_the_counter_shorthand() -> None:
    cfg = MachineConfig.model_validate(
        {"name": "m1", "counters": COUNTERS, "reject_reasons": REASONS}
    )
    assert cfg.reject_reasons is not None
    assert (cfg.reject_reasons["underfill"].tag, cfg.reject_reasons["underfill"].bits) == (
        "rej_under",
        32,
    )
    assert cfg.reject_reasons["cap missing"].bits == 16
    assert machine().tags == {"total", "reject", "rej_under", "rej_cap"}


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"counters": {"total": "total"}}, "reject_reasons needs counters that give rejects"),
        ({"counters": None}, "reject_reasons needs counters that give rejects"),
        ({"reject_reasons": {"underfill": "reject"}}, "tag 'reject' is already a counter"),
        (
            {"reject_reasons": {"a": "rej_under", "b": "rej_under"}},
            "reject_reasons.b: tag 'rej_under' is already a counter",
        ),
        ({"reject_reasons": {"": "rej_under"}}, "must be 1-64 characters"),
        ({"reject_reasons": {"x" * 65: "rej_under"}}, "must be 1-64 characters"),
        ({"reject_reasons": {"under\tfill": "rej_under"}}, "without control characters"),
        ({"reject_reasons": {"underfill ": "rej_under"}}, "spaces at either end"),
        ({"reject_reasons": {"underfill": {"tag": "rej_under", "bits": 8}}}, "bits"),
        ({"reject_reasons": {"underfill": {"tag": "x", "max_rate": 0}}}, "max_rate"),
        ({"reject_reasons": ["underfill"]}, "valid dictionary"),
    ],
)
def test_bad_reason_config_is_rejected(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        MachineConfig.model_validate(
            {"name": "m1", "counters": COUNTERS, "reject_reasons": REASONS} | config
        )


@pytest.mark.parametrize(
    "counters", [{"total": "total", "good": "good"}, {"good": "good", "reject": "reject"}]
)
def test_any_counters_that_give_rejects_allow_reasons(counters: dict[str, str]) -> None:
    MachineConfig.model_validate({"name": "m1", "counters": counters, "reject_reasons": REASONS})


def test_a_reason_counter_tag_must_exist_on_a_device() -> None:
    def gateway(reason_tag: str) -> dict[str, Any]:
        tags = ["total", "reject", "rej_under"]
        return {
            "agent": {"id": "gw-1"},
            "line": {"site": "s", "area": "a", "line": "l"},
            "devices": [
                {
                    "name": "plc",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "machine": "m1",
                    "tags": [{"name": n, "address": i * 2} for i, n in enumerate(tags)],
                }
            ],
            "machines": [
                {"name": "m1", "counters": COUNTERS, "reject_reasons": {"underfill": reason_tag}}
            ],
        }

    GatewayConfig.model_validate(gateway("rej_under"))
    with pytest.raises(ValidationError, match="refers to tag 'rej_undr', which no device has"):
        GatewayConfig.model_validate(gateway("rej_undr"))


# ---------------------------------------------------------------- attribution


def test_reasons_go_with_the_rejects_of_the_same_window() -> None:
    model = machine()
    step(model, 0, total=100, reject=10, under=5, cap=7)
    assert flush(model) == []  # baselines only
    step(model, 1000, total=110, reject=13, under=7, cap=8)
    assert flush(model) == [(10, 3, {"underfill": 2, "cap missing": 1})]
    step(model, 2000, total=112, reject=14)  # a reject no reason counter saw
    assert flush(model) == [(2, 1, {})]


def test_a_reason_seen_before_its_reject_waits_for_it() -> None:
    model = machine()
    step(model, 0, total=0, reject=0, under=0, cap=0)
    step(model, 1000, under=1)
    assert flush(model) == []  # nothing to attach it to: no count event at all
    step(model, 1200, total=3)
    assert flush(model) == [(3, 0, {})]  # no reject yet: the reason still waits
    step(model, 1400, total=4, reject=1)
    assert flush(model) == [(1, 1, {"underfill": 1})]


def test_a_reason_seen_after_its_reject_goes_with_the_next_rejects() -> None:
    model = machine()
    step(model, 0, total=0, reject=0, under=0, cap=0)
    step(model, 1000, total=2, reject=2)
    assert flush(model) == [(2, 2, {})]  # emitted unattributed: the reasons came later
    step(model, 2000, under=1, cap=1, total=3)
    assert flush(model) == [(1, 0, {})]
    step(model, 3000, total=4, reject=3, under=2)
    # room for one: the oldest pending reason first, the rest waits
    assert flush(model) == [(1, 1, {"underfill": 1})]
    step(model, 4000, total=8, reject=7)
    assert flush(model) == [(4, 4, {"cap missing": 1, "underfill": 1})]


def test_reasons_never_outrun_the_rejects_of_a_misconfigured_plc() -> None:
    """Reason counters that count more than the reject counter: clamped, never over."""
    model = machine()
    step(model, 0, total=0, reject=0, under=0, cap=0)
    emitted = []
    for i in range(1, 6):
        step(model, i * 1000, total=10 * i, reject=i, under=3 * i)
        emitted += flush(model)
    assert [e[2] for e in emitted] == [{"underfill": 1}] * 5


def test_reject_derived_from_total_and_good_gets_reasons_too() -> None:
    model = machine(counters={"total": "total", "good": "good"})
    step(model, 0, total=0, good=0, under=0)
    step(model, 1000, total=10, good=7, under=2)
    assert flush(model) == [(10, 3, {"underfill": 2})]


def test_a_product_change_flushes_the_reasons_with_their_product() -> None:
    model = machine(product="sku")
    step(model, 0, total=0, reject=0, under=0)
    model.update([Sample("sku", T0, "A")])
    step(model, 1000, total=5, reject=2, under=2)
    flushed = model.update([Sample("sku", T0 + 2000, "B")])
    assert [(e.product, e.rejects) for e in flushed if isinstance(e, CountEvent)] == [
        ("A", (("underfill", 2),))
    ]


def test_reason_counters_survive_rollover_reset_and_bad_values() -> None:
    model = machine()
    step(model, 0, total=0, reject=0, cap=65_534)  # a 16-bit reason counter near its wrap
    step(model, 1000, total=5, reject=5, cap=2)  # wrapped: 4 parts
    assert flush(model) == [(5, 5, {"cap missing": 4})]
    model.update([Sample("rej_cap", T0 + 1500, None, Quality.BAD)])
    step(model, 2000, total=8, reject=8, cap=1)  # reset by the PLC, then one part
    assert flush(model) == [(3, 3, {"cap missing": 1})]


# ---------------------------------------------------------------- restart


def restart(model: MachineModel, **config: Any) -> MachineModel:
    """A new model from the checkpoint, through JSON as the agent stores it."""
    saved = json.loads(json.dumps({"m1": model.checkpoint()}, sort_keys=True))["m1"]
    fresh = machine(**config)
    fresh.restore(saved)
    return fresh


def test_a_restart_neither_loses_nor_doubles_reasons() -> None:
    model = machine()
    step(model, 0, total=0, reject=0, under=0, cap=0)
    step(model, 1000, total=2, reject=2)
    step(model, 1100, under=1, cap=1)  # carried: more reasons than the event has room for
    step(model, 1200, cap=3)
    assert flush(model) == [(2, 2, {"underfill": 1, "cap missing": 1})]
    model = restart(model)  # pending: cap missing 2, in the checkpoint with the baselines
    step(model, 5000, total=7, reject=6, under=2, cap=3)  # counted while the agent was down
    assert flush(model) == [(5, 4, {"cap missing": 2, "underfill": 1})]


def test_a_reason_dropped_from_the_config_loses_only_its_attribution() -> None:
    model = machine()
    step(model, 0, total=0, reject=0, under=0, cap=0)
    step(model, 1000, under=2, cap=1)
    model = restart(model, reject_reasons={"underfill": "rej_under"})
    assert model.tags == {"total", "reject", "rej_under"}
    step(model, 2000, total=5, reject=5, under=2)
    assert flush(model) == [(5, 5, {"underfill": 2})]


def test_an_old_checkpoint_without_reasons_restores() -> None:
    old = {"counters": {"total": [10, T0], "reject": [1, T0]}, "pending": {}, "ts": None}
    model = machine()
    model.restore(old)
    step(model, 1000, total=12, reject=2, under=4)  # a new reason counter: a baseline
    assert flush(model) == [(2, 1, {})]


# ---------------------------------------------------------------- the property


@st.composite
def scans(draw: st.DrawFn) -> list[tuple[int, int, int, int, list[int], list[bool], bool]]:
    """Per scan: good, underfill, cap missing, unattributed rejects; the order the four
    counter samples arrive in; a flush after each of them or not; a kill after the scan."""
    out = []
    for _ in range(draw(st.integers(1, 30))):
        good, under, cap, other = (draw(st.integers(0, 6)) for _ in range(4))
        order = draw(st.permutations([0, 1, 2, 3]))
        flushes = draw(st.lists(st.booleans(), min_size=4, max_size=4))
        out.append((good, under, cap, other, order, flushes, draw(st.integers(0, 7)) == 0))
    return out


@settings(max_examples=300, deadline=None)
@given(runs=scans(), start=st.integers(0, 2**16 - 1))
def test_reasons_add_up_exactly_and_never_exceed_rejects(
    runs: list[tuple[int, int, int, int, list[int], list[bool], bool]], start: int
) -> None:
    """Whatever the arrival order, the flush points, rollovers and kills (restore from the
    last flush's checkpoint, samples read since lost): every event has Σ reasons <= reject,
    and in the end each counter's parts are emitted exactly once."""
    tags = ("total", "reject", "rej_under", "rej_cap")
    plc = [start, start // 2, start // 3, 2**16 - 1 - start]  # the 16-bit cap counter wraps
    bits = [32, 32, 32, 16]
    model = machine()
    model.update([Sample(t, T0, v) for t, v in zip(tags, plc, strict=True)])
    checkpoint = model.checkpoint()
    events: list[tuple[int, int, dict[str, int]]] = []
    true = {"total": 0, "reject": 0, "underfill": 0, "cap missing": 0}
    ts = T0
    for good, under, cap, other, order, flushes, kill in runs:
        ts += 1000
        moves = [good + under + cap + other, under + cap + other, under, cap]
        plc = [(v + d) % 2**b for v, d, b in zip(plc, moves, bits, strict=True)]
        for k, name in zip(moves, true, strict=True):
            true[name] += k
        for i, flush_after in zip(order, flushes, strict=True):
            model.update([Sample(tags[i], ts + i, plc[i])])
            if flush_after:
                events += flush(model)
                checkpoint = model.checkpoint()
        if kill:
            model = machine()
            model.restore(json.loads(json.dumps(checkpoint)))
    # Production goes on: rejects no reason counter saw make room for the reasons carried,
    # and parts for the rejects that wait for their total (a reject read after its total
    # was flushed waits for the next part: ``Counts`` emits only what the total covers).
    room, parts = true["underfill"] + true["cap missing"], true["reject"]
    plc[0], plc[1] = plc[0] + room + parts, plc[1] + room
    model.update([Sample(t, ts + 1000, v) for t, v in zip(tags, plc, strict=True)])
    events += flush(model)
    assert sum(e[0] for e in events) == true["total"] + room + parts
    assert sum(e[1] for e in events) == true["reject"] + room
    for reason in ("underfill", "cap missing"):
        assert sum(e[2].get(reason, 0) for e in events) == true[reason], reason
