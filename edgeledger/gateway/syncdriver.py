"""Runs the device side of sync (edgeledger.sync.device) over MQTT inside the agent loop.

Theory of operation
-------------------
`DeviceSync` decides everything and touches nothing; `MqttTransport` moves bytes on
its own network thread. This module is the glue, and it never blocks the agent's
loop on the network:

- Offline first. `start()` connects on a background thread, retrying with backoff
  (1 s doubling to 30 s) until the broker answers; the agent records, seals and
  syncs its journal meanwhile. Once connected the transport reconnects by itself.
  The last will is `DeviceSync.last_will()` (retained state with online false),
  renewed whenever the tip moves; MQTT fixes a will at CONNECT, so the broker
  publishes the tip as of the latest (re)connect.
- Events. The transport's callback (network thread) only queues the event and
  writes a byte to `wake_socket`, which the agent's `select` watches, so an ack is
  handled within one loop turn. `step(now)`, called every loop turn, feeds the
  queued events to DeviceSync in order, ticks it, and carries out the actions.
  The first `Connected` of a transport is reported only after our subscriptions
  are in place (its SUBACK), so no ack is published before we listen for it.
- Durability before sending. DeviceSync hears of a block through `sealed(h)` only
  once `durable(tip)` says a group commit made it durable (the agent calls it after
  each successful `Ledger.sync`), so every `SendBlock(h)` is for a block that
  survives a power cut: a block the aggregator holds is never lost and re-sealed
  differently (which it would treat as equivocation).
- Actions. `Publish` -> `publish_async` (never waits for the PUBACK); `SendBlock(h)`
  -> the sync message of `ledger.block(h)`; `SetPrunable` and `KeepCheckpoint`
  change the cursor; `Alarm` -> an error line and a `sync_alarms` entry and
  counter in state.json. A failed publish is left to DeviceSync's resend timer.
- The cursor. After each turn that changed it, `DeviceSync.cursor()` (acked, kept
  checkpoint, covered, pending log indexes) is written to state.json in one atomic
  write; retention reads `acked` and `covered` from there, so nothing is pruned
  on the strength of a cursor that is not on disk. On start the cursor is read
  back and its checkpoint re-verified with the configured log key.
- `close()` publishes the retained state with online false, waits briefly for it
  to be written, and disconnects cleanly (so the broker does not send the will).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from edgeledger import __version__, clock
from edgeledger.config import SyncConfig
from edgeledger.core.block import sync_message
from edgeledger.core.droprecord import parse_drop
from edgeledger.core.errors import ConfigError, EdgeLedgerError, TransportError
from edgeledger.core.reading import Reading
from edgeledger.gateway.ledger import Ledger, PrunedError
from edgeledger.gateway.state import State
from edgeledger.sync.device import (
    QOS_SYNC,
    Action,
    Alarm,
    DeviceSync,
    KeepCheckpoint,
    Publish,
    SendBlock,
    SetPrunable,
    SyncCursor,
)
from edgeledger.sync.mqtt import (
    Connected,
    ConnectionLost,
    Event,
    MqttTransport,
    Received,
    Tls,
    Will,
)

log = logging.getLogger("edgeledger.sync")
TICK_MS = 100
"""DeviceSync's timers (resends, proof requests, state refresh) are checked this often."""
CONNECT_TIMEOUT_S = 5.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
CLOSE_WAIT_S = 2.0
"""How long `close()` waits for the offline state message to be written."""


