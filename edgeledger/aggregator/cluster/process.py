"""`edgeledger aggregator` on the postgres backend: one ingest worker and one sequencer
candidate per process; run as many processes as one machine or several need.

Theory of operation
-------------------
Two threads, two database connections:
- the main thread is the worker (worker.py): it connects to the broker with a
  clean, non-persistent session (a dead worker must leave the shared-subscription
  group at once, not keep a session the broker would still deliver to), takes
  every message already received (up to MAX_BATCH) each turn, verifies and queues
  the blocks, forwards hellos and drop records to the sequencer, answers the
  rest, and publishes what it answered after its COMMIT;
- the sequencer thread (sequencer.py) is a candidate for the role and, while
  elected, appends the queue and publishes acks and checkpoints through the same
  MQTT connection (paho's publish is thread-safe).
A message received but not yet queued when a process dies is lost to it, never to
the device, which resends what is unacked; what was queued stays in the database
for whichever process is sequencer.

Each process also serves the HTTP API on `[http] listen` if that address is free
on its host, with read-only readers and its own metrics (api.py).

The database may be down at start or go away: the worker reconnects with backoff
(the messages of a failed turn are dropped; devices resend them), the sequencer
steps down and stands again. The broker is retried the same way.

SIGTERM or SIGINT: the worker stops taking turns and queues what it already
received; then the sequencer, if elected, decides everything decidable, signs a
last checkpoint if the log grew, publishes it and releases the role; the process
disconnects and exits 0. Exit 78 (EX_CONFIG) for a bad configuration, key or
schema; 1 if the sequencer thread failed for a reason other than the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import FrameType
from typing import TYPE_CHECKING

from edgeledger import clock
from edgeledger.aggregator.cluster.api import new_metrics, start_cluster_api
from edgeledger.aggregator.cluster.sequencer import Sequencer, SequencerSettings
from edgeledger.aggregator.cluster.worker import Worker, shared_subscriptions
from edgeledger.aggregator.config import AggregatorConfig, load_or_create_log_signer
from edgeledger.aggregator.pgconfig import open_postgres_store
from edgeledger.aggregator.server import (
    CLOSE_WAIT_S,
    MAX_BATCH,
    RETRY_MAX_S,
    RETRY_MIN_S,
    TICK_S,
    WATCHDOG_MS,
    broker_transport,
    connect_with_retry,
    take_batch,
)
from edgeledger.aggregator.store.postgres import PostgresStore, StoreFault
from edgeledger.core.errors import EX_CONFIG, ConfigError, EdgeLedgerError, TransportError
from edgeledger.gateway.sdnotify import Notifier
from edgeledger.sync.device import Publish
from edgeledger.sync.mqtt import Connected, ConnectionLost, MqttTransport, Received

if TYPE_CHECKING:
    from edgeledger.aggregator.api.serve import ApiServer

log = logging.getLogger("edgeledger.aggregator.cluster")

JOIN_WAIT_S = 30.0


def worker_name(client_id: str) -> str:
    """This process's MQTT client id and queue tag: the configured id, host and pid."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:32]
    return f"{client_id}-{host}-{os.getpid()}"


