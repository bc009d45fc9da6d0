"""The writer against a real PostgreSQL: rows, ledger, registration, status, dead letters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from edge_agent import contract as c
from ingest.decode import Decoder, Incoming, Pending
from ingest.errors import DatabaseUnavailable
from ingest.migrate import upgrade
from ingest.writer import Writer

NOW = time.time_ns() // 1_000_000
M1 = c.AssetPath("plant", "press", "line-1", "m1")
M2 = c.AssetPath("plant", "press", "line-1", "m2")


@pytest.fixture
def db(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def writer(db: str) -> Iterator[Writer]:
    w = Writer(db, dead_letter_max_bytes=1024)
    yield w
    w.close()


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def pending(topic: str, payload: bytes, *, received: float | None = None) -> Pending:
    msg = Incoming(topic, payload, received=received or time.time())
    return Pending(msg, Decoder(max_bytes=64 * 1024).decode(topic, payload, now_ms=NOW))


def samples_msg(
    seq: int, samples: Sequence[c.Sample], *, agent: str = "gw-1", path: c.AssetPath = M1
) -> Pending:
    msg = c.SamplesMessage(agent=agent, seq=seq, samples=tuple(samples))
    return pending(c.machine_topic("linepulse", path, c.Kind.SAMPLES), c.encode(msg))


def events_msg(seq: int, events: Sequence[c.Event], *, path: c.AssetPath = M1) -> Pending:
    msg = c.EventsMessage(agent="gw-1", seq=seq, events=tuple(events))
    return pending(c.machine_topic("linepulse", path, c.Kind.EVENTS), c.encode(msg))


def status_msg(status: str, ts: int, tags: Sequence[c.TagInfo] = (), **kw: Any) -> Pending:
    msg = c.StatusMessage(agent="gw-1", status=status, ts=ts, tags=tuple(tags))  # type: ignore[arg-type]
    return pending(c.status_topic("linepulse", "gw-1"), c.encode(msg), **kw)


SAMPLES_SQL = """
SELECT a.path, t.name, (extract(epoch FROM s.time) * 1000)::bigint, s.value, s.quality
FROM samples s JOIN tags t ON t.id = s.tag_id JOIN assets a ON a.id = t.asset_id
ORDER BY 1, 2, 3
"""


def test_samples_land_with_tag_ids_values_and_quality(writer: Writer, db: str) -> None:
    batch = [
        samples_msg(
            1,
            [
                c.Sample("temp", NOW, 21.5),
                c.Sample("temp", NOW + 1, None, c.Quality.BAD),
                c.Sample("run", NOW, True),
                c.Sample("stop", NOW, False, c.Quality.UNCERTAIN),
                c.Sample("count", NOW, 2**53 + 1),
                c.Sample("recipe", NOW, "SKU-9", c.Quality.UNCERTAIN),
            ],
        ),
        samples_msg(1, [c.Sample("temp", NOW, 7.0)], path=M2, agent="gw-2"),
    ]
    result = writer.write(batch)
    assert (result.new, result.samples, result.text_samples, result.duplicates) == (2, 6, 1, 0)
    assert rows(db, SAMPLES_SQL) == [
        (str(M1), "count", NOW, float(2**53 + 1), 0),
        (str(M1), "run", NOW, 1.0, 0),
        (str(M1), "stop", NOW, 0.0, 1),
        (str(M1), "temp", NOW, 21.5, 0),
        (str(M1), "temp", NOW + 1, None, 2),
        (str(M2), "temp", NOW, 7.0, 0),
    ]
    assert rows(
        db,
        "SELECT t.name, (extract(epoch FROM s.time) * 1000)::bigint, s.value, s.quality"
        " FROM samples_text s JOIN tags t ON t.id = s.tag_id",
    ) == [("recipe", NOW, "SKU-9", 1)]
    assert rows(db, "SELECT agent, seq FROM ingest_ledger ORDER BY 1") == [("gw-1", 1), ("gw-2", 1)]
    # the rollups know which time range to refresh
    assert rows(db, "SELECT count(*) FROM rollup_pending")[0][0] >= 1


def test_a_replayed_message_changes_nothing(writer: Writer, db: str) -> None:
    batch = [samples_msg(7, [c.Sample("temp", NOW, 1.0), c.Sample("temp", NOW + 1, 2.0)])]
    writer.write(batch)
    before = rows(db, SAMPLES_SQL)
    again = writer.write(batch)
    assert (again.new, again.duplicates, again.samples) == (0, 1, 0)
    assert rows(db, SAMPLES_SQL) == before
    # a fresh writer (empty caches, as after a restart) skips it too
    fresh = Writer(db)
    try:
        assert fresh.write(batch).duplicates == 1
    finally:
        fresh.close()
    assert rows(db, SAMPLES_SQL) == before


def test_the_same_message_twice_in_one_batch_is_stored_once(writer: Writer, db: str) -> None:
    msg = samples_msg(3, [c.Sample("temp", NOW, 1.0)])
    result = writer.write([msg, msg])
    assert (result.new, result.duplicates, result.samples) == (1, 1, 1)
    assert len(rows(db, SAMPLES_SQL)) == 1


def test_registration_builds_the_asset_tree_once(writer: Writer, db: str) -> None:
    writer.write(
        [samples_msg(1, [c.Sample("a", NOW, 1)]), samples_msg(2, [c.Sample("b", NOW, 1)], path=M2)]
    )
    tree = rows(
        db,
        "SELECT a.level, a.path, p.path FROM assets a LEFT JOIN assets p ON p.id = a.parent_id"
        " ORDER BY a.path",
    )
    assert tree == [
        ("site", "plant", None),
        ("area", "plant/press", "plant"),
        ("line", "plant/press/line-1", "plant/press"),
        ("machine", str(M1), "plant/press/line-1"),
        ("machine", str(M2), "plant/press/line-1"),
    ]
    other = Writer(db)  # empty cache: finds, does not duplicate
    try:
        other.write([samples_msg(3, [c.Sample("a", NOW, 2), c.Sample("c", NOW, 3)])])
    finally:
        other.close()
    assert len(rows(db, "SELECT * FROM assets")) == 5
    assert rows(
        db, "SELECT a.path, t.name FROM tags t JOIN assets a ON a.id = t.asset_id ORDER BY 1, 2"
    ) == [
        (str(M1), "a"),
        (str(M1), "c"),
        (str(M2), "b"),
    ]


def test_two_writers_register_the_same_new_names_without_errors(db: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(agent: str) -> None:
        w = Writer(db)
        try:
            barrier.wait()
            for seq in range(5):
                paths = [c.AssetPath("s", "a", f"l{i % 3}", f"m{i}") for i in range(6)]
                w.write(
                    [
                        samples_msg(
                            seq * 10 + i,
                            [c.Sample(f"t{j}", NOW, j) for j in range(5)],
                            agent=agent,
                            path=p,
                        )
                        for i, p in enumerate(paths)
                    ]
                )
        except BaseException as err:
            errors.append(err)
        finally:
            w.close()

    threads = [threading.Thread(target=work, args=(f"gw-{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert rows(db, "SELECT count(*), count(DISTINCT path) FROM assets") == [(1 + 1 + 3 + 6, 11)]
    assert rows(db, "SELECT count(*) FROM tags") == [(6 * 5,)]
    assert rows(db, "SELECT count(*) FROM samples") == [(2 * 5 * 6 * 5,)]


def test_births_set_unit_and_datatype_and_a_later_birth_updates_them(
    writer: Writer, db: str
) -> None:
    writer.write([samples_msg(1, [c.Sample("temp", NOW, 1.0)])])
    writer.write(
        [
            status_msg(
                "online",
                NOW,
                [c.TagInfo(M1, "temp", "float32", "degC"), c.TagInfo(M2, "speed", "int16")],
            )
        ]
    )
    meta = (
        "SELECT a.path, t.name, t.datatype, t.unit FROM tags t"
        " JOIN assets a ON a.id = t.asset_id ORDER BY 1, 2"
    )
    assert rows(db, meta) == [
        (str(M1), "temp", "float32", "degC"),
        (str(M2), "speed", "int16", None),
    ]
    writer.write([status_msg("online", NOW + 1000, [c.TagInfo(M1, "temp", "float64", "K")])])
    assert rows(db, meta)[0] == (str(M1), "temp", "float64", "K")
    # the tag id did not change: samples written before still belong to it
    assert rows(db, SAMPLES_SQL)[0][:2] == (str(M1), "temp")


def test_gateway_status_history_and_current_state(writer: Writer, db: str) -> None:
    history = (
        "SELECT status, (extract(epoch FROM time) * 1000)::bigint FROM gateway_status ORDER BY time"
    )
    current = "SELECT status, (extract(epoch FROM since) * 1000)::bigint FROM gateways"
    t0 = NOW - 60_000
    writer.write([status_msg("online", t0)])
    assert rows(db, current) == [("online", t0)]
    writer.write([status_msg("online", t0)])  # redelivered birth: no new row
    writer.write([status_msg("online", t0 + 10_000)])  # a re-birth: still online since t0
    assert rows(db, current) == [("online", t0)]
    # the last will carries its connect time (before the birth): stamped when received
    received = time.time()
    writer.write([status_msg("offline", t0 - 5, received=received)])
    hist = rows(db, history)
    assert [h[0] for h in hist] == ["online", "online", "offline"]
    assert abs(hist[-1][1] - received * 1000) < 2
    assert rows(db, current) == [("offline", hist[-1][1])]
    writer.write([status_msg("offline", t0 - 5, received=time.time() + 5)])  # redelivered will
    assert len(rows(db, history)) == 3
    t1 = int(received * 1000) + 1000
    writer.write([status_msg("online", t1)])
    assert rows(db, current) == [("online", t1)]
    assert rows(db, "SELECT (extract(epoch FROM last_seen) * 1000)::bigint FROM gateways") == [
        (t1,)
    ]


def test_counts_and_state_events(writer: Writer, db: str) -> None:
    batch = [
        events_msg(
            1,
            [
                c.StateEvent(NOW - 3000, "running"),
                c.CountEvent(NOW - 2000, 10, 9, 1, "SKU-1"),
                c.StateEvent(NOW - 1000, "faulted", code=31, reason="jam"),
                c.CountEvent(NOW - 500, 5, 5, 0),
            ],
        )
    ]
    result = writer.write(batch)
    assert (result.states, result.counts) == (2, 2)
    assert rows(
        db, "SELECT total, good, reject, product, agent, seq FROM production_counts ORDER BY time"
    ) == [
        (10, 9, 1, "SKU-1", "gw-1", 1),
        (5, 5, 0, None, "gw-1", 1),
    ]
    intervals = rows(
        db, "SELECT state, reason, code, end_time IS NULL FROM state_intervals ORDER BY start_time"
    )
    assert intervals == [("running", None, None, False), ("faulted", "jam", "31", True)]
    writer.write(batch)  # replay: nothing new
    assert len(rows(db, "SELECT * FROM production_counts")) == 2


def test_a_late_sample_without_its_partition_still_lands(writer: Writer, db: str) -> None:
    late = NOW - 40 * 86_400_000
    writer.write([samples_msg(1, [c.Sample("temp", late, 1.0), c.Sample("temp", NOW, 2.0)])])
    assert [r[2] for r in rows(db, SAMPLES_SQL)] == [late, NOW]


def _raw(env: dict[str, Any]) -> bytes:
    return json.dumps(env).encode()


S_TOPIC = c.machine_topic("linepulse", M1, c.Kind.SAMPLES)
E_TOPIC = c.machine_topic("linepulse", M1, c.Kind.EVENTS)
G_TOPIC = c.status_topic("linepulse", "gw-1")
ONE = [{"tag": "t", "ts": NOW, "v": 1.0}]
DEAD = [
    ("garbage", S_TOPIC, b"\x00\x01garbage", "json"),
    (
        "truncated json",
        S_TOPIC,
        c.encode(c.SamplesMessage("gw-1", 99, (c.Sample("t", NOW, 1.0),)))[:-3],
        "json",
    ),
    (
        "unknown version",
        S_TOPIC,
        _raw({"v": 2, "agent": "gw-1", "seq": 99, "samples": ONE}),
        "version",
    ),
    (
        "before 2000",
        S_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "seq": 99, "samples": [{"tag": "t", "ts": 10, "v": 1}]}),
        "timestamp",
    ),
    (
        "a day ahead",
        S_TOPIC,
        _raw(
            {
                "v": 1,
                "agent": "gw-1",
                "seq": 99,
                "samples": [{"tag": "t", "ts": NOW + 3 * 86_400_000}],
            }
        ),
        "timestamp",
    ),
    (
        "NaN",
        S_TOPIC,
        b'{"v":1,"agent":"gw-1","seq":99,"samples":[{"tag":"t","ts":%d,"v":NaN}]}' % NOW,
        "json",
    ),
    (
        "infinite",
        S_TOPIC,
        b'{"v":1,"agent":"gw-1","seq":99,"samples":[{"tag":"t","ts":%d,"v":1e400}]}' % NOW,
        "json",
    ),
    ("oversize", S_TOPIC, b"[" + b"0," * 40_000 + b"0]", "oversize"),
    (
        "outside the namespace",
        "factory/v1/a/b/c/d/samples",
        _raw({"v": 1, "agent": "gw-1", "seq": 99, "samples": ONE}),
        "topic",
    ),
    ("gateway topic typo", "linepulse/v1/_gateways/gw-1/state", b"{}", "topic"),
    (
        "samples on events topic",
        E_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "seq": 99, "samples": ONE}),
        "mismatch",
    ),
    (
        "status on machine topic",
        S_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "status": "online", "ts": NOW}),
        "mismatch",
    ),
    (
        "events on status topic",
        G_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "seq": 99, "events": []}),
        "mismatch",
    ),
    (
        "bad tag name",
        S_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "seq": 99, "samples": [{"tag": "no spaces", "ts": NOW}]}),
        "invalid",
    ),
    (
        "bad count",
        E_TOPIC,
        _raw(
            {
                "v": 1,
                "agent": "gw-1",
                "seq": 99,
                "events": [{"type": "count", "ts": NOW, "total": 1, "good": 2, "reject": 0}],
            }
        ),
        "invalid",
    ),
    (
        "seq beyond bigint",
        S_TOPIC,
        _raw({"v": 1, "agent": "gw-1", "seq": 2**63, "samples": ONE}),
        "unstorable",
    ),
    (
        "count beyond integer",
        E_TOPIC,
        _raw(
            {
                "v": 1,
                "agent": "gw-1",
                "seq": 99,
                "events": [
                    {"type": "count", "ts": NOW, "total": 2**31, "good": 2**31, "reject": 0}
                ],
            }
        ),
        "unstorable",
    ),
    (
        "NUL in a text value",
        S_TOPIC,
        _raw(
            {"v": 1, "agent": "gw-1", "seq": 99, "samples": [{"tag": "t", "ts": NOW, "v": "a\x00"}]}
        ),
        "unstorable",
    ),
]


@pytest.mark.parametrize(("case", "topic", "raw", "kind"), DEAD, ids=[d[0] for d in DEAD])
def test_bad_messages_go_to_dead_letters_and_the_good_ones_land(
    writer: Writer, db: str, case: str, topic: str, raw: bytes, kind: str
) -> None:
    batch = [
        samples_msg(1, [c.Sample("temp", NOW, 1.0)]),
        pending(topic, raw),
        events_msg(2, [c.CountEvent(NOW, 3, 3, 0)]),
    ]
    result = writer.write(batch)
    assert result.dead_letters == [kind]
    assert (result.new, result.samples, result.counts) == (2, 1, 1)
    [(d_topic, payload, size, reason)] = rows(
        db, "SELECT topic, payload, payload_size, reason FROM dead_letters"
    )
    assert (d_topic, size) == (topic, len(raw))
    assert bytes(payload) == raw[:1024]  # capped at dead_letter_max_bytes
    assert reason
    assert len(rows(db, SAMPLES_SQL)) == 1
    assert rows(db, "SELECT total FROM production_counts") == [(3,)]


def test_a_message_the_database_rejects_is_isolated(writer: Writer, db: str) -> None:
    # A constraint the decoder knows nothing about: the batch fails, then each message is
    # tried under a savepoint and only the offending one becomes a dead letter.
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TABLE production_counts ADD CONSTRAINT small CHECK (total < 1000)")
    batch = [
        samples_msg(1, [c.Sample("temp", NOW, 1.0)]),
        events_msg(2, [c.CountEvent(NOW, 5000, 5000, 0)]),
        events_msg(3, [c.CountEvent(NOW, 5, 5, 0)]),
        samples_msg(4, [c.Sample("new-tag", NOW, 2.0)]),
    ]
    result = writer.write(batch)
    assert result.isolated and result.dead_letters == ["database"]
    assert rows(db, "SELECT total FROM production_counts") == [(5,)]
    assert len(rows(db, SAMPLES_SQL)) == 2
    assert rows(db, "SELECT seq FROM ingest_ledger ORDER BY 1") == [(1,), (3,), (4,)]
    [(reason,)] = rows(db, "SELECT reason FROM dead_letters")
    assert "small" in reason
    # the registry forgot nothing it needs and learned nothing that was rolled back
    writer.write([samples_msg(5, [c.Sample("new-tag", NOW + 1, 3.0)])])
    assert len(rows(db, SAMPLES_SQL)) == 3


def test_a_lost_connection_raises_and_the_retry_stores_exactly_once(
    writer: Writer, db: str
) -> None:
    writer.write([samples_msg(1, [c.Sample("temp", NOW, 1.0)])])
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    batch = [samples_msg(2, [c.Sample("temp", NOW + 1, 2.0)])]
    with pytest.raises(DatabaseUnavailable):
        writer.write(batch)
    assert not writer.connected
    assert writer.write(batch).new == 1  # reconnects
    assert writer.write(batch).duplicates == 1
    assert len(rows(db, SAMPLES_SQL)) == 2


def test_a_missing_table_is_not_blamed_on_the_messages(writer: Writer, db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("DROP TABLE production_counts")
    with pytest.raises(DatabaseUnavailable, match="production_counts"):
        writer.write([events_msg(1, [c.CountEvent(NOW, 1, 1, 0)])])
    assert rows(db, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert rows(db, "SELECT count(*) FROM ingest_ledger") == [(0,)]
