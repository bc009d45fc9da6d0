"""Rejects by reason through the ingest: decode, one transaction with the counts, exactly once
through the ledger, end to end over a real Mosquitto into a real PostgreSQL."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from edge_agent import contract as c
from ingest.decode import Decoder, Events, Incoming, Pending, Rejected
from ingest.migrate import upgrade
from ingest.writer import Writer
from tests.harness import Mosquitto, free_port
from tests.ingest.test_service import Publisher, Running, make_settings, running, wait_until

__all__ = ["running"]  # the fixture, shared with test_service

NOW = time.time_ns() // 1_000_000
M1 = c.AssetPath("plant", "press", "line-1", "m1")
M2 = c.AssetPath("plant", "press", "line-1", "m2")
REJECTS_SQL = """
SELECT a.path, r.reason, sum(r.count)::int FROM production_rejects r
JOIN assets a ON a.id = r.asset_id GROUP BY 1, 2 ORDER BY 1, 2
"""


@pytest.fixture
def db(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def writer(db: str) -> Iterator[Writer]:
    w = Writer(db, dead_letter_max_bytes=1024)
    yield w
    w.close()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def count(ts: int, total: int, reject: int, product: str | None = None, **reasons: int) -> c.Event:
    by_reason = tuple((r.replace("_", " "), n) for r, n in reasons.items())
    return c.CountEvent(ts, total, total - reject, reject, product, rejects=by_reason)


def events_payload(
    seq: int, events: Sequence[c.Event], *, agent: str = "gw-1", path: c.AssetPath = M1
) -> tuple[str, bytes]:
    msg = c.EventsMessage(agent=agent, seq=seq, events=tuple(events))
    return c.machine_topic("linepulse", path, c.Kind.EVENTS), c.encode(msg)


def pending(seq: int, events: Sequence[c.Event], **kw: Any) -> Pending:
    topic, payload = events_payload(seq, events, **kw)
    return Pending(Incoming(topic, payload), Decoder().decode(topic, payload, now_ms=NOW))


# ---------------------------------------------------------------- decode


def test_events_decode_with_their_rejects_by_reason() -> None:
    decoded = pending(1, [count(NOW, 10, 3, "SKU-1", underfill=2, cap_missing=1)]).decoded
    assert isinstance(decoded, Events)
    assert decoded.counts[0].rejects == (("underfill", 2), ("cap missing", 1))


@pytest.mark.parametrize(
    ("rejects", "reason"),
    [
        ({"underfill": 4}, "rejects by reason add up to 4, more than reject 3"),
        ({"underfill": 0}, "parts must be an integer >= 1"),
        ({"under\u0000fill": 1}, "without control characters"),
    ],
)
def test_bad_rejects_by_reason_are_dead_lettered_with_the_reason(
    rejects: dict[str, int], reason: str
) -> None:
    event = {"type": "count", "ts": NOW, "total": 10, "good": 7, "reject": 3, "rejects": rejects}
    raw = json.dumps({"v": 1, "agent": "gw-1", "seq": 1, "events": [event]}).encode()
    decoded = Decoder().decode(c.machine_topic("linepulse", M1, c.Kind.EVENTS), raw, now_ms=NOW)
    assert isinstance(decoded, Rejected)
    assert decoded.kind == "invalid" and reason in decoded.reason


# ---------------------------------------------------------------- writer


def test_rejects_land_beside_their_counts_once(writer: Writer, db: str) -> None:
    batch = [
        pending(1, [count(NOW - 2000, 10, 3, "SKU-1", underfill=2, cap_missing=1)]),
        pending(2, [count(NOW - 1000, 5, 2), count(NOW - 500, 4, 4, underfill=4)]),
        pending(1, [count(NOW, 7, 7, underfill=7)], path=M2, agent="gw-2"),
    ]
    result = writer.write(batch)
    assert (result.counts, result.rejects) == (4, 4)
    assert rows(
        db,
        "SELECT a.path, (extract(epoch FROM r.time) * 1000)::bigint, r.reason, r.count,"
        " r.product, r.agent, r.seq FROM production_rejects r JOIN assets a ON a.id = r.asset_id"
        " ORDER BY r.time, r.reason",
    ) == [
        (str(M1), NOW - 2000, "cap missing", 1, "SKU-1", "gw-1", 1),
        (str(M1), NOW - 2000, "underfill", 2, "SKU-1", "gw-1", 1),
        (str(M1), NOW - 500, "underfill", 4, None, "gw-1", 2),
        (str(M2), NOW, "underfill", 7, None, "gw-2", 1),
    ]
    # a replay, alone or mixed with a new message, and a fresh writer: nothing doubles
    again = writer.write([batch[0], batch[1], pending(3, [count(NOW, 1, 1, underfill=1)])])
    assert (again.duplicates, again.rejects) == (2, 1)
    fresh = Writer(db)
    try:
        assert fresh.write(batch).duplicates == 3
    finally:
        fresh.close()
    assert rows(db, REJECTS_SQL) == [
        (str(M1), "cap missing", 1),
        (str(M1), "underfill", 7),
        (str(M2), "underfill", 7),
    ]


def test_the_same_message_twice_in_one_batch_stores_its_rejects_once(
    writer: Writer, db: str
) -> None:
    msg = pending(5, [count(NOW, 3, 2, underfill=2)])
    assert writer.write([msg, msg]).rejects == 1
    assert rows(db, REJECTS_SQL) == [(str(M1), "underfill", 2)]


def test_rejects_and_counts_commit_or_fail_together(writer: Writer, db: str) -> None:
    # The database refuses one message's rejects: its counts go with them (one savepoint per
    # message), and the other messages of the batch land whole.
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TABLE production_rejects ADD CONSTRAINT no_x CHECK (reason <> 'x')")
    batch = [
        pending(1, [count(NOW, 4, 1, underfill=1)]),
        pending(2, [count(NOW, 9, 2, x=1)]),
        pending(3, [count(NOW, 5, 5, cap_missing=5)]),
    ]
    result = writer.write(batch)
    assert result.isolated and result.dead_letters == ["database"]
    assert rows(db, "SELECT total FROM production_counts ORDER BY total") == [(4,), (5,)]
    assert rows(db, REJECTS_SQL) == [(str(M1), "cap missing", 5), (str(M1), "underfill", 1)]
    assert rows(db, "SELECT seq FROM ingest_ledger ORDER BY 1") == [(1,), (3,)]


def test_old_payloads_without_reasons_write_no_reject_rows(writer: Writer, db: str) -> None:
    topic = c.machine_topic("linepulse", M1, c.Kind.EVENTS)
    event = {"type": "count", "ts": NOW, "total": 10, "good": 7, "reject": 3, "product": None}
    raw = json.dumps({"v": 1, "agent": "gw-old", "seq": 1, "events": [event]}).encode()
    result = writer.write([Pending(Incoming(topic, raw), Decoder().decode(topic, raw, now_ms=NOW))])
    assert (result.counts, result.rejects) == (1, 0)
    assert rows(db, "SELECT reject FROM production_counts") == [(3,)]
    assert rows(db, "SELECT count(*) FROM production_rejects") == [(0,)]


# ---------------------------------------------------------------- end to end


def _stream(n: int) -> tuple[list[tuple[str, bytes]], Counter[tuple[str, str]]]:
    """``n`` events messages of three agents with rejects by reason, and what they add up to."""
    items, expected = [], Counter[tuple[str, str]]()
    for seq in range(n):
        agent, path = f"gw-{seq % 3}", (M1, M2)[seq % 2]
        under, cap = seq % 4 + 1, seq % 3
        ts = NOW - 60_000 + 2 * seq
        events = [count(ts, 20, under + cap + 1, "SKU", underfill=under)]
        if cap:
            events.append(count(ts + 1, 5, cap, "SKU", cap_missing=cap))
        items.append(events_payload(seq, events, agent=agent, path=path))
        expected[(str(path), "underfill")] += under
        expected[(str(path), "cap missing")] += cap
    return items, expected


def test_rejects_by_reason_are_stored_exactly_once_through_duplicates_and_redelivery(
    db: str, mosquitto: Mosquitto, running: Callable[..., Running]
) -> None:
    items, expected = _stream(90)
    pub = Publisher(mosquitto)
    # First an ingest whose database is unreachable: it receives and holds the first third,
    # commits nothing, acknowledges nothing, and stops; the broker keeps the messages.
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    down = running(
        make_settings(
            nowhere,
            mosquitto,
            mqtt_client_id="ingest-rejects",
            shutdown_timeout=1.0,
            db_reconnect_max_delay=0.5,
        )
    )
    pub.send_all(items[:30])
    wait_until(lambda: down.service.subscriber.held == 30, what="30 held messages")
    down.stop()
    # The same session with a database: the held messages are redelivered, the rest arrive,
    # and every message is also published a second time (a gateway replaying its outbox).
    up = running(make_settings(db, mosquitto, mqtt_client_id="ingest-rejects"))
    pub.send_all(items[30:] + items)
    wait_until(lambda: up.service.totals.messages >= 30 + 60 + 90, what="every delivery")
    wait_until(lambda: rows(db, "SELECT count(*) FROM ingest_ledger") == [(90,)])
    stored = {(path, reason): n for path, reason, n in rows(db, REJECTS_SQL)}
    assert stored == {k: v for k, v in expected.items() if v}
    assert up.service.totals.duplicates == up.service.totals.messages - 90
    # every reject row is a part of its count row's reject: never more reasons than rejects
    over = rows(
        db,
        "SELECT c.agent, c.seq FROM production_counts c"
        " JOIN production_rejects r USING (asset_id, time, agent, seq)"
        " GROUP BY c.agent, c.seq, c.time, c.reject HAVING sum(r.count) > c.reject",
    )
    assert over == []
    pub.close()