class ClusterProcess:
    """One worker and one sequencer candidate; see the module doc."""

    def __init__(self, config: AggregatorConfig, notifier: Notifier | None = None) -> None:
        if config.store.postgres is None:
            raise ConfigError(str(config.path), "store.backend", "the cluster needs 'postgres'")
        self.config = config
        self.pg, self.cluster = config.store.postgres, config.cluster
        self.name = worker_name(config.broker.client_id)
        self.policy = config.ingest_policy()
        self.signer = load_or_create_log_signer(config)
        self.metrics = new_metrics()
        self.worker: Worker  # opened by run(): the database may not answer yet
        self.api: ApiServer | None = None
        settings = SequencerSettings(config.broker.prefix, self.name, self.policy,
                                     config.checkpoint.interval_ms,
                                     config.checkpoint.every_blocks, self.cluster.poll_ms,
                                     self.cluster.hold_ms, self.cluster.max_batch)
        idle = {"idle_session_timeout": f"{self.cluster.failover_ms}ms"}
        self.sequencer = Sequencer(settings, self.signer,
                                   lambda: self._open("edgeledger-sequencer", idle),
                                   self._publish_all, self.metrics)
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.transport: MqttTransport | None = None
        self._futures: list[Future[None]] = []
        self._thread = threading.Thread(target=self._run_sequencer, name="sequencer",
                                        daemon=True)
        self.failed: BaseException | None = None
        self._schema_ready = False

    def _open(self, application: str = "edgeledger-worker",
              settings: dict[str, str] | None = None) -> PostgresStore:
        """A connection to the store; only the process's first one may create the schema
        (a schema gone under a running process is a fault, never re-created empty)."""
        store = open_postgres_store(self.pg, self.cluster, application, settings,
                                    create=not self._schema_ready)
        self._schema_ready = True
        return store

    # --- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until `stop`, then drain and close; the exit status."""
        try:
            worker = self._open_worker()
        except ConfigError as exc:
            log.error("%s", exc)
            self.notifier.close()
            return EX_CONFIG
        if worker is None:
            self.notifier.close()
            return 0
        self.worker = worker
        try:
            self.api = start_cluster_api(self.config, self.signer.verifier(),
                                         lambda: self.worker.sync.statuses, self.metrics)
        except ConfigError as exc:
            log.error("%s", exc)
            self.worker.store.close()
            self.notifier.close()
            return EX_CONFIG
        self._thread.start()
        self.transport = self._connect()
        if self.transport is not None:
            log.info("aggregator running: cluster worker %s, log %s, schema %s, broker %s, "
                     "group %s", self.name, self.signer.name, self.pg.schema,
                     self.transport.address, self.cluster.group)
            self.notifier.ready(f"worker {self.name}")
            petted = clock.mono_ms()
            while not self.stop.is_set() and self.failed is None:
                self.turn(TICK_S)
                if clock.mono_ms() - petted >= WATCHDOG_MS:
                    self.notifier.watchdog()
                    petted = clock.mono_ms()
        return self.drain()

    def turn(self, wait_s: float) -> None:
        """Wait up to `wait_s` for a message, then handle every one already received."""
        assert self.transport is not None
        messages = []
        for event in take_batch(self.transport.get, wait_s, MAX_BATCH):
            if isinstance(event, Received):
                messages.append((event.topic, event.payload))
            elif isinstance(event, Connected):
                log.info("worker: connected to %s", self.transport.address)
            elif isinstance(event, ConnectionLost):
                log.warning("worker: connection to %s lost (%s); reconnecting",
                            self.transport.address, event.reason)
        self._handle(messages)

    def _handle(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        try:
            self._publish_all(self.worker.handle(messages, clock.wall_ms()))
        except StoreFault as exc:
            log.warning("worker: %s; %d message(s) dropped (devices resend)", exc, len(messages))
            if exc.lost:
                self._reopen_worker_store()

    def _reopen_worker_store(self) -> None:
        self.worker.store.close()
        try:
            worker = self._open_worker()
        except ConfigError as exc:  # e.g. the schema was replaced under us: stop
            log.error("worker: %s", exc)
            self.failed = exc
            self.stop.set()
            return
        if worker is not None:
            self.worker = worker

    def _open_worker(self) -> Worker | None:
        """The worker on a new connection, retrying (with backoff) while the server does not
        answer; None if `stop` came first. ConfigError when it answers with a refusal."""
        delay = RETRY_MIN_S
        while not self.stop.is_set():
            try:
                return Worker(self._open(), self.signer, self.name, self.config.broker.prefix,
                              self.policy, self.metrics)
            except StoreFault as exc:
                log.warning("worker: %s; retrying in %.0f s", exc, delay)
                self.notifier.status(f"waiting for PostgreSQL ({self.pg.where()})")
                self.stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        return None

    def drain(self) -> int:
        """Queue what was received, let the sequencer finish, disconnect, close; the status."""
        self.notifier.stopping("draining")
        if self.transport is not None:
            while (event := self.transport.get(0)) is not None:
                if isinstance(event, Received):
                    self._handle([(event.topic, event.payload)])
        self.sequencer.stop.set()
        self._thread.join(JOIN_WAIT_S)
        for future in list(self._futures):
            with contextlib.suppress(TransportError, FutureTimeout):
                future.result(CLOSE_WAIT_S)
        log.info("aggregator stopped: cluster worker %s (%d queued, %d answered; sequencer "
                 "terms %d, %d appended)", self.name, self.worker.queued, self.worker.answered,
                 self.sequencer.terms, self.sequencer.blocks_in)
        self.close()
        return 1 if self.failed is not None else 0

    def close(self) -> None:
        """Stop the API, disconnect, close the worker's store (idempotent)."""
        api, self.api = self.api, None
        if api is not None:
            api.stop()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        with contextlib.suppress(EdgeLedgerError):
            self.worker.store.close()
        self.notifier.close()

    def _run_sequencer(self) -> None:
        try:
            self.sequencer.run()
        except BaseException as exc:
            log.exception("sequencer thread failed: %s", exc)
            self.failed = exc
            self.stop.set()

    # --- MQTT ------------------------------------------------------------------------

    def _publish_all(self, actions: list[Publish]) -> None:
        """Queue publishes without waiting (called from both threads)."""
        transport = self.transport
        for act in actions:
            if transport is None:
                return
            try:
                future = transport.publish_async(act.topic, act.payload, act.qos, act.retain)
            except TransportError as exc:  # the device resends; the checkpoint is re-sent
                log.debug("publish to %s failed: %s", act.topic, exc)
                continue
            if act.retain:
                self._futures = [f for f in self._futures if not f.done()] + [future]

    def _connect(self) -> MqttTransport | None:
        """Connect and subscribe (shared), retrying with backoff until it works or `stop`."""
        b = self.config.broker
        return connect_with_retry(
            lambda: broker_transport(b, self.name, clean_start=True, session_expiry=0),
            shared_subscriptions(b.prefix, self.cluster.group), self.stop, self.notifier,
            "worker")


def run_postgres(config: AggregatorConfig) -> int:
    """`edgeledger aggregator` for a postgres configuration, in the foreground; the status."""
    try:
        process = ClusterProcess(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not process.stop.is_set():
            log.info("%s: draining and stopping", signal.Signals(signum).name)
        process.stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.run()
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
