"""The `edgeledger aggregator` process against a real Mosquitto: start-up, blocks, stop.

The device side here is a plain MQTT client publishing sync messages built with the
core, so each test controls exactly what the aggregator sees. The fault runs with
real agents are in tests/sync/test_faults.py; attacks in test_attacks_mqtt.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mosquitto import Mosquitto, free_port

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import sync_message
from edgeledger.core.checkpoint import Checkpoint, check_extends, open_checkpoint
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.keyfile import write_signer
from edgeledger.sync.messages import Ack, Hello
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics, checkpoint_topic

PREFIX = "test/agg"
ORIGIN = "server.test/log"
DEVICE = Signer("gw-1", bytes([7]) * 32)
TOPICS = DeviceTopics("gw-1", PREFIX)


def _config(tmp: Path, broker: str, interval_ms: int = 200, extra: str = "") -> Path:
    path = tmp / "agg.toml"
    path.write_text(f"""
[aggregator]
origin = "{ORIGIN}"
key_file = "{tmp / 'log.key'}"
[store]
path = "{tmp / 'agg.db'}"
[checkpoint]
interval_ms = {interval_ms}
every_blocks = 1000
[broker]
address = "{broker}"
prefix = "{PREFIX}"
client_id = "agg-under-test"
{extra}
[http]
listen = "127.0.0.1:{free_port()}"
""")
    return path


class Aggregator:
    """One `edgeledger aggregator` process with its stderr kept in a file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.err_path = config.parent / "aggregator.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeledger", "aggregator", "--config",
                 str(self.config), "--log-level", "debug"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stderr().count(text) < count:
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"aggregator never logged {text!r}:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Aggregator]]:
    log_key = Signer.generate(ORIGIN)
    write_signer(tmp_path / "log.key", log_key)
    store = SqliteStore(tmp_path / "agg.db")
    store.enroll("gw-1", DEVICE.public_key, 1)
    store.close()
    agg = Aggregator(tmp_path / "agg.toml")
    yield tmp_path, agg
    agg.kill()


class Device:
    """A plain MQTT client that publishes blocks for gw-1 and collects what it gets back."""

    def __init__(self, broker: Mosquitto) -> None:
        self.transport = MqttTransport(broker.host, broker.port, "device-gw-1",
                                       clean_start=True, reconnect_min=1, reconnect_max=1)
        self.transport.connect()
        self.transport.subscribe([TOPICS.ack, checkpoint_topic(PREFIX)])
        self.chain = DeviceChain.after(DEVICE, None)
        self.acks: list[Ack] = []
        self.checkpoints: list[str] = []

    def block(self, h: int) -> bytes:
        readings = [Reading("s-1/temperature", 1_000 + h, h, 20.0 + h, "Cel")]
        return sync_message(self.chain.seal(readings, int(time.time() * 1000)), readings)

    def collect(self, until: float) -> None:
        while time.monotonic() < until:
            event = self.transport.get(0.05)
            if isinstance(event, Received):
                if event.topic == TOPICS.ack:
                    self.acks.append(Ack.decode(event.payload))
                else:
                    self.checkpoints.append(event.payload.decode())

    def wait_acks(self, n: int, timeout: float = 15.0) -> list[Ack]:
        deadline = time.monotonic() + timeout
        while len(self.acks) < n and time.monotonic() < deadline:
            self.collect(time.monotonic() + 0.1)
        assert len(self.acks) >= n, f"{len(self.acks)} acks, expected {n}: {self.acks}"
        return self.acks


