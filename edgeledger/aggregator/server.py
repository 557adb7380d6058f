"""`edgeledger aggregator`: AggregatorSync over MQTT, on the SQLite store, until SIGTERM.

Theory of operation
-------------------
`AggregatorSync` (service.py) decides everything and touches nothing; this module
is its driver. One thread does all the work, so the store has one writer:

- Connect. The broker may be down at start: the first connection is retried with
  backoff (1 s doubling to 30 s) until it answers; from then on the transport
  reconnects by itself. The session is persistent (`clean_start=False`), so the
  broker queues QoS 1 messages for us while we are away or restarting.
- Batches. Each turn waits up to TICK_S for a message, then takes whatever else is
  already queued (up to MAX_BATCH) and hands it to `receive_many`: a run of blocks
  is verified and appended in one store transaction, one fsync, and only then are
  its acks published. Batching is what makes ingest fast under load; at low load a
  batch is one message and adds no delay.
- Publishing never waits for the broker: acks, proofs and checkpoints are queued
  with `publish_nowait`. A publish that fails is not retried here: the device
  resends its block (a `dup` ack answers it) and the checkpoint is republished on
  the next sign or reconnect.
- Every (re)connect republishes the latest checkpoint retained, in case the broker
  lost its retained messages (a restart without persistence).
- A message received (and PUBACKed by paho) but not yet processed when the process
  dies is lost to us, never to the device: the device resends what is unacked.
- SIGTERM or SIGINT: stop taking new turns, process what is already queued, sign a
  last checkpoint if the log grew, publish it (waiting up to CLOSE_WAIT_S for the
  broker), disconnect cleanly, close the store, exit 0. sd_notify READY/WATCHDOG/
  STOPPING when systemd asks for them (Type=notify).
- The HTTP API (edgeledger/aggregator/api/) runs on a thread of its own with its own
  read-only store connections, started before the broker connection (it answers
  while the broker is down) and stopped after the drain. This thread only feeds it
  metrics: each ingest batch's acks (MeteredIngest) and its latency, from taking the
  batch off the MQTT queue to its COMMIT. Without the `aggregator` extra (FastAPI,
  uvicorn, prometheus-client) the aggregator runs without API, and says so.
Exit status: 0 after a clean stop, 78 (EX_CONFIG) for a bad configuration, key or
store file, or an HTTP address it cannot listen on (systemd does not restart on
it), 1 for anything else.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgeledger import clock
from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.config import (
    AggregatorConfig,
    BrokerConfig,
    load_aggregator_config,
    load_or_create_log_signer,
    open_store,
)
from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.service import AggregatorSync
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.errors import EX_CONFIG, ConfigError, EdgeLedgerError, TransportError
from edgeledger.gateway.sdnotify import Notifier
from edgeledger.logs import setup_logging
from edgeledger.sync.device import Publish
from edgeledger.sync.mqtt import Connected, ConnectionLost, Event, MqttTransport, Received, Tls
from edgeledger.sync.topics import aggregator_subscriptions

if TYPE_CHECKING:
    from edgeledger.aggregator.api.metrics import Metrics
    from edgeledger.aggregator.api.serve import ApiServer

log = logging.getLogger("edgeledger.aggregator")

TICK_S = 0.1
"""The longest a turn waits for a message: checkpoints are checked this often."""
MAX_BATCH = 512
"""Messages handled in one turn (blocks among them share one transaction)."""
CONNECT_TIMEOUT_S = 5.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
CLOSE_WAIT_S = 5.0
ROUTINE_EVENTS = frozenset({"dup", "skew", "device-behind", "enrolled", "revoked", "rotated"})
"""Events logged at INFO; every other kind is a refusal or a fault, logged at WARNING."""
WATCHDOG_MS = 1000
"""WATCHDOG=1 at most this often (the unit's WatchdogSec is far longer)."""


class AggregatorServer:
    """The aggregator's one thread: MQTT in, AggregatorSync, MQTT out; see the module doc."""

    def __init__(self, config: AggregatorConfig, store: SqliteStore,
                 notifier: Notifier | None = None, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        signer = load_or_create_log_signer(config)
        self.log = CanonicalLog(store, signer)
        policy = config.ingest_policy()
        self.metrics = metrics
        if metrics is None:
            self.ingest = Ingest(self.log, store, policy)
        else:
            from edgeledger.aggregator.api.metrics import MeteredIngest
            self.ingest = MeteredIngest(self.log, store, policy, metrics=metrics)
        self.taken_at = time.monotonic()
        """When the batch being handled was taken off the MQTT queue (ingest latency)."""
        self.checkpointer = Checkpointer(self.log, config.checkpoint.interval_ms,
                                         config.checkpoint.every_blocks)
        self.sync = AggregatorSync(self.ingest, self.checkpointer, config.broker.prefix)
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.transport: MqttTransport | None = None
        self.event_cursor = store.last_event_id()

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Connect, serve until `stop` is set, drain and close; the exit status."""
        transport = self._connect()
        if transport is None:
            self.close()
            return 0
        self.transport = transport
        cp = self.log.checkpoint
        log.info("aggregator running: log %s, size %d, checkpoint height %s, broker %s, "
                 "prefix %s", self.log.signer.name, self.log.size,
                 "none" if cp is None else cp.height, transport.address,
                 self.config.broker.prefix)
        self.notifier.ready(f"log size {self.log.size}")
        petted = clock.mono_ms()
        while not self.stop.is_set():
            self.turn(TICK_S)
            if clock.mono_ms() - petted >= WATCHDOG_MS:
                self.notifier.watchdog()
                petted = clock.mono_ms()
        self.drain()
        return 0

    def turn(self, wait_s: float) -> None:
        """Wait up to `wait_s` for a message, handle it and all others queued, then tick."""
        assert self.transport is not None
        events = take_batch(self.transport.get, wait_s, MAX_BATCH)
        self.taken_at = time.monotonic()
        self._handle(events)
        self._publish(self.sync.tick(clock.wall_ms()))
        self._log_events()

    def drain(self) -> None:
        """On stop: handle what is queued, sign a last checkpoint, disconnect, close."""
        self.notifier.stopping("draining")
        transport = self.transport
        if transport is not None:
            while events := take_batch(transport.get, 0, MAX_BATCH):
                self.taken_at = time.monotonic()
                self._handle(events)
        note = self.checkpointer.sign(clock.wall_ms())
        futures = self._publish(self.sync.start(clock.wall_ms()), track=True)
        self._log_events()
        for future in futures:
            with contextlib.suppress(TransportError, FutureTimeout):
                future.result(CLOSE_WAIT_S)
        cp = self.log.checkpoint
        log.info("aggregator stopped: log size %d, checkpoint height %s%s", self.log.size,
                 "none" if cp is None else cp.height,
                 " (signed at stop)" if note is not None else "")
        self.close()

    def close(self) -> None:
        """Disconnect and close the store (idempotent)."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        self.store.close()
        self.notifier.close()

    # --- events ----------------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        messages: list[tuple[str, bytes]] = []
        for event in events:
            if isinstance(event, Received):
                messages.append((event.topic, event.payload))
                continue
            self._receive(messages)
            messages = []
            if isinstance(event, Connected):
                log.info("aggregator: connected to %s (session present: %s)",
                         self._address(), event.session_present)
                self._publish(self.sync.start(clock.wall_ms()))
            elif isinstance(event, ConnectionLost):
                log.warning("aggregator: connection to %s lost (%s); reconnecting",
                            self._address(), event.reason)
        self._receive(messages)

    def _receive(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        size = self.log.size
        self._publish(self.sync.receive_many(messages, clock.wall_ms()))
        if self.metrics is not None:
            blocks = sum(topic.endswith("/blk") for topic, _ in messages)
            self.metrics.observe_ingest(time.monotonic() - self.taken_at, blocks)
        appended = self.log.size - size
        if appended:
            log.debug("aggregator: %d message(s), %d block(s) appended; log size %d",
                      len(messages), appended, self.log.size)

    def _log_events(self) -> None:
        """One log line per event journalled since the last call (ingest's and the CLI's)."""
        while events := self.store.events(self.event_cursor, 1000):
            for e in events:
                level = logging.INFO if e.kind in ROUTINE_EVENTS else logging.WARNING
                where = e.dev if e.height is None else f"{e.dev}/{e.height}"
                log.log(level, "event %s %s: %s", e.kind, where or "-", e.reason)
            self.event_cursor = events[-1].id

    def _publish(self, actions: list[Publish], track: bool = False) -> list[Future[None]]:
        """Queue `actions` on the broker connection; futures for their PUBACKs if `track`."""
        futures = []
        for act in actions:
            if self.transport is None:
                break
            try:
                if track:
                    futures.append(self.transport.publish_async(act.topic, act.payload,
                                                                act.qos, act.retain))
                else:
                    self.transport.publish_nowait(act.topic, act.payload, act.qos, act.retain)
            except TransportError as exc:  # the device resends; the checkpoint is re-sent
                log.debug("aggregator: publish to %s failed: %s", act.topic, exc)
        return futures

    def _address(self) -> str:
        return f"{self.config.broker.host}:{self.config.broker.port}"

    # --- connecting --------------------------------------------------------------------------

    def _connect(self) -> MqttTransport | None:
        """Connect and subscribe, retrying with backoff until it works or `stop` is set."""
        b = self.config.broker
        return connect_with_retry(lambda: broker_transport(b, b.client_id, clean_start=False),
                                  aggregator_subscriptions(b.prefix), self.stop, self.notifier,
                                  "aggregator")


def broker_transport(broker: BrokerConfig, client_id: str, **options: Any) -> MqttTransport:
    """A transport to the configured broker (address, user, TLS, MQTT version, keepalive)."""
    b = broker
    tls = None
    if b.tls is not None:
        tls = Tls(str(b.tls.ca_file), _opt(b.tls.cert_file), _opt(b.tls.key_file))
    return MqttTransport(b.host, b.port, client_id, username=b.username, password=b.password(),
                         tls=tls, protocol="5" if b.mqtt_version == "5" else "3.1.1",
                         keepalive=b.keepalive_s, reconnect_min=int(RETRY_MIN_S),
                         reconnect_max=int(RETRY_MAX_S), **options)


def connect_with_retry(make: Callable[[], MqttTransport], filters: list[str],
                       stop: threading.Event, notifier: Notifier,
                       who: str) -> MqttTransport | None:
    """Connect a transport from `make` and subscribe to `filters`, retrying with backoff
    (1 s doubling to 30 s) while the broker does not answer; None if `stop` came first."""
    delay, failures = RETRY_MIN_S, 0
    while not stop.is_set():
        transport = make()
        try:
            transport.connect(CONNECT_TIMEOUT_S)
            transport.subscribe(filters, timeout=CONNECT_TIMEOUT_S)
        except TransportError as exc:
            with contextlib.suppress(TransportError):
                transport.close()
            level = logging.WARNING if failures == 0 else logging.DEBUG
            log.log(level, "%s: %s; retrying in %.0f s", who, exc, delay)
            failures += 1
            notifier.status(f"waiting for the broker {transport.address}")
            if stop.wait(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        return transport
    return None


def take_batch(get: Callable[[float], Event | None], wait_s: float, limit: int) -> list[Event]:
    """Wait up to `wait_s` for one event, then take those already queued, at most `limit`."""
    events: list[Event] = []
    event = get(wait_s)
    while event is not None:
        events.append(event)
        if len(events) == limit:
            break
        event = get(0)
    return events


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)


def run_aggregator(config_path: Path, log_level: str) -> int:
    """`edgeledger aggregator --config FILE`: serve in the foreground; the exit status."""
    setup_logging(log_level)
    try:
        config = load_aggregator_config(config_path)
        if config.store.backend == "postgres":  # workers + sequencer: aggregator/cluster/
            from edgeledger.aggregator.cluster.process import run_postgres
            return run_postgres(config)
        store = open_store(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    api: ApiServer | None = None
    try:
        server = AggregatorServer(config, store, metrics=_new_metrics())
        api = _start_api(config, server)
    except ConfigError as exc:
        store.close()
        log.error("%s", exc)
        return EX_CONFIG
    except EdgeLedgerError:
        store.close()
        raise
    restore = _on_stop_signals(lambda signum: _stop(server, signum))
    try:
        return server.run()
    except EdgeLedgerError as exc:
        log.error("aggregator: %s", exc)
        server.notifier.stopping(f"failed: {exc}")
        server.close()
        return 1
    finally:
        restore()
        if api is not None:
            api.stop()


API_MISSING = ("HTTP API not started: %s (install the aggregator extra: "
               "pip install 'edgeledger[aggregator]')")


def _new_metrics() -> Metrics | None:
    """A metrics registry for this process, or None without prometheus-client."""
    try:
        from edgeledger.aggregator.api.metrics import Metrics
    except ImportError:
        return None
    return Metrics()


def _start_api(config: AggregatorConfig, server: AggregatorServer) -> ApiServer | None:
    """Serve the HTTP API on [http] listen (ConfigError if it cannot listen there)."""
    try:
        from edgeledger.aggregator.api.serve import start_api
    except ImportError as exc:
        log.warning(API_MISSING, exc)
        return None
    sync = server.sync
    return start_api(config, server.log.signer.verifier(), lambda: sync.statuses,
                     server.metrics)


def _stop(server: AggregatorServer, signum: int) -> None:
    if not server.stop.is_set():
        log.info("%s: draining and stopping", signal.Signals(signum).name)
    server.stop.set()


def _on_stop_signals(handler: Callable[[int], None]) -> Callable[[], None]:
    """Call `handler(signum)` on SIGTERM and SIGINT; return what restores the old handlers."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, previous in old.items():
            signal.signal(sig, previous)
    return restore
