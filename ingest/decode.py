"""Topic and payload -> what the writer stores, or the reason it goes to the dead letters.

The rules are the wire contract's (``edge_agent.contract.decode``), plus the topic: the
payload kind must match the topic kind, a status must come on its own agent's topic, and
the size must stay under ``max_bytes``. A few values the contract allows cannot be stored
(a NUL character in text, a seq above bigint, a count above integer): those are rejected
here too, so one message never fails a whole batch in the database.

Samples take a fast path: ``contract.decode`` builds a dataclass per sample and checks
every tag name with a regex (about 200,000 samples/s on one core, the whole budget), while
``fast_samples`` checks the parsed JSON in place, remembers tag names it has already
checked, and produces columns for the COPY (about ten times faster). It applies exactly the
contract's rules (the tests compare it with ``contract.decode`` under hypothesis); anything
it does not accept goes through ``contract.decode``, which gives the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import structlog

from edge_agent import contract as c
from edge_agent.contract import AssetPath, ContractError

log = structlog.get_logger("ingest.decode")

QUALITY: Final = {"good": 0, "uncertain": 1, "bad": 2}  # = ingest.schema.QUALITY_CODES
BIGINT_MAX: Final = 2**63 - 1
INTEGER_MAX: Final = 2**31 - 1
_CACHE_LIMIT: Final = 200_000  # checked tag/agent names remembered (bounded: names are input)


@dataclass(slots=True)
class Incoming:
    """One message as the broker delivered it, with what acknowledging it needs."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    generation: int = 0  # the broker connection it came on (acks go only on that one)
    received: float = field(default_factory=time.time)  # wall clock, seconds


@dataclass(slots=True)
class Samples:
    """A samples message as columns: numbers (bools as 0/1, nulls) apart from text values."""

    agent: str
    seq: int
    path: AssetPath
    times: list[int]  # source ms
    tags: list[str]
    values: list[float | None]
    qualities: list[int]
    text: list[tuple[int, str, str, int]] = field(default_factory=list)  # (ms, tag, text, q)
    packed: bytes | None = None  # the numeric rows as binary COPY data, when packed ahead

    @property
    def count(self) -> int:
        return len(self.times) + len(self.text)

    def newest(self) -> int:
        """The newest source timestamp (ms), 0 when empty."""
        return max(max(self.times, default=0), max((t[0] for t in self.text), default=0))


@dataclass(slots=True)
class Events:
    """An events message: state changes and count deltas (with rejects by reason, when the
    gateway counts them) of one machine."""

    agent: str
    seq: int
    path: AssetPath
    states: list[c.StateEvent]
    counts: list[c.CountEvent]

    @property
    def count(self) -> int:
        return len(self.states) + len(self.counts)

    def newest(self) -> int:
        return max(
            max((e.ts for e in self.states), default=0), max((e.ts for e in self.counts), default=0)
        )


@dataclass(slots=True)
class Status:
    """A gateway birth (online, with tag metadata) or death (offline, often the last will)."""

    agent: str
    status: str
    ts: int
    tags: tuple[c.TagInfo, ...]


@dataclass(slots=True)
class Rejected:
    """Why a message goes to the dead letters; ``kind`` is the metric's reason class."""

    kind: str
    reason: str


Decoded = Samples | Events | Status | Rejected


@dataclass(slots=True)
class Pending:
    """A received message and what it decoded to, waiting in a batch."""

    msg: Incoming
    decoded: Decoded

    @property
    def weight(self) -> int:
        d = self.decoded
        return d.count if isinstance(d, (Samples, Events)) else 1


def classify(err: ContractError) -> str:
    """The reason class of a contract error, for the dead-letter metric."""
    text = str(err)
    if text.startswith("payload is not valid UTF-8 JSON"):
        return "json"
    if text.startswith("payload of") and "over the limit" in text:
        return "oversize"
    if "contract version" in text:
        return "version"
    if "before 2000" in text or "ahead of now" in text:
        return "timestamp"
    return "invalid"


