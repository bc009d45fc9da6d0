"""The disk outbox: order, seqs that never repeat, acks, the bound, bad files, SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from edge_agent.contract import (
    CountEvent,
    Kind,
    Sample,
    SamplesMessage,
    decode,
    encode_body,
)
from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_TOPIC = "lp/v1/site/area/line/m1/samples"
EVENTS_TOPIC = "lp/v1/site/area/line/m1/events"
TS = 1_700_000_000_000


def samples_body(i: int, n: int = 3) -> bytes:
    return encode_body(
        Kind.SAMPLES, [Sample(tag=f"t{k}", ts=TS + i, value=i * 10 + k) for k in range(n)]
    )


def events_body(i: int) -> bytes:
    return encode_body(Kind.EVENTS, [CountEvent(ts=TS + i, total=i + 1, good=i, reject=1)])


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", agent_id="gw-1", max_bytes=1 << 30)
    yield box
    box.close()


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_put_assigns_increasing_seqs_and_pending_is_oldest_first(outbox: Outbox) -> None:
    first = outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(i)) for i in range(3)])
    second = outbox.put([(EVENTS_TOPIC, Kind.EVENTS, events_body(9))])
    assert first == [1, 2, 3] and second == [4]
    msgs = outbox.pending(limit=10)
    assert [m.seq for m in msgs] == [1, 2, 3, 4]
    assert [m.kind for m in msgs] == [Kind.SAMPLES] * 3 + [Kind.EVENTS]
    assert msgs[3].topic == EVENTS_TOPIC
    assert [m.seq for m in outbox.pending(after=1, limit=2)] == [2, 3]
    assert [m.seq for m in outbox.pending(after=1, upto=2)] == [2]
    assert (outbox.depth, outbox.oldest_seq, outbox.newest_seq) == (4, 1, 4)


def test_pending_payload_is_the_full_wire_message(outbox: Outbox) -> None:
    (seq,) = outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(5))])
    (msg,) = outbox.pending()
    decoded = decode(msg.payload)
    assert isinstance(decoded, SamplesMessage)
    assert (decoded.agent, decoded.seq) == ("gw-1", seq)
    assert [s.value for s in decoded.samples] == [50, 51, 52]


def test_ack_deletes_and_keeps_depth_and_size_current(outbox: Outbox) -> None:
    bodies = [samples_body(i) for i in range(4)]
    seqs = outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, b) for b in bodies])
    sizes = [len(b) + len(SAMPLES_TOPIC) for b in bodies]
    assert outbox.size_bytes == sum(sizes)
    assert metric("linepulse_edge_outbox_bytes") == sum(sizes)
    outbox.ack([seqs[0], seqs[2], 999])
    assert [m.seq for m in outbox.pending()] == [seqs[1], seqs[3]]
    assert outbox.depth == 2 and outbox.size_bytes == sizes[1] + sizes[3]
    assert metric("linepulse_edge_outbox_messages") == 2
    outbox.ack(seqs)
    assert outbox.depth == 0 and outbox.size_bytes == 0 and outbox.oldest_seq is None


def test_seq_never_repeats_across_reopen_even_after_everything_was_acked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    seen: list[int] = []
    for _ in range(3):
        box = Outbox(path, agent_id="gw-1", max_bytes=1 << 20)
        seqs = box.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(i)) for i in range(2)])
        seen += seqs
        box.ack(seqs)  # the table is empty when it closes
        assert box.depth == 0
        box.close()
    assert seen == [1, 2, 3, 4, 5, 6]
    with Outbox(path, agent_id="gw-1", max_bytes=1 << 20) as box:
        assert box.last_seq == 6


def test_overflow_drops_oldest_samples_never_events(tmp_path: Path) -> None:
    body = samples_body(0, n=20)
    unit = len(body) + len(SAMPLES_TOPIC)
    box = Outbox(tmp_path / "o.db", agent_id="gw-1", max_bytes=unit * 5)
    dropped_before = metric("linepulse_edge_outbox_dropped_total", kind="samples")
    with capture_logs() as logs:
        box.put([(EVENTS_TOPIC, Kind.EVENTS, events_body(0))])  # seq 1, oldest of all
        box.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(i, n=20)) for i in range(4)])
        for i in range(4, 8):  # each put pushes the total over the bound
            box.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(i, n=20))])
    kept = box.pending(limit=100)
    assert kept[0].kind is Kind.EVENTS and kept[0].seq == 1
    assert [m.seq for m in kept[1:]] == [6, 7, 8, 9]  # samples 2..5 went, oldest first
    assert box.size_bytes <= box.max_bytes
    assert metric("linepulse_edge_outbox_dropped_total", kind="samples") - dropped_before == 4
    full = [e for e in logs if e["event"].startswith("outbox full")]
    assert len(full) == 1 and full[0]["log_level"] == "warning"  # once per episode
    box.ack([m.seq for m in kept[1:]])
    with capture_logs() as logs:
        box.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(9, n=20))])
    assert any(e["event"] == "outbox no longer full" for e in logs)
    box.close()


def test_events_are_kept_past_the_bound_with_one_warning(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", agent_id="gw-1", max_bytes=200)
    with capture_logs() as logs:
        box.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(0))])
        seqs = [box.put([(EVENTS_TOPIC, Kind.EVENTS, events_body(i))])[0] for i in range(6)]
    assert [m.seq for m in box.pending()] == seqs  # the samples message went, no event did
    assert box.size_bytes > box.max_bytes
    growing = [e for e in logs if "only events" in e["event"]]
    assert len(growing) == 1
    box.close()


def test_big_batches_warn_and_batches_the_ingest_would_refuse_are_refused(outbox: Outbox) -> None:
    with capture_logs() as logs:
        outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, b"[" + b"1," * 150_000 + b"1]")])  # 300 kB
    assert outbox.depth == 1
    assert any("over the 256 KiB" in e["event"] for e in logs)
    with pytest.raises(ValueError, match="limit the ingest accepts"):
        outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, b"[" + b"1," * 600_000 + b"1]")])
    with pytest.raises(ValueError, match="not a topic"):
        outbox.put([("lp/v1/+/samples", Kind.SAMPLES, b"[]")])
    assert outbox.depth == 1


@pytest.mark.parametrize("case", ["garbage file", "parent is a file", "path is a directory"])
def test_unusable_path_raises_outbox_error_naming_it(tmp_path: Path, case: str) -> None:
    if case == "garbage file":
        path = tmp_path / "outbox.db"
        path.write_bytes(b"this is not an sqlite database at all" * 100)
    elif case == "parent is a file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "outbox.db"
    else:
        path = tmp_path / "dir.db"
        path.mkdir()
    with pytest.raises(OutboxError) as err:
        Outbox(path, agent_id="gw-1", max_bytes=1 << 20)
    assert str(path) in str(err.value)


def test_a_file_of_another_agent_is_refused(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.db", agent_id="gw-1", max_bytes=1 << 20).close()
    with pytest.raises(OutboxError, match="belongs to agent 'gw-1'"):
        Outbox(tmp_path / "o.db", agent_id="gw-2", max_bytes=1 << 20)


def test_closed_outbox_raises(outbox: Outbox) -> None:
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(0))])


def test_put_in_one_thread_pending_and_ack_in_another(outbox: Outbox) -> None:
    """The agent thread writes while the publisher thread reads and deletes."""
    total = 300
    errors: list[Exception] = []
    acked: list[int] = []

    def consume() -> None:
        try:
            while len(acked) < total:
                after = acked[-1] if acked else 0
                batch = outbox.pending(after=after, limit=25)
                outbox.ack(m.seq for m in batch)
                acked.extend(m.seq for m in batch)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(0, total, 3):
        outbox.put([(SAMPLES_TOPIC, Kind.SAMPLES, samples_body(i + k)) for k in range(3)])
    consumer.join(30)
    assert not errors
    assert acked == list(range(1, total + 1))
    assert outbox.depth == 0


CHILD = """
import sys
from pathlib import Path
from edge_agent.contract import Kind
from edge_agent.outbox import Outbox
box = Outbox(Path(sys.argv[1]), agent_id="gw-kill", max_bytes=1 << 30)
i = 0
while True:
    items = [("lp/v1/s/a/l/m/samples", Kind.SAMPLES, b"[%d]" % (i * 10 + k)) for k in range(3)]
    seqs = box.put(items)
    print(" ".join(map(str, seqs)), flush=True)
    i += 1
"""


def test_every_returned_put_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    returned: list[list[int]] = []
    try:
        for line in child.stdout:
            returned.append([int(s) for s in line.split()])
            if len(returned) == 300:
                break
        child.send_signal(signal.SIGKILL)  # mid-way: the child is in its next put()
        returned += [[int(s) for s in line.split()] for line in child.stdout if line.strip()]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(returned) >= 300
    with Outbox(path, agent_id="gw-kill", max_bytes=1 << 30) as box:
        stored = box.pending(limit=100_000)
    stored_seqs = [m.seq for m in stored]
    assert stored_seqs == sorted(stored_seqs) == list(range(1, len(stored) + 1))
    by_seq = {m.seq: m.payload for m in stored}
    for i, seqs in enumerate(returned):
        for k, seq in enumerate(seqs):
            assert f'"samples":[{i * 10 + k}]}}'.encode() in by_seq[seq]
