"""`edgeledger agent`: the gateway process. Reads sensors, seals blocks, keeps them durable.

Theory of operation. One thread, one loop. Each turn works out what is due on the
monotonic clock (a sensor poll, a seal, the group commit, a watchdog ping), does
it, then sleeps until the next due time or a signal, whichever comes first (the
signal handler only sets a flag; `signal.set_wakeup_fd` wakes the sleep).

Durability is the journal's group commit: readings are appended to memory and
`Ledger.sync` writes and fsyncs them once per window. Only after a sync returns
are readings durable, and only then is the `durable <sensor>=<q> ...` line
logged (at DEBUG; crash tests parse it). State changes (counters, clock flags)
are queued and written after a successful sync, so a full disk never makes the
small state file and the journal disagree about what happened.

When the disk is full or read-only the journal keeps its buffer and the agent
retries each window, taking readings until `memory_bytes` are waiting, then
pausing the sensors, loudly, until space returns. Which blocks may be pruned to
make space, and whether readings must stop at the quota, is the retention
module's decision (`Retention.enforce`, after every sync attempt).

With `[sync] broker` set, a `SyncDriver` (edgeledger/gateway/syncdriver.py) runs
the MQTT sync in the same loop: it connects in the background, hears of each
block once a group commit made it durable, is stepped every turn, and wakes the
loop's sleep when a message arrives. Recording never waits for the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from edgeledger import clock
from edgeledger.config import AgentConfig, parse_agent_config
from edgeledger.core.block import key_id
from edgeledger.core.errors import EX_CONFIG, ConfigError, EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.identity import check_identity, load_or_create_key
from edgeledger.gateway.journal import DISK_FULL_ERRNOS, DiskFullError
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.retention import Retention
from edgeledger.gateway.sdnotify import Notifier
from edgeledger.gateway.sealer import ClockEvent, Sealer
from edgeledger.gateway.state import State
from edgeledger.gateway.syncdriver import SyncDriver
from edgeledger.logs import setup_logging
from edgeledger.sources.base import Sample, Source
from edgeledger.sources.ranges import NO_RANGES, Ranges

log = logging.getLogger("edgeledger.agent")
# A source with no schedule of its own (a serial reader thread queueing samples) is
# polled at least this often: samples carry their reception time, so this bounds
# only how long they wait in memory, at about 20 wake-ups a second.
IDLE_POLL_MS = 50


class Clock:
    """The agent's clocks (see edgeledger.clock); tests drive a fake one."""

    def wall_ms(self) -> int:
        """Unix epoch milliseconds."""
        return clock.wall_ms()

    def mono_ms(self) -> int:
        """Milliseconds on a clock that never steps."""
        return clock.mono_ms()


@dataclass
class Feed:
    """A running source and the range checks of its [[sensors]] entry."""

    entry: str
    source: Source
    ranges: Ranges = NO_RANGES

    def due(self, now: int) -> int:
        """When this source next wants a poll (a source with no schedule: soon)."""
        due = self.source.next_due()
        return now + IDLE_POLL_MS if due is None else due


