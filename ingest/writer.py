"""All the SQL of the ingest path: one transaction per batch, exactly once by the ledger.

A batch, in one transaction:

1. the ledger: ``(agent, seq)`` of every samples and events message is inserted with
   ``ON CONFLICT DO NOTHING RETURNING``; only the returned ones are new, the others were
   stored before (a redelivery or a replay) and are skipped;
2. assets and tags the new messages and the births name are registered (``Registry``);
3. numeric samples by one binary COPY into ``samples`` (rows packed with ``struct``, much
   faster than ``write_row``), text samples by another into ``samples_text``; the time
   ranges written are noted for the rollups (``maintenance.note_samples``);
4. count events into ``production_counts`` (and their rejects by reason, when they carry
   any, into ``production_rejects``), state events through
   ``intervals.apply_state_events``;
5. gateway status into ``gateway_status`` (history, idempotent by (agent, time)) and
   ``gateways`` (the current status);
6. dead letters: the messages that did not decode, with the raw bytes capped.

When a batch fails with an error about its data (not the connection, not the schema), it
is written again message by message, each under a savepoint: the message the database
rejects becomes a dead letter and the others land. A lost connection, a missing table or
a full disk raise ``DatabaseUnavailable``: the caller keeps the batch, reconnects and
retries, and the ledger makes the retry safe.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
import structlog

from ingest import maintenance
from ingest.db import connect, describe_url
from ingest.decode import Events, Pending, Rejected, Samples, Status
from ingest.errors import DatabaseUnavailable
from ingest.intervals import StateRow, apply_state_events
from ingest.registry import Registry

log = structlog.get_logger("ingest.writer")

EPOCH_2000_MS: Final = 946_684_800_000  # PostgreSQL's binary timestamps count from 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER: Final = b"\xff\xff"
_ROW = struct.Struct(">hiqiiidih").pack  # 4 fields: time, tag_id, value, quality
_ROW_NULL = struct.Struct(">hiqiiiih").pack  # the same with a NULL value (length -1)
_TEXT_HEAD = struct.Struct(">hiqiii").pack  # 4 fields: time, tag_id, then the text's length
_TEXT_TAIL = struct.Struct(">ih").pack
_REASON_MAX: Final = 2000
_ATTEMPTS: Final = 3  # a deadlock or serialization failure: the whole batch again

COPY_SAMPLES = "COPY samples (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)"
COPY_TEXT = "COPY samples_text (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)"
LEDGER = """
INSERT INTO ingest_ledger (agent, seq) SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT DO NOTHING RETURNING agent, seq
"""
COUNTS = """
INSERT INTO production_counts (asset_id, time, total, good, reject, product, agent, seq)
SELECT * FROM unnest(%s::integer[], %s::timestamptz[], %s::integer[], %s::integer[],
                     %s::integer[], %s::text[], %s::text[], %s::bigint[])
"""
REJECTS = """
INSERT INTO production_rejects (asset_id, time, reason, count, product, agent, seq)
SELECT * FROM unnest(%s::integer[], %s::timestamptz[], %s::text[], %s::integer[],
                     %s::text[], %s::text[], %s::bigint[])
"""
DEAD_LETTERS = """
INSERT INTO dead_letters (topic, payload, payload_size, reason)
SELECT * FROM unnest(%s::text[], %s::bytea[], %s::integer[], %s::text[])
"""
GATEWAY_LOCK = """
SELECT g.status,
       (SELECT max(time) FROM gateway_status h WHERE h.agent = g.agent AND h.status = 'online')
FROM gateways g WHERE g.agent = %s FOR UPDATE
"""
GATEWAY_HISTORY = """
INSERT INTO gateway_status (agent, time, status) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING
"""
# The current status is the latest row of the history; ``since`` is where the run of that
# status began (the first row after the last row with another status).
GATEWAY_CURRENT = """
WITH latest AS (
    SELECT status, time FROM gateway_status WHERE agent = %(agent)s ORDER BY time DESC LIMIT 1
), other AS (
    SELECT max(h.time) AS time FROM gateway_status h, latest l
    WHERE h.agent = %(agent)s AND h.status <> l.status
), run AS (
    SELECT min(h.time) AS since FROM gateway_status h, latest l, other o
    WHERE h.agent = %(agent)s AND h.status = l.status
      AND h.time > coalesce(o.time, '-infinity'::timestamptz)
)
INSERT INTO gateways (agent, status, since, last_seen)
SELECT %(agent)s, l.status, r.since, greatest(l.time, %(seen)s) FROM latest l, run r
ON CONFLICT (agent) DO UPDATE SET
    status = EXCLUDED.status,
    since = EXCLUDED.since,
    last_seen = greatest(gateways.last_seen, EXCLUDED.last_seen)
