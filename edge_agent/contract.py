"""The linepulse wire contract, version 1: topics and payloads between edge and cloud.

This module is the one piece the edge agent and the ingest service both import. It uses
the standard library only (``orjson`` when present, for speed), so a gateway and a server
agree on the contract without sharing any other dependency.

Topics follow the ISA-95 asset path::

    <prefix>/v1/<site>/<area>/<line>/<machine>/samples
    <prefix>/v1/<site>/<area>/<line>/<machine>/events
    <prefix>/v1/_gateways/<agent>/status          (retained birth, last will)

A message is a batch. Every samples or events message carries the agent id, a sequence
number that never repeats for that agent, and the contract version; ``(agent, seq)`` is
the idempotency key. Timestamps are integer milliseconds since the Unix epoch, UTC, from
the source.

Payloads (JSON, UTF-8)::

    samples: {"v": 1, "agent": "gw-1", "seq": 7, "samples": [
                 {"tag": "temperature", "ts": 1700000000000, "v": 21.5, "q": "good"}, ...]}
    events:  {"v": 1, "agent": "gw-1", "seq": 8, "events": [
                 {"type": "state", "ts": ..., "state": "faulted", "code": 31,
                  "reason": "jam at infeed"},
                 {"type": "count", "ts": ..., "total": 12, "good": 9, "reject": 3,
                  "product": "SKU-1", "rejects": {"underfill": 2}}]}
    status:  {"v": 1, "agent": "gw-1", "status": "online", "ts": ...,
              "tags": [{"path": "site/area/line/machine", "tag": "temperature",
                        "unit": "degC", "datatype": "float32"}]}

Rejects by reason (additive to v1): a count event may carry ``rejects``, reason -> parts
(positive integers; a reason has 1-64 characters, no control characters, no space at either
end), summing to at most the event's ``reject``; rejects no reason counter saw stay
unattributed. The key is left out when empty, so such events are byte-identical to older
agents' and old readers ignore it. A PLC may count a reject and its reason in different
scans: an agent sends reason counts in the event of the window they are seen in, up to its
``reject``, and carries the excess to the next event, so the reasons sent never exceed the
rejects sent (``edge_agent.counters``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

try:  # orjson is several times faster; the contract must not depend on it.
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None  # type: ignore[assignment]

VERSION: Final = 1
DEFAULT_PREFIX: Final = "linepulse"
GATEWAYS: Final = "_gateways"
# Broker limits are commonly 256 KiB to 1 MiB; batches are cut well below the smallest.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
# Source timestamps outside this window are rejected as clock faults (2000-01-01 .. ).
MIN_TS_MS: Final = 946_684_800_000
MAX_FUTURE_MS: Final = 24 * 3600 * 1000
MAX_REASON_CHARS: Final = 64

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,127}$")


class ContractError(ValueError):
    """A topic or payload that does not follow the wire contract; the message says why."""


class Kind(StrEnum):
    """What a machine topic carries."""

    SAMPLES = "samples"
    EVENTS = "events"


class Quality(StrEnum):
    """OPC UA-style value quality, reduced to its three classes."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


Value = bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class AssetPath:
    """An ISA-95 machine path: site / area / line / machine."""

    site: str
    area: str
    line: str
    machine: str

    def __post_init__(self) -> None:
        for name in ("site", "area", "line", "machine"):
            check_segment(getattr(self, name), what=name)

    def __str__(self) -> str:
        return f"{self.site}/{self.area}/{self.line}/{self.machine}"

    @classmethod
    def parse(cls, text: str) -> AssetPath:
        """Parse ``site/area/line/machine``."""
        parts = text.split("/")
        if len(parts) != 4:
            raise ContractError(f"asset path {text!r} must have four parts: site/area/line/machine")
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one tag at one source time."""

    tag: str
    ts: int
    value: Value
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A machine entered a state (with the raw code and a reason when known)."""

    ts: int
    state: str
    code: int | str | None = None
    reason: str | None = None
    type: Literal["state"] = "state"


@dataclass(frozen=True, slots=True)
class CountEvent:
    """Parts made since the previous count event of the same machine."""

    ts: int
    total: int
    good: int
    reject: int
    product: str | None = None
    # Rejected parts by reason, (reason, parts) in the order sent; their sum <= reject.
    rejects: tuple[tuple[str, int], ...] = ()
    type: Literal["count"] = "count"


