"""The two clocks EdgeLedger reads: Unix time that readings carry, and a steady one.

A Pi has no RTC, so wall time can jump; policy (seal age, sync windows) runs on the
monotonic clock, which is CLOCK_BOOTTIME where there is one so that a suspend does
not hide a block's age.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Unix epoch milliseconds: what readings and blocks carry."""
    return time.time_ns() // 1_000_000


def mono_ms() -> int:
    """Milliseconds on a clock that never steps."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    ns = time.clock_gettime_ns(boot) if boot is not None else time.monotonic_ns()
    return ns // 1_000_000