class SyncDriver:
    """DeviceSync over an MqttTransport for one agent; see the module doc."""

    def __init__(self, config: SyncConfig, device: str, ledger: Ledger, state: State) -> None:
        if config.host_port is None or config.log_key is None:
            raise ConfigError(str(state.path), "sync", "broker and log_key are required")
        self.config, self.ledger, self.state = config, ledger, state
        self.host, self.port = config.host_port
        self.client_id = f"edgeledger-{device}"
        self.password = _read_password(config.password_file)
        cursor = state.sync_cursor
        try:
            self.sync = DeviceSync(device, config.log_key, ledger.tip, cursor,
                                   prefix=config.prefix, window=config.window,
                                   resend_ms=config.resend_ms,
                                   version=f"edgeledger {__version__}")
        except EdgeLedgerError as exc:
            raise EdgeLedgerError(f"sync cursor in {state.path}: {exc} (move state.json "
                                  "aside only if the log key was changed on purpose)") from exc
        self.saved: SyncCursor = cursor
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.wake_socket, self._wake_w = socket.socketpair()
        for sock in (self.wake_socket, self._wake_w):
            sock.setblocking(False)
        self.transport: MqttTransport | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.alarms = 0
        self.drops: dict[tuple[int, int], bytes] = {}
        """(h0, h1) -> DROP record payload, from retention or the journal"""
        self.forwarded: set[bytes] = set()
        self.scanned = False

    # --- the agent's side ------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._connect_loop, name="sync-connect",
                                            daemon=True)
            self._thread.start()

    def durable(self, tip: int | None, now: int) -> None:
        """The ledger is durable up to `tip`: tell DeviceSync of each newly sealed block."""
        if tip is None:
            return
        moved = False
        while self.sync.tip is None or self.sync.tip < tip:
            height = 0 if self.sync.tip is None else self.sync.tip + 1
            self._perform(self.sync.sealed(height, now), now)
            moved = True
        if moved and self.transport is not None:
            will = self.sync.last_will()
            self.transport.set_will(Will(will.topic, will.payload, will.qos, will.retain))
        self._save()

    def step(self, now: int) -> int:
        """Handle queued MQTT events, tick DeviceSync, persist the cursor; the next due time."""
        with contextlib.suppress(BlockingIOError, OSError):
            self.wake_socket.recv(4096)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self._perform(self._feed(event, now), now)
        self._perform(self.sync.tick(now), now)
        self._save()
        return now + TICK_MS

    def close(self, now: int) -> None:
        """Publish state offline, disconnect cleanly, stop the connector (idempotent)."""
        if self._stop.is_set():
            return
        self.step(now)
        self._stop.set()
        with self._lock:
            transport, self.transport = self.transport, None
        if transport is not None:
            futures = [self._publish(transport, act) for act in self.sync.closing()
                       if isinstance(act, Publish)]
            for future in futures:
                if future is not None:
                    with contextlib.suppress(TransportError, FutureTimeout):
                        future.result(CLOSE_WAIT_S)
            transport.close()
            log.info("sync: disconnected from %s (state offline published)", transport.address)
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT_S + 1)
        self._save()
        self.wake_socket.close()
        self._wake_w.close()

    # --- events and actions ----------------------------------------------------------

    def _feed(self, event: Event, now: int) -> list[Action]:
        if isinstance(event, Received):
            return self.sync.received(event.topic, event.payload, now)
        if isinstance(event, Connected):
            log.info("sync: connected to %s:%d; acked %s, tip %s, backlog %d", self.host,
                     self.port, _show(self.sync.acked), _show(self.sync.tip), self.sync.backlog)
            return self.sync.connected(now)
        log.warning("sync: connection to %s:%d lost (%s); recording offline, reconnecting",
                    self.host, self.port, event.reason)
        return self.sync.disconnected()

    def _perform(self, actions: list[Action], now: int) -> None:
        for act in actions:
            if isinstance(act, Publish):
                if self.transport is not None:
                    self._publish(self.transport, act)
            elif isinstance(act, SendBlock):
                self._send_block(act)
            elif isinstance(act, SetPrunable):
                log.debug("sync: blocks up to %d acked and covered; prunable", act.height)
            elif isinstance(act, KeepCheckpoint):
                kept = self.sync.kept
                log.info("sync: kept checkpoint %s (log size %s); covered %s",
                         kept.height if kept else "?", kept.size if kept else "?",
                         _show(self.sync.covered))
            else:
                self._alarm(act)

    def _publish(self, transport: MqttTransport, act: Publish) -> Future[None] | None:
        try:
            return transport.publish_async(act.topic, act.payload, act.qos, act.retain)
        except TransportError as exc:  # DeviceSync resends on its timer
            log.debug("sync: publish to %s failed: %s", act.topic, exc)
            return None

    def dropped(self, payload: bytes) -> None:
        """Retention dropped blocks under the quota: forward this DROP record when asked."""
        record = parse_drop(payload)[0]
        self.drops[record.h0, record.h1] = payload

    def _send_block(self, act: SendBlock) -> None:
        if self.transport is None:
            return
        try:
            block, raws = self.ledger.block(act.height)
            readings = [Reading.decode(raw, f"block {act.height} reading") for raw in raws]
        except PrunedError as exc:
            self._forward_drop(act.height, exc)
            return
        except EdgeLedgerError as exc:
            log.error("sync: cannot read block %d to send it: %s", act.height, exc)
            return
        self._publish(self.transport, Publish(act.topic, sync_message(block, readings), act.qos))

    def _forward_drop(self, height: int, pruned: PrunedError) -> None:
        """Send the DROP record naming `height` instead of the block (or alarm: none)."""
        payload = self._drop_covering(height)
        if payload is None:
            self._alarm(Alarm(f"sync: cannot send block {height}: {pruned}, and no DROP "
                              "record names it"))
            return
        if payload not in self.forwarded:
            self.forwarded.add(payload)
            log.warning("sync: block %d was dropped by the disk quota; forwarding the signed "
                        "DROP record", height)
        assert self.transport is not None
        self._publish(self.transport, Publish(self.sync.topics.drop, payload, QOS_SYNC))

    def _drop_covering(self, height: int) -> bytes | None:
        found = [p for (h0, h1), p in self.drops.items() if h0 <= height <= h1]
        if not found and not self.scanned:
            self.scanned = True  # once: the journal may be large
            try:
                for payload in self.ledger.drop_records():
                    self.dropped(payload)
            except EdgeLedgerError as exc:
                log.error("sync: cannot read DROP records from the journal: %s", exc)
            found = [p for (h0, h1), p in self.drops.items() if h0 <= height <= h1]
        return found[-1] if found else None

    def _alarm(self, alarm: Alarm) -> None:
        self.alarms += 1
        log.error("sync alarm: %s", alarm.reason)
        try:
            self.state.flag_sync_alarm(alarm.reason, clock.wall_ms())
        except OSError as exc:
            log.warning("state %s: sync alarm not recorded: %s", self.state.path, exc)

    def _save(self) -> None:
        cursor = self.sync.cursor()
        if cursor == self.saved:
            return
        try:
            self.state.set_sync_cursor(cursor)
        except OSError as exc:  # a full disk: retried after the next change or turn
            log.warning("state %s: sync cursor not saved (will retry): %s", self.state.path, exc)
            return
        self.saved = cursor

    # --- the connector thread ----------------------------------------------------------

    def _connect_loop(self) -> None:
        """Make a transport and connect it, retrying until it works or we close."""
        delay, failures = RETRY_MIN_S, 0
        while not self._stop.is_set():
            ready = threading.Event()
            transport = self._transport(ready)
            try:
                transport.connect(CONNECT_TIMEOUT_S)
                transport.subscribe(self.sync.topics.subscriptions(), timeout=CONNECT_TIMEOUT_S)
            except TransportError as exc:
                with contextlib.suppress(Exception):
                    transport.close()
                level = logging.WARNING if failures == 0 else logging.DEBUG
                log.log(level, "sync: %s; recording offline, retrying in %.0f s", exc, delay)
                failures += 1
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            with self._lock:
                if self._stop.is_set():
                    transport.close()
                    return
                self.transport = transport
                self.events.put(Connected(session_present=False))
                ready.set()
            self._wake()
            return

    def _transport(self, ready: threading.Event) -> MqttTransport:
        will = self.sync.last_will()
        cfg = self.config
        tls = None
        if cfg.tls_ca_file is not None:
            tls = Tls(str(cfg.tls_ca_file), _opt(cfg.tls_cert_file), _opt(cfg.tls_key_file))

        def on_event(event: Event) -> None:
            # Until our subscriptions are in place the connector reports Connected.
            if isinstance(event, Connected) and not ready.is_set():
                return
            if isinstance(event, ConnectionLost) and not ready.is_set():
                return
            self.events.put(event)
            self._wake()

        # A clean session: the device resynchronises with a hello on every connect and
        # needs nothing the broker kept; a persistent broker restored from an older save
        # would otherwise hand back acks from an earlier session (stale gaps).
        return MqttTransport(self.host, self.port, self.client_id, clean_start=True,
                             will=Will(will.topic, will.payload, will.qos, will.retain),
                             username=cfg.username, password=self.password, tls=tls,
                             reconnect_min=1, reconnect_max=int(RETRY_MAX_S),
                             on_event=on_event)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"!")


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "sync.password_file", f"cannot read: {exc}") from exc


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _show(height: int | None) -> str:
    return "none" if height is None else str(height)