Event = StateEvent | CountEvent


@dataclass(frozen=True, slots=True)
class TagInfo:
    """Metadata of a tag, announced in the gateway birth so the cloud can register it."""

    path: AssetPath
    tag: str
    datatype: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class SamplesMessage:
    agent: str
    seq: int
    samples: tuple[Sample, ...]
    v: int = VERSION


@dataclass(frozen=True, slots=True)
class EventsMessage:
    agent: str
    seq: int
    events: tuple[Event, ...]
    v: int = VERSION


@dataclass(frozen=True, slots=True)
class StatusMessage:
    agent: str
    status: Literal["online", "offline"]
    ts: int
    tags: tuple[TagInfo, ...] = field(default=())
    v: int = VERSION


Message = SamplesMessage | EventsMessage | StatusMessage


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: either a machine topic (path + kind) or a gateway status topic."""

    prefix: str
    path: AssetPath | None = None
    kind: Kind | None = None
    agent: str | None = None

    @property
    def is_status(self) -> bool:
        return self.agent is not None


# ---------------------------------------------------------------- validation helpers


def check_segment(value: object, *, what: str) -> str:
    """A topic segment: letters, digits, ``_ . -``; no MQTT wildcards or separators."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ContractError(
            f"{what} {value!r} is not a valid name: use 1-64 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return value


def check_tag(value: object) -> str:
    if not isinstance(value, str) or not _TAG.match(value):
        raise ContractError(
            f"tag {value!r} is not a valid tag name: 1-128 letters, digits or '_ . : / -'"
        )
    return value


def check_reason(value: object) -> str:
    """A reject reason: 1-64 characters, no control characters, no space at either end."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_REASON_CHARS
        or value != value.strip()
        or any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in value)  # C0, DEL, C1
    ):
        raise ContractError(
            f"reject reason {value!r} must be 1-{MAX_REASON_CHARS} characters, without"
            " control characters or spaces at either end"
        )
    return value


def check_ts(value: object, *, what: str = "ts", now_ms: int | None = None) -> int:
    """A timestamp in integer ms, not before 2000 and not more than a day ahead of now."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{what} must be integer milliseconds since 1970 UTC, got {value!r}")
    if value < MIN_TS_MS:
        raise ContractError(f"{what} {value} is before 2000-01-01: the source clock is wrong")
    if now_ms is not None and value > now_ms + MAX_FUTURE_MS:
        raise ContractError(f"{what} {value} is more than a day ahead of now ({now_ms})")
    return value


