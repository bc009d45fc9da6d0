"""The disk outbox: every message is stored here before it is published, and deleted on PUBACK.

SQLite in WAL mode, one file per agent. What it guarantees:

* **Durability.** ``put()`` commits with ``synchronous=FULL``: when it returns, the rows are
  in the fsynced WAL and survive SIGKILL and power loss. One ``put()`` is one transaction
  (one fsync) however many messages it carries, so callers batch. ``ack()`` commits with
  ``synchronous=NORMAL``: a power cut may roll back the last deletes, which only means those
  messages are sent again; the ingest deduplicates by ``(agent, seq)``. A later FULL commit
  syncs the whole WAL, so a lost delete can never take a later ``put()`` with it.
* **Sequence numbers.** ``seq`` comes from a counter in the ``meta`` table, advanced in the
  same transaction as the insert. It never repeats for this agent, also after every row was
  acknowledged and deleted (``max(seq)`` of an empty table would restart it).
* **Order.** ``pending()`` returns messages oldest first (``seq`` is the rowid).
* **Bound.** Past ``max_bytes`` of stored topic + body bytes, the oldest *samples* messages
  are deleted in the same transaction until the total is under the bound again. Events are
  never dropped: when only events are left the outbox grows and says so once.
* **Threads.** Each thread gets its own SQLite connection (``threading.local``); WAL lets the
  publisher thread read while the agent thread writes, and SQLite's write lock (with a busy
  timeout) serializes ``put()`` and ``ack()``. ``put()`` calls are also serialized in-process so
  the overflow bookkeeping stays consistent. ``close()`` closes every thread's connection.

``put()`` blocks for one fsync (about a millisecond on an SSD): from asyncio, call it through
``asyncio.to_thread`` when that matters.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from edge_agent import metrics
from edge_agent.contract import MAX_PAYLOAD_BYTES, Kind, wrap_body
from edge_agent.errors import OutboxError

log = structlog.get_logger("edge_agent.outbox")

SCHEMA_VERSION: Final = 1
# contract.decode refuses payloads over 4 x MAX_PAYLOAD_BYTES: storing one would only block.
HARD_LIMIT: Final = 4 * MAX_PAYLOAD_BYTES - 256  # room for the envelope
# kind and size come before the body so scans that need only them stay on the first page.
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq   INTEGER PRIMARY KEY,
        kind  TEXT    NOT NULL,
        size  INTEGER NOT NULL,
        topic TEXT    NOT NULL,
        body  BLOB    NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_kind_seq ON outbox (kind, seq)",
    # Counters kept by triggers, in the same transactions, so depth and size never drift.
    """CREATE TABLE IF NOT EXISTS stats (
        id INTEGER PRIMARY KEY CHECK (id = 0), messages INTEGER NOT NULL, bytes INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO stats VALUES (0, 0, 0)",
    """CREATE TRIGGER IF NOT EXISTS outbox_ins AFTER INSERT ON outbox BEGIN
        UPDATE stats SET messages = messages + 1, bytes = bytes + NEW.size WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS outbox_del AFTER DELETE ON outbox BEGIN
        UPDATE stats SET messages = messages - 1, bytes = bytes - OLD.size WHERE id = 0;
    END""",
)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A stored message, ready to publish: ``payload`` is the full wire payload."""

    seq: int
    topic: str
    kind: Kind
    payload: bytes


class Outbox:
    """A durable, bounded, ordered disk queue of batches for one agent."""

    def __init__(self, path: Path, *, agent_id: str, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._put_lock = threading.Lock()
        self._closed = False
        self._overflowing = False  # inside an overflow episode (samples being dropped)
        self._episode_dropped = 0
        self._events_only_warned = False
        self._big_warned = False
        self._log = log.bind(outbox=str(self.path))
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ opening

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._error("cannot create its directory", err) from err
        if self.path.is_dir():
            raise OutboxError(
                f"outbox {self.path}: is a directory; point agent.data_dir at a directory"
                " where the agent may create its outbox file"
            )
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                self._check_meta(conn)
        except sqlite3.Error as err:
            raise self._error("cannot open", err) from err
        if str(mode).lower() != "wal":
            self._log.warning("outbox is not in WAL mode; writes will be slower", mode=mode)
        self._update_metrics()

    def _check_meta(self, conn: sqlite3.Connection) -> None:
        """Stamp a new file with the agent id; refuse a file that belongs to another agent."""
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('agent', ?)", (self.agent_id,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('last_seq', 0)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta["schema"] != SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self.path}: schema version {meta['schema']} is not {SCHEMA_VERSION};"
                " this agent version cannot read it (upgrade the agent or move the file aside)"
            )
        if meta["agent"] != self.agent_id:
            raise OutboxError(
                f"outbox {self.path} belongs to agent {meta['agent']!r}, not {self.agent_id!r}:"
                " give each agent its own data_dir (moving the file aside loses its unsent"
                " messages)"
            )

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may close it from another thread.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=67108864")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _error(self, what: str, err: BaseException) -> OutboxError:
        hint = "check the path and its permissions"
        text = str(err).lower()
        if "not a database" in text or "malformed" in text:
            hint = (
                "the file is damaged: move it aside (it may hold unsent messages) and restart"
                " to start a fresh outbox"
            )
        elif "disk is full" in text or "disk i/o" in text:
            hint = "free disk space or lower outbox.max_bytes"
        elif "readonly" in text or "unable to open" in text:
            hint = "the agent must be able to write the file and its directory"
        return OutboxError(f"outbox {self.path}: {what}: {err}; {hint}")

    # ------------------------------------------------------------ writing

    def put(
        self, items: Sequence[tuple[str, Kind, bytes]], *, checkpoint: str | None = None
    ) -> list[int]:
        """Store (topic, kind, body) batches in one transaction; return their new seqs.

        ``body`` is ``contract.encode_body(kind, ...)``. When this returns the messages are
        on disk. Over the bound, the oldest samples messages (maybe some of these) are dropped.
        ``checkpoint`` (the agent's counter baselines) is stored in the same transaction, so
        after a crash the baselines match exactly the events that were stored.
        """
        if not items:
            if checkpoint is not None:
                self._save_checkpoint(checkpoint)
            return []
        rows = [_row(topic, kind, body) for topic, kind, body in items]
        biggest = max(row[1] for row in rows)
        if biggest > MAX_PAYLOAD_BYTES and not self._big_warned:
            self._big_warned = True
            self._log.warning(
                "a batch is over the 256 KiB many brokers accept: lower publish.max_batch",
                bytes=biggest,
            )
        with self._put_lock:
            conn = self._conn()
            try:
                with _transaction(conn):
                    (last,) = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
                    seqs = list(range(last + 1, last + 1 + len(rows)))
                    conn.executemany(
                        "INSERT INTO outbox (seq, kind, size, topic, body) VALUES (?, ?, ?, ?, ?)",
                        [(s, *r) for s, r in zip(seqs, rows, strict=True)],
                    )
                    conn.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seqs[-1],))
                    if checkpoint is not None:
                        conn.execute(
                            "INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)", (checkpoint,)
                        )
                    dropped, total = self._enforce_bound(conn)
            except sqlite3.Error as err:
                raise self._error("cannot store messages", err) from err
            self._after_put(dropped, total)
        self._update_metrics()
        return seqs

    def _save_checkpoint(self, checkpoint: str) -> None:
        with self._put_lock:
            conn = self._conn()
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)", (checkpoint,)
                    )
            except sqlite3.Error as err:
                raise self._error("cannot store the checkpoint", err) from err

    def load_checkpoint(self) -> str | None:
        """The checkpoint stored with the last put, or None for a new outbox."""
        row = self._conn().execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()
        return None if row is None else str(row[0])

    def _enforce_bound(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Delete the oldest samples until under max_bytes; return (dropped, bytes after)."""
        (total,) = conn.execute("SELECT bytes FROM stats WHERE id=0").fetchone()
        if total <= self.max_bytes:
            return 0, total
        excess, freed, count, cut = total - self.max_bytes, 0, 0, None
        scan = conn.execute(
            "SELECT seq, size FROM outbox WHERE kind=? ORDER BY seq", (Kind.SAMPLES.value,)
        )
        for seq, size in scan:
            freed, count, cut = freed + size, count + 1, seq
            if freed >= excess:
                break
        scan.close()
        if cut is not None:
            conn.execute("DELETE FROM outbox WHERE kind=? AND seq<=?", (Kind.SAMPLES.value, cut))
        return count, total - freed

    def _after_put(self, dropped: int, total: int) -> None:
        """Count drops and log once per overflow episode (called under the put lock)."""
        if dropped:
            metrics.OUTBOX_DROPPED.labels(kind=Kind.SAMPLES.value).inc(dropped)
            self._episode_dropped += dropped
            if not self._overflowing:
                self._overflowing = True
                self._log.warning(
                    "outbox full: dropping the oldest samples (events are kept)",
                    max_bytes=self.max_bytes,
                    dropped=dropped,
                )
        if total > self.max_bytes:  # every samples message is gone: only events are left
            if not self._events_only_warned:
                self._events_only_warned = True
                self._log.warning(
                    "outbox over its bound with only events left: keeping them and growing",
                    bytes=total,
                    max_bytes=self.max_bytes,
                )
            return
        self._events_only_warned = False
        if self._overflowing and not dropped:
            self._log.info("outbox no longer full", dropped_samples_messages=self._episode_dropped)
            self._overflowing, self._episode_dropped = False, 0

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged messages (unknown seqs are ignored)."""
        params = [(int(s),) for s in seqs]
        if not params:
            return
        conn = self._conn()
        try:
            # A lost delete only resends a message (deduplicated downstream): skip the fsync.
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with _transaction(conn):
                    conn.executemany("DELETE FROM outbox WHERE seq=?", params)
            finally:
                conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as err:
            raise self._error("cannot delete acknowledged messages", err) from err
        self._update_metrics()

    # ------------------------------------------------------------ reading

    def pending(
        self, *, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[OutboxMessage]:
        """Up to ``limit`` messages with ``after < seq [<= upto]``, oldest first."""
        sql = "SELECT seq, kind, topic, body FROM outbox WHERE seq > ?"
        args: list[int] = [after]
        if upto is not None:
            sql += " AND seq <= ?"
            args.append(upto)
        args.append(limit)
        try:
            rows = self._conn().execute(sql + " ORDER BY seq LIMIT ?", args).fetchall()
        except sqlite3.Error as err:
            raise self._error("cannot read messages", err) from err
        out = []
        for seq, kind_text, topic, body in rows:
            kind = Kind(kind_text)
            payload = wrap_body(agent=self.agent_id, seq=seq, kind=kind, body=body)
            out.append(OutboxMessage(seq=seq, topic=topic, kind=kind, payload=payload))
        return out

    def _query_one(self, sql: str) -> tuple[int, ...]:
        try:
            row: tuple[int, ...] = self._conn().execute(sql).fetchone()
        except sqlite3.Error as err:
            raise self._error("cannot read its state", err) from err
        return row

    @property
    def depth(self) -> int:
        """Messages waiting."""
        return self._query_one("SELECT messages FROM stats WHERE id=0")[0]

    @property
    def size_bytes(self) -> int:
        """Stored topic + body bytes (what max_bytes bounds; the file itself is larger)."""
        return self._query_one("SELECT bytes FROM stats WHERE id=0")[0]

    @property
    def oldest_seq(self) -> int | None:
        """The seq of the oldest waiting message, None when empty."""
        return self._query_one("SELECT min(seq) FROM outbox")[0]

    @property
    def newest_seq(self) -> int | None:
        """The seq of the newest waiting message, None when empty."""
        return self._query_one("SELECT max(seq) FROM outbox")[0]

    @property
    def last_seq(self) -> int:
        """The last seq ever assigned (0 before the first put), acked or not."""
        return self._query_one("SELECT value FROM meta WHERE key='last_seq'")[0]

    def _update_metrics(self) -> None:
        messages, size = self._query_one("SELECT messages, bytes FROM stats WHERE id=0")
        metrics.OUTBOX_DEPTH.set(messages)
        metrics.OUTBOX_BYTES.set(size)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Close every thread's connection; later calls raise OutboxError."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is None:
                self._conn.execute("COMMIT")
        finally:
            # Also after a failed COMMIT (disk full), so the connection stays usable.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")


def _row(topic: str, kind: Kind, body: bytes) -> tuple[str, int, str, bytes]:
    """(kind, size, topic, body) of one item, checked."""
    kind = Kind(kind)
    if not topic or any(c in topic for c in "+#\0"):
        raise ValueError(f"{topic!r} is not a topic a message can be published to")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"outbox body for {topic!r} must be bytes, got {type(body).__name__}")
    body = bytes(body)
    if len(body) > HARD_LIMIT:
        raise ValueError(
            f"a {kind.value} batch for {topic!r} is {len(body)} bytes, over the"
            f" {HARD_LIMIT}-byte limit the ingest accepts: cut batches smaller"
            " (publish.max_batch)"
        )
    return kind.value, len(body) + len(topic.encode()), topic, body
