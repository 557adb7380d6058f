"""The crash test, with real processes: run `edgeledger agent` with a counter sensor, SIGKILL
it at random moments, restart it, again and again. After every kill the log checks out
(`verify_log`, read-only: a torn tail is allowed) and still holds every reading the agent
had reported durable (its last `durable counter-1=<q>` line). At the end `edgeledger log
verify` passes and the counter's readings are there exactly once each, in order.

20 kills by default; 200 with EDGELEDGER_SLOW=1 (marked slow). EDGELEDGER_CRASH_SEED
replays a run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from edgeledger.core.reading import Reading
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.logverify import verify_log
from edgeledger.keyfile import load_signer

ROOT = Path(__file__).resolve().parents[2]
EDGELEDGER = ROOT / ".venv" / "bin" / "edgeledger"
SENSOR = "counter-1"
DURABLE = re.compile(rf"\bdurable (?:.* )?{SENSOR}=(\d+)\b")
SLOW = os.environ.get("EDGELEDGER_SLOW") == "1"

CONFIG = f"""
[device]
id = "crash-gw-1"

[journal]
fsync_window_ms = 50
segment_bytes = 65536

[sealing]
max_readings = 17
max_age_ms = 300
heartbeat_ms = 500

[[sensors]]
type = "sim"
kind = "counter"
id = "{SENSOR}"
interval_ms = 10
"""


def _command(config: Path, data: Path) -> list[str]:
    program = [str(EDGELEDGER)] if EDGELEDGER.exists() else [sys.executable, "-m",
                                                              "edgeledger.cli"]
    return [*program, "agent", "--config", str(config), "--data-dir", str(data),
            "--log-level", "debug"]


def _run_and_kill(command: list[str], log: Path, after: float, ready_first: bool) -> int | None:
    """Start the agent, SIGKILL it `after` seconds later (counted from its "running" line
    when `ready_first`, so that a slow start-up on a busy machine still leaves time to
    record); the last q it reported durable."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, cwd=log.parent)
        if ready_first:
            _wait_running(log, proc)
        time.sleep(after)
        exited = proc.poll()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    text = log.read_text(errors="replace")
    assert exited is None, f"the agent exited by itself ({exited}):\n{text[-3000:]}"
    found = DURABLE.findall(text)
    return int(found[-1]) if found else None


def _wait_running(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while b" running: " not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            return  # the caller reports what happened
        time.sleep(0.02)


def _counter_readings(data: Path) -> list[Reading]:
    """Every reading of the counter in the recovered ledger: all blocks, then the open block."""
    ledger = Ledger(data, load_signer(data / "device.key"))
    ledger.recover()
    out: list[Reading] = []
    for h in range(ledger.tip + 1 if ledger.tip is not None else 0):
        out += [Reading.decode(raw) for raw in ledger.block(h)[1]]
    out += ledger.open
    ledger.close()
    return [r for r in out if r.sensor == SENSOR]


@pytest.mark.parametrize("kills", [
    pytest.param(20, id="ci"),
    pytest.param(200, id="slow", marks=[pytest.mark.slow, pytest.mark.skipif(
        not SLOW, reason="200 kills: set EDGELEDGER_SLOW=1")]),
])
def test_sigkill_loses_no_durable_reading(tmp_path: Path, kills: int, gw: ModuleType) -> None:
    seed = int(os.environ.get("EDGELEDGER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    config, data = tmp_path / "agent.toml", tmp_path / "data"
    config.write_text(CONFIG)
    command = _command(config, data)
    durable = -1
    reported_runs = 0
    for run in range(kills):
        where = f"seed {seed}, run {run}"
        # Mostly after start-up, sometimes during it (recovery itself must survive a kill).
        during_start = rng.random() < 0.2
        after = rng.uniform(0.05, 0.4) if during_start else rng.uniform(0.1, 0.9)
        reported = _run_and_kill(command, tmp_path / f"agent-{run}.log", after,
                                 ready_first=not during_start)
        if reported is not None:
            assert reported >= durable, f"{where}: durable q went back to {reported}"
            durable, reported_runs = reported, reported_runs + 1
        if not data.exists():
            continue
        report = verify_log(data)  # raises LogFault naming file, offset and height
        have = report.chain.last_q.get(SENSOR, -1)
        assert have >= durable, f"{where}: reported q={durable} durable, the log ends at {have}"
    assert reported_runs >= kills // 4 and durable > 2 * kills, \
        f"seed {seed}: too little happened to test ({reported_runs} runs, q={durable})"

    done = subprocess.run([str(EDGELEDGER), "log", "verify", "--data-dir", str(data)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"seed {seed}: {done.stdout}{done.stderr}"
    assert done.stdout.startswith("OK: "), done.stdout

    readings = _counter_readings(data)
    qs = [r.q for r in readings]
    assert qs == list(range(len(qs))), f"seed {seed}: readings missing, repeated or out of order"
    assert all(r.v == r.q for r in readings), f"seed {seed}: a reading is not the one numbered"
    assert len(qs) > durable, f"seed {seed}: durable q={durable}, the log holds {len(qs)}"
    status, line = gw.log_verify(data)  # after the agent-style recovery: no tail left
    assert status == 0 and "torn tail" not in line, line
