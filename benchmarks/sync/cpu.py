"""CPU time of processes and of the whole machine, from /proc, sampled over wall time.

utime + stime of /proc/<pid>/stat counts every thread of a process; the first line
of /proc/stat counts every process on the machine. Both tick at SC_CLK_TCK (100 Hz
here), so a figure is good to about 10 ms of CPU: runs of a few seconds make that
well under 1%. Sampling every SAMPLE_S with the wall time lets the CPU spent inside
any wall-clock window be interpolated afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

SAMPLE_S = 0.02
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
MACHINE = "machine"


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy since boot (/proc/stat), every process."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) * TICK_S


class CpuSampler:
    """CPU seconds of named processes, sampled every SAMPLE_S on a thread, with wall times.

    The name MACHINE is the whole machine's busy time, every process included.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        cpu = {MACHINE: machine_busy_seconds()}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu[name] = cpu_seconds(pid)
        self.samples.append((time.time(), cpu))

    def at(self, name: str, when: float) -> float:
        """CPU seconds of `name` at wall time `when`, interpolated between samples."""
        points = [(t, c[name]) for t, c in self.samples if name in c]
        before = max((p for p in points if p[0] <= when), default=points[0])
        after = min((p for p in points if p[0] >= when), default=points[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (when - before[0]) / (after[0] - before[0])

    def between(self, name: str, start: float, end: float) -> float:
        """CPU seconds `name` spent between two wall times."""
        return self.at(name, end) - self.at(name, start)
