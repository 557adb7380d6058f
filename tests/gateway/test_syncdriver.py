"""The agent syncing over a real Mosquitto to a tiny aggregator written here.

Nothing is mocked at the MQTT layer: the agent is a real `edgeledger agent` process
with a simulated counter sensor and `[sync]` pointing at the test broker. The fake
aggregator (`FakeAggregator`) is deliberately small but honest where the device can
tell: it appends each device block once, in height order, to a real
CanonicalLog(MemoryLogStore), acks ok/dup/gap with the log index, signs a checkpoint
after each append (piggybacked on the ack and retained on `<p>/checkpoint`) and
answers consistency requests with real proofs. So the device's checkpoint checks,
`covered` and pruning cursor run for real.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mosquitto import Mosquitto

from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.config import SyncConfig, read_agent_config
from edgeledger.core.block import parse_sync_message, verify_readings
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.gateway.ledger import Ledger
from edgeledger.keyfile import load_signer
from edgeledger.sync.messages import Ack, ConsistencyProof, ConsistencyRequest, State
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics, aggregator_subscriptions, parse_device_topic

DEVICE = "sync-gw-1"
PREFIX = "test/el"
TOPICS = DeviceTopics(DEVICE, PREFIX)


class FakeAggregator:
    """Appends blocks in height order per device, acks them, proves consistency."""

    def __init__(self, broker: Mosquitto) -> None:
        self.signer = Signer.generate("test-log.example")
        self.log = CanonicalLog(MemoryLogStore(), self.signer)
        self.heights: list[int] = []  # of DEVICE, in log order
        self.index: dict[int, int] = {}
        self.dups = self.gaps = self.proofs = 0
        self.errors: list[str] = []
        self.transport = MqttTransport(broker.host, broker.port, "fake-aggregator",
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

    def _run(self) -> None:
        while not self._stop.is_set():
            event = self.transport.get(0.05)
            if isinstance(event, Received):
                try:
                    self._handle(event)
                except EdgeLedgerError as exc:
                    self.errors.append(str(exc))

    def _handle(self, event: Received) -> None:
        device, kind = parse_device_topic(event.topic, PREFIX)
        if device != DEVICE:
            return
        if kind == "blk":
            ack = self._block(event.payload)
            self._send(TOPICS.ack, ack.encode())
        elif kind == "cons":
            req = ConsistencyRequest.decode(event.payload)
            proof = self.log.consistency_proof(req.old_size, req.new_size)
            self.proofs += 1
            self._send(TOPICS.proof,
                       ConsistencyProof(req.old_size, req.new_size, tuple(proof)).encode())

    def _block(self, payload: bytes) -> Ack:
        block, raws = parse_sync_message(payload)
        verify_readings(block, raws)
        h, expected = block.header.h, len(self.heights)
        if h < expected:
            self.dups += 1
            return Ack(h + 1, "dup", log_index=self.index[h])
        if h > expected:
            self.gaps += 1
            return Ack(expected, "gap")
        self.index[h] = self.log.append(block.cose)
        self.heights.append(h)
        note = self.log.sign_checkpoint(int(time.time() * 1000))
        self.transport.publish_async(TOPICS.checkpoint, note.encode(), 1, retain=True)
        return Ack(h + 1, "ok", log_index=self.index[h], checkpoint=note)

    def _send(self, topic: str, payload: bytes) -> None:
        # While the broker is down this fails: the device resends and we answer again.
        with contextlib.suppress(EdgeLedgerError):
            self.transport.publish_async(topic, payload, 1)


class StateWatcher:
    """Records every `state` message of the device (retained ones included)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.states: list[State] = []
        self.transport = MqttTransport(broker.host, broker.port, "state-watcher",
                                       clean_start=True, reconnect_min=1, reconnect_max=1,
                                       on_event=self._on_event)
        self.transport.connect()
        self.transport.subscribe([TOPICS.state])

    def _on_event(self, event: object) -> None:
        if isinstance(event, Received) and event.payload:
            self.states.append(State.decode(event.payload))

    def close(self) -> None:
        """Disconnect."""
        self.transport.close()


def wait(what: str, predicate: Callable[[], bool], timeout: float,
         log: Path | None = None) -> None:
    """Wait until `predicate()` or fail saying `what` (with the agent's log tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def sync_doc(data_dir: Path) -> dict[str, object]:
    """The `sync` document of the agent's state.json (written atomically)."""
    try:
        db = json.loads((data_dir / "state.json").read_text())
    except FileNotFoundError:
        return {}
    docs = list(db.get("sync", {}).values())
    return dict(docs[0]) if docs else {}


def counters(data_dir: Path) -> dict[str, int]:
    """The counters document of state.json."""
    db = json.loads((data_dir / "state.json").read_text())
    docs = list(db.get("counters", {}).values())
    return dict(docs[0]) if docs else {}


def write_config(path: Path, broker: Mosquitto, log_key: str) -> Path:
    """An agent profile: one fast counter, small blocks, sync to the test broker."""
    path.write_text(f"""
[device]
id = "{DEVICE}"

[journal]
fsync_window_ms = 100

[sealing]
max_readings = 5
max_age_ms = 300

[[sensors]]
type = "sim"
kind = "counter"
id = "counter-1"
interval_ms = 50

[sync]
broker = "{broker.address}"
prefix = "{PREFIX}"
log_key = "{log_key}"
window = 4
resend_ms = 1000
""")
    return path


