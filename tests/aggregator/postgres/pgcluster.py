"""A PostgreSQL cluster under test: aggregator processes, devices that stream, the checks.

Theory of operation. The aggregators are real `edgeledger aggregator` processes
sharing one configuration (`[store] backend = "postgres"`, one schema per test),
so every one of them is an ingest worker and a sequencer candidate; the test
SIGKILLs, SIGSTOPs and restarts them from outside. The devices are the real
device side of sync, DeviceSync, driven over a real MqttTransport on a thread
each: they seal blocks built with the core at a steady rate, keep a window of
unacked blocks and resend them on a timer, verify every checkpoint they are
given and ask the aggregators for consistency proofs, exactly as an agent does.
Ending a run: sealing stops, and the run waits until every device has every block
acked and covered by a checkpoint it verified. `check_run` then reads the store
directly: each device's blocks are in the log exactly once, at heights 0..n-1,
with the hashes the device sent, nothing else is in the log, the queue is empty,
and the whole checkpoint chain verifies (signatures, prev links, a consistency
proof between each pair), with Go's sumdb/note and sumdb/tlog too when given.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto import Mosquitto, free_port

from edgeledger import clock
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.postgres import PostgresStore
from edgeledger.core import merkle
from edgeledger.core.block import sync_message
from edgeledger.core.checkpoint import Checkpoint, check_extends, open_checkpoint
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.sync.device import Alarm, DeviceSync, KeepCheckpoint, Publish, SendBlock
from edgeledger.sync.mqtt import Connected, ConnectionLost, MqttTransport, Received

ORIGIN = "cluster.test/log"
PREFIX = "test/pg"


def write_config(path: Path, broker: Mosquitto, dsn: str, schema: str, key_file: Path,
                 interval_ms: int = 300, failover_ms: int = 3000, poll_ms: int = 100,
                 hold_ms: int = 500, http_port: int | None = None) -> Path:
    """The aggregator TOML every process of the cluster runs with (the first process to
    bind `http_port`, a free one by default, serves the API)."""
    path.write_text(f"""
[aggregator]
origin = "{ORIGIN}"
key_file = "{key_file}"
[store]
backend = "postgres"
dsn = "{dsn}"
schema = "{schema}"
[checkpoint]
interval_ms = {interval_ms}
every_blocks = 1000
[broker]
address = "{broker.address}"
prefix = "{PREFIX}"
client_id = "agg"
[cluster]
group = "aggs"
failover_ms = {failover_ms}
poll_ms = {poll_ms}
hold_ms = {hold_ms}
[http]
listen = "127.0.0.1:{http_port or free_port()}"
""")
    return path


class AggProcess:
    """One `edgeledger aggregator` process; its stderr (all starts) in one file."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.err_path = config.parent / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AggProcess:
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeledger", "aggregator", "--config", str(self.config),
                 "--log-level", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stderr().count(text) < count:
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"aggregator never logged {text!r}:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def terms(store: PostgresStore) -> list[tuple[int, int, int]]:
    """(term, holder's pid, since_ms) of every sequencer term so far."""
    return [(int(t), int(h.rsplit("-", 1)[1]), int(s)) for t, h, s in store.q(
        "SELECT term, holder, since_ms FROM sequencer_terms ORDER BY term")]


@dataclass
class SimDevice:
    """One device: DeviceSync over MQTT on its own thread, sealing `rate_hz` blocks a second."""

    dev: str
    broker: Mosquitto
    log_key: Signer
    rate_hz: float
    window: int = 16
    resend_ms: int = 1000
    signer: Signer = field(init=False)
    messages: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    sealing: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.signer = Signer(self.dev, bytes([len(self.dev), *self.dev.encode()]).ljust(32, b"."))
        self.chain = DeviceChain.after(self.signer, None)
        self.sync = DeviceSync(self.dev, self.log_key.verifier(), None, prefix=PREFIX,
                               window=self.window, resend_ms=self.resend_ms, state_ms=5000)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=self.dev, daemon=True)

    def start(self) -> None:
        self.sealing.set()
        self.thread.start()

    def done(self) -> bool:
        """Every sealed block acked, and covered by a checkpoint it verified."""
        with self.lock:
            tip = self.sync.tip
            return tip is not None and self.sync.acked == tip and self.sync.prunable == tip

    def _seal(self, now: int) -> list[Any]:
        h = len(self.messages)
        readings = [Reading(f"s-{i}/temperature", clock.wall_ms(), h, 20.0 + i, "Cel")
                    for i in range(3)]
        block = self.chain.seal(readings, clock.wall_ms())
        self.messages.append(sync_message(block, readings))
        self.hashes.append(block.hash)
        return self.sync.sealed(h, now)

    def _run(self) -> None:
        transport = MqttTransport(self.broker.host, self.broker.port, f"device-{self.dev}",
                                  clean_start=True, reconnect_min=1, reconnect_max=1)
        transport.connect()
        transport.subscribe(self.sync.topics.subscriptions())
        period, next_seal = 1000 / self.rate_hz, float(clock.mono_ms())
        try:
            while not self.stop.is_set():
                now = clock.mono_ms()
                with self.lock:
                    acts: list[Any] = []
                    if self.sealing.is_set() and now >= next_seal:
                        acts += self._seal(now)
                        next_seal += period
                    event = transport.get(0)
                    while event is not None:
                        if isinstance(event, Connected):
                            acts += self.sync.connected(now)
                        elif isinstance(event, ConnectionLost):
                            acts += self.sync.disconnected()
                        elif isinstance(event, Received):
                            acts += self.sync.received(event.topic, event.payload, now)
                        event = transport.get(0)
                    acts += self.sync.tick(now)
                    self._act(transport, acts)
                time.sleep(0.005)
        finally:
            transport.close()

    def _act(self, transport: MqttTransport, acts: list[Any]) -> None:
        for act in acts:
            if isinstance(act, SendBlock):
                transport.publish_async(act.topic, self.messages[act.height], act.qos)
            elif isinstance(act, Publish):
                transport.publish_async(act.topic, act.payload, act.qos, act.retain)
            elif isinstance(act, KeepCheckpoint):
                self.kept.append(act.note)
            elif isinstance(act, Alarm):
                self.alarms.append(act.reason)


