"""The wire contract: round trips, topics, and rejection of anything malformed."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import contract as c

NOW = 1_760_000_000_000
segment = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")
tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,30}\Z")
ts = st.integers(min_value=c.MIN_TS_MS, max_value=NOW + 3_600_000)
value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
sample = st.builds(c.Sample, tag=tag, ts=ts, value=value, quality=st.sampled_from(c.Quality))
reason = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=64).filter(
    lambda r: r == r.strip()
)
count_event = st.builds(
    lambda t, g, extra, p, by_reason: c.CountEvent(
        ts=t,
        total=g + extra + sum(by_reason.values()),
        good=g,
        reject=extra + sum(by_reason.values()),
        product=p,
        rejects=tuple(by_reason.items()),
    ),
    ts,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.one_of(st.none(), st.text(max_size=20)),
    st.dictionaries(reason, st.integers(1, 10**6), max_size=4),
)
state_event = st.builds(
    c.StateEvent,
    ts=ts,
    state=st.text(min_size=1, max_size=20),
    code=st.one_of(st.none(), st.integers(-1000, 1000), st.text(max_size=5)),
    reason=st.one_of(st.none(), st.text(max_size=40)),
)
path = st.builds(c.AssetPath, segment, segment, segment, segment)


@given(agent=segment, seq=st.integers(0, 2**63), samples=st.lists(sample, max_size=20))
def test_samples_round_trip(agent: str, seq: int, samples: list[c.Sample]) -> None:
    msg = c.SamplesMessage(agent=agent, seq=seq, samples=tuple(samples))
    assert c.decode(c.encode(msg), now_ms=NOW) == msg


@given(
    agent=segment,
    seq=st.integers(0, 2**63),
    events=st.lists(st.one_of(count_event, state_event), max_size=20),
)
def test_events_round_trip(agent: str, seq: int, events: list[c.Event]) -> None:
    msg = c.EventsMessage(agent=agent, seq=seq, events=tuple(events))
    assert c.decode(c.encode(msg), now_ms=NOW) == msg


@given(agent=segment, paths=st.lists(path, max_size=5), online=st.booleans(), t=ts)
def test_status_round_trip(agent: str, paths: list[c.AssetPath], online: bool, t: int) -> None:
    tags = tuple(c.TagInfo(path=p, tag="t1", datatype="float32", unit="degC") for p in paths)
    msg = c.StatusMessage(agent=agent, status="online" if online else "offline", ts=t, tags=tags)
    assert c.decode(c.encode(msg)) == msg


@settings(max_examples=300)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_are_rejected_cleanly(raw: bytes) -> None:
    with contextlib.suppress(c.ContractError):
        c.decode(raw, now_ms=NOW)


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    base=st.sampled_from(["samples", "events", "status"]),
    mutation=st.dictionaries(
        st.sampled_from(["v", "agent", "seq", "samples", "events", "status", "ts", "tags"]),
        json_value,
        max_size=3,
    ),
)
def test_structurally_wrong_json_is_rejected_cleanly(
    base: str, mutation: dict[str, object]
) -> None:
    payload: dict[str, object] = {"v": 1, "agent": "gw", "seq": 1}
    if base == "status":
        payload.update(status="online", ts=NOW)
    else:
        payload[base] = [{"tag": "x", "ts": NOW, "v": 1}]
    payload.update(mutation)
    with contextlib.suppress(c.ContractError):
        c.decode(json.dumps(payload).encode(), now_ms=NOW)


def _samples(**sample: object) -> bytes:
    return json.dumps({"v": 1, "agent": "gw", "seq": 1, "samples": [sample]}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[]", "payload must be a JSON object"),
        (b'{"v": 2, "agent": "gw", "seq": 1, "samples": []}', "contract version 2"),
        (b'{"v": 1, "agent": "g/w", "seq": 1, "samples": []}', "agent 'g/w'"),
        (b'{"v": 1, "agent": "gw", "seq": -1, "samples": []}', "seq must be"),
        (b'{"v": 1, "agent": "gw", "seq": 1}', "neither samples, events nor status"),
        (_samples(tag="x", ts=NOW, v="NaN"), None),  # a string "NaN" is a fine string value
        (_samples(tag="x", ts=100, v=1), "before 2000"),
        (_samples(tag="x", ts=NOW + 2 * 86_400_000, v=1), "more than a day ahead"),
        (_samples(tag="x", ts=1.5e12, v=1), "integer milliseconds"),
        (_samples(tag="x", ts=NOW, v=[1]), "not a bool, number, string or null"),
        (_samples(tag="x", ts=NOW, v=1, q="great"), "not good, uncertain or bad"),
        (_samples(tag="", ts=NOW, v=1), "not a valid tag name"),
        (
            b'{"v":1,"agent":"gw","seq":1,"samples":[{"tag":"x","ts":1760000000000,"v":NaN}]}',
            "JSON",
        ),
        (
            json.dumps(
                {
                    "v": 1,
                    "agent": "gw",
                    "seq": 1,
                    "events": [{"type": "count", "ts": NOW, "total": 5, "good": 3, "reject": 1}],
                }
            ).encode(),
            "good 3 + reject 1 != total 5",
        ),
        (
            json.dumps(
                {"v": 1, "agent": "gw", "seq": 1, "events": [{"type": "oops", "ts": NOW}]}
            ).encode(),
            "type 'oops'",
        ),
    ],
)
def test_malformed_payloads_name_the_problem(raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert c.decode(raw, now_ms=NOW)
        return
    with pytest.raises(c.ContractError, match=reason.replace("(", r"\(").replace("+", r"\+")):
        c.decode(raw, now_ms=NOW)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_go_out_as_bad_null(bad: float) -> None:
    msg = c.SamplesMessage(agent="gw", seq=1, samples=(c.Sample("x", NOW, bad),))
    out = c.decode(c.encode(msg), now_ms=NOW)
    assert isinstance(out, c.SamplesMessage)
    assert out.samples == (c.Sample("x", NOW, None, c.Quality.BAD),)


@given(p=path, kind=st.sampled_from(c.Kind), prefix=segment)
def test_topic_round_trip(p: c.AssetPath, kind: c.Kind, prefix: str) -> None:
    t = c.parse_topic(c.machine_topic(prefix, p, kind))
    assert (t.prefix, t.path, t.kind, t.is_status) == (prefix, p, kind, False)


def test_status_topic() -> None:
    t = c.parse_topic(c.status_topic("linepulse", "gw-1"))
    assert t.is_status and t.agent == "gw-1"
    assert c.status_topic("lp", "gw-1") == "lp/v1/_gateways/gw-1/status"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("linepulse", "outside the linepulse namespace"),
        ("linepulse/v2/a/b/c/d/samples", "contract version 'v2'"),
        ("linepulse/v1/a/b/c/samples", "must be <prefix>/v1"),
        ("linepulse/v1/a/b/c/d/alarms", "kind 'alarms'"),
        ("linepulse/v1/_gateways/gw/birth", "gateway topics"),
        ("linepulse/v1/a/b/+/d/samples", "not a valid name"),
    ],
)
def test_bad_topics_name_the_problem(topic: str, reason: str) -> None:
    with pytest.raises(c.ContractError, match=reason.replace("+", r"\+")):
        c.parse_topic(topic)


# ---------------------------------------------------------------- rejects by reason


def _count(**fields: object) -> bytes:
    event = {"type": "count", "ts": NOW, "total": 10, "good": 7, "reject": 3, **fields}
    return json.dumps({"v": 1, "agent": "gw", "seq": 1, "events": [event]}).encode()


def _rejects_of(raw: bytes) -> tuple[tuple[str, int], ...]:
    msg = c.decode(raw, now_ms=NOW)
    assert isinstance(msg, c.EventsMessage) and isinstance(msg.events[0], c.CountEvent)
    return msg.events[0].rejects


@pytest.mark.parametrize(
    ("rejects", "expected"),
    [
        (None, ()),
        ({}, ()),
        ({"underfill": 2}, (("underfill", 2),)),
        ({"underfill": 2, "cap missing": 1}, (("underfill", 2), ("cap missing", 1))),
        ({"x" * 64: 3}, (("x" * 64, 3),)),
        ({"Unterfüllung": 1}, (("Unterfüllung", 1),)),
    ],
)
def test_count_events_may_carry_rejects_by_reason(
    rejects: dict[str, int] | None, expected: tuple[tuple[str, int], ...]
) -> None:
    assert _rejects_of(_count(rejects=rejects)) == expected


@pytest.mark.parametrize(
    ("rejects", "reason"),
    [
        ({"underfill": 2, "cap missing": 2}, "rejects by reason add up to 4, more than reject 3"),
        ({"underfill": 0}, r"rejects\['underfill'\]: parts must be an integer >= 1, got 0"),
        ({"underfill": -1}, "parts must be an integer >= 1"),
        ({"underfill": 1.0}, "parts must be an integer >= 1, got 1.0"),
        ({"underfill": True}, "parts must be an integer >= 1, got True"),
        ({"underfill": "2"}, "parts must be an integer >= 1"),
        ({"": 1}, "reject reason '' must be 1-64 characters"),
        ({"x" * 65: 1}, "must be 1-64 characters"),
        ({"under\x00fill": 1}, "without control characters"),
        ({"under\nfill": 1}, "without control characters"),
        ({"under\x85fill": 1}, "without control characters"),
        ({" underfill": 1}, "spaces at either end"),
        ([["underfill", 1]], "rejects must be a JSON object"),
        ("underfill", "rejects must be a JSON object"),
    ],
)
def test_bad_rejects_by_reason_name_the_problem(rejects: object, reason: str) -> None:
    with pytest.raises(c.ContractError, match=r"events\[0\]: .*" + reason):
        c.decode(_count(rejects=rejects), now_ms=NOW)


def test_count_events_without_reasons_encode_as_before() -> None:
    """Additive: no ``rejects`` key unless there are some, so old readers see old bytes."""
    plain = c.CountEvent(ts=NOW, total=10, good=7, reject=3, product="SKU-1")
    assert c.event_to_dict(plain) == {
        "type": "count",
        "ts": NOW,
        "total": 10,
        "good": 7,
        "reject": 3,
        "product": "SKU-1",
    }
    with_reasons = c.CountEvent(NOW, 10, 7, 3, "SKU-1", rejects=(("underfill", 2),))
    assert c.event_to_dict(with_reasons) == {**c.event_to_dict(plain), "rejects": {"underfill": 2}}
    # an old payload (no key) decodes to no reasons; a payload with them round-trips
    assert _rejects_of(_count()) == ()
    msg = c.EventsMessage(agent="gw", seq=1, events=(with_reasons,))
    assert c.decode(c.encode(msg), now_ms=NOW) == msg


@settings(max_examples=200)
@given(
    reject=st.integers(0, 50),
    by_reason=st.dictionaries(reason, st.integers(-2, 60), max_size=5),
)
def test_rejects_by_reason_are_accepted_exactly_when_valid(
    reject: int, by_reason: dict[str, int]
) -> None:
    raw = _count(total=reject + 1, good=1, reject=reject, rejects=by_reason)
    valid = all(n >= 1 for n in by_reason.values()) and sum(by_reason.values()) <= reject
    if valid:
        assert _rejects_of(raw) == tuple(by_reason.items())
    else:
        with pytest.raises(c.ContractError):
            c.decode(raw, now_ms=NOW)
