"""End to end: frames made by the C library, through a pty, into the agent's journal.

The firmware bridge's own `frame_writer` (built from firmware_bridge/c) writes a
HELLO, readings, garbage and a corrupted frame into a pseudo-terminal; the agent
reads it as a `framed` source by a by-id style path. Whole frames are journaled
with their units and per-sensor q; the out-of-range value is rejected before it is
signed; the corrupted frame is counted and logged, and reading goes on.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_agent_serial import agent_on_pty, journal, wait_log

from edgeledger.gateway.logverify import run_log_verify

BRIDGE = Path(__file__).resolve().parents[2] / "firmware_bridge"

PROFILE = """
[device]
id = "framed-gw"
[journal]
fsync_window_ms = 50
[sealing]
max_readings = 2
max_age_ms = 200
[[sensors]]
type = "framed"
id = "feather-1"
device = "{device}"
baud = 115200
ranges = {{ temperature = [-40.0, 85.0] }}
"""

# frame_writer script (see its header): value type 3 is float32, given as its IEEE 754
# bits; HELLO parts count from 0.
SCRIPT = """\
hello 0 bme280-demo-1.0 0 1 bme280-1/temperature:Cel:3
reading 1 0 bme280-1 temperature Cel 3 0x41ac0000
garbage 00ff133700
reading 2 0 bme280-1 temperature Cel 3 0x43fa0000
corrupt
reading 3 0 bme280-1 temperature Cel 3 0x41b00000
reading 4 0 bme280-1 temperature Cel 3 0x41b40000
"""


@pytest.fixture(scope="module")
def frame_writer() -> Path:
    if shutil.which("make") is None:
        pytest.fail("these tests need make and a C compiler (apt-get install build-essential)")
    done = subprocess.run(["make", "-C", str(BRIDGE), "tools"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return BRIDGE / "build" / "frame_writer"


def test_c_frames_reach_the_journal_and_bad_ones_do_not(tmp_path: Path,
                                                        frame_writer: Path) -> None:
    feather = "usb-Adafruit_Feather_M0_ABCD-if00"
    with agent_on_pty(tmp_path, PROFILE, feather) as (proc, master, _, data, log):
        wait_log(log, proc, "opened")
        written = subprocess.run([str(frame_writer), "--fd", str(master), "--script", "-"],
                                 input=SCRIPT.encode(), pass_fds=(master,),
                                 capture_output=True, timeout=30, check=False)
        assert written.returncode == 0, written.stderr
        wait_log(log, proc, "value 500")
        wait_log(log, proc, "durable bme280-1=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    text = log.read_text()
    readings = journal(data, "framed-gw")
    assert [(r.n, r.q, r.v, r.u) for r in readings] == [
        ("bme280-1/temperature", 0, 21.5, "Cel"), ("bme280-1/temperature", 1, 22.5, "Cel")]
    assert "bme280-demo-1.0" in text                      # the HELLO was logged
    assert "is outside the range [-40, 85]" in text       # 500.0 rejected, never signed
    assert "protocol framed" in text and "frame" in text  # the corrupted frame, named
    assert run_log_verify(data) == 0
