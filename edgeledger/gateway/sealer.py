"""When to seal a block, and whether the wall clock can be trusted. Pure: no I/O, no clock.

The caller passes times in. Policy runs on the monotonic clock (a block's age must
not change when NTP steps the wall clock); seal times are wall-clock Unix ms, which
is what blocks carry.

Clock checks (DESIGN.md 4). A Pi has no RTC: it boots with a stale clock and NTP
steps it later. Two things are flagged, never corrected (a block states the time
the gateway believed; the aggregator judges skew against its own clock):
- `backwards`: a seal time before the previous seal's;
- `jump`: the wall clock moved more than `clock_jump_ms` away from the monotonic
  clock since the previous check. The reference is re-based at every check, so the
  slow slew of NTP never adds up to a false flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeledger.config import SealingConfig


@dataclass(frozen=True)
class ClockEvent:
    """A clock anomaly to log at warning and record in state."""

    kind: str  # "backwards" or "jump"
    wall_ms: int
    delta_ms: int  # backwards: how far before the last seal; jump: wall minus expected

    def describe(self) -> str:
        """One line for the log."""
        if self.kind == "backwards":
            return (f"clock before last seal: seal time {self.wall_ms} is {self.delta_ms} ms "
                    f"before the previous seal")
        direction = "forward" if self.delta_ms > 0 else "backward"
        return (f"wall clock jumped {abs(self.delta_ms)} ms {direction} against the monotonic "
                f"clock (now {self.wall_ms})")


FULL, AGE, HEARTBEAT = "full", "age", "heartbeat"


@dataclass
class Sealer:
    """Seal policy and clock checks for one ledger's open block."""

    config: SealingConfig
    last_seal_mono: int
    last_seal_ts: int | None = None
    count: int = 0
    opened_mono: int | None = None
    _ref: tuple[int, int] | None = None  # (wall, mono) at the previous clock check

    @classmethod
    def start(cls, config: SealingConfig, now_mono: int, last_seal_ts: int | None,
              open_count: int) -> Sealer:
        """A sealer after a restart: the recovered open block counts as opened now."""
        return cls(config, now_mono, last_seal_ts, open_count,
                   now_mono if open_count else None)

    # --- policy ------------------------------------------------------------------------

    def added(self, n: int, now_mono: int) -> None:
        """`n` readings joined the open block."""
        if n and self.opened_mono is None:
            self.opened_mono = now_mono
        self.count += n

    def due(self, now_mono: int) -> str | None:
        """Why the open block must be sealed now (FULL, AGE, HEARTBEAT), or None."""
        if self.count >= self.config.max_readings:
            return FULL
        if now_mono < self.next_due():
            return None
        return AGE if self.count else HEARTBEAT

    def next_due(self) -> int:
        """The monotonic time at which a seal falls due if no reading arrives."""
        if self.count >= self.config.max_readings:
            return self.opened_mono if self.opened_mono is not None else self.last_seal_mono
        if self.count and self.opened_mono is not None:
            return self.opened_mono + self.config.max_age_ms
        return self.last_seal_mono + self.config.heartbeat_ms

    def sealed(self, ts: int, now_mono: int) -> ClockEvent | None:
        """The open block was sealed at wall time `ts`; a `backwards` event if ts went back."""
        event = self.check_seal_time(ts)
        self.last_seal_ts, self.last_seal_mono = ts, now_mono
        self.count, self.opened_mono = 0, None
        return event

    # --- clock -------------------------------------------------------------------------

    def check_seal_time(self, ts: int) -> ClockEvent | None:
        """A `backwards` event if `ts` is before the last seal's time."""
        if self.last_seal_ts is not None and ts < self.last_seal_ts:
            return ClockEvent("backwards", ts, self.last_seal_ts - ts)
        return None

    def check_clock(self, wall_ms: int, mono_ms: int) -> ClockEvent | None:
        """A `jump` event if the wall clock moved apart from the monotonic one since the
        previous check by more than clock_jump_ms; re-bases either way."""
        ref, self._ref = self._ref, (wall_ms, mono_ms)
        if ref is None:
            return None
        drift = (wall_ms - ref[0]) - (mono_ms - ref[1])
        if abs(drift) > self.config.clock_jump_ms:
            return ClockEvent("jump", wall_ms, drift)
        return None