class Decoder:
    """Decodes messages of one topic prefix; keeps the caches of names already checked."""

    def __init__(self, *, prefix: str = c.DEFAULT_PREFIX, max_bytes: int = 1024 * 1024) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.tags: set[str] = set()
        self.agents: set[str] = set()

    def decode(self, topic: str, payload: bytes, *, now_ms: int | None = None) -> Decoded:
        """Classify and validate one message; never raises on bad input."""
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        if len(payload) > self.max_bytes:
            return Rejected("oversize", f"payload of {len(payload)} bytes is over {self.max_bytes}")
        try:
            parsed = c.parse_topic(topic)
        except ContractError as err:
            return Rejected("topic", str(err))
        if parsed.prefix != self.prefix:
            return Rejected("topic", f"topic {topic!r} is outside the prefix {self.prefix!r}")
        try:
            if parsed.kind is c.Kind.SAMPLES and parsed.path is not None:
                return self._samples(payload, parsed.path, now_ms)
            return _other(parsed, c.decode(payload, now_ms=now_ms))
        except ContractError as err:
            return Rejected(classify(err), str(err))
        except Exception as err:  # a decoder bug must not stop the service: dead-letter it
            log.warning("unexpected error decoding a message", topic=topic, error=repr(err))
            return Rejected("invalid", f"cannot decode ({type(err).__name__}: {err})")

    def _samples(self, payload: bytes, path: AssetPath, now_ms: int) -> Decoded:
        if len(self.tags) > _CACHE_LIMIT:
            self.tags.clear()
        if len(self.agents) > _CACHE_LIMIT:
            self.agents.clear()
        cols = fast_samples(payload, path=path, now_ms=now_ms, tags=self.tags, agents=self.agents)
        if cols is None:
            msg = c.decode(payload, now_ms=now_ms)  # raises with the reason
            if not isinstance(msg, c.SamplesMessage):
                return _mismatch(msg, "samples")
            cols = samples_columns(msg, path)
        return _storable_samples(cols)


def _mismatch(msg: c.Message, topic_kind: str) -> Rejected:
    what = {c.SamplesMessage: "samples", c.EventsMessage: "events", c.StatusMessage: "status"}
    return Rejected("mismatch", f"a {what[type(msg)]} payload on a {topic_kind} topic")


def _other(topic: c.Topic, msg: c.Message) -> Decoded:
    """Events and status messages (rare: the contract's own decoder is fast enough)."""
    if topic.is_status:
        if not isinstance(msg, c.StatusMessage):
            return _mismatch(msg, "gateway status")
        if msg.agent != topic.agent:
            return Rejected(
                "mismatch", f"status of agent {msg.agent!r} on the topic of {topic.agent!r}"
            )
        return _storable_status(Status(msg.agent, msg.status, msg.ts, msg.tags))
    assert topic.path is not None
    if not isinstance(msg, c.EventsMessage):
        return _mismatch(msg, "events")
    states = [e for e in msg.events if isinstance(e, c.StateEvent)]
    counts = [e for e in msg.events if isinstance(e, c.CountEvent)]
    return _storable_events(Events(msg.agent, msg.seq, topic.path, states, counts))


# ---------------------------------------------------------------- samples


def samples_columns(msg: c.SamplesMessage, path: AssetPath) -> Samples:
    """The columns of a decoded samples message (the reference for ``fast_samples``)."""
    out = Samples(msg.agent, msg.seq, path, [], [], [], [])
    for s in msg.samples:
        q = QUALITY[s.quality.value]
        v = s.value
        if isinstance(v, str):
            out.text.append((s.ts, s.tag, v, q))
            continue
        out.times.append(s.ts)
        out.tags.append(s.tag)
        out.values.append(None if v is None else float(v))
        out.qualities.append(q)
    return out