@dataclass
class Agent:
    """The running agent: ledger, state, sensors and the loop's bookkeeping."""

    config: AgentConfig
    ledger: Ledger
    state: State
    sources: list[Feed]
    sealer: Sealer
    notifier: Notifier
    clock: Clock
    retention: Retention | None = None
    syncer: SyncDriver | None = None
    lock_fd: int | None = None
    stop_signal: int | None = None
    next_sync: int = 0
    next_watchdog: int = 0
    disk_full: bool = False
    accepting: bool = True
    paused_polls: int = 0
    unsaved: Counter[str] = field(default_factory=Counter)
    unsaved_flags: list[ClockEvent] = field(default_factory=list)
    quota_seen: dict[str, int] = field(default_factory=dict)

    # --- the loop ----------------------------------------------------------------------

    def tick(self) -> int:
        """Do everything that is due; return the monotonic time of the next due thing."""
        now, wall = self.clock.mono_ms(), self.clock.wall_ms()
        self._clock_event(self.sealer.check_clock(wall, now))
        for feed in self.sources:
            source_due = feed.source.next_due()
            if source_due is None or now >= source_due:
                self._poll(feed, now, wall)
        reason = self.sealer.due(now)
        if reason is not None:
            self.seal(reason)
        if now >= self.next_sync and self._dirty():
            self.sync()
            self.next_sync = now + self.config.journal.fsync_window_ms
        due_sync = self.syncer.step(now) if self.syncer is not None else None
        if self.notifier.watchdog_seconds and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + int(self.notifier.watchdog_seconds * 1000)
        due = [feed.due(now) for feed in self.sources] + [self.sealer.next_due()]
        if self._dirty():
            due.append(self.next_sync)
        if self.notifier.watchdog_seconds:
            due.append(self.next_watchdog)
        if due_sync is not None:
            due.append(due_sync)
        return min(due)

    def _dirty(self) -> bool:
        return (bool(self.ledger.journal.pending) or self.disk_full or bool(self.unsaved)
                or bool(self.unsaved_flags))

    def _poll(self, feed: Feed, now: int, wall: int) -> None:
        samples = feed.source.poll(now, wall)
        if not samples:
            return
        if not self.accepting or self.ledger.journal.pending >= self.config.journal.memory_bytes:
            self.paused_polls += 1  # the disk is full or the quota stopped intake
            return
        for sample in samples:
            reading = self._reading(feed, sample)
            if reading is None:
                continue
            if self.sealer.count >= self.config.sealing.max_readings:
                self.seal("full")
            self.ledger.add(reading)
            self.sealer.added(1, now)

    def _reading(self, feed: Feed, sample: Sample) -> Reading | None:
        """The sample numbered as a Reading, or None (logged, counted) if it must not be signed."""
        reason = feed.ranges.check(sample.metric, sample.value)
        if reason is None:
            try:
                return Reading(sample.name, sample.t_ms, self.ledger.next_q(sample.sensor),
                               sample.value, sample.unit, sample.attestation)
            except EdgeLedgerError as exc:
                reason = f"not a valid reading: {exc}"
        log.warning("rejected from %s: sensor %s metric %s value %r %s", feed.source.name,
                    sample.sensor, sample.metric, sample.value, reason)
        feed.source.stats.add(rejected=1)
        self.unsaved["rejected"] += 1
        return None

    def seal(self, reason: str) -> None:
        """Seal the open block now (it is durable after the next sync)."""
        ts, now = self.clock.wall_ms(), self.clock.mono_ms()
        count = len(self.ledger.open)
        try:
            block = self.ledger.seal(ts)
        except DiskFullError as exc:  # sealed; the segment roll could not sync
            self._disk_full(exc)
            if self.ledger.last_block is None:
                raise
            block = self.ledger.last_block
        log.debug("sealed block %d: %d readings (%s)", block.header.h, count, reason)
        self._clock_event(self.sealer.sealed(ts, now))

    def sync(self) -> bool:
        """Group commit, then the quota; False while the disk is full."""
        ok = self._sync()
        self._enforce_quota()
        return ok

    def _sync(self) -> bool:
        try:
            self.ledger.sync()
        except DiskFullError as exc:
            self._disk_full(exc)
            return False
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            self._disk_full(exc)
            return False
        if self.disk_full:
            log.warning("disk writable again: journal caught up; %d sensor polls were skipped",
                        self.paused_polls)
            self.disk_full, self.paused_polls = False, 0
        log.debug("durable %s", " ".join(f"{sensor}={q}" for sensor, q
                                         in sorted(self.ledger.durable_q.items())))
        self._save_state()
        if self.syncer is not None:
            self.syncer.durable(self.ledger.tip, self.clock.mono_ms())
        self.notifier.status(f"tip {_show(self.ledger.tip)}; {len(self.ledger.open)} readings "
                             f"in the open block")
        return True

    def _enforce_quota(self) -> None:
        """Let retention prune (or drop, by policy) and say whether readings may go on."""
        if self.retention is None:
            return
        acked, covered = self.state.acked, self.state.covered
        through = None if acked is None or covered is None else min(acked, covered)
        result = self.retention.enforce(self.ledger, through, self.clock.wall_ms(),
                                        disk_full=self.disk_full)
        self.accepting = not result.intake_stopped
        if result.drop_payload is not None and self.syncer is not None:
            self.syncer.dropped(result.drop_payload)
        for name, value in self.retention.counters.as_dict().items():  # totals across runs
            self.unsaved[name] += value - self.quota_seen.get(name, 0)
            self.quota_seen[name] = value
        self.unsaved += Counter()  # forget zero deltas

    def _disk_full(self, exc: Exception) -> None:
        if not self.disk_full:
            log.error("disk full or read-only: %s; holding up to %d bytes in memory and "
                      "retrying every %d ms", exc, self.config.journal.memory_bytes,
                      self.config.journal.fsync_window_ms)
            self.unsaved["disk_full"] += 1
        self.disk_full = True

    def _clock_event(self, event: ClockEvent | None) -> None:
        if event is not None:
            log.warning("%s", event.describe())
            self.unsaved_flags.append(event)

    def _save_state(self) -> None:
        """Write queued counters and clock flags (only ever after a successful sync)."""
        try:
            while self.unsaved_flags:
                event = self.unsaved_flags[0]
                self.state.flag_clock(event.kind, event.describe(), event.wall_ms)
                self.unsaved_flags.pop(0)
            for name in list(self.unsaved):
                self.state.bump(name, self.unsaved[name])
                del self.unsaved[name]
        except OSError as exc:
            log.warning("state %s not updated (will retry): %s", self.state.path, exc)

    # --- running -----------------------------------------------------------------------

    def run(self) -> int:
        """Loop until SIGTERM or SIGINT; then seal, sync and close. The exit status."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            if self.syncer is not None:
                self.syncer.start()
            self.notifier.ready(f"recording; tip {_show(self.ledger.tip)}")
            while self.stop_signal is None:
                self._sleep_until(self.tick(), wake_r)
            log.info("%s: stopping", signal.Signals(self.stop_signal).name)
            return self.shutdown()
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def _sleep_until(self, due_mono: int, wake: socket.socket) -> None:
        timeout = max(due_mono - self.clock.mono_ms(), 1) / 1000
        if self.stop_signal is None:
            waits = [wake] if self.syncer is None else [wake, self.syncer.wake_socket]
            readable, _, _ = select.select(waits, [], [], timeout)
            if wake in readable:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(64)

    def shutdown(self) -> int:
        """Seal the open block if it has readings, sync, close. 0, or 1 if data was lost."""
        self.notifier.stopping("sealing and flushing")
        self.stop_sources()
        if self.ledger.open:
            self.seal("shutdown")
        ok = self.sync()
        if not ok:
            log.error("stopping with %d bytes that could not be written (disk full); readings "
                      "after the last durable point are lost", self.ledger.journal.pending)
        self.close(ok)
        log.info("stopped: tip %s", _show(self.ledger.tip))
        return 0 if ok else 1

    def stop_sources(self) -> None:
        """Stop every source's I/O (idempotent)."""
        for feed in self.sources:
            try:
                feed.source.stop()
            except Exception:
                log.exception("stopping %s failed", feed.source.name)

    def close(self, flush: bool = True) -> None:
        """Stop the sources and sync; close the ledger, state and lock."""
        self.stop_sources()
        if self.syncer is not None:
            try:
                self.syncer.close(self.clock.mono_ms())
            except Exception:
                log.exception("closing sync failed")
        if flush:
            self.ledger.close()
        self.state.close()
        self.notifier.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _show(height: int | None) -> str:
    return "none" if height is None else str(height)