def test_config_errors_exit_78_naming_file_and_key(tmp_path: Path) -> None:
    path = _config(tmp_path, "127.0.0.1:99999")
    run = subprocess.run([sys.executable, "-m", "edgeledger", "aggregator", "--config",
                          str(path)], check=False, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 78, run.stderr
    assert f"{path}: broker.address: port 99999 is out of range" in run.stderr


def test_waits_for_the_broker_then_ingests_and_stops_cleanly(
        setup: tuple[Path, Aggregator], mosquitto: Mosquitto) -> None:
    tmp, agg = setup
    _config(tmp, mosquitto.address)
    mosquitto.stop()
    agg.start()
    agg.wait_for("retrying in")  # the broker is down: it waits, it does not exit
    mosquitto.start()
    agg.wait_for("aggregator running")
    device = Device(mosquitto)
    device.transport.publish(TOPICS.hello, Hello(None, None).encode())
    for h in range(5):
        device.transport.publish(TOPICS.blk, device.block(h))
    acks = device.wait_acks(6)
    assert [(a.status, a.next) for a in acks] == [("gap", 0)] + [("ok", h + 1)
                                                                  for h in range(5)]
    assert [a.log_index for a in acks[1:]] == [0, 1, 2, 3, 4]
    assert agg.terminate() == 0
    assert "aggregator stopped: log size 5" in agg.stderr()
    store = SqliteStore(tmp / "agg.db")
    try:
        last = store.last_checkpoint()
        assert last is not None
        assert open_checkpoint(last, Signer.parse((tmp / "log.key").read_text().strip())
                               .verifier()).size == 5
    finally:
        store.close()


def test_a_restart_continues_the_checkpoint_chain_and_republishes_it(
        setup: tuple[Path, Aggregator], mosquitto: Mosquitto) -> None:
    tmp, agg = setup
    _config(tmp, mosquitto.address)
    agg.start()
    agg.wait_for("aggregator running")
    device = Device(mosquitto)
    for h in range(3):
        device.transport.publish(TOPICS.blk, device.block(h))
    device.wait_acks(3)
    assert agg.terminate() == 0
    mosquitto.restart()  # no persistence: the retained checkpoint is gone with it
    agg.start()
    agg.wait_for("aggregator running", count=2)
    watcher = Device(mosquitto)  # a new subscriber: gets the retained checkpoint
    watcher.collect(time.monotonic() + 2)
    assert watcher.checkpoints, "no retained checkpoint after the restart"
    signer = Signer.parse((tmp / "log.key").read_text().strip())
    verifier = signer.verifier()
    store = SqliteStore(tmp / "agg.db")
    try:
        notes = [store.checkpoint(h) for h in range(store_height(store) + 1)]
        assert watcher.checkpoints[-1] == notes[-1]
        log = CanonicalLog(store, signer)
        for old_note, new_note in itertools.pairwise(notes):
            assert old_note is not None and new_note is not None
            old, new = open_checkpoint(old_note, verifier), open_checkpoint(new_note, verifier)
            check_extends(old, new, log.consistency_proof(old.size, new.size))
    finally:
        store.close()
    assert len(notes) >= 2


def store_height(store: SqliteStore) -> int:
    """The height of the store's last checkpoint."""
    last = store.last_checkpoint()
    assert last is not None
    return Checkpoint.parse(last[:last.rfind("\n\n") + 1]).height


def test_sigterm_with_blocks_queued_acks_them_before_exiting(
        setup: tuple[Path, Aggregator], mosquitto: Mosquitto) -> None:
    """Blocks the broker delivered before SIGTERM are appended and acked: nothing dropped."""
    tmp, agg = setup
    _config(tmp, mosquitto.address, interval_ms=60_000)
    agg.start()
    agg.wait_for("aggregator running")
    device = Device(mosquitto)
    assert agg.proc is not None
    os.kill(agg.proc.pid, signal.SIGSTOP)  # frozen: blocks pile up in its session
    for h in range(50):
        device.transport.publish_async(TOPICS.blk, device.block(h))
    time.sleep(1)
    os.kill(agg.proc.pid, signal.SIGTERM)
    os.kill(agg.proc.pid, signal.SIGCONT)
    assert agg.proc.wait(20) == 0
    store = SqliteStore(tmp / "agg.db")
    try:
        device_row = store.device("gw-1")
        last = store.last_checkpoint()
    finally:
        store.close()
    assert device_row is not None
    held = device_row.next_height
    device.collect(time.monotonic() + 1)
    oks = [a for a in device.acks if a.status == "ok"]
    assert len(oks) == held > 0  # every appended block was acked
    assert last is not None and f"\n{held}\n" in last  # and covered by the last checkpoint
