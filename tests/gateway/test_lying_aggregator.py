"""A lying aggregator against a real `edgeledger agent` process over a real Mosquitto.

The test plays the aggregator: it holds the log key, so it can sign anything. After
an honest phase (acks with log indexes, checkpoints, consistency proofs) long enough
for the agent's small disk quota to prune blocks covered by a checkpoint it kept,
it freezes one last honest checkpoint (the "good" one) and then lies:

- a fork at the same size: same tree size, another root, the next height;
- a fork at a bigger size: a checkpoint of another tree, answered with that tree's own
  consistency proof, which cannot verify from the kept root;
- a rollback: a smaller tree at the next height.

Each time the agent must raise the alarm (an error line "sync alarm" and a
`sync_alarms` entry in state.json), keep the good checkpoint as its cursor, and, while
the liar keeps acking new blocks and the quota keeps pressing, prune nothing the good
checkpoint does not cover. The sans-I/O table of lies is tests/sync/test_device_sync.py;
this is the end-to-end run of the three that matter most.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mosquitto import Mosquitto

from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.core.block import parse_sync_message, verify_readings
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.retention import first_kept_height
from edgeledger.keyfile import load_signer
from edgeledger.sync.messages import Ack, ConsistencyProof, ConsistencyRequest
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics, aggregator_subscriptions, parse_device_topic

DEVICE = "liar-gw-1"
PREFIX = "test/liar"
TOPICS = DeviceTopics(DEVICE, PREFIX)
SEGMENT = 64 << 10
QUOTA = 1 << 20  # the smallest quota the agent accepts: 16 segments
SIGN_EVERY_S = 0.25
R = TypeVar("R")


class LyingAggregator:
    """Honest until told otherwise; then acks blocks but signs only what it is handed.

    One thread owns the log and the transport; the test runs code on that thread with
    `call(fn)` so nothing is shared without a lock.
    """

    def __init__(self, broker: Mosquitto) -> None:
        self.signer = Signer.generate("liar.example/log")
        self.log = CanonicalLog(MemoryLogStore(), self.signer)
        self.index: dict[int, int] = {}  # device height -> log index
        self.honest = True
        self.answers: dict[tuple[int, int], tuple[bytes, ...]] = {}  # lies for cons requests
        self.proofs = 0
        self.errors: list[str] = []
        self._signed_at = 0.0
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = \
            queue.SimpleQueue()
        self.transport = MqttTransport(broker.host, broker.port, "lying-aggregator",
                                       reconnect_min=1, reconnect_max=1)
        self.transport.connect()
        self.transport.subscribe(aggregator_subscriptions(PREFIX))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering."""
        self._stop.set()
        self._thread.join(5)
        self.transport.close()

    def call(self, fn: Callable[[], R], timeout: float = 5.0) -> R:
        """Run `fn` on the aggregator's thread and return what it returns."""
        done: Future[R] = Future()
        self._calls.put((fn, done))
        return done.result(timeout)

    # --- the aggregator's thread -------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Empty):
                while True:
                    fn, done = self._calls.get_nowait()
                    try:
                        done.set_result(fn())
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        done.set_exception(exc)
            event = self.transport.get(0.02)
            try:
                if isinstance(event, Received):
                    self._handle(event)
                if self.honest and time.monotonic() - self._signed_at >= SIGN_EVERY_S:
                    self._sign()
            except EdgeLedgerError as exc:
                self.errors.append(str(exc))

    def _handle(self, event: Received) -> None:
        device, kind = parse_device_topic(event.topic, PREFIX)
        if device != DEVICE:
            return
        if kind == "blk":
            self._send(TOPICS.ack, self._block(event.payload).encode())
        elif kind == "cons":
            req = ConsistencyRequest.decode(event.payload)
            signed = self.log.checkpoint
            if (req.old_size, req.new_size) in self.answers:
                proof = self.answers[req.old_size, req.new_size]
            elif signed is not None and req.new_size <= signed.size:  # an honest request
                proof = tuple(self.log.consistency_proof(req.old_size, req.new_size))
            else:
                return
            self.proofs += 1
            self._send(TOPICS.proof,
                       ConsistencyProof(req.old_size, req.new_size, proof).encode())

    def _block(self, payload: bytes) -> Ack:
        block, raws = parse_sync_message(payload)
        verify_readings(block, raws)
        h, expected = block.header.h, len(self.index)
        if h < expected:
            return Ack(h + 1, "dup", log_index=self.index[h])
        if h > expected:
            return Ack(expected, "gap")
        self.index[h] = self.log.append(block.cose)
        return Ack(h + 1, "ok", log_index=self.index[h])

    def _sign(self) -> str | None:
        """Sign and publish (retained) a checkpoint over the whole log, if it grew."""
        self._signed_at = time.monotonic()
        last = self.log.checkpoint_note
        note = self.log.sign_checkpoint(int(time.time() * 1000))
        if note == last:
            return None
        self.publish_checkpoint(note)
        return note

    def publish_checkpoint(self, note: str) -> None:
        """Put `note` on `<p>/checkpoint`, retained (call on the aggregator's thread)."""
        self._send(TOPICS.checkpoint, note.encode(), retain=True)

    def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with contextlib.suppress(EdgeLedgerError):  # the device resends; we answer again
            self.transport.publish_async(topic, payload, 1, retain=retain)

    # --- what the test asks for (on the aggregator's thread, through `call`) ------------

    def freeze(self) -> str:
        """Stop signing; sign one last honest checkpoint over everything held so far."""
        self.honest = False
        self._sign()
        note = self.log.checkpoint_note
        assert note is not None
        return note


