"""The agent's loop in-process, on a fake clock: clock jumps, a full disk, seal policy."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeledger.config import (
    AgentConfig,
    DeviceConfig,
    JournalConfig,
    SealingConfig,
    SimSensorConfig,
)
from edgeledger.core.reading import Reading
from edgeledger.gateway.agent import Agent, Clock, open_agent
from edgeledger.gateway.identity import load_or_create_key
from edgeledger.gateway.journal import FileOps
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.sdnotify import Notifier

WALL0 = 1_800_000_000_000


@dataclass
class FakeClock(Clock):
    """A clock the test moves."""

    wall: int = WALL0
    mono: int = 1_000

    def wall_ms(self) -> int:
        """The fake wall time."""
        return self.wall

    def mono_ms(self) -> int:
        """The fake monotonic time."""
        return self.mono

    def advance(self, ms: int) -> None:
        """Both clocks move on together."""
        self.wall += ms
        self.mono += ms


class FullDisk(FileOps):
    """File operations that fail with ENOSPC while `full` is set."""

    full = False

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """Write, or fail like a full card."""
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)


def config(data_dir: Path, memory_bytes: int = 16 << 20) -> AgentConfig:
    """A counter every 10 ms, blocks of 50 or 1 s, syncs every 100 ms."""
    return AgentConfig(Path("test.toml"), DeviceConfig("gw-loop", data_dir),
                       JournalConfig(fsync_window_ms=100, memory_bytes=memory_bytes),
                       SealingConfig(max_readings=50, max_age_ms=1000, heartbeat_ms=3000,
                                     clock_jump_ms=500),
                       (SimSensorConfig("c", "counter", 10),))


def start(data_dir: Path, clock: FakeClock, memory_bytes: int = 16 << 20) -> Agent:
    return open_agent(config(data_dir, memory_bytes), clock=clock, notifier=Notifier({}))


def run(agent: Agent, clock: FakeClock, ms: int, step: int = 10) -> None:
    for _ in range(ms // step):
        agent.tick()
        clock.advance(step)


def counter_readings(data_dir: Path) -> list[Reading]:
    signer, _ = load_or_create_key(data_dir, "gw-loop")
    ledger = Ledger(data_dir, signer)
    ledger.recover()
    out = []
    for h in range((ledger.tip or 0) + 1 if ledger.tip is not None else 0):
        out += [Reading.decode(raw) for raw in ledger.block(h)[1]]
    out += ledger.open
    ledger.close()
    return out


def test_blocks_are_sealed_full_then_by_age_then_as_heartbeats(tmp_path: Path) -> None:
    clock = FakeClock()
    agent = start(tmp_path, clock)
    run(agent, clock, 1000)       # 100 readings: two full blocks
    agent.sync()
    assert agent.ledger.tip == 1
    assert [agent.ledger.block(h)[0].header.cnt for h in (0, 1)] == [50, 50]
    agent.sources.clear()         # the sensor goes quiet
    run(agent, clock, 1000)
    assert agent.ledger.tip == 1  # nothing to seal, no heartbeat yet
    run(agent, clock, 3000)
    agent.sync()
    assert agent.ledger.tip == 2 and agent.ledger.block(2)[0].header.cnt == 0
    assert agent.shutdown() == 0


def test_next_due_is_the_earliest_event(tmp_path: Path) -> None:
    clock = FakeClock()
    agent = start(tmp_path, clock)
    wake = agent.tick()
    assert clock.mono < wake <= clock.mono + 10  # the sensor, every 10 ms
    agent.sources.clear()
    agent.sync()
    assert agent.tick() == agent.sealer.next_due()  # idle: only the seal is due
    agent.shutdown()


def test_a_clock_jump_is_logged_and_recorded(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    agent = start(tmp_path, clock)
    run(agent, clock, 1200)        # blocks sealed
    assert agent.ledger.tip is not None and not agent.state.clock_flags()
    with caplog.at_level(logging.WARNING, "edgeledger"):
        clock.wall += 60_000       # NTP steps the clock a minute forward
        run(agent, clock, 200)
    assert "wall clock jumped 60000 ms forward" in caplog.text
    flags = agent.state.clock_flags()
    assert [(f.kind, f.wall_ms) for f in flags] == [("jump", WALL0 + 1200 + 60_000)]
    clock.wall -= 120_000          # and back, before the last seal
    agent.tick()
    agent.seal("test")
    agent.sync()
    assert [f.kind for f in agent.state.clock_flags()] == ["jump", "jump", "backwards"]
    assert agent.state.counter("clock_flags") == 3
    agent.shutdown()


def test_a_full_disk_holds_readings_then_resumes(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    agent = start(tmp_path, clock, memory_bytes=64 << 10)
    disk = FullDisk()
    agent.ledger.journal.ops = disk
    run(agent, clock, 300)
    durable_before = dict(agent.ledger.durable_q)
    with caplog.at_level(logging.DEBUG, "edgeledger"):
        disk.full = True
        run(agent, clock, 30_000)
        assert "disk full or read-only" in caplog.text
        assert agent.disk_full and agent.ledger.durable_q == durable_before
        assert agent.paused_polls > 0  # the memory bound was reached: the sensor paused
        assert agent.ledger.journal.pending < (64 << 10) + 4096
        disk.full = False
        run(agent, clock, 200)
    assert not agent.disk_full
    assert "disk writable again" in caplog.text
    agent.sync()
    assert agent.ledger.durable_q["c"] == agent.ledger.last_q["c"]
    assert agent.shutdown() == 0
    assert agent.state.counter("disk_full") == 1
    qs = [r.q for r in counter_readings(tmp_path)]
    assert qs == list(range(len(qs)))  # nothing lost, nothing repeated
    assert all(r.v == r.q for r in counter_readings(tmp_path))


def test_shutdown_with_a_full_disk_says_so(tmp_path: Path) -> None:
    clock = FakeClock()
    agent = start(tmp_path, clock)
    disk = FullDisk()
    agent.ledger.journal.ops = disk
    disk.full = True
    run(agent, clock, 100)
    assert agent.shutdown() == 1


def test_the_quota_stop_policy_pauses_readings_and_counts_it(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = config(tmp_path)
    journal = JournalConfig(fsync_window_ms=100, segment_bytes=64 << 10,
                            quota_bytes=192 << 10, quota_policy="stop")
    cfg = AgentConfig(cfg.path, cfg.device, journal, cfg.sealing, cfg.sensors)
    agent = open_agent(cfg, clock=clock, notifier=Notifier({}))
    assert agent.retention is not None
    run(agent, clock, 90_000)      # nothing is acked, so nothing may be pruned
    assert not agent.accepting and agent.paused_polls > 0
    assert agent.ledger.journal.size_on_disk() < (192 << 10) + (8 << 10)
    agent.sync()
    assert agent.state.counter("intake_stopped") == 1
    assert agent.shutdown() == 0
