"""Report by exception: table tests of the rules, and properties of deadbands and heartbeats."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import GatewayConfig
from edge_agent.contract import Quality, Sample
from edge_agent.engine import TagEngine

T0 = 1_700_000_000_000
G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def make_config(tags: list[dict[str, Any]], *, heartbeat: float = 60.0) -> GatewayConfig:
    """A gateway with one Modbus device holding the given tags (addresses assigned)."""
    return GatewayConfig.model_validate(
        {
            "agent": {"id": "gw-1"},
            "line": {"site": "s", "area": "a", "line": "l"},
            "heartbeat": heartbeat,
            "devices": [
                {
                    "name": "plc",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "machine": "m1",
                    "tags": [{"address": 4 * i, **t} for i, t in enumerate(tags)],
                }
            ],
        }
    )


def engine_for(**tag: Any) -> TagEngine:
    return TagEngine(make_config([{"name": "x", **tag}]))


def feed(engine: TagEngine, items: list[tuple[Any, Quality]], *, tag: str = "x") -> list[int]:
    """Offer the values one by one; return the indices of those reported."""
    reported = []
    for i, (value, quality) in enumerate(items):
        out = engine.offer([Sample(tag=tag, ts=T0 + i, value=value, quality=quality)])
        assert len(out) <= 1
        if out:
            assert out[0].value is value and out[0].ts == T0 + i
            reported.append(i)
    return reported


ABS_HALF = {"deadband": {"absolute": 0.5}}
PCT_10 = {"deadband": {"percent": 10}}

CASES = [
    ("first value, then equal ones", {}, [(7, G), (7, G), (7, G)], [0]),
    ("int and float that are equal", {}, [(2, G), (2.0, G), (3, G)], [0, 2]),
    ("no deadband: any change", {}, [(1.0, G), (1.0001, G), (1.0001, G), (1.0, G)], [0, 1, 3]),
    ("absolute is strict: == deadband is not reported", ABS_HALF, [(10, G), (10.5, G)], [0]),
    ("absolute, from the last REPORTED", ABS_HALF, [(10, G), (10.3, G), (10.6, G)], [0, 2]),
    ("absolute, both ways", ABS_HALF, [(10, G), (10.6, G), (10.2, G), (10.0, G)], [0, 1, 3]),
    ("absolute zero = any change", {"deadband": {"absolute": 0}}, [(1, G), (1, G), (2, G)], [0, 2]),
    ("percent of the last reported", PCT_10, [(100, G), (109, G), (111, G), (100, G)], [0, 2]),
    ("percent, negative values", PCT_10, [(-100, G), (-91, G), (-89, G)], [0, 2]),
    ("percent with last 0: any change", PCT_10, [(5, G), (0, G), (0, G), (1e-9, G)], [0, 1, 3]),
    ("bools: any change", ABS_HALF, [(True, G), (True, G), (False, G), (False, G)], [0, 2]),
    ("strings: any change", {}, [("run", G), ("run", G), ("stop", G)], [0, 2]),
    ("type change is a change", {}, [(1, G), (True, G), ("1", G), (None, G)], [0, 1, 2, 3]),
    ("uint64 values too close for a float", {}, [(2**64 - 1, G), (2**64 - 2, G)], [0, 1]),
    ("NaN: repeated NaN is no change", {}, [(math.nan, G), (math.nan, G), (1.0, G)], [0, 2]),
    (
        "every quality change, whatever the value",
        ABS_HALF,
        [(1, G), (1, U), (1, U), (1, G), (None, B), (None, B), (5, B), (1, G)],
        [0, 1, 3, 4, 7],
    ),
    ("bad first is reported", {}, [(None, B), (None, B), (3, G)], [0, 2]),
]


@pytest.mark.parametrize(
    ("tag", "items", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_report_by_exception_rules(
    tag: dict[str, Any], items: list[tuple[Any, Quality]], expected: list[int]
) -> None:
    assert feed(engine_for(**tag), items) == expected


def test_one_batch_is_filtered_in_order_and_tags_are_independent() -> None:
    engine = TagEngine(make_config([{"name": "a"}, {"name": "b", **ABS_HALF}]))
    batch = [
        Sample("a", T0, 1),
        Sample("b", T0, 10.0),
        Sample("a", T0 + 1, 1),
        Sample("b", T0 + 1, 10.4),
        Sample("a", T0 + 2, 2),
        Sample("b", T0 + 2, 10.6),
    ]
    assert engine.offer(batch) == [batch[0], batch[1], batch[4], batch[5]]
    assert engine.last_reported("b") == batch[5]


def test_unknown_tags_pass_through_unfiltered_and_get_no_heartbeat() -> None:
    engine = engine_for()
    same = [Sample("not.configured", T0 + i, 1) for i in range(3)]
    assert engine.offer(same) == same
    assert engine.last_reported("not.configured") is None
    assert engine.heartbeats(T0 + 10**9) == []


def test_heartbeat_resends_the_last_value_with_its_quality() -> None:
    engine = TagEngine(make_config([{"name": "a", "heartbeat": "5s"}, {"name": "b"}], heartbeat=60))
    assert engine.heartbeats(T0) == []  # nothing reported yet, nothing to repeat
    engine.offer([Sample("a", T0, 1.5, U), Sample("b", T0, None, B)])
    assert engine.heartbeats(T0 + 4_999) == []
    assert engine.heartbeats(T0 + 5_000) == [Sample("a", T0 + 5_000, 1.5, U)]
    assert engine.heartbeats(T0 + 9_999) == []
    # a real report restarts the period
    engine.offer([Sample("a", T0 + 10_500, 9.0, G)])
    assert engine.heartbeats(T0 + 15_499) == []
    assert engine.heartbeats(T0 + 15_500) == [Sample("a", T0 + 15_500, 9.0, G)]
    # b uses the gateway heartbeat, and stays bad
    beats = engine.heartbeats(T0 + 60_000)
    assert Sample("b", T0 + 60_000, None, B) in beats
    # after a heartbeat the same value is still not reported
    assert engine.offer([Sample("a", T0 + 60_001, 9.0, G)]) == []


def test_a_lagging_source_clock_does_not_make_every_tag_overdue() -> None:
    engine = TagEngine(make_config([{"name": "a", "heartbeat": "10s"}]))
    lag = 10 * 60_000  # the PLC clock is ten minutes behind the gateway
    engine.heartbeats(T0)
    for second in range(1, 30):
        now = T0 + second * 1000
        engine.offer([Sample("a", now - lag, float(second))])
        assert engine.heartbeats(now) == []


# ---------------------------------------------------------------- properties

values = st.one_of(
    st.integers(-40, 40).map(lambda i: i * 0.25),  # hits deadband edges exactly
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-(10**6), 10**6),
)
qualities = st.sampled_from([G, G, G, U, B])


def _differs(v: float, last: float, *, absolute: float | None, percent: float | None) -> bool:
    if absolute is not None:
        return abs(v - last) > absolute
    assert percent is not None
    return v != last if last == 0 else abs(v - last) > percent / 100 * abs(last)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(values, qualities), min_size=1, max_size=60),
    absolute=st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 3.0])),
    percent=st.sampled_from([0.0, 1.0, 10.0, 50.0]),
)
def test_deadband_properties(
    items: list[tuple[float, Quality]], absolute: float | None, percent: float
) -> None:
    band = {"absolute": absolute} if absolute is not None else {"percent": percent}
    pct = None if absolute is not None else percent
    engine = engine_for(deadband=band)
    reported = set(feed(engine, items))
    assert 0 in reported  # the first value always goes out
    last: tuple[float, Quality] | None = None
    for i, (v, q) in enumerate(items):
        if i > 0 and q is not items[i - 1][1]:
            assert i in reported, "a quality change was not reported"
        if i in reported:
            if last is not None and q is last[1]:
                assert q is not B, "a repeated bad sample was reported"
                assert _differs(v, last[0], absolute=absolute, percent=pct)
            last = (v, q)
        else:
            # what was held back is within the deadband of what the cloud last saw
            assert last is not None and q is last[1]
            assert q is B or not _differs(v, last[0], absolute=absolute, percent=pct)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("sample"), st.integers(0, 2), st.integers(0, 3), qualities),
            st.tuples(st.just("beat"), st.integers(0, 9_000)),
        ),
        max_size=80,
    )
)
def test_heartbeat_properties(ops: list[tuple[Any, ...]]) -> None:
    beats_ms = {"t0": 2_000, "t1": 5_000, "t2": 60_000}
    config = make_config(
        [{"name": "t0", "heartbeat": "2s"}, {"name": "t1", "heartbeat": "5s"}, {"name": "t2"}],
        heartbeat=60,
    )
    engine = TagEngine(config)
    now = T0
    last: dict[str, Sample] = {}  # what the cloud last received, per tag
    for op in ops:
        if op[0] == "sample":
            _, i, value, quality = op
            now += 100
            for s in engine.offer([Sample(f"t{i}", now, value, quality)]):
                last[s.tag] = s
            continue
        now += op[1]
        for beat in engine.heartbeats(now):
            previous = last[beat.tag]
            assert now - previous.ts >= beats_ms[beat.tag], "heartbeat before it was due"
            assert (beat.ts, beat.value, beat.quality) == (now, previous.value, previous.quality)
            last[beat.tag] = beat
        for tag, s in last.items():
            assert now - s.ts < beats_ms[tag], f"{tag} was left quiet past its heartbeat"