def fast_samples(
    payload: bytes,
    *,
    path: AssetPath,
    now_ms: int,
    tags: set[str] | None = None,
    agents: set[str] | None = None,
) -> Samples | None:
    """The columns of a valid samples payload, or None when anything is off (or unusual).

    None does not mean invalid: the caller then asks ``contract.decode``. ``tags`` and
    ``agents`` remember names already checked (the regex is the expensive part).
    """
    if len(payload) > c.MAX_PAYLOAD_BYTES * 4:
        return None
    try:
        o = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(o) is not dict or o.get("v") != c.VERSION or "status" in o:
        return None
    agent, seq, items = o.get("agent"), o.get("seq"), o.get("samples")
    if type(seq) is not int or seq < 0 or type(items) is not list or "samples" not in o:
        return None
    if not _known(agent, agents, c.check_segment, "agent"):
        return None
    assert isinstance(agent, str)
    return _sample_rows(items, agent, seq, path, now_ms, tags if tags is not None else set())


def _known(name: object, cache: set[str] | None, check: Any, what: str) -> bool:
    if type(name) is not str:
        return False
    if cache is not None and name in cache:
        return True
    try:
        check(name, what=what)
    except ContractError:
        return False
    if cache is not None:
        cache.add(name)
    return True


def _check_tag(name: str, *, what: str) -> str:
    return c.check_tag(name)


def _sample_rows(
    items: list[Any], agent: str, seq: int, path: AssetPath, now_ms: int, known: set[str]
) -> Samples | None:
    """The per-sample loop: plain type checks, no allocation beyond the columns."""
    lo, hi = c.MIN_TS_MS, now_ms + c.MAX_FUTURE_MS
    times: list[int] = []
    names: list[str] = []
    values: list[float | None] = []
    quals: list[int] = []
    text: list[tuple[int, str, str, int]] = []
    quality = QUALITY
    for d in items:
        if type(d) is not dict:
            return None
        tag = d.get("tag")
        if type(tag) is not str or (tag not in known and not _known(tag, known, _check_tag, "")):
            return None
        ts = d.get("ts")
        if type(ts) is not int or ts < lo or ts > hi:
            return None
        q = d.get("q", "good")
        qc = quality.get(q) if type(q) is str else None
        if qc is None:
            return None
        v: Any = d.get("v")
        tv = type(v)
        if tv is float:
            if v - v != 0.0:  # inf or nan
                return None
        elif tv is int:
            if not -(2**63) <= v < 2**64:
                return None
            v = float(v)
        elif tv is bool:
            v = 1.0 if v else 0.0
        elif tv is str:
            text.append((ts, tag, v, qc))
            continue
        elif v is not None:
            return None
        times.append(ts)
        names.append(tag)
        values.append(v)
        quals.append(qc)
    return Samples(agent, seq, path, times, names, values, quals, text)


# ---------------------------------------------------------------- what PostgreSQL cannot store


def _unstorable(reason: str) -> Rejected:
    return Rejected("unstorable", reason)


def _nul(value: object) -> bool:
    return isinstance(value, str) and "\x00" in value


def _storable_samples(s: Samples) -> Decoded:
    if s.seq > BIGINT_MAX:
        return _unstorable(f"seq {s.seq} does not fit a 64-bit signed integer")
    for ts, tag, value, _q in s.text:
        if "\x00" in value:
            return _unstorable(f"the text value of tag {tag!r} at {ts} contains a NUL character")
    return s


def _storable_events(e: Events) -> Decoded:
    if e.seq > BIGINT_MAX:
        return _unstorable(f"seq {e.seq} does not fit a 64-bit signed integer")
    for i, s in enumerate(e.states):
        if any(_nul(x) for x in (s.state, s.reason, s.code)):
            return _unstorable(f"state event {i} contains a NUL character")
    for i, n in enumerate(e.counts):
        # Rejects by reason need no check of their own: the contract bounds their sum by
        # reject (<= total) and keeps control characters (NUL too) out of reasons.
        if n.total > INTEGER_MAX:
            return _unstorable(f"count event {i}: total {n.total} is above {INTEGER_MAX}")
        if _nul(n.product):
            return _unstorable(f"count event {i}: the product contains a NUL character")
    return e


def _storable_status(s: Status) -> Decoded:
    for t in s.tags:
        if _nul(t.datatype) or _nul(t.unit):
            return _unstorable(f"tag {t.tag!r}: the datatype or unit contains a NUL character")
    return s
