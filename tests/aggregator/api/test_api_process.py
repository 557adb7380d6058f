"""The `edgeledger aggregator` process serves the API while it ingests (real Mosquitto).

A device (a plain MQTT client, as in tests/aggregator/test_server.py) publishes its
state and a run of blocks, a forged one and a duplicate; meanwhile a reader thread
polls the API. Then the API must show what was ingested: the log, the device's
state from its `state` message, the readings, a proof that `verify_bundle` accepts,
and metrics that count exactly what was accepted and refused, by reason. A port in
use stops the process with exit 78 naming `http.listen`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mosquitto import Mosquitto, free_port

from edgeledger.core.block import seal, sync_message
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.note import Signer, Verifier
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.keyfile import write_signer
from edgeledger.sync.messages import Ack, State
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics

PREFIX = "test/api"
ORIGIN = "process.test/log"
DEVICE = Signer("gw-1", bytes([7]) * 32)
TOPICS = DeviceTopics("gw-1", PREFIX)
BLOCKS = 30


def write_config(tmp: Path, broker: str, listen: str) -> Path:
    path = tmp / "agg.toml"
    path.write_text(f"""
[aggregator]
origin = "{ORIGIN}"
key_file = "{tmp / 'log.key'}"
[store]
path = "{tmp / 'agg.db'}"
[checkpoint]
interval_ms = 100
every_blocks = 1000
[broker]
address = "{broker}"
prefix = "{PREFIX}"
client_id = "agg-api-test"
[http]
listen = "{listen}"
""")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Signer]]:
    from edgeledger.aggregator.store.sqlite import SqliteStore
    log_key = Signer.generate(ORIGIN)
    write_signer(tmp_path / "log.key", log_key)
    store = SqliteStore(tmp_path / "agg.db")
    store.enroll("gw-1", DEVICE.public_key, 1)
    store.close()
    yield tmp_path, log_key


def start(config: Path) -> tuple[subprocess.Popen[bytes], Path]:
    err = config.parent / "aggregator.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "edgeledger", "aggregator", "--config",
                                 str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=f)
    return proc, err


def wait_for(err: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in err.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"never logged {text!r}:\n{err.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def test_the_aggregator_serves_the_api_while_it_ingests(
        setup: tuple[Path, Signer], mosquitto: Mosquitto) -> None:
    tmp, log_key = setup
    port = free_port()
    proc, err = start(write_config(tmp, mosquitto.address, f"127.0.0.1:{port}"))
    try:
        wait_for(err, "aggregator running", proc)
        assert f"HTTP API listening on http://127.0.0.1:{port}" in err.read_text()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        served = _poll_while(client, lambda: _ingest(mosquitto, log_key))
        assert served and all(code == 200 for code in served), set(served)
        _check_after(client, log_key)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, err.read_text()
    assert "HTTP API stopped" in err.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/log", timeout=2)


def _poll_while(client: httpx.Client, work: object) -> list[int]:
    """Poll the API from another thread while `work()` runs; the status codes seen."""
    codes: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for path in ("/v1/log", "/v1/readings?limit=20", "/metrics", "/v1/devices/gw-1"):
                codes.append(client.get(path).status_code)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        work()  # type: ignore[operator]
    finally:
        done.set()
        thread.join()
    return codes


def _ingest(broker: Mosquitto, log_key: Signer) -> None:
    """Publish state, BLOCKS blocks, a forged block and a duplicate; wait for every ack."""
    device = MqttTransport(broker.host, broker.port, "device-gw-1", clean_start=True)
    device.connect()
    device.subscribe([TOPICS.ack])
    device.publish(TOPICS.state, State(True, BLOCKS - 1, 4, "test-1").encode(), retain=True)
    chain = DeviceChain.after(DEVICE, None)
    messages = []
    for h in range(BLOCKS):
        readings = [Reading("s-1/temperature", 1_700_000_000_000 + h, h, 20.0 + h, "Cel"),
                    Reading("s-2/humidity", 1_700_000_000_000 + h, h, 50 + h, "%RH")]
        messages.append(sync_message(chain.seal(readings, int(time.time() * 1000)), readings))
    forged = seal(Signer("gw-1", bytes([8]) * 32), "gw-1", BLOCKS, bytes(32), [], 1)
    for m in [*messages, sync_message(forged, []), messages[3]]:
        device.publish_async(TOPICS.blk, m)
    acks: list[Ack] = []
    deadline = time.monotonic() + 30
    while len(acks) < BLOCKS + 2 and time.monotonic() < deadline:
        event = device.get(0.1)
        if isinstance(event, Received):
            acks.append(Ack.decode(event.payload))
    device.close()
    assert [a.status for a in acks] == ["ok"] * BLOCKS + ["rejected", "dup"], acks
    time.sleep(0.3)  # a checkpoint over all of them (interval 100 ms)


def _check_after(client: httpx.Client, log_key: Signer) -> None:
    info = client.get("/v1/log").json()
    assert info["verifier_key"] == log_key.verifier().text() and info["size"] == BLOCKS
    gw1 = client.get("/v1/devices/gw-1").json()
    assert gw1["next_height"] == BLOCKS
    assert gw1["status"]["online"] is True and gw1["status"]["backlog"] == 4
    assert gw1["status"]["version"] == "test-1" and gw1["status"]["tip"] == BLOCKS - 1
    readings = client.get("/v1/readings", params={"name": "s-2/humidity", "limit": 1000}).json()
    assert [r["v"] for r in readings["readings"]] == [50 + h for h in range(BLOCKS)]
    r = client.get("/v1/proof", params={"device": "gw-1", "height": 17, "index": 1})
    proven = verify_bundle(ProofBundle.from_json(r.text), Verifier.parse(info["verifier_key"]))
    assert proven.reading.v == 67
    metrics = client.get("/metrics").text
    expect = {"edgeledger_blocks_accepted_total": BLOCKS,
              'edgeledger_blocks_rejected_total{reason="unknown-key"}': 1,
              'edgeledger_blocks_rejected_total{reason="dup"}': 1,
              "edgeledger_readings_accepted_total": 2 * BLOCKS,
              'edgeledger_readings_rejected_total{reason="dup"}': 2,
              "edgeledger_ingest_latency_seconds_count": BLOCKS + 2,
              "edgeledger_log_entries": BLOCKS,
              'edgeledger_device_backlog_blocks{device="gw-1"}': 4,
              'edgeledger_device_online{device="gw-1"}': 1}
    for name, value in expect.items():
        match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
        assert match and float(match.group(1)) == value, (name, metrics[:3000])


def test_a_port_in_use_stops_it_naming_http_listen(setup: tuple[Path, Signer],
                                                   mosquitto: Mosquitto) -> None:
    tmp, _ = setup
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp, mosquitto.address, f"127.0.0.1:{port}")
        run = subprocess.run([sys.executable, "-m", "edgeledger", "aggregator", "--config",
                              str(config)], capture_output=True, text=True, timeout=60,
                             check=False, stdin=subprocess.DEVNULL)
    assert run.returncode == 78, run.stderr
    assert f"{config}: http.listen: cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "another process is listening there" in run.stderr


WITHOUT_EXTRA = ("import sys; sys.modules.update(fastapi=None, uvicorn=None, "
                 "prometheus_client=None); from edgeledger.cli import main; "
                 "sys.exit(main(sys.argv[1:]))")


def test_without_the_aggregator_extra_it_ingests_and_says_why_there_is_no_api(
        setup: tuple[Path, Signer], mosquitto: Mosquitto) -> None:
    tmp, _ = setup
    config = write_config(tmp, mosquitto.address, f"127.0.0.1:{free_port()}")
    err = tmp / "aggregator.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", WITHOUT_EXTRA, "aggregator", "--config",
                                 str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=f)
    try:
        wait_for(err, "aggregator running", proc)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, err.read_text()
    assert "HTTP API not started" in err.read_text()
    assert "pip install 'edgeledger[aggregator]'" in err.read_text()