# --- the agent process -------------------------------------------------------------------


def write_config(path: Path, broker: Mosquitto, log_key: str) -> Path:
    """A profile that fills its 1 MiB quota in seconds: 8 fast environment sensors."""
    sensors = "".join(f'\n[[sensors]]\ntype = "sim"\nkind = "environment"\nid = "env-{i}"\n'
                      "interval_ms = 10\n" for i in range(8))
    path.write_text(f"""
[device]
id = "{DEVICE}"

[journal]
fsync_window_ms = 100
segment_bytes = {SEGMENT}
quota_bytes = {QUOTA}
quota_policy = "stop"

[sealing]
max_readings = 200
max_age_ms = 200
{sensors}
[sync]
broker = "{broker.address}"
prefix = "{PREFIX}"
log_key = "{log_key}"
window = 8
resend_ms = 1000
""")
    return path


def state(data_dir: Path) -> dict[str, Any]:
    """The agent's state.json (written atomically, so always whole)."""
    try:
        return dict(json.loads((data_dir / "state.json").read_text()))
    except FileNotFoundError:
        return {}


def _doc(data_dir: Path, table: str) -> dict[str, Any]:
    docs = list(state(data_dir).get(table, {}).values())
    return dict(docs[0]) if docs else {}


def sync_doc(data_dir: Path) -> dict[str, Any]:
    """state.json's sync cursor: acked, checkpoint, covered, log_indexes."""
    return _doc(data_dir, "sync")


def counter(data_dir: Path, name: str) -> int:
    """One counter of state.json (0 if never bumped)."""
    value = _doc(data_dir, "counters").get(name, 0)
    return value if isinstance(value, int) else 0


def alarms(data_dir: Path) -> list[str]:
    """The reasons of the recorded sync alarms, oldest first."""
    rows = state(data_dir).get("sync_alarms", {})
    return [rows[k]["reason"] for k in sorted(rows, key=int)]


def wait(what: str, predicate: Callable[[], bool], timeout: float, log: Path) -> None:
    """Wait until `predicate()` or fail saying `what`, with the agent's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{log.read_text()[-3000:]}")


# --- the lies --------------------------------------------------------------------------


def _fork_same_size(agg: LyingAggregator, good: Checkpoint) -> str:
    """The good tree's size, another root, linked to the good checkpoint: no proof needed."""
    return replace(good, root=bytes([0xF0]) * 32, height=good.height + 1, prev=good.hash,
                   time=good.time + 1).sign(agg.signer)


def _fork_bigger(agg: LyingAggregator, good: Checkpoint) -> str:
    """A bigger tree that does not extend the good one, with its own consistency proof."""
    fork = CanonicalLog(MemoryLogStore(), agg.signer)
    for i in range(good.size + 5):
        fork.append(f"forged entry {i}".encode())
    agg.answers[good.size, fork.size] = tuple(fork.consistency_proof(good.size, fork.size))
    return replace(good, size=fork.size, root=fork.root(), height=good.height + 1,
                   prev=good.hash, time=good.time + 2).sign(agg.signer)


