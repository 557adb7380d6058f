"""Progress of a long audit, on standard error, shaped for where it is read.

On a terminal: one line, redrawn at most every REDRAW_S, with the phase, the count
done of the total, the rate and the time left; it is erased when a phase ends, so
the one-line result on standard output stands alone. Elsewhere (a pipe, a cron
mail, CI=true): a plain line every LINE_EVERY_S, so a short run prints nothing and
a long one leaves a readable trail without carriage returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TextIO

REDRAW_S = 0.1
LINE_EVERY_S = 10.0


def is_live(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to redraw a line in place: a terminal, and not under CI."""
    env = os.environ if environ is None else environ
    ci = env.get("CI", "").lower() in ("1", "true", "yes")
    try:
        return stream.isatty() and not ci
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts of one phase at a time (`start`, `advance`, `finish`), drawn on `stream`."""

    def __init__(self, stream: TextIO, live: bool, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.live = live
        self.enabled = enabled
        self.clock = clock
        self.label = ""
        self.total = self.done = 0
        self._started = self._drawn = 0.0
        self._shown = self._active = False
        self._outer: list[tuple[str, int, int, float]] = []

    def start(self, label: str, total: int) -> None:
        """Begin a phase of `total` steps named `label` (e.g. "checkpoints 41..90"). A
        phase started inside another (the chain walked on during a device's blocks) is
        shown until it finishes, then the outer one resumes."""
        if self._active:
            self._outer.append((self.label, self.total, self.done, self._started))
        self.label, self.total, self.done = label, total, 0
        self._started = self._drawn = self.clock()
        self._active = True

    def advance(self, steps: int = 1) -> None:
        """`steps` more done; redraw (or print a line) when it is time to."""
        self.done += steps
        if not self.enabled:
            return
        now = self.clock()
        if now - self._drawn >= (REDRAW_S if self.live else LINE_EVERY_S):
            self._drawn = now
            self._show(now)

    def finish(self) -> None:
        """End the phase: erase the live line (a plain line stays, it is history)."""
        if self._shown and self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._shown = False
        if self._outer:
            self.label, self.total, self.done, self._started = self._outer.pop()
        else:
            self._active = False

    def _show(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100 * self.done // self.total if self.total else 100
        text = (f"audit: {self.label}: {self.done}/{self.total} ({pct}%) "
                f"{rate:,.0f}/s, {_duration(left)} left")
        if self.live:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
