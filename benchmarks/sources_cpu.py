"""The CPU share of one source at a fixed rate: a child process reading a pseudo-terminal.

Theory of operation. The parent plays the device: it makes a pty with os.openpty,
points a by-id style symlink at the slave (as udev does on a gateway), writes a
profile naming that symlink, and starts `benchmarks.sources_child`, which builds the
source from the profile, opens the port with pyserial and says `ready`. The parent
then writes on a fixed schedule (one frame, one GGA+RMC epoch, or one text line at
a time, each at its due time) until it has sent the run's readings; for Modbus it
answers the source's requests instead, with replies framed by pymodbus. The child
reports its own CPU time over its wall time, which is the share of one core the
source and the agent's Sample -> Reading step take at that rate. The parent
checks that the child made every reading it was sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import sources_workload as wl

RATE = 100  # readings per second: a typical gateway
CSV_VALUES = len(wl.LINE_METRICS)  # readings per CSV line


@dataclass(frozen=True)
class Plan:
    """What the device sends: `payload(i)` at `per_s` payloads a second, `count` of them,
    each worth `readings` readings; `first` is sent at once and makes no reading."""

    kind: str
    per_s: float
    readings: int
    payload: Callable[[int], bytes]
    first: bytes = b""


def plan(kind: str) -> Plan:
    """The device side of `kind` at RATE readings a second."""
    if kind == "framed":
        return Plan(kind, RATE, 1, wl.framed_frame)
    if kind == "nmea":
        pairs = wl.nmea_pairs()
        return Plan(kind, RATE, 1, lambda i: pairs[i % len(pairs)])
    if kind == "lines":  # the first line after an open is dropped by design: send a spare
        return Plan(kind, RATE / CSV_VALUES, CSV_VALUES, lambda i: wl.text_line("csv", i),
                    first=wl.text_line("csv", 999))
    raise ValueError(kind)


@contextlib.contextmanager
def pty_device(where: Path) -> Iterator[tuple[int, Path]]:
    """A raw pty; yields its master fd and a by-id style symlink to its slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = where / "usb-EdgeLedger_Bench_0001-if00-port0"
    link.symlink_to(os.ttyname(slave))
    os.close(slave)
    try:
        yield master, link
    finally:
        os.close(master)
        link.unlink()


def spawn(profile: Path, readings: int, timeout: float) -> subprocess.Popen[str]:
    """The child, once it has said `ready` (its port is open)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sources_child", str(profile), "--readings",
         str(readings), "--timeout", f"{timeout:.3f}"], cwd=wl.ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        _, err = child.communicate()
        raise RuntimeError(f"benchmark child for {profile.name} did not start:\n{err}")
    return child


def finish(child: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The child's JSON report."""
    out, err = child.communicate(timeout=timeout)
    if child.returncode != 0 or not out.strip():
        raise RuntimeError(f"benchmark child failed ({child.returncode}):\n{err}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def write_schedule(master: int, p: Plan, count: int) -> None:
    """Send `p.first`, then payload i at start + i / per_s, for i < count."""
    if p.first:
        os.write(master, p.first)
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / p.per_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        data = memoryview(p.payload(i))
        while data:
            data = data[os.write(master, data):]


def run_streamed(kind: str, window_s: float) -> dict[str, Any]:
    """One run of a streamed protocol (framed, nmea, lines csv)."""
    p = plan(kind)
    payloads = round(window_s * p.per_s)
    readings = payloads * p.readings
    with tempfile.TemporaryDirectory(prefix="edgeledger-bench-") as tmp, \
            pty_device(Path(tmp)) as (master, link):
        profile = wl.write_profile(Path(tmp), kind, link)[0]
        child = spawn(profile, readings, window_s + 5)
        write_schedule(master, p, payloads)
        report = finish(child, window_s + 15)
    return {**report, "sent_payloads": payloads, "sent_readings": readings}


class Responder:
    """A Modbus RTU slave on the pty master: each read request gets the meter's registers,
    decoded and framed by pymodbus (FramerRTU + its PDU classes)."""

    def __init__(self, master: int) -> None:
        from pymodbus.framer import FramerRTU
        from pymodbus.pdu import DecodePDU

        self.master, self.replies, self.faults = master, 0, 0
        self.framer = FramerRTU(DecodePDU(is_server=True))
        self.reply = wl.modbus_reply(wl.meter_registers())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering."""
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            try:
                buf += os.read(self.master, 4096)
            except OSError:  # EIO: the slave side is not open yet (or closed again)
                time.sleep(0.01)
                continue
            used, pdu = self.framer.handleFrame(buf, 0, 0)
            if pdu is None:
                buf = buf[used:] if used else buf
                if len(buf) > 256:
                    self.faults, buf = self.faults + 1, b""
                continue
            buf = buf[used:]
            if (pdu.function_code, pdu.address, pdu.count) != (4, 0, 2 * len(wl.METER)):
                self.faults += 1
                continue
            os.write(self.master, self.reply)
            self.replies += 1


def run_modbus(window_s: float) -> dict[str, Any]:
    """One run of a Modbus source polling 10 float32 registers every 100 ms."""
    per_reply = len(wl.METER)
    interval_ms = round(1000 * per_reply / RATE)
    readings = round(window_s * RATE)
    with tempfile.TemporaryDirectory(prefix="edgeledger-bench-") as tmp, \
            pty_device(Path(tmp)) as (master, link):
        responder = Responder(master)
        try:
            profile = wl.write_profile(Path(tmp), "modbus", link, interval_ms=interval_ms)[0]
            child = spawn(profile, readings, window_s + 5)
            report = finish(child, window_s + 15)
        finally:
            responder.stop()
    return {**report, "sent_readings": readings, "replies": responder.replies,
            "request_faults": responder.faults, "interval_ms": interval_ms}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU share (cpu / wall) over the runs: median, spread; and the correctness guard."""
    shares = [r["cpu_s"] / r["wall_s"] for r in runs]
    reader = [(r["cpu_s"] - r["main_thread_cpu_s"]) / r["wall_s"] for r in runs]
    per_reading = [r["cpu_s"] / max(1, r["readings"]) for r in runs]
    median = statistics.median(shares)
    return {"cpu_share": median, "min": min(shares), "max": max(shares),
            "spread": (max(shares) - min(shares)) / median, "repeats": len(runs),
            "other_threads_share": statistics.median(reader),
            "cpu_per_reading_s": statistics.median(per_reading),
            "readings_per_s": RATE,
            "received": [r["readings"] for r in runs],
            "expected": [r["sent_readings"] for r in runs],
            "all_received": all(r["readings"] == r["sent_readings"] and r["rejected"] == 0
                                and r["bad"] == 0 for r in runs),
            "runs": runs}
