"""The ingest's decoder: the fast samples path agrees with ``contract.decode`` (the oracle),
and every kind of bad input becomes a ``Rejected`` with a reason class."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_agent import contract as c
from ingest.decode import (
    Decoder,
    Events,
    Rejected,
    Samples,
    Status,
    fast_samples,
    samples_columns,
)

NOW = 1_750_000_000_000
PATH = c.AssetPath("plant", "press", "line-1", "m1")
SAMPLES_TOPIC = c.machine_topic("linepulse", PATH, c.Kind.SAMPLES)
EVENTS_TOPIC = c.machine_topic("linepulse", PATH, c.Kind.EVENTS)
STATUS_TOPIC = c.status_topic("linepulse", "gw-1")


def oracle(raw: bytes) -> c.Message | None:
    try:
        return c.decode(raw, now_ms=NOW)
    except c.ContractError:
        return None


def same(a: Samples, b: Samples) -> bool:
    return (a.agent, a.seq, a.path, a.times, a.tags, a.values, a.qualities, a.text) == (
        b.agent,
        b.seq,
        b.path,
        b.times,
        b.tags,
        b.values,
        b.qualities,
        b.text,
    )


# ---------------------------------------------------------------- generated payloads

valid_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,20}", fullmatch=True)
tags = st.one_of(
    valid_tags,
    st.sampled_from(["", "-bad", "a b", "x" * 129, "t\n", "é", "a+b", "#"]),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
timestamps = st.one_of(
    st.integers(c.MIN_TS_MS - 5, c.MIN_TS_MS + 5),
    st.integers(NOW + c.MAX_FUTURE_MS - 5, NOW + c.MAX_FUTURE_MS + 5),
    st.integers(c.MIN_TS_MS, NOW),
    st.integers(-(2**40), 2**50),
    st.floats(1e12, 2e12),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**65),
    st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
qualities = st.one_of(
    st.sampled_from(["good", "uncertain", "bad", "GOOD", "", "ok"]), st.integers(0, 2), st.none()
)


@st.composite
def sample_dicts(draw: Any) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.lists(st.none())))
    d: dict[str, Any] = {}
    for key, strat in (("tag", tags), ("ts", timestamps), ("v", values), ("q", qualities)):
        if draw(st.integers(0, 12)) != 0:  # sometimes the key is missing
            d[key] = draw(strat)
    return d


@st.composite
def payloads(draw: Any) -> bytes:
    env: dict[str, Any] = {}
    env["v"] = draw(st.sampled_from([1, 1, 1, 1.0, True, 2, "1", None]))
    env["agent"] = draw(
        st.one_of(st.sampled_from(["gw-1", "gw-2", "-x", "", "a/b", "gw\n"]), st.integers())
    )
    env["seq"] = draw(
        st.one_of(st.integers(0, 10**6), st.sampled_from([-1, 2**63, 2**64 - 1, True, 1.5, "3"]))
    )
    env["samples"] = draw(
        st.one_of(
            st.lists(sample_dicts(), max_size=6),
            st.sampled_from([None, {}, "x", 3]),
        )
    )
    for extra in ("status", "events"):
        if draw(st.integers(0, 15)) == 0:
            env[extra] = draw(st.sampled_from(["online", [], None]))
    for key in ("v", "agent", "seq", "samples"):
        if draw(st.integers(0, 30)) == 0:
            del env[key]
    raw = json.dumps(env).encode()
    if draw(st.integers(0, 6)) == 0:  # mutate the bytes
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        raw = raw[:pos] + draw(st.binary(min_size=0, max_size=3)) + raw[pos + 1 :]
    return raw


@st.composite
def valid_messages(draw: Any) -> c.SamplesMessage:
    samples = draw(
        st.lists(
            st.builds(
                c.Sample,
                tag=valid_tags,
                ts=st.integers(c.MIN_TS_MS, NOW + c.MAX_FUTURE_MS),
                value=st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8).filter(lambda s: "\x00" not in s),
                ),
                quality=st.sampled_from(list(c.Quality)),
            ),
            max_size=20,
        )
    )
    return c.SamplesMessage(
        agent="gw-1", seq=draw(st.integers(0, 2**63 - 1)), samples=tuple(samples)
    )


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_fast_path_accepts_only_what_the_contract_accepts(raw: bytes) -> None:
    fast = fast_samples(raw, path=PATH, now_ms=NOW, tags=set(), agents=set())
    ref = oracle(raw)
    if fast is not None:
        assert isinstance(ref, c.SamplesMessage), f"fast path accepted {raw!r}, contract: {ref}"
        assert same(fast, samples_columns(ref, PATH))
    elif isinstance(ref, c.SamplesMessage):
        # allowed (the decoder then falls back) but it should not happen for valid input
        pytest.fail(f"fast path refused a valid samples payload: {raw!r}")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_decoder_accepts_exactly_the_contracts_samples(raw: bytes) -> None:
    decoded = Decoder().decode(SAMPLES_TOPIC, raw, now_ms=NOW)
    ref = oracle(raw)
    if isinstance(ref, c.SamplesMessage) and ref.seq < 2**63:
        assert isinstance(decoded, Samples)
        assert same(decoded, samples_columns(ref, PATH))
    else:
        assert isinstance(decoded, Rejected)
        assert decoded.reason and decoded.kind


@settings(max_examples=150)
@given(valid_messages())
def test_valid_messages_take_the_fast_path_with_warm_caches(msg: c.SamplesMessage) -> None:
    raw = c.encode(msg)
    known: set[str] = set()
    for _ in range(2):  # cold, then with the tag cache filled
        fast = fast_samples(raw, path=PATH, now_ms=NOW, tags=known, agents=set())
        assert fast is not None
        assert same(fast, samples_columns(msg, PATH))


@given(st.binary(max_size=200))
def test_random_bytes_are_rejected_with_a_reason(raw: bytes) -> None:
    assume(oracle(raw) is None)
    for topic in (SAMPLES_TOPIC, EVENTS_TOPIC, STATUS_TOPIC):
        d = Decoder().decode(topic, raw, now_ms=NOW)
        assert isinstance(d, Rejected) and d.reason


def test_bools_are_zero_one_and_text_goes_apart() -> None:
    msg = c.SamplesMessage(
        agent="gw-1",
        seq=1,
        samples=(
            c.Sample("a", NOW, True),
            c.Sample("b", NOW, False),
            c.Sample("c", NOW, "hello", c.Quality.UNCERTAIN),
            c.Sample("d", NOW, None, c.Quality.BAD),
            c.Sample("e", NOW, 7),
        ),
    )
    d = Decoder().decode(SAMPLES_TOPIC, c.encode(msg), now_ms=NOW)
    assert isinstance(d, Samples)
    assert d.tags == ["a", "b", "d", "e"]
    assert d.values == [1.0, 0.0, None, 7.0]
    assert d.qualities == [0, 0, 2, 0]
    assert d.text == [(NOW, "c", "hello", 1)]
    assert d.count == 5


def _samples(**env: Any) -> bytes:
    base: dict[str, Any] = {"v": 1, "agent": "gw-1", "seq": 1}
    base.update(env)
    base.setdefault("samples", [{"tag": "t", "ts": NOW, "v": 1.0, "q": "good"}])
    return json.dumps(base).encode()


BAD = [
    # (case, topic, payload, reason class)
    ("not json", SAMPLES_TOPIC, b"{nope", "json"),
    ("not utf-8", SAMPLES_TOPIC, b'{"v": 1, "agent": "\xff"}', "json"),
    ("empty", SAMPLES_TOPIC, b"", "json"),
    ("a list", SAMPLES_TOPIC, b"[1, 2]", "invalid"),
    ("version 2", SAMPLES_TOPIC, _samples(v=2), "version"),
    ("no version", SAMPLES_TOPIC, b'{"agent": "gw-1", "seq": 1, "samples": []}', "version"),
    ("before 2000", SAMPLES_TOPIC, _samples(samples=[{"tag": "t", "ts": 9e11, "v": 1}]), "invalid"),
    (
        "ts before 2000",
        SAMPLES_TOPIC,
        _samples(samples=[{"tag": "t", "ts": 900_000_000_000, "v": 1}]),
        "timestamp",
    ),
    (
        "two days ahead",
        SAMPLES_TOPIC,
        _samples(samples=[{"tag": "t", "ts": NOW + 2 * 86_400_000, "v": 1}]),
        "timestamp",
    ),
    ("NaN", SAMPLES_TOPIC, _samples().replace(b"1.0", b"NaN"), "json"),
    ("Infinity", SAMPLES_TOPIC, _samples().replace(b"1.0", b"Infinity"), "json"),
    ("1e999", SAMPLES_TOPIC, _samples().replace(b"1.0", b"1e999"), "json"),
    ("bad tag", SAMPLES_TOPIC, _samples(samples=[{"tag": "a b", "ts": NOW, "v": 1}]), "invalid"),
    (
        "bad quality",
        SAMPLES_TOPIC,
        _samples(samples=[{"tag": "t", "ts": NOW, "q": "ok"}]),
        "invalid",
    ),
    ("negative seq", SAMPLES_TOPIC, _samples(seq=-1), "invalid"),
    ("seq over bigint", SAMPLES_TOPIC, _samples(seq=2**63), "unstorable"),
    (
        "NUL in text",
        SAMPLES_TOPIC,
        _samples(samples=[{"tag": "t", "ts": NOW, "v": "a\u0000b"}]),
        "unstorable",
    ),
    ("outside the namespace", "other/v1/s/a/l/m/samples", _samples(), "topic"),
    ("wrong topic version", "linepulse/v2/s/a/l/m/samples", _samples(), "topic"),
    ("short topic", "linepulse/v1/s/a/samples", _samples(), "topic"),
    ("unknown kind", "linepulse/v1/s/a/l/m/alarms", _samples(), "topic"),
    ("bad segment", "linepulse/v1/s/a b/l/m/samples", _samples(), "topic"),
    ("events on samples", SAMPLES_TOPIC, b'{"v":1,"agent":"gw-1","seq":1,"events":[]}', "mismatch"),
    ("samples on events", EVENTS_TOPIC, _samples(), "mismatch"),
    (
        "status on machine",
        SAMPLES_TOPIC,
        b'{"v":1,"agent":"gw-1","status":"online","ts":1750000000000}',
        "mismatch",
    ),
    ("samples on status", STATUS_TOPIC, _samples(), "mismatch"),
    (
        "status of another agent",
        STATUS_TOPIC,
        b'{"v":1,"agent":"gw-2","status":"online","ts":1750000000000}',
        "mismatch",
    ),
    (
        "count over integer",
        EVENTS_TOPIC,
        json.dumps(
            {
                "v": 1,
                "agent": "gw-1",
                "seq": 1,
                "events": [
                    {"type": "count", "ts": NOW, "total": 2**31, "good": 2**31, "reject": 0}
                ],
            }
        ).encode(),
        "unstorable",
    ),
    (
        "good + reject != total",
        EVENTS_TOPIC,
        json.dumps(
            {
                "v": 1,
                "agent": "gw-1",
                "seq": 1,
                "events": [{"type": "count", "ts": NOW, "total": 3, "good": 1, "reject": 1}],
            }
        ).encode(),
        "invalid",
    ),
    ("oversize", SAMPLES_TOPIC, b" " * (64 * 1024 + 1), "oversize"),
]


@pytest.mark.parametrize(("case", "topic", "raw", "kind"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_its_reason_class(
    case: str, topic: str, raw: bytes, kind: str
) -> None:
    d = Decoder(max_bytes=64 * 1024).decode(topic, raw, now_ms=NOW)
    assert isinstance(d, Rejected), case
    assert d.kind == kind, d.reason
    assert d.reason


def test_events_and_status_decode() -> None:
    ev = c.EventsMessage(
        agent="gw-1",
        seq=5,
        events=(c.StateEvent(NOW, "running", code=3), c.CountEvent(NOW, 10, 9, 1, "sku")),
    )
    d = Decoder().decode(EVENTS_TOPIC, c.encode(ev), now_ms=NOW)
    assert isinstance(d, Events)
    assert [s.state for s in d.states] == ["running"] and d.counts[0].total == 10
    st_msg = c.StatusMessage(agent="gw-1", status="online", ts=NOW)
    s = Decoder().decode(STATUS_TOPIC, c.encode(st_msg), now_ms=NOW)
    assert isinstance(s, Status) and s.status == "online"


def test_fast_path_is_much_faster_than_the_contract() -> None:
    """Not a benchmark: a guard that the fast path stays fast (generous factor)."""
    msg = c.SamplesMessage(
        agent="gw-1",
        seq=1,
        samples=tuple(c.Sample(f"tag_{i % 100}", NOW + i, i * 0.5) for i in range(1000)),
    )
    raw = c.encode(msg)
    known: set[str] = set()
    t0 = time.perf_counter()
    for _ in range(20):
        c.decode(raw, now_ms=NOW)
    slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(20):
        assert fast_samples(raw, path=PATH, now_ms=NOW, tags=known) is not None
    fast = time.perf_counter() - t0
    assert fast * 2 < slow, (fast, slow)