def _rollback(agg: LyingAggregator, good: Checkpoint) -> str:
    """A smaller tree (the log's real earlier root) presented as the next checkpoint."""
    size = good.size // 2
    return replace(good, size=size, root=agg.log.root(size), height=good.height + 1,
                   prev=good.hash, time=good.time + 3).sign(agg.signer)


LIES: list[tuple[str, Callable[[LyingAggregator, Checkpoint], str], str]] = [
    # (case, how the liar signs it, what the device's alarm says)
    ("fork, same size", _fork_same_size, "two different roots for size"),
    ("fork, bigger size", _fork_bigger, "does not extend the tree of size"),
    ("rollback, smaller size", _rollback, "tree shrank from size"),
]


def test_a_lying_aggregator_is_caught_and_nothing_uncovered_is_pruned(
        tmp_path: Path, mosquitto: Mosquitto,
        agents: Callable[[Path, Path], tuple[subprocess.Popen[bytes], Path]]) -> None:
    agg = LyingAggregator(mosquitto)
    data_dir = tmp_path / "gw"
    config = write_config(tmp_path / "agent.toml", mosquitto, agg.signer.verifier().text())
    try:
        proc, log = agents(config, data_dir)
        # Honest phase: the quota is reached and covered blocks are pruned.
        wait("pruning under the quota", lambda: counter(data_dir, "pruned_segments") >= 1,
             45, log)
        assert alarms(data_dir) == []

        good_note = agg.call(agg.freeze)
        good = open_checkpoint(good_note, agg.signer.verifier())
        wait("the device to keep the last honest checkpoint",
             lambda: sync_doc(data_dir).get("checkpoint") == good_note, 10, log)
        covered = sync_doc(data_dir)["covered"]
        # The device's coverage is exactly what the good checkpoint's tree holds.
        held = agg.call(lambda: dict(agg.index))
        assert covered == max(h for h, i in held.items() if i < good.size)

        for name, make, detail in LIES:
            before = len(alarms(data_dir))
            lie = agg.call(lambda make=make: make(agg, good))
            agg.call(lambda lie=lie: agg.publish_checkpoint(lie))
            wait(f"the alarm for {name}", lambda b=before: len(alarms(data_dir)) > b, 10, log)
            reason = alarms(data_dir)[-1]
            assert "not consistent with the kept checkpoint" in reason, (name, reason)
            assert f"(height {good.height}, size {good.size})" in reason, (name, reason)
            assert detail in reason, (name, reason)
            doc = sync_doc(data_dir)
            assert (doc["checkpoint"], doc["covered"]) == (good_note, covered), name
        assert agg.call(lambda: agg.proofs) >= 1  # the bigger fork's proof was asked for

        # The liar goes on acking; the quota presses; only covered blocks may go.
        wait("intake to stop at the quota", lambda: counter(data_dir, "intake_stopped") >= 1,
             30, log)
        assert sync_doc(data_dir)["acked"] > covered  # acked, never covered: kept
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()[-3000:]
    finally:
        agg.close()

    text = log.read_text()
    assert text.count("sync alarm") == len(LIES), text[-3000:]
    doc = sync_doc(data_dir)
    assert (doc["checkpoint"], doc["covered"]) == (good_note, covered)
    assert len(alarms(data_dir)) == counter(data_dir, "sync_alarms") == len(LIES)
    assert agg.errors == []

    ledger = Ledger(data_dir, load_signer(data_dir / "device.key"), SEGMENT)
    ledger.recover()
    try:
        first = first_kept_height(ledger)
        assert ledger.tip is not None and first is not None
        assert 0 < first <= covered + 1, (first, covered)  # pruned, but never past coverage
        assert 0 < counter(data_dir, "pruned_blocks") <= first
        for h in range(covered + 1, ledger.tip + 1):  # every uncovered block is still here
            block, raws = ledger.block(h)
            verify_readings(block, raws)
            if h in agg.index:
                assert agg.log.store.entry(agg.index[h]) == block.cose
    finally:
        ledger.close()