# --- start-up ----------------------------------------------------------------------------

def open_agent(config: AgentConfig, clock: Clock | None = None,
               notifier: Notifier | None = None, retention: Retention | None = None) -> Agent:
    """Lock the data directory, load the identity, recover the ledger, build the sensors."""
    clock = clock or Clock()
    data_dir = config.device.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = _lock(data_dir)
    try:
        signer, created = load_or_create_key(data_dir, config.device.id)
        if created:
            log.info("created device key %s/device.key for %s", data_dir, config.device.id)
        state = State(data_dir / "state.json")
        check_identity(state, signer)
        ledger = Ledger(data_dir, signer, config.journal.segment_bytes)
        _recover(ledger, signer, config)
    except BaseException:
        os.close(lock_fd)
        raise
    state.bump("starts")
    now = clock.mono_ms()
    last_ts = ledger.last_block.header.ts if ledger.last_block else None
    sealer = Sealer.start(config.sealing, now, last_ts, len(ledger.open))
    try:
        feeds = _feeds(config, ledger, now)
    except BaseException:
        ledger.close()
        state.close()
        os.close(lock_fd)
        raise
    try:
        syncer = _syncer(config, ledger, state)
    except BaseException:
        for feed in feeds:
            feed.source.stop()
        ledger.close()
        state.close()
        os.close(lock_fd)
        raise
    agent = Agent(config, ledger, state, feeds, sealer, notifier or Notifier(), clock,
                  retention or _retention(config, signer), syncer, lock_fd)
    agent._clock_event(sealer.check_seal_time(clock.wall_ms()))
    return agent


