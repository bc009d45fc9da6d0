"""The machine model: state maps, safe expressions, counter deltas and count events."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from edge_agent.config import Counter, GatewayConfig, MachineConfig
from edge_agent.contract import CountEvent, Event, Quality, Sample, StateEvent
from edge_agent.machine import CounterTracker, Expression, ExpressionError, MachineModel

T0 = 1_700_000_000_000
G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD

CODES = {
    0: {"state": "idle"},
    1: {"state": "running"},
    2: {"state": "faulted", "reason": "jam at infeed"},
    "E7": {"state": "faulted", "reason": "guard open"},
    "3": {"state": "setup"},  # a quoted YAML key
}


def machine(**config: Any) -> MachineModel:
    return MachineModel(MachineConfig.model_validate({"name": "m1", **config}))


def states(events: list[Event]) -> list[tuple[int, str, Any, str | None]]:
    out = []
    for e in events:
        assert isinstance(e, StateEvent)
        out.append((e.ts - T0, e.state, e.code, e.reason))
    return out


def run_state(model: MachineModel, items: list[tuple[str, Any, Quality]]) -> list[Any]:
    """Feed (tag, value, quality) one update per item, 1 s apart; return the state events."""
    events: list[Event] = []
    for i, (tag, value, quality) in enumerate(items):
        events += model.update([Sample(tag, T0 + 1000 * i, value, quality)])
    return states(events)


# ---------------------------------------------------------------- state from one tag

STATE_CASES = [
    (
        "first value, then only changes",
        [0, 0, 1, 1, 1, 0],
        [(0, "idle", 0, None), (2000, "running", 1, None), (5000, "idle", 0, None)],
    ),
    (
        "reason comes from the map",
        [1, 2],
        [(0, "running", 1, None), (1000, "faulted", 2, "jam at infeed")],
    ),
    ("string codes", ["E7", 1], [(0, "faulted", "E7", "guard open"), (1000, "running", 1, None)]),
    ("int value finds a quoted key", [3], [(0, "setup", 3, None)]),
    ("string value finds an int key", ["1"], [(0, "running", "1", None)]),
    (
        "whole float and bool are ints",
        [1.0, True, 0.0],
        [(0, "running", 1, None), (2000, "idle", 0, None)],
    ),
    (
        "unknown code -> default",
        [1, 42, 42, 43],
        [
            (0, "running", 1, None),
            (1000, "unknown", 42, "unknown code 42"),
            (3000, "unknown", 43, "unknown code 43"),
        ],
    ),
    ("non-integer float is an unknown code", [1.5], [(0, "unknown", "1.5", "unknown code 1.5")]),
]


@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES]
)
def test_state_from_a_tag(values: list[Any], expected: list[Any]) -> None:
    model = machine(state={"tag": "st", "codes": CODES})
    assert run_state(model, [("st", v, G) for v in values]) == expected


def test_bad_state_tag_means_no_data_until_good_values_return() -> None:
    model = machine(state={"tag": "st", "codes": CODES, "default": {"state": "idle"}})
    items = [
        ("st", 1, G),
        ("st", None, B),
        ("st", 7, B),
        ("st", 1, U),
        ("st", 1, G),
        ("st", None, G),
    ]
    assert run_state(model, items) == [
        (0, "running", 1, None),
        (1000, "unknown", None, "no data"),
        (3000, "running", 1, None),  # uncertain values are used
        (5000, "unknown", None, "no data"),  # a null value is no data either
    ]


def test_a_configured_default_state_is_used_for_unknown_codes() -> None:
    model = machine(state={"tag": "st", "codes": CODES, "default": {"state": "idle"}})
    assert run_state(model, [("st", 99, G)]) == [(0, "idle", 99, "unknown code 99")]


def test_huge_or_odd_values_become_short_string_codes() -> None:
    model = machine(state={"expression": "x << 64", "codes": CODES})
    [event] = model.update([Sample("x", T0, 2**63)])
    assert isinstance(event, StateEvent) and event.code == str(2**127)
    model = machine(state={"tag": "st", "codes": CODES})
    [event] = model.update([Sample("st", T0, "x" * 500)])
    assert isinstance(event, StateEvent) and event.code == "x" * 64
    assert event.reason is not None and len(event.reason) < 100


# ---------------------------------------------------------------- expressions

EXPRESSIONS = [
    ("a + b * 2", {"a": 1, "b": 3}, 7),
    ("(a - b) % 4", {"a": 1, "b": 3}, 2),
    ("a / b", {"a": 3, "b": 2}, 1.5),
    ("word & 0x0F", {"word": 0x3A}, 0x0A),
    ("word >> 4 | 1", {"word": 0x30}, 3),
    ("1 << bit", {"bit": 5}, 32),
    ("-a", {"a": 4}, -4),
    ("not a", {"a": 0}, True),
    ("a and b", {"a": 5, "b": 0}, 0),
    ("a or b", {"a": 0, "b": 7}, 7),
    ("0 < a <= 10", {"a": 10}, True),
    ("0 < a <= 10", {"a": 11}, False),
    ("a != b", {"a": "x", "b": "y"}, True),
    ("a in (1, 2, 3)", {"a": 2}, True),
    ("a not in [1, 2]", {"a": 2}, False),
    ("mode == 'AUTO'", {"mode": "AUTO"}, True),
    (
        "2 if tag('plc.fault') else 1 if tag('plc:run/1') else 0",
        {"plc.fault": False, "plc:run/1": True},
        1,
    ),
    ("None", {}, None),
    ("2.5", {}, 2.5),
]


@pytest.mark.parametrize(("source", "values", "expected"), EXPRESSIONS)
def test_expression_values(source: str, values: dict[str, Any], expected: Any) -> None:
    expr = Expression(source)
    assert expr.names == frozenset(values)
    result = expr.evaluate(values)
    assert result == expected and type(result) is type(expected)


REJECTED = [
    ("__import__('os')", "calling __import__()"),
    ("__import__('os').system('true')", "attribute access"),
    ("a.real", "attribute access"),
    ("lambda: 1", "lambda"),
    ("(lambda x: x)(1)", "lambda"),
    ("open('/etc/passwd')", "calling open()"),
    ("a[0]", "subscripting"),
    ("a ** 2", "operator **"),
    ("a // 2", "operator //"),
    ("a ^ 1", "operator ^"),
    ("~a", "operator ~"),
    ("a is None", "operator is"),
    ("[x for x in a]", "comprehension"),
    ("{'k': 1}", "dict literal"),
    ("f'{a}'", "f-string"),
    ("(y := 1)", "assignment expression"),
    ("tag(a)", "tag() with anything but one string literal"),
    ("tag('a', 'b')", "tag() with anything but one string literal"),
    ("b'raw'", "bytes literal"),
    ("a, b", "tuple or list as the result"),
    ("a +", "not valid"),
    ("-" * 1500 + "a", "nested too deeply"),
    ("a + " * 600 + "a", "over 2000 characters"),
    ("", "not valid"),
]


@pytest.mark.parametrize(("source", "construct"), REJECTED)
def test_expressions_outside_the_allowed_set_are_rejected(source: str, construct: str) -> None:
    with pytest.raises(ValueError, match=r"not allowed|not valid|too|over") as info:
        Expression(source)
    assert construct in str(info.value)
    with pytest.raises(ValueError, match=r"not allowed|not valid|too|over"):
        machine(state={"expression": source, "codes": CODES})


@pytest.mark.parametrize(
    ("source", "values", "problem"),
    [
        ("a / b", {"a": 1, "b": 0}, "division by zero"),
        ("a < b", {"a": 1, "b": "x"}, "not supported"),
        ("a * 1000000000", {"a": "x"}, "needs numbers"),
        ("1 << a", {"a": 10**6}, "outside 0..64"),
        ("a + b", {"a": 1}, "no value for 'b'"),
    ],
)
def test_expression_runtime_errors_are_expression_errors(
    source: str, values: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ExpressionError, match=problem):
        Expression(source).evaluate(values)


def test_state_expression_uses_the_latest_value_of_each_tag() -> None:
    model = machine(
        state={"expression": "2 if tag('plc.fault') else run", "codes": CODES},
    )
    assert model.tags == {"plc.fault", "run"}
    items = [
        ("run", 1, G),  # plc.fault not seen yet: no state yet
        ("plc.fault", False, G),
        ("run", 0, G),
        ("plc.fault", True, G),
        ("run", 1, G),  # still faulted: no event
        ("plc.fault", None, B),
        ("plc.fault", False, G),
    ]
    assert run_state(model, items) == [
        (1000, "running", 1, None),
        (2000, "idle", 0, None),
        (3000, "faulted", 2, "jam at infeed"),
        (5000, "unknown", None, "no data"),
        (6000, "running", 1, None),
    ]


def test_an_expression_is_evaluated_once_per_scan_timestamp() -> None:
    model = machine(state={"expression": "a - b", "codes": CODES})
    assert states(model.update([Sample("a", T0, 1), Sample("b", T0, 0)])) == [
        (0, "running", 1, None)
    ]
    # a and b move together in one scan: no transient state in between
    scan = [Sample("a", T0 + 1000, 5), Sample("b", T0 + 1000, 4)]
    assert model.update(scan) == []
    # two scans in one batch are two evaluations
    two = [Sample("a", T0 + 2000, 5), Sample("b", T0 + 2000, 5), Sample("a", T0 + 3000, 7)]
    assert states(model.update(two)) == [
        (2000, "idle", 0, None),
        (3000, "faulted", 2, "jam at infeed"),
    ]


def test_an_expression_that_fails_on_its_values_gives_unknown_state_and_a_log() -> None:
    with capture_logs() as logs:
        model = machine(state={"expression": "10 / a", "codes": {10: {"state": "running"}}})
        events = run_state(model, [("a", 1, G), ("a", 0, G), ("a", 0, G), ("a", 1, G)])
    assert events == [
        (0, "running", 10, None),
        (1000, "unknown", None, "expression error"),
        (3000, "running", 10, None),
    ]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "division by zero" in warnings[0]["error"]


def _gateway(machines: list[dict[str, Any]]) -> dict[str, Any]:
    tags = ["st", "plc.fault", "total", "good", "reject", "sku"]
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
        "machines": machines,
    }


def test_config_load_rejects_bad_expressions_and_unknown_tags_in_them() -> None:
    ok = {"name": "m1", "state": {"expression": "tag('plc.fault') or st", "codes": CODES}}
    GatewayConfig.model_validate(_gateway([ok]))
    bad = {"name": "m1", "state": {"expression": "st.__class__"}}
    with pytest.raises(ValidationError, match="attribute access is not allowed"):
        GatewayConfig.model_validate(_gateway([bad]))
    typo = {"name": "m1", "state": {"expression": "tag('plc.fautl') or st"}}
    with pytest.raises(ValidationError, match=r"refers to tag 'plc\.fautl'"):
        GatewayConfig.model_validate(_gateway([typo]))


# ---------------------------------------------------------------- counter deltas


def tracker(bits: int = 16, max_rate: float | None = None) -> CounterTracker:
    counter = Counter(tag="c", bits=bits, max_rate=max_rate)  # type: ignore[arg-type]
    return CounterTracker(counter, structlog.get_logger("test"))


def deltas(
    t: CounterTracker, items: list[tuple[Any, Quality]], *, step_ms: int = 1000
) -> list[int]:
    return [t.delta(Sample("c", T0 + step_ms * i, v, q)) for i, (v, q) in enumerate(items)]


COUNTER_CASES = [
    ("first value is a baseline", 16, [(500, G), (503, G), (503, G)], [0, 3, 0]),
    ("rollover at 16 bits", 16, [(65530, G), (65535, G), (4, G)], [0, 5, 5]),
    ("rollover at 32 bits", 32, [(2**32 - 2, G), (1, G)], [0, 3]),
    ("reset: parts since the reset", 16, [(1000, G), (1010, G), (3, G)], [0, 10, 3]),
    ("reset to zero", 32, [(7, G), (0, G), (2, G)], [0, 0, 2]),
    (
        "bad samples are ignored, counting resumes",
        16,
        [(10, G), (None, B), (0, B), (25, G)],
        [0, 0, 0, 15],
    ),
    ("a reset during a comms loss", 16, [(900, G), (None, B), (40, G)], [0, 0, 40]),
    ("uncertain values count", 16, [(10, G), (12, U)], [0, 2]),
    ("whole floats are accepted", 16, [(10.0, G), (12.0, G)], [0, 2]),
    ("absurd jump up: new baseline", 16, [(10, G), (40_000, G), (40_005, G)], [0, 0, 5]),
    (
        "absurd after a reset: new baseline",
        32,
        [(3_000_000_000, G), (2_500_000_000, G), (2_500_000_001, G)],
        [0, 0, 1],
    ),
]


@pytest.mark.parametrize(
    ("bits", "items", "expected"), [c[1:] for c in COUNTER_CASES], ids=[c[0] for c in COUNTER_CASES]
)
def test_counter_deltas(bits: int, items: list[tuple[Any, Quality]], expected: list[int]) -> None:
    assert deltas(tracker(bits), items) == expected


@pytest.mark.parametrize("junk", [12.5, -3, "12", True, None, 70_000, [1]])
def test_invalid_counter_values_are_ignored_with_one_warning(junk: Any) -> None:
    with capture_logs() as logs:
        t = tracker(16)
        got = deltas(t, [(10, G), (junk, G), (junk, G), (15, G)])
    assert got == [0, 0, 0, 5]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["tag"] == "c"


def test_max_rate_tells_a_reset_from_a_rollover_and_bounds_jumps() -> None:
    # without max_rate, a high 16-bit counter reset to a small value looks like a wrap
    assert deltas(tracker(16), [(60_000, G), (100, G)]) == [0, 5636]
    # 50 parts/s: in 1 s at most 100 parts (one second of grace), so this is a reset
    assert deltas(tracker(16, max_rate=50), [(60_000, G), (100, G)]) == [0, 100]
    assert deltas(tracker(16, max_rate=50), [(65_500, G), (64, G)]) == [0, 100]
    with capture_logs() as logs:
        got = deltas(tracker(32, max_rate=50), [(1000, G), (1101, G), (1150, G)])
    assert got == [0, 0, 49]
    assert any("implausible" in e["event"] for e in logs)
    # a long gap allows proportionally more
    assert deltas(tracker(32, max_rate=50), [(0, G), (30_000, G)], step_ms=600_000) == [0, 30_000]


# ---------------------------------------------------------------- count events


def counts(events: list[Event]) -> list[tuple[int, int, int, int, str | None]]:
    out = []
    for e in events:
        assert isinstance(e, CountEvent)
        assert e.good + e.reject == e.total and min(e.good, e.reject) >= 0
        out.append((e.ts - T0, e.total, e.good, e.reject, e.product))
    return out


def step(model: MachineModel, ts: int, **values: Any) -> list[Event]:
    return model.update([Sample(tag, T0 + ts, v) for tag, v in values.items()])


@pytest.mark.parametrize(
    ("counters", "first", "second", "expected"),
    [
        ({"total": "total"}, {"total": 10}, {"total": 14}, (4, 4, 0)),
        ({"good": "good"}, {"good": 10}, {"good": 13}, (3, 3, 0)),
        (
            {"total": "total", "reject": "reject"},
            {"total": 10, "reject": 1},
            {"total": 20, "reject": 3},
            (10, 8, 2),
        ),
        (
            {"good": "good", "reject": "reject"},
            {"good": 10, "reject": 1},
            {"good": 15, "reject": 3},
            (7, 5, 2),
        ),
        (
            {"total": "total", "good": "good"},
            {"total": 10, "good": 8},
            {"total": 20, "good": 17},
            (10, 9, 1),
        ),
        (
            {"total": "total", "good": "good", "reject": "reject"},
            {"total": 10, "good": 0, "reject": 1},
            {"total": 20, "good": 999, "reject": 3},
            (10, 8, 2),
        ),
    ],
)
def test_count_roles(
    counters: dict[str, str],
    first: dict[str, int],
    second: dict[str, int],
    expected: tuple[int, int, int],
) -> None:
    model = machine(counters=counters)
    assert step(model, 0, **first) == []
    assert model.flush(T0) == []  # a baseline is not a count
    step(model, 500, **second)
    assert counts(model.flush(T0 + 1000)) == [(500, *expected, None)]
    assert model.flush(T0 + 2000) == []


def test_with_all_three_counters_good_is_derived_and_not_listened_to() -> None:
    model = machine(counters={"total": "total", "good": "good", "reject": "reject"})
    assert model.tags == {"total", "reject"}


def test_deltas_between_flushes_make_one_event_with_the_latest_source_ts() -> None:
    model = machine(counters={"total": "total", "reject": "reject"})
    step(model, 0, total=100, reject=5)
    step(model, 1000, total=103)
    step(model, 2000, total=104, reject=6)
    step(model, 3000, total=104, reject=6)  # no change: not a contributing sample
    assert counts(model.flush(T0 + 5000)) == [(2000, 4, 3, 1, None)]


def test_rejects_ahead_of_the_total_wait_for_the_next_flush() -> None:
    model = machine(counters={"total": "total", "reject": "reject"})
    step(model, 0, total=0, reject=0)
    step(model, 1000, reject=2)  # the rejects of this scan arrived before its total
    assert model.flush(T0 + 1100) == []
    step(model, 1200, total=1)
    assert counts(model.flush(T0 + 1300)) == [(1200, 1, 0, 1, None)]
    step(model, 1400, total=5)
    assert counts(model.flush(T0 + 1500)) == [(1400, 4, 3, 1, None)]


def test_good_ahead_of_the_total_waits_too() -> None:
    model = machine(counters={"total": "total", "good": "good"})
    step(model, 0, total=0, good=0)
    step(model, 1000, good=3, total=1)
    assert counts(model.flush(T0)) == [(1000, 1, 1, 0, None)]
    step(model, 2000, total=3)
    assert counts(model.flush(T0)) == [(2000, 2, 2, 0, None)]


def test_product_goes_on_the_event_and_a_change_flushes_first() -> None:
    model = machine(counters={"total": "total"}, product="sku")
    assert model.tags == {"total", "sku"}
    step(model, 0, total=10)
    step(model, 1000, total=12, sku="A-1")  # counts before the first product belong to it
    assert counts(model.flush(T0)) == [(1000, 2, 2, 0, "A-1")]
    step(model, 2000, total=15)
    flushed = model.update([Sample("sku", T0 + 3000, 42), Sample("total", T0 + 3000, 16)])
    assert counts(flushed) == [(2000, 3, 3, 0, "A-1")]
    assert counts(model.flush(T0)) == [(3000, 1, 1, 0, "42")]
    model.update([Sample("sku", T0 + 4000, None, B), Sample("total", T0 + 4000, 18)])
    assert counts(model.flush(T0)) == [(4000, 2, 2, 0, "42")]  # a bad product tag keeps the last
    assert step(model, 5000, sku="42") == []


def test_other_tags_are_ignored() -> None:
    model = machine(state={"tag": "st", "codes": CODES}, counters={"total": "total"})
    assert model.tags == {"st", "total"}
    assert step(model, 0, temperature=21.5, total=1) == []
    assert step(model, 1000, temperature=99, total=2) == []
    assert counts(model.flush(T0)) == [(1000, 1, 1, 0, None)]


# ---------------------------------------------------------------- properties


@st.composite
def plc_runs(
    draw: st.DrawFn, *, max_rate: float | None
) -> tuple[int, list[tuple[int, int, int]], int]:
    """A simulated PLC counter: (bits, [(ts, observed value, quality flag)], true increments).

    Increments stay within what the model can tell from a wrap; resets go to a value the
    reset rule can tell from a rollover (both per the documented plausibility bound).
    """
    bits = draw(st.sampled_from([16, 32]))
    r = 1 << bits
    value = draw(st.one_of(st.integers(0, r - 1), st.integers(r - 300, r - 1), st.just(0)))
    ts, true, out = T0, 0, [(T0, value, 1)]
    for _ in range(draw(st.integers(1, 40))):
        elapsed = draw(st.sampled_from([100, 1000, 5000]))
        ts += elapsed
        bound = r // 2 if max_rate is None else min(r // 2, int(max_rate * (elapsed / 1000 + 1)))
        big = (
            st.integers(0, bound) if max_rate is not None else st.integers(0, 300) | st.just(bound)
        )
        if draw(st.integers(0, 9)) == 0:
            # reset: cur < prev, and the rollover reading must look implausible
            lo, hi = max(0, value - r + bound + 1), min(value - 1, bound)
            if lo <= hi:
                value = draw(st.integers(lo, hi))
                true += value
                out.append((ts, value, 1))
                continue
        n = draw(big)
        value = (value + n) % r
        true += n
        if draw(st.integers(0, 5)) == 0:  # a comms blip: a bad sample in between
            out.append((ts - 1, 0, 0))
        out.append((ts, value, 1))
    return bits, out, true


def _check_counter(
    run: tuple[int, list[tuple[int, int, int]], int], max_rate: float | None
) -> None:
    bits, readings, true = run
    model = machine(counters={"total": {"tag": "total", "bits": bits, "max_rate": max_rate}})
    events: list[Event] = []
    for i, (ts, value, ok) in enumerate(readings):
        q = G if ok else B
        events += model.update([Sample("total", ts, value if ok else None, q)])
        if i % 3 == 0:
            events += model.flush(ts)
    events += model.flush(T0)
    totals = [e.total for e in events if isinstance(e, CountEvent)]
    assert all(t > 0 for t in totals)
    for e in events:
        assert isinstance(e, CountEvent) and e.good + e.reject == e.total and e.reject == 0
    assert sum(totals) == true


@settings(max_examples=300, deadline=None)
@given(run=plc_runs(max_rate=None))
def test_counter_deltas_sum_to_the_true_increments(
    run: tuple[int, list[tuple[int, int, int]], int],
) -> None:
    _check_counter(run, None)


@settings(max_examples=200, deadline=None)
@given(run=plc_runs(max_rate=200.0))
def test_counter_deltas_with_max_rate_sum_to_the_true_increments(
    run: tuple[int, list[tuple[int, int, int]], int],
) -> None:
    _check_counter(run, 200.0)


@settings(max_examples=200, deadline=None)
@given(
    scans=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 3), st.booleans()),
        max_size=40,
    ),
    bits=st.sampled_from([16, 32]),
    start=st.integers(0, 2**16 - 1),
)
def test_total_and_reject_counts_add_up_whatever_the_arrival_order(
    scans: list[tuple[int, int, int, bool]], bits: int, start: int
) -> None:
    """Rejects are part of the total; each scan's two tags may land in different windows."""
    r = 1 << bits
    model = machine(
        counters={
            "total": {"tag": "total", "bits": bits},
            "reject": {"tag": "reject", "bits": bits},
        }
    )
    total, reject = start, (start * 7) % r
    events = model.update([Sample("total", T0, total), Sample("reject", T0, reject)])
    true_total = true_reject = 0
    ts = T0
    for good_n, reject_n, flush_between, reject_first in scans:
        ts += 1000
        total, reject = (total + good_n + reject_n) % r, (reject + reject_n) % r
        true_total, true_reject = true_total + good_n + reject_n, true_reject + reject_n
        pair = [Sample("total", ts, total), Sample("reject", ts + 1, reject)]
        first, second = pair[::-1] if reject_first else pair
        events += model.update([first])
        if flush_between:
            events += model.flush(ts)
        events += model.update([second])
    events += model.flush(ts)
    # production goes on after the window: whatever reject was carried gets its total
    events += model.update([Sample("total", ts + 1000, (total + true_reject + 1) % r)])
    events += model.flush(ts + 1000)
    made = counts(events)
    assert sum(c[1] for c in made) == true_total + true_reject + 1
    assert sum(c[3] for c in made) == true_reject
    assert all(c[1] > 0 for c in made)