def test_agent_syncs_every_block_exactly_once_through_an_outage(
        tmp_path: Path, mosquitto: Mosquitto,
        agents: Callable[[Path, Path], tuple[subprocess.Popen[bytes], Path]]) -> None:
    aggregator = FakeAggregator(mosquitto)
    watcher = StateWatcher(mosquitto)
    data_dir = tmp_path / "gw"
    config = write_config(tmp_path / "agent.toml", mosquitto, aggregator.signer.verifier().text())
    try:
        proc, log = agents(config, data_dir)
        wait("5 blocks in the log", lambda: len(aggregator.heights) >= 5, 15, log)
        wait("state online", lambda: any(s.online for s in watcher.states), 5, log)
        wait("acked and covered in state.json",
             lambda: isinstance(sync_doc(data_dir).get("covered"), int), 10, log)

        # The broker goes away for 5 s while the agent keeps recording and sealing.
        before = len(aggregator.heights)
        mosquitto.stop()
        time.sleep(5)
        assert proc.poll() is None, log.read_text()[-2000:]
        mosquitto.start()
        # 5 s at ~4 blocks/s is ~20 blocks: more than the window of 4.
        wait("the backlog to arrive", lambda: len(aggregator.heights) >= before + 18, 20, log)
        acked_then = sync_doc(data_dir).get("acked")
        assert isinstance(acked_then, int) and acked_then >= before
        wait("covered to follow", lambda: _int(sync_doc(data_dir).get("covered")) >= before,
             10, log)
        wait("state online again after the broker restart (it kept no retained message)",
             lambda: sum(s.online for s in watcher.states) >= 2, 10, log)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()[-2000:]
        wait("state offline after SIGTERM", lambda: not watcher.states[-1].online, 5, log)
        text = log.read_text()
        assert "connection to" in text and "lost" in text  # the outage was noticed
        assert "sync alarm" not in text, text[-3000:]

        # Restart: the cursor comes back from state.json; then SIGKILL: the will.
        doc = sync_doc(data_dir)
        assert isinstance(doc.get("checkpoint"), str) and _int(doc.get("acked")) >= before + 18
        proc, log = agents(config, data_dir)
        sent = len(aggregator.heights)
        wait("sync resumed", lambda: len(aggregator.heights) >= sent + 5, 15, log)
        assert "connected to" in log.read_text()
        online_seen = len(watcher.states)
        wait("state online", lambda: len(watcher.states) > online_seen
             and watcher.states[-1].online, 10, log)
        proc.kill()
        proc.wait()
        wait("the last will (state offline) after SIGKILL",
             lambda: not watcher.states[-1].online, 10, log)
    finally:
        aggregator.close()
        watcher.close()

    # Every block the aggregator holds is the device's block at that height, once, in order.
    assert aggregator.errors == []
    ledger = Ledger(data_dir, load_signer(data_dir / "device.key"))
    ledger.recover()
    tip = ledger.tip
    assert tip is not None
    heights = aggregator.heights
    assert heights == list(range(len(heights)))
    assert len(heights) >= tip - 10  # a SIGKILL may leave the last few unsent
    for h in heights:
        assert aggregator.log.store.entry(aggregator.index[h]) == ledger.block(h)[0].cose
    ledger.close()
    assert aggregator.proofs >= 1  # later checkpoints were checked with consistency proofs
    assert counters(data_dir).get("sync_alarms", 0) == 0


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _sync_config(tmp_path: Path, sync: str) -> tuple[object, list[str]]:
    path = tmp_path / "a.toml"
    path.write_text(f'[device]\nid = "{DEVICE}"\n[[sensors]]\ntype = "sim"\nkind = "counter"\n'
                    f'id = "c"\n[sync]\nbroker = "127.0.0.1:1883"\n{sync}')
    result = read_agent_config(path)
    return (result.config.sync if result.config else None,
            [f"{e.key}: {e.reason}" for e in result.errors])


def test_sync_config_keys(tmp_path: Path) -> None:
    key = Signer.generate("log.example").verifier()
    (tmp_path / "log.pub").write_text(key.text() + "\n")
    (tmp_path / "pw").write_text("secret\n")
    sync, errors = _sync_config(tmp_path, f'log_key = "{tmp_path / "log.pub"}"\n'
                                f'username = "{DEVICE}"\npassword_file = "{tmp_path / "pw"}"\n'
                                'window = 8\nresend_ms = 500\n')
    assert errors == []
    assert isinstance(sync, SyncConfig) and sync.log_key == key and sync.window == 8
    assert sync.host_port == ("127.0.0.1", 1883) and sync.resend_ms == 500
    _, errors = _sync_config(tmp_path, 'log_key = "not a key"\n')
    assert errors and errors[0].startswith("sync.log_key:")
    _, errors = _sync_config(tmp_path, f'log_key = "{key.text()}"\n'
                             f'tls_cert_file = "{tmp_path / "pw"}"\n')
    assert [e.split(":")[0] for e in errors] == ["sync.tls_key_file", "sync.tls_ca_file"]
    _, errors = _sync_config(tmp_path, f'log_key = "{key.text()}"\npassword_file = "/nope"\n')
    assert [e.split(":")[0] for e in errors] == ["sync.password_file", "sync.username"]