def drain(devices: list[SimDevice], timeout: float = 60.0) -> None:
    """Stop sealing; wait until every device has every block acked and covered."""
    for d in devices:
        d.sealing.clear()
    deadline = time.monotonic() + timeout
    while not all(d.done() for d in devices):
        if time.monotonic() > deadline:
            raise AssertionError("devices not done: " + ", ".join(
                f"{d.dev} tip {d.sync.tip} acked {d.sync.acked} prunable {d.sync.prunable}"
                for d in devices))
        time.sleep(0.1)
    for d in devices:
        d.stop.set()
        d.thread.join(10)


@dataclass
class Report:
    """What check_run found."""

    size: int = 0
    checkpoints: int = 0
    go_cases: int = 0


def check_run(store: PostgresStore, devices: list[SimDevice], log_key: Signer,
              go: Any | None = None) -> Report:
    """The end-of-run checks of the module doc; raises AssertionError on the first fault."""
    report = Report(size=store.size())
    entries = list(store.entries())
    assert len(entries) == report.size == sum(len(d.hashes) for d in devices)
    assert len(set(entries)) == len(entries), "an entry is in the log twice"
    for d in devices:
        assert d.alarms == [], (d.dev, d.alarms[:3])
        blocks = store.blocks(d.dev)
        assert [h for h, _, _ in blocks] == list(range(len(d.hashes))), d.dev
        assert [b for _, b, _ in blocks] == d.hashes, f"{d.dev}: hashes differ from what it sent"
        for h, _, index in blocks:
            assert sync_message_entry(d.messages[h]) == entries[index], (d.dev, h)
    assert int(store.one("SELECT count(*) FROM queue")[0]) == 0, "blocks left in the queue"
    log = CanonicalLog(store, log_key)
    assert log.root() == merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in entries])
    chain = checkpoint_chain(store, log, log_key)
    report.checkpoints = len(chain)
    for d in devices:
        assert d.kept and d.kept[-1] in {note for note, _ in chain}, d.dev
    if go is not None:
        report.go_cases = check_with_go(go, store, log, chain, log_key)
    return report


def sync_message_entry(message: bytes) -> bytes:
    """The log entry a sync message's block becomes: its COSE_Sign1 bytes."""
    from edgeledger.core.block import parse_sync_message
    return parse_sync_message(message)[0].cose


def checkpoint_chain(store: PostgresStore, log: CanonicalLog,
                     log_key: Signer) -> list[tuple[str, Checkpoint]]:
    """Every stored checkpoint, opened, each extending the one before (consistency proof)."""
    chain = []
    for height in itertools.count():
        note = store.checkpoint(height)
        if note is None:
            break
        chain.append((note, open_checkpoint(note, log_key.verifier())))
    assert chain, "no checkpoint"
    for (_, old), (_, new) in itertools.pairwise(chain):
        check_extends(old, new, log.consistency_proof(old.size, new.size))
    assert chain[-1][1].size == store.size(), "the last checkpoint does not cover the log"
    return chain


def check_with_go(go: Any, store: PostgresStore, log: CanonicalLog,
                  chain: list[tuple[str, Checkpoint]], log_key: Signer) -> int:
    """Go's note.Open on every checkpoint and tlog.CheckTree on every consecutive pair."""
    from gosumdb import b64

    vkey = log_key.verifier().text()
    cases: list[dict[str, Any]] = [{"id": f"open {cp.height}", "op": "open", "note": note,
                                    "vkeys": [vkey], "checkpoint": True} for note, cp in chain]
    for (_, old), (_, new) in itertools.pairwise(chain):
        if old.size:
            cases.append({"id": f"check {old.height}", "op": "check_tree", "size": new.size,
                          "root": b64(new.root), "old_size": old.size,
                          "old_root": b64(old.root),
                          "proof": [b64(h) for h in log.consistency_proof(old.size, new.size)]})
    hashes = store.read_hashes(range(merkle.stored_count(store.size())))
    results = go.run(cases, {"log": hashes})
    refused = [f"{i}: {r.get('error')}" for i, r in results.items() if not r["ok"]]
    assert not refused, f"Go refused: {refused[:5]}"
    return len(cases)