def _lock(data_dir: Path) -> int:
    """One writer per data directory: an exclusive lock the kernel drops if we die."""
    fd = os.open(data_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise EdgeLedgerError(f"data directory {data_dir} is in use by another agent "
                              f"(pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _recover(ledger: Ledger, signer: Signer, config: AgentConfig) -> None:
    recovery = ledger.recover()
    for damage in recovery.damage:
        logging.getLogger("edgeledger.journal").error("%s", damage.describe())
    last = ledger.last_block
    if last is not None and (last.header.dev != config.device.id
                             or last.kid != key_id(signer.public_key)):
        raise ConfigError(str(config.device.data_dir), "device.id",
                          f"the chain here belongs to device {last.header.dev!r} (key id "
                          f"{last.kid.hex()}), not to {config.device.id!r} with this key")
    log.info("recovered %s: tip %s, %d readings in the open block, %d repairs, %d index "
             "entries dropped; next q %s", config.device.data_dir, _show(recovery.tip),
             recovery.open_readings, len(recovery.damage), recovery.index_dropped,
             " ".join(f"{s}={q + 1}" for s, q in sorted(ledger.last_q.items())) or "none")


def _feeds(config: AgentConfig, ledger: Ledger, now: int) -> list[Feed]:
    """Build and start every configured source (a missing device is waited for, not fatal)."""
    feeds: list[Feed] = []
    try:
        for sensor in config.sensors:
            source = sensor.build()
            source.set_sequence(ledger.next_q)
            feeds.append(Feed(sensor.id, source, config.ranges.get(sensor.id, NO_RANGES)))
            source.start(now)
    except BaseException:
        for feed in feeds:
            feed.source.stop()
        raise
    return feeds


def _syncer(config: AgentConfig, ledger: Ledger, state: State) -> SyncDriver | None:
    """The MQTT sync, when `[sync] broker` is configured (started by `Agent.run`)."""
    if config.sync is None or config.sync.broker is None:
        return None
    if config.sync.log_key is None:
        log.error("%s: sync.log_key: missing; not syncing to %s (recording offline)",
                  config.path, config.sync.broker)
        return None
    return SyncDriver(config.sync, config.device.id, ledger, state)


def _retention(config: AgentConfig, signer: Signer) -> Retention | None:
    """The disk quota, when one is configured."""
    journal = config.journal
    if journal.quota_bytes is None:
        return None
    return Retention(journal.quota_bytes, journal.quota_policy, signer)


# --- the command -----------------------------------------------------------------------

def run_agent(config: Path, data_dir: Path | None, log_level: str) -> int:
    """`edgeledger agent`: run in the foreground until SIGTERM; the exit status."""
    setup_logging(log_level)
    parsed, errors = parse_agent_config(config)
    for error in errors:
        log.error("%s", error)
    if parsed is None:
        return EX_CONFIG
    try:
        agent = open_agent(parsed.with_data_dir(data_dir))
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    except EdgeLedgerError as exc:
        log.error("%s", exc)
        return 1
    log.info("agent %s running: %d sensors, data in %s", parsed.device.id,
             len(agent.sources), agent.config.device.data_dir)
    try:
        return agent.run()
    except EdgeLedgerError as exc:
        log.error("%s", exc)
        agent.notifier.stopping(f"failed: {exc}")
        agent.close(flush=False)
        return 1