"""


def ms_to_datetime(ms: int) -> datetime:
    """Exact (no float rounding) UTC datetime of a millisecond timestamp."""
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass(slots=True)
class WriteResult:
    """What one batch did (for metrics and logs)."""

    messages: int = 0
    new: int = 0
    duplicates: int = 0
    samples: int = 0
    text_samples: int = 0
    states: int = 0
    counts: int = 0
    rejects: int = 0  # rows of rejects by reason
    statuses: int = 0
    dead_letters: list[str] = field(default_factory=list)  # reason classes
    newest_ms: int = 0
    isolated: bool = False  # written message by message after a data error

    def merge(self, other: WriteResult) -> None:
        for name in ("messages", "new", "duplicates", "samples", "text_samples"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("states", "counts", "rejects", "statuses"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead_letters += other.dead_letters
        self.newest_ms = max(self.newest_ms, other.newest_ms)


def error_kind(err: BaseException, conn: psycopg.Connection[Any] | None) -> str:
    """``connection``, ``transient`` (retry the batch), ``systemic`` or ``data`` (isolate)."""
    if conn is None or conn.closed or conn.broken:
        return "connection"
    if not isinstance(err, psycopg.Error):
        return "data"  # a value our code could not handle: isolate it
    state = err.sqlstate or ""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return "connection"
    if state.startswith("40") or state in ("55P03", "57014"):
        return "transient"
    if not state or state[:2] in ("21", "22", "23", "54", "P0"):
        # bad values, constraints, limits, raised by a function; no code: client side
        return "data"
    return "systemic"  # schema (42), resources (53), system (58), ...: not the message


class Writer:
    """Stores batches in PostgreSQL over one connection, reconnecting when asked to write."""

    def __init__(
        self,
        url: str,
        *,
        dead_letter_max_bytes: int = 64 * 1024,
        registry: Registry | None = None,
        application_name: str = "linepulse-ingest",
    ) -> None:
        self._url = url
        self._cap = dead_letter_max_bytes
        self.registry = registry or Registry()
        self._app = application_name
        self._conn: psycopg.Connection[Any] | None = None

    # ---------------------------------------------------------------- connection

    @property
    def connected(self) -> bool:
        """True while the connection is open and not known to be broken."""
        c = self._conn
        return c is not None and not c.closed and not c.broken

    def connect(self) -> None:
        """Open the connection if needed; DatabaseUnavailable when it cannot."""
        if self.connected:
            return
        self.close()
        self._conn = connect(self._url, autocommit=True, application_name=self._app)

    def close(self) -> None:
        """Close the connection (a broken one too)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def ping(self) -> bool:
        """Check the connection with a round trip; False (and closed) when it is gone."""
        try:
            self.connect()
            assert self._conn is not None
            self._conn.execute("SELECT 1")
            return True
        except (DatabaseUnavailable, psycopg.Error):
            self.close()
            return False

    def prepare(self, decoded: object) -> None:
        """Pack the COPY rows of a samples message now if all its tags are registered.

        Safe on another thread than ``write`` (it reads only committed ids): the service
        calls it on its pump thread, so packing overlaps the database work of the previous
        batch. A message it cannot pack is packed by ``write``.
        """
        if not isinstance(decoded, Samples) or not decoded.times:
            return
        ids = self.registry.committed_tags(decoded.path)
        if ids is not None:
            try:
                decoded.packed = _pack_numbers(decoded, ids)
            except Exception:  # a tag not registered yet (KeyError): ``write`` packs it
                decoded.packed = None

    # ---------------------------------------------------------------- batches

    def write(self, batch: Sequence[Pending]) -> WriteResult:
        """Store a batch in one transaction (isolating bad messages); DatabaseUnavailable
        when it cannot be stored now: nothing of it is then committed."""
        self.connect()
        conn = self._conn
        assert conn is not None
        for attempt in range(1, _ATTEMPTS + 1):
            mark = self.registry.mark()
            try:
                with conn.transaction():
                    result = self._write_items(conn, batch)
                self.registry.commit()
                return result
            except Exception as err:
                self.registry.rollback(mark)
                kind = error_kind(err, conn)
                if kind == "data":
                    log.warning("batch rejected; writing it message by message", error=str(err))
                    return self._write_isolated(conn, batch)
                if kind == "transient" and attempt < _ATTEMPTS:
                    continue
                raise self._unavailable(err, kind) from err
        raise AssertionError("unreachable")

    def _unavailable(self, err: BaseException, kind: str) -> DatabaseUnavailable:
        if kind == "connection":
            self.close()
            what = "lost the connection to"
        elif kind == "systemic":
            what = "cannot write (check the schema: `linepulse db upgrade`, disk, permissions) to"
        else:
            what = "keeps failing transiently at"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return DatabaseUnavailable(f"{what} {describe_url(self._url)}: {first}")

    def _write_isolated(
        self, conn: psycopg.Connection[Any], batch: Sequence[Pending]
    ) -> WriteResult:
        """Each message under its own savepoint; the ones the database rejects go dead."""
        result = WriteResult(isolated=True)
        start = self.registry.mark()
        try:
            with conn.transaction():
                for p in batch:
                    result.merge(self._write_one(conn, p))
            self.registry.commit()
        except Exception as err:
            self.registry.rollback(start)
            raise self._unavailable(err, error_kind(err, conn)) from err
        return result

    def _write_one(self, conn: psycopg.Connection[Any], p: Pending) -> WriteResult:
        mark = self.registry.mark()
        try:
            with conn.transaction():
                return self._write_items(conn, [p])
        except Exception as err:
            self.registry.rollback(mark)
            if error_kind(err, conn) != "data":
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            log.warning("message dead-lettered by the database", topic=p.msg.topic, error=first)
            dead = Pending(p.msg, Rejected("database", f"the database rejected it: {first}"))
            return self._write_items(conn, [dead])

    def _write_items(self, conn: psycopg.Connection[Any], items: Sequence[Pending]) -> WriteResult:
        """Everything of ``items`` inside the caller's transaction."""
        result = WriteResult(messages=len(items))
        cur = conn.cursor()
        fresh = self._ledger(cur, items, result)
        statuses = sorted(
            ((p.decoded, p.msg.received) for p in items if isinstance(p.decoded, Status)),
            key=lambda s: (s[0].agent, s[0].ts),
        )
        self._register(cur, fresh, [s for s, _ in statuses])
        self._samples(cur, [d for d in fresh if isinstance(d, Samples)], result)
        self._events(cur, [d for d in fresh if isinstance(d, Events)], result)
        for status, received in statuses:
            result.statuses += self._status(cur, status, received=received)
        self._dead_letters(cur, items, result)
        return result

    # ---------------------------------------------------------------- steps

    def _ledger(
        self, cur: psycopg.Cursor[Any], items: Sequence[Pending], result: WriteResult
    ) -> list[Samples | Events]:
        data = [p.decoded for p in items if isinstance(p.decoded, (Samples, Events))]
        if not data:
            return []
        keys = sorted({(d.agent, d.seq) for d in data})
        cur.execute(LEDGER, ([k[0] for k in keys], [k[1] for k in keys]))
        new = {(agent, seq) for agent, seq in cur.fetchall()}
        fresh = []
        for d in data:
            key = (d.agent, d.seq)
            if key in new:
                new.discard(key)  # the same message twice in one batch counts once
                fresh.append(d)
            else:
                result.duplicates += 1
        result.new = len(fresh)
        return fresh

    def _register(
        self, cur: psycopg.Cursor[Any], fresh: Sequence[Samples | Events], statuses: list[Status]
    ) -> None:
        reg = self.registry
        births = [(s.agent, t) for s in statuses for t in s.tags]
        reg.ensure_assets(cur, {d.path for d in fresh} | {t.path for _, t in births})
        reg.update_tag_meta(
            cur, ((reg.asset_id(t.path), t.tag, t.datatype, t.unit, a) for a, t in births)
        )
        wanted: set[tuple[int, str, str | None]] = set()
        for d in fresh:
            if isinstance(d, Samples):
                asset_id = reg.asset_id(d.path)
                names = set(d.tags) if d.packed is None else set()  # packed: all known
                names.update(t[1] for t in d.text)
                missing = names - reg.tags_of(asset_id).keys()
                wanted.update((asset_id, n, d.agent) for n in missing)
        reg.ensure_tags(cur, wanted)

    def _samples(
        self, cur: psycopg.Cursor[Any], samples: Sequence[Samples], result: WriteResult
    ) -> None:
        numeric = [s for s in samples if s.times]
        if numeric:
            ranges = []
            # One write per message: the server stores rows while the next message is packed.
            with cur.copy(COPY_SAMPLES) as copy:
                copy.write(_COPY_HEADER)
                for s in numeric:
                    copy.write(s.packed or _pack_numbers(s, self._tag_ids(s)))
                    ranges.append((ms_to_datetime(min(s.times)), ms_to_datetime(max(s.times))))
                    result.samples += len(s.times)
                copy.write(_COPY_TRAILER)
            maintenance.note_samples(cur.connection, ranges)
        text = [s for s in samples if s.text]
        if text:
            with cur.copy(COPY_TEXT) as copy:
                copy.write(_COPY_HEADER)
                for s in text:
                    copy.write(_pack_text(s, self._tag_ids(s)))
                    result.text_samples += len(s.text)
                copy.write(_COPY_TRAILER)
        for s in samples:
            result.newest_ms = max(result.newest_ms, s.newest())

    def _tag_ids(self, s: Samples) -> dict[str, int]:
        return self.registry.tags_of(self.registry.asset_id(s.path))

    def _events(
        self, cur: psycopg.Cursor[Any], events: Sequence[Events], result: WriteResult
    ) -> None:
        counts: list[tuple[Any, ...]] = []
        rejects: list[tuple[Any, ...]] = []
        states: list[StateRow] = []
        for e in events:
            asset_id = self.registry.asset_id(e.path)
            for n in e.counts:
                t = ms_to_datetime(n.ts)
                counts.append((asset_id, t, n.total, n.good, n.reject, n.product, e.agent, e.seq))
                rejects += [(asset_id, t, r, k, n.product, e.agent, e.seq) for r, k in n.rejects]
            for s in e.states:
                code = None if s.code is None else str(s.code)
                states.append(
                    StateRow(
                        asset_id, ms_to_datetime(s.ts), s.state, s.reason, code, e.agent, e.seq
                    )
                )
            result.newest_ms = max(result.newest_ms, e.newest())
        if counts:
            cur.execute(COUNTS, [list(col) for col in zip(*counts, strict=True)])
            result.counts += len(counts)
        if rejects:
            cur.execute(REJECTS, [list(col) for col in zip(*rejects, strict=True)])
            result.rejects += len(rejects)
        if states:
            apply_state_events(cur, states)
            result.states += len(states)

    def _status(self, cur: psycopg.Cursor[Any], st: Status, *, received: float) -> int:
        """Record one birth or death; returns 1 when the history got a row."""
        at = ms_to_datetime(st.ts)
        row = cur.execute(GATEWAY_LOCK, (st.agent,)).fetchone()
        if st.status == "offline" and row is not None and row[1] is not None and at <= row[1]:
            # A last will carries the time it was set (at connect), not the time the gateway
            # died: it predates the birth of its own connection. The gateway died after that
            # birth: record the death when it was received, unless it already is recorded.
            if row[0] == "offline":
                return 0
            at = max(datetime.fromtimestamp(received, UTC), row[1] + timedelta(milliseconds=1))
        cur.execute(GATEWAY_HISTORY, (st.agent, at, st.status))
        added = cur.rowcount
        cur.execute(GATEWAY_CURRENT, {"agent": st.agent, "seen": ms_to_datetime(st.ts)})
        return max(added, 0)

    def _dead_letters(
        self, cur: psycopg.Cursor[Any], items: Sequence[Pending], result: WriteResult
    ) -> None:
        dead = [p for p in items if isinstance(p.decoded, Rejected)]
        if not dead:
            return
        cols: list[list[Any]] = [[], [], [], []]
        for p in dead:
            assert isinstance(p.decoded, Rejected)
            cols[0].append(p.msg.topic.replace("\x00", "\\x00"))
            cols[1].append(p.msg.payload[: self._cap])
            cols[2].append(len(p.msg.payload))
            cols[3].append(p.decoded.reason.replace("\x00", "\\x00")[:_REASON_MAX])
            result.dead_letters.append(p.decoded.kind)
        cur.execute(DEAD_LETTERS, cols)


def _pack_numbers(s: Samples, ids: dict[str, int]) -> bytes:
    """Binary COPY rows of the numeric samples of one message."""
    off = EPOCH_2000_MS
    row, null = _ROW, _ROW_NULL
    return b"".join(
        [
            row(4, 8, (t - off) * 1000, 4, ids[n], 8, v, 2, q)
            if v is not None
            else null(4, 8, (t - off) * 1000, 4, ids[n], -1, 2, q)
            for t, n, v, q in zip(s.times, s.tags, s.values, s.qualities, strict=True)
        ]
    )


def _pack_text(s: Samples, ids: dict[str, int]) -> bytes:
    """Binary COPY rows of the text samples of one message."""
    out = []
    for t, n, v, q in s.text:
        raw = v.encode()
        out.append(_TEXT_HEAD(4, 8, (t - EPOCH_2000_MS) * 1000, 4, ids[n], len(raw)))
        out.append(raw)
        out.append(_TEXT_TAIL(2, q))
    return b"".join(out)


def now_ms() -> int:
    """Wall-clock milliseconds (for lag and the future-timestamp check)."""
    return time.time_ns() // 1_000_000
