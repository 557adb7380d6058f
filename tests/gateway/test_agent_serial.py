"""End to end from a serial port to the journal: range checks and NaN never get signed.

The agent runs as a real process reading a `lines` source through a pseudo-terminal
(by a by-id style symlink), plus a simulated sensor that replays NaN and infinities,
so both places where a bad value is stopped are covered: the line decoder (a NaN in
text is a bad line) and the agent's range check (an out-of-range or non-finite
sample is rejected before it is numbered and signed).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeledger.core.reading import Reading
from edgeledger.gateway.identity import load_or_create_key
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.logverify import run_log_verify
from edgeledger.gateway.state import State

PROFILE = """
[device]
id = "serial-gw"
[journal]
fsync_window_ms = 50
[sealing]
max_readings = 5
max_age_ms = 200
[[sensors]]
type = "lines"
id = "uno-1"
device = "{device}"
baud = 115200
format = "kv"
units = {{ temperature = "Cel", humidity = "%RH" }}
ranges = {{ temperature = [-40.0, 85.0], humidity = [0, 100] }}
[[sensors]]
type = "sim"
kind = "replay"
id = "flaky"
metric = "temperature"
unit = "Cel"
interval_ms = 50
values = [20.5, nan, inf, -inf, 500.0]
ranges = {{ temperature = [-40.0, 85.0] }}
"""


def wait_log(log: Path, proc: subprocess.Popen[bytes], needle: str, timeout: float = 10) -> str:
    """The agent's log once it holds `needle`; fails if the agent exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if needle in text:
            return text
        if proc.poll() is not None:
            pytest.fail(f"agent exited {proc.returncode}:\n{text}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {needle!r}:\n{log.read_text()}")


def journal(data_dir: Path, device: str = "serial-gw") -> list[Reading]:
    """Every sealed reading in the agent's data directory, in order (no open block)."""
    signer, _ = load_or_create_key(data_dir, device)
    ledger = Ledger(data_dir, signer)
    ledger.recover()
    out: list[Reading] = []
    assert ledger.tip is not None
    for h in range(ledger.tip + 1):
        out += [Reading.decode(raw) for raw in ledger.block(h)[1]]
    assert not ledger.open
    ledger.close()
    return out


@contextlib.contextmanager
def agent_on_pty(tmp_path: Path, profile: str, by_id: str
                 ) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path, Path]]:
    """Run the agent on `profile` (with `{device}` for a by-id style link to a new pty's
    slave); yield the process, the pty master, the link, the data dir and the log, and
    kill the agent and close the pty on the way out."""
    master, slave = os.openpty()
    tty.setraw(slave)
    device = tmp_path / by_id
    device.symlink_to(os.ttyname(slave))
    os.close(slave)
    config = tmp_path / "agent.toml"
    config.write_text(profile.format(device=device))
    data, log = tmp_path / "data", tmp_path / "agent.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgeledger.cli", "agent", "--config",
                                 str(config), "--data-dir", str(data), "--log-level", "debug"],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    try:
        yield proc, master, device, data, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.close(master)


def test_bad_values_never_reach_the_journal(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    by_id = "usb-Arduino_Uno_1234-if00"
    with agent_on_pty(tmp_path, PROFILE, by_id) as (proc, master, device, data, log):
        opened = wait_log(log, proc, "opened")
        assert f"{device} (/dev/pts/" in opened  # the by-id path and the real tty
        lines = [b"temperature=99 humidity=1",          # the first line after open is dropped
                 b"temperature=21.5 humidity=40",       # good
                 b"temperature=150 humidity=40",        # out of range: rejected
                 b"temperature=nan humidity=40",        # NaN in text: a bad line
                 b"temperature=22.0 humidity=-5",       # humidity out of range
                 b"temperature=22.5 humidity=41"]       # good
        os.write(master, b"".join(line + b"\r\n" for line in lines))
        wait_log(log, proc, "uno-1 metric humidity value -5")
        time.sleep(0.4)  # a few replay cycles and a group commit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    text = log.read_text()
    readings = journal(data)
    uno = [(r.n, r.v, r.u) for r in readings if r.sensor == "uno-1"]
    assert uno == [("uno-1/temperature", 21.5, "Cel"), ("uno-1/humidity", 40, "%RH"),
                   ("uno-1/humidity", 40, "%RH"),   # the line with temperature=150: its
                   ("uno-1/temperature", 22.0, "Cel"),  # good metric is kept, per sample
                   ("uno-1/temperature", 22.5, "Cel"), ("uno-1/humidity", 41, "%RH")]
    flaky = [r for r in readings if r.sensor == "flaky"]
    assert flaky and all(r.v == 20.5 for r in flaky)
    for sensor in ("uno-1", "flaky"):  # q counts signed readings only: no gaps
        qs = [r.q for r in readings if r.sensor == sensor]
        assert qs == list(range(len(qs)))
    assert all(isinstance(r.v, int | float) and math.isfinite(r.v) for r in readings)
    assert "rejected from lines" in text and "metric temperature value 150" in text
    assert "is outside the range [-40, 85]" in text
    assert "sensor flaky metric temperature value nan is not a finite number" in text
    state = State(data / "state.json")
    rejected = state.counters()["rejected"]
    state.close()
    assert rejected == text.count("rejected from ")
    assert run_log_verify(data) == 0
    capsys.readouterr()