def _check_value(value: object) -> Value:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ContractError(f"value {value} does not fit 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(f"value {value!r} is not a finite number")
        return value
    raise ContractError(f"value {value!r} is not a bool, number, string or null")


def _check_int(value: object, *, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ContractError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_agent(value: object) -> str:
    return check_segment(value, what="agent")


# ---------------------------------------------------------------- topics


def machine_topic(prefix: str, path: AssetPath, kind: Kind) -> str:
    """The topic a machine's samples or events go to."""
    check_segment(prefix, what="prefix")
    return f"{prefix}/v{VERSION}/{path}/{Kind(kind).value}"


def status_topic(prefix: str, agent: str) -> str:
    """The gateway status topic (retained birth, last will)."""
    check_segment(prefix, what="prefix")
    return f"{prefix}/v{VERSION}/{GATEWAYS}/{_check_agent(agent)}/status"


def subscription_filters(prefix: str) -> list[str]:
    """The MQTT filters that cover the whole v1 namespace under a prefix."""
    check_segment(prefix, what="prefix")
    return [f"{prefix}/v{VERSION}/#"]


def parse_topic(topic: str) -> Topic:
    """Parse a v1 topic; raises ContractError naming what is wrong."""
    parts = topic.split("/")
    if len(parts) < 3:
        raise ContractError(f"topic {topic!r} is outside the linepulse namespace")
    prefix, version = parts[0], parts[1]
    check_segment(prefix, what="prefix")
    if version != f"v{VERSION}":
        raise ContractError(f"topic {topic!r} has contract version {version!r}, expected v1")
    rest = parts[2:]
    if rest[0] == GATEWAYS:
        if len(rest) != 3 or rest[2] != "status":
            raise ContractError(f"topic {topic!r}: gateway topics are _gateways/<agent>/status")
        return Topic(prefix=prefix, agent=_check_agent(rest[1]))
    if len(rest) != 5:
        raise ContractError(
            f"topic {topic!r} must be <prefix>/v1/<site>/<area>/<line>/<machine>/<kind>"
        )
    try:
        kind = Kind(rest[4])
    except ValueError:
        raise ContractError(
            f"topic {topic!r} has kind {rest[4]!r}, expected samples or events"
        ) from None
    return Topic(prefix=prefix, path=AssetPath(*rest[:4]), kind=kind)


# ---------------------------------------------------------------- encoding


def _dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _loads(raw: bytes | bytearray) -> Any:
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw)


def sample_to_dict(s: Sample) -> dict[str, Any]:
    """A sample as JSON; a non-finite float goes out as null with quality bad, never as NaN."""
    v = s.value
    if isinstance(v, float) and not math.isfinite(v):
        return {"tag": s.tag, "ts": s.ts, "v": None, "q": Quality.BAD.value}
    return {"tag": s.tag, "ts": s.ts, "v": v, "q": s.quality.value}


def event_to_dict(e: Event) -> dict[str, Any]:
    if isinstance(e, StateEvent):
        return {"type": "state", "ts": e.ts, "state": e.state, "code": e.code, "reason": e.reason}
    out: dict[str, Any] = {
        "type": "count",
        "ts": e.ts,
        "total": e.total,
        "good": e.good,
        "reject": e.reject,
        "product": e.product,
    }
    if e.rejects:  # left out when empty: old readers and old payloads stay unchanged
        out["rejects"] = dict(e.rejects)
    return out


def encode_body(kind: Kind, items: Sequence[Sample] | Sequence[Event]) -> bytes:
    """The JSON array of a batch, without the envelope (the outbox stores this)."""
    if kind is Kind.SAMPLES:
        return _dumps([sample_to_dict(s) for s in items])  # type: ignore[arg-type]
    return _dumps([event_to_dict(e) for e in items])  # type: ignore[arg-type]


def wrap_body(*, agent: str, seq: int, kind: Kind, body: bytes) -> bytes:
    """Put the envelope around an encoded batch body; cheap, no re-encoding."""
    head = _dumps({"v": VERSION, "agent": agent, "seq": seq})
    return head[:-1] + b',"' + kind.value.encode() + b'":' + body + b"}"


def encode(msg: Message) -> bytes:
    """Encode a message to its JSON payload."""
    if isinstance(msg, SamplesMessage):
        body = encode_body(Kind.SAMPLES, msg.samples)
        return wrap_body(agent=msg.agent, seq=msg.seq, kind=Kind.SAMPLES, body=body)
    if isinstance(msg, EventsMessage):
        body = encode_body(Kind.EVENTS, msg.events)
        return wrap_body(agent=msg.agent, seq=msg.seq, kind=Kind.EVENTS, body=body)
    return _dumps(
        {
            "v": msg.v,
            "agent": msg.agent,
            "status": msg.status,
            "ts": msg.ts,
            "tags": [
                {"path": str(t.path), "tag": t.tag, "datatype": t.datatype, "unit": t.unit}
                for t in msg.tags
            ],
        }
    )


def _obj(value: object, *, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: object, *, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _opt_str(value: object, *, what: str, limit: int = 256) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ContractError(f"{what} must be a string of at most {limit} characters or null")
    return value


def _decode_sample(d: object, i: int, now_ms: int | None) -> Sample:
    o = _obj(d, what=f"samples[{i}]")
    try:
        quality = Quality(o.get("q", "good"))
    except ValueError:
        raise ContractError(
            f"samples[{i}].q {o.get('q')!r} is not good, uncertain or bad"
        ) from None
    try:
        return Sample(
            tag=check_tag(o.get("tag")),
            ts=check_ts(o.get("ts"), now_ms=now_ms),
            value=_check_value(o.get("v")),
            quality=quality,
        )
    except ContractError as err:
        raise ContractError(f"samples[{i}]: {err}") from None


def _decode_event(d: object, i: int, now_ms: int | None) -> Event:
    o = _obj(d, what=f"events[{i}]")
    try:
        ts = check_ts(o.get("ts"), now_ms=now_ms)
        kind = o.get("type")
        if kind == "state":
            state = o.get("state")
            if not isinstance(state, str) or not state:
                raise ContractError("state must be a non-empty string")
            code = o.get("code")
            if code is not None and (isinstance(code, bool) or not isinstance(code, (int, str))):
                raise ContractError(f"code {code!r} must be an integer, a string or null")
            return StateEvent(
                ts=ts, state=state, code=code, reason=_opt_str(o.get("reason"), what="reason")
            )
        if kind == "count":
            return _decode_count(o, ts)
        raise ContractError(f"type {kind!r} is not state or count")
    except ContractError as err:
        raise ContractError(f"events[{i}]: {err}") from None


def _decode_count(o: Mapping[str, Any], ts: int) -> CountEvent:
    total = _check_int(o.get("total"), what="total")
    good = _check_int(o.get("good"), what="good")
    reject = _check_int(o.get("reject"), what="reject")
    if good + reject != total:
        raise ContractError(f"good {good} + reject {reject} != total {total}")
    return CountEvent(
        ts=ts,
        total=total,
        good=good,
        reject=reject,
        product=_opt_str(o.get("product"), what="product"),
        rejects=_decode_rejects(o.get("rejects"), reject),
    )


def _decode_rejects(value: object, reject: int) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    out = []
    for reason, n in _obj(value, what="rejects").items():
        try:
            out.append((check_reason(reason), _check_int(n, what="parts", minimum=1)))
        except ContractError as err:
            raise ContractError(f"rejects[{reason!r}]: {err}") from None
    if (attributed := sum(n for _, n in out)) > reject:
        raise ContractError(f"rejects by reason add up to {attributed}, more than reject {reject}")
    return tuple(out)


def decode(raw: bytes | bytearray, *, now_ms: int | None = None) -> Message:
    """Decode and validate a payload; any defect raises ContractError saying what it is.

    ``now_ms`` enables the "not more than a day ahead" check on timestamps.
    """
    if len(raw) > MAX_PAYLOAD_BYTES * 4:
        raise ContractError(f"payload of {len(raw)} bytes is over the limit")
    try:
        data = _loads(raw)
    except (ValueError, TypeError) as err:
        raise ContractError(f"payload is not valid UTF-8 JSON: {err}") from None
    o = _obj(data, what="payload")
    v = o.get("v")
    if v != VERSION:
        raise ContractError(f"contract version {v!r} is not supported (this side speaks 1)")
    agent = _check_agent(o.get("agent"))
    if "status" in o:
        return _decode_status(o, agent)
    seq = _check_int(o.get("seq"), what="seq")
    if "samples" in o:
        items = _list(o["samples"], what="samples")
        return SamplesMessage(
            agent=agent,
            seq=seq,
            samples=tuple(_decode_sample(d, i, now_ms) for i, d in enumerate(items)),
        )
    if "events" in o:
        items = _list(o["events"], what="events")
        return EventsMessage(
            agent=agent,
            seq=seq,
            events=tuple(_decode_event(d, i, now_ms) for i, d in enumerate(items)),
        )
    raise ContractError("payload has neither samples, events nor status")


def _decode_status(o: Mapping[str, Any], agent: str) -> StatusMessage:
    status = o.get("status")
    if status not in ("online", "offline"):
        raise ContractError(f"status {status!r} is not online or offline")
    tags = []
    for i, t in enumerate(_list(o.get("tags", []), what="tags")):
        to = _obj(t, what=f"tags[{i}]")
        try:
            path = AssetPath.parse(str(to.get("path")))
            datatype = to.get("datatype")
            if not isinstance(datatype, str) or not datatype:
                raise ContractError("datatype must be a non-empty string")
            tags.append(
                TagInfo(
                    path=path,
                    tag=check_tag(to.get("tag")),
                    datatype=datatype,
                    unit=_opt_str(to.get("unit"), what="unit", limit=32),
                )
            )
        except ContractError as err:
            raise ContractError(f"tags[{i}]: {err}") from None
    return StatusMessage(agent=agent, status=status, ts=check_ts(o.get("ts")), tags=tuple(tags))
