"""`edgeledger demo` end to end, as CI runs it: real broker, aggregator and agent processes.

Each run is the installed program in a subprocess with CI=true and no standard
input, for a few seconds. Then: every proof bundle verifies with `edgeledger
verify`; the aggregator's store holds blocks with both kinds of readings (the
framed BME280 bridge and the NMEA GPS) exactly as the gateways signed them; the
agents saw no protocol faults; and no process of the demo is left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import Mosquitto, free_port

from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.reading import Reading
from edgeledger.demo.workdir import LOG_ORIGIN
from edgeledger.gateway.identity import key_path
from edgeledger.gateway.ledger import Ledger
from edgeledger.keyfile import load_signer, load_verifier
from edgeledger.sync.mqtt import MqttTransport, Received

PROGRAM = Path(sys.executable).with_name("edgeledger")
BME280 = {"bme280-1/temperature", "bme280-1/humidity", "bme280-1/pressure"}
GPS = {"gps-1/fix"}


def demo_command(out: Path, *extra: str, seconds: str = "6", gateways: str = "2") -> list[str]:
    return [str(PROGRAM), "demo", "--gateways", gateways, "--seconds", seconds, "--dir",
            str(out), "--http", f"127.0.0.1:{free_port()}", "--seed", "11", *extra]


def run_demo(out: Path, *extra: str, seconds: str = "6") -> subprocess.CompletedProcess[str]:
    """The installed `edgeledger demo`, for 2 gateways, as CI runs it."""
    return subprocess.run(demo_command(out, *extra, seconds=seconds), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, "CI": "true"})


def start_demo(out: Path) -> tuple[subprocess.Popen[str], str]:
    """A demo of one gateway that runs until stopped; returns once its live view shows.

    Also returns what it printed up to then.
    """
    demo = subprocess.Popen(demo_command(out, seconds="0", gateways="1"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "true"})
    assert demo.stdout is not None
    seen = ""
    while " running " not in seen:
        line = demo.stdout.readline()
        if not line:
            demo.kill()
            raise AssertionError(f"the demo ended before running:\n{seen}{demo.stderr}")
        seen += line
    return demo, seen


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention `text` (the demo's directory)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(text.encode() in arg for arg in args):
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def no_demo_processes_left(out: Path, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(str(out))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def check_outputs(out: Path, result: subprocess.CompletedProcess[str],
                  gateways: int = 2) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    vkey = load_verifier(str(out / "log.vkey"))
    assert vkey.name == LOG_ORIGIN
    bundles = sorted((out / "proofs").glob("*.json"))
    assert [b.name for b in bundles] == [f"gw-{k}.json" for k in range(1, gateways + 1)]
    for bundle in bundles:
        verified = subprocess.run([str(PROGRAM), "verify", str(bundle), "--log-key",
                                   str(out / "log.vkey")], capture_output=True, text=True,
                                  check=False)
        assert verified.returncode == 0, verified.stdout
        assert verified.stdout.startswith("OK: reading ")
    command = f"verify {out / 'proofs' / 'gw-1.json'} --log-key {out / 'log.vkey'}"
    assert command in result.stdout
    assert no_demo_processes_left(out) == []


def names_in_the_log(out: Path, gateway: str) -> set[str]:
    """Reading names of `gateway`'s blocks that the aggregator's store holds."""
    store = SqliteStore(out / "aggregator.db")
    data = out / gateway / "data"
    ledger = Ledger(data, load_signer(key_path(data)))
    try:
        ledger.recover()
        names = set()
        for height, block_hash, _ in store.blocks(gateway):
            block, readings = ledger.block(height)
            assert block.hash == block_hash  # the log holds what the gateway signed
            names |= {Reading.decode(raw).n for raw in readings}
        return names
    finally:
        ledger.close()
        store.close()


@pytest.fixture(scope="module")
def own_broker_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = run_demo(out)
    check_outputs(out, result)
    return out, result.stdout


def test_the_demo_runs_its_own_broker_and_writes_verifiable_proofs(
        own_broker_run: tuple[Path, str]) -> None:
    _, stdout = own_broker_run
    assert re.search(r"broker: mosquitto pid \d+ on 127\.0\.0\.1:\d+", stdout)
    assert re.search(r"log edgeledger\.demo/agg-1: \d+ blocks at the final checkpoint", stdout)
    for gw in ("gw-1", "gw-2"):
        match = re.search(rf"^{gw}: (\d+) readings on disk in (\d+) blocks", stdout, re.M)
        assert match is not None and int(match.group(1)) > 10 and int(match.group(2)) >= 2


@pytest.mark.parametrize("gateway", ["gw-1", "gw-2"])
def test_framed_and_nmea_readings_reach_the_log(own_broker_run: tuple[Path, str],
                                                gateway: str) -> None:
    out, _ = own_broker_run
    assert names_in_the_log(out, gateway) >= BME280 | GPS


def test_the_agents_saw_no_protocol_faults(own_broker_run: tuple[Path, str]) -> None:
    out, _ = own_broker_run
    for log in ("gw-1.log", "gw-2.log"):
        text = (out / "logs" / log).read_text()
        assert " ERROR " not in text
        assert not re.search(r"WARNING .*(protocol|rejected|lost|bad)", text), text
        assert "stopped: tip" in text  # a clean SIGTERM stop
    assert "aggregator running" in (out / "logs" / "aggregator.log").read_text()


def retained_under(broker: Mosquitto, prefix: str) -> list[str]:
    """Topics under `prefix` holding a retained message, as a new subscriber sees them."""
    transport = MqttTransport(broker.host, broker.port, "test-retained", clean_start=True)
    transport.connect(5)
    try:
        transport.subscribe([f"{prefix}/#"], timeout=5)
        topics, deadline = [], time.monotonic() + 1.0
        while time.monotonic() < deadline:
            event = transport.get(0.1)
            if isinstance(event, Received) and event.retain and event.payload:
                topics.append(event.topic)
        return topics
    finally:
        transport.close()


def test_the_demo_uses_a_given_broker_and_leaves_it_clean(tmp_path: Path,
                                                         mosquitto: Mosquitto) -> None:
    out = tmp_path / "out"
    result = run_demo(out, "--broker", mosquitto.address, seconds="5")
    check_outputs(out, result)
    assert f"broker: {mosquitto.address} (given)" in result.stdout
    assert not (out / "logs" / "mosquitto.log").exists()
    assert mosquitto.running  # not ours to stop
    match = re.search(r"topic prefix (\S+)", result.stdout)
    assert match is not None
    assert retained_under(mosquitto, match.group(1)) == []


def test_generated_profiles_pass_check_config(own_broker_run: tuple[Path, str]) -> None:
    out, _ = own_broker_run
    result = subprocess.run([str(PROGRAM), "check-config", str(out / "aggregator.toml"),
                             str(out / "gw-1" / "agent.toml")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ctrl_c_stops_cleanly_and_still_writes_proofs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    demo, _ = start_demo(out)
    time.sleep(3)  # let a block or two be sealed and acked
    demo.send_signal(signal.SIGINT)
    stdout, stderr = demo.communicate(timeout=120)
    check_outputs(out, subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr),
                  gateways=1)
    assert "SIGINT: stopping cleanly" in stdout
    assert "stopped: tip" in (out / "logs" / "gw-1.log").read_text()


def test_a_failing_child_is_reported_and_everything_stops(tmp_path: Path) -> None:
    out = tmp_path / "out"
    demo, seen = start_demo(out)
    match = re.search(r"gw-1: agent pid (\d+)", seen)
    assert match is not None
    os.kill(int(match.group(1)), signal.SIGKILL)
    stdout, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 1, stdout + stderr
    assert "edgeledger demo: gw-1 was killed by SIGKILL; the end of" in stderr
    assert "edgeledger.agent" in stderr  # the tail of its log
    assert no_demo_processes_left(out) == []
