"""The agent as a real process with hw_configs/simulated.toml: SIGTERM, restart, notify."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeledger.core.reading import Reading
from edgeledger.gateway.identity import load_or_create_key
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.logverify import run_log_verify

REPO = Path(__file__).resolve().parents[2]
SIMULATED = REPO / "hw_configs" / "simulated.toml"
DURABLE = re.compile(r"DEBUG edgeledger\.agent: durable (.*)$")


@dataclass
class AgentProcess:
    """A running `edgeledger agent` and the file its stderr goes to."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Everything logged so far."""
        return self.log.read_text()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10) -> str:
        """Wait until the log satisfies `predicate`; the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            if self.proc.poll() is not None:
                pytest.fail(f"agent exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        pytest.fail(f"timed out waiting; log:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start agents (killed at the end if still running)."""
    procs: list[AgentProcess] = []

    def start(data_dir: Path, config: Path = SIMULATED, env: dict[str, str] | None = None,
              level: str = "debug") -> AgentProcess:
        log = tmp_path / f"agent-{len(procs)}.log"
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        full_env.update(env or {})
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeledger.cli", "agent", "--config", str(config),
                 "--data-dir", str(data_dir), "--log-level", level],
                stdout=subprocess.DEVNULL, stderr=err, env=full_env, cwd=tmp_path)
        agent = AgentProcess(proc, log)
        procs.append(agent)
        return agent

    yield start
    for agent in procs:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def durable_lines(text: str) -> list[dict[str, int]]:
    """Every `durable` line, parsed."""
    out = []
    for line in text.splitlines():
        m = DURABLE.search(line)
        if m:
            out.append({k: int(v) for k, v in (p.split("=") for p in m.group(1).split())})
    return out


def chain(data_dir: Path) -> tuple[list[int], dict[str, list[Reading]]]:
    """Heights of the sealed blocks and every sealed reading, by sensor, in chain order."""
    signer, _ = load_or_create_key(data_dir, "sim-gw-1")
    ledger = Ledger(data_dir, signer)
    ledger.recover()
    heights, readings = [], {}
    assert ledger.tip is not None
    for h in range(ledger.tip + 1):
        block, raws = ledger.block(h)
        heights.append(block.header.h)
        for raw in raws:
            r = Reading.decode(raw)
            readings.setdefault(r.sensor, []).append(r)
    assert not ledger.open, "SIGTERM must seal the open block"
    ledger.close()
    return heights, readings


def test_sigterm_seals_flushes_and_a_restart_continues(
        tmp_path: Path, start_agent: Callable[..., AgentProcess],
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    first = start_agent(data)
    first.wait_for(lambda t: len(durable_lines(t)) >= 2)
    assert first.stop() == 0
    log1 = first.text()
    assert "sealed block 0" in log1 and "(shutdown)" in log1
    assert "stopped: tip 0" in log1
    heights, readings = chain(data)
    assert heights == [0]
    final = durable_lines(log1)[-1]
    assert final == {s: rs[-1].q for s, rs in readings.items()}

    second = start_agent(data)
    second.wait_for(lambda t: len(durable_lines(t)) >= 2)
    assert second.stop() == 0
    assert "recovered" in second.text() and "tip 0" in second.text()
    heights, readings = chain(data)
    assert heights == [0, 1]
    assert set(readings) == {"bme280-1", "gps-1", "counter-1"}
    for sensor, rs in readings.items():
        # per-sensor sequence numbers continue across the restart, with no gap or repeat
        assert [r.q for r in rs] == list(range(len(rs))), sensor
    assert [r.v for r in readings["counter-1"]] == [r.q for r in readings["counter-1"]]
    assert len(readings["counter-1"]) > final["counter-1"] + 1

    capsys.readouterr()
    assert run_log_verify(data) == 0
    assert "OK" in capsys.readouterr().out
    state = json.loads((data / "state.json").read_text())
    assert state["counters"]["1"]["starts"] == 2
    assert (data / "device.key").stat().st_mode & 0o777 == 0o600


def test_watchdog_pings_while_running(tmp_path: Path,
                                      start_agent: Callable[..., AgentProcess]) -> None:
    name = f"@edgeledger-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(5)
    try:
        agent = start_agent(tmp_path / "data", env={"NOTIFY_SOCKET": name,
                                                    "WATCHDOG_USEC": "200000"})
        messages = [sock.recv(4096).decode()]
        assert messages[0].startswith("READY=1")
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            messages.append(sock.recv(4096).decode())
        pings = [m for m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 7, messages  # every 0.1 s, so about 10 in a second
        assert agent.stop() == 0
        rest = []
        sock.settimeout(0.5)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any(m.startswith("STOPPING=1") for m in rest), rest
    finally:
        sock.close()


def test_a_seal_before_the_last_seal_is_flagged_and_recorded(
        tmp_path: Path, start_agent: Callable[..., AgentProcess]) -> None:
    data = tmp_path / "data"
    signer, _ = load_or_create_key(data, "sim-gw-1")
    ledger = Ledger(data, signer)
    ledger.recover()
    future = time.time_ns() // 1_000_000 + 3_600_000  # the last seal is an hour ahead
    ledger.add(Reading("counter-1/n", future, 0, 0))
    ledger.seal(future)
    ledger.close()

    agent = start_agent(data)
    agent.wait_for(lambda t: len(durable_lines(t)) >= 1)
    assert agent.stop() == 0
    text = agent.text()
    assert re.search(r"WARNING edgeledger\.agent: clock before last seal", text), text
    state = json.loads((data / "state.json").read_text())
    flags = list(state["clock"].values())
    assert flags and all(f["kind"] == "backwards" for f in flags)
    assert len(flags) == 2  # at start, and again when the open block was sealed
    assert state["counters"]["1"]["clock_flags"] == 2
    _, readings = chain(data)
    assert [r.q for r in readings["counter-1"]][:2] == [0, 1]


def test_a_wide_open_key_stops_the_agent_naming_the_chmod(
        tmp_path: Path, start_agent: Callable[..., AgentProcess]) -> None:
    data = tmp_path / "data"
    load_or_create_key(data, "sim-gw-1")
    os.chmod(data / "device.key", 0o644)
    agent = start_agent(data)
    assert agent.proc.wait(timeout=10) == 78
    assert f"chmod 600 {data / 'device.key'}" in agent.text()


def test_a_bad_config_stops_the_agent_naming_file_and_key(
        tmp_path: Path, start_agent: Callable[..., AgentProcess]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(SIMULATED.read_text().replace("max_readings = 100", "max_readings = 0"))
    agent = start_agent(tmp_path / "data", config=config)
    assert agent.proc.wait(timeout=10) == 78
    assert f"{config}: sealing.max_readings: 0 is out of range" in agent.text()


def test_one_agent_per_data_directory(tmp_path: Path,
                                      start_agent: Callable[..., AgentProcess]) -> None:
    data = tmp_path / "data"
    first = start_agent(data)
    first.wait_for(lambda t: "running" in t)
    second = start_agent(data)
    assert second.proc.wait(timeout=10) == 1
    assert f"data directory {data} is in use by another agent (pid {first.proc.pid})" \
        in second.text()
    assert first.stop(signal.SIGINT) == 0
