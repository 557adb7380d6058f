"""The sequencer: elected through PostgreSQL, it appends queued blocks and signs checkpoints.

Theory of operation
-------------------
Election. Every aggregator process on the postgres backend is a candidate: a
thread that tries `pg_try_advisory_lock(key)` every `poll_ms` on a connection of
its own. A session advisory lock belongs to a server session, so it is released
the moment that session ends, whoever ends it: the process exiting or being
SIGKILLed (the kernel closes the socket, the server sees EOF at once), the
network dropping (TCP keepalives and `tcp_user_timeout`, set on both ends), or
the server ending an idle session. That last one is what covers a *frozen*
sequencer (SIGSTOP, a VM paused, a process stuck in a long GC): its kernel still
answers TCP keepalives, so only the server's `idle_session_timeout`
(= `failover_ms`) and `idle_in_transaction_session_timeout` notice it. A working
sequencer runs a statement at least every TICK_S, far below that. Why a lock and
not a lease row with an expiry: a lock needs no clock and no renewal writes, and a
crash frees it at once instead of after a lease period; the server-side timeouts
give the lease's bound for the frozen case anyway.

Fencing. The appends run on the very session that holds the lock, so a COMMIT
that succeeded was made while the lock was held: when the server ends a frozen
sequencer's session, its open transaction dies with it, and when it thaws its
next statement fails (StoreFault with `lost`) and it steps down. Independently of
the lock, the store's log-head guard (`UPDATE log_head ... WHERE size = old`),
the tip guard and the checkpoint guard (store/postgres.py) make a second writer's
transaction fail rather than fork the log. Correctness never rests on timing;
timing only decides how fast a successor takes over.

Leading. In a loop: one transaction locks the log head, reads up to `max_batch`
queued blocks, decides them (sequence.py), records evidence, appends the accepted
ones (`append_blocks`: one batch, one COMMIT), journals events and deletes the
decided rows; after the COMMIT it publishes the acks, answers the hellos and drop
records the workers forwarded (through AggregatorSync, as one aggregator would:
from the state just committed, so never behind an ack already sent), signs a
checkpoint when
due (Checkpointer over a CanonicalLog on the same store, so the `prev` chain
continues from whatever the last sequencer stored) and publishes it retained.
Workers NOTIFY after queueing; between batches it waits for a notification for
at most TICK_S. Every term is a row of `sequencer_terms` (holder, since).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from edgeledger import clock
from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.cluster import queue
from edgeledger.aggregator.cluster.api import count_decided
from edgeledger.aggregator.cluster.sequence import Outcome, decide
from edgeledger.aggregator.ingest import Ingest, IngestPolicy
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.service import AggregatorSync
from edgeledger.aggregator.store.pgschema import QUEUE_CHANNEL, lock_key
from edgeledger.aggregator.store.postgres import PostgresStore, StoreFault
from edgeledger.aggregator.store.reader import Device
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.sync.device import Publish
from edgeledger.sync.messages import Ack
from edgeledger.sync.topics import DeviceTopics, checkpoint_topic

if TYPE_CHECKING:
    from edgeledger.aggregator.api.metrics import Metrics

log = logging.getLogger("edgeledger.aggregator.sequencer")

TICK_S = 0.1
"""The longest the sequencer waits between two statements (checkpoints are due this often)."""
QOS_SYNC = 1


@dataclass(frozen=True)
class SequencerSettings:
    """What the sequencer needs from the configuration."""

    prefix: str
    holder: str
    policy: IngestPolicy
    checkpoint_interval_ms: int
    checkpoint_every: int
    poll_ms: int
    hold_ms: int
    max_batch: int


class _View:
    """sequence.BookView over preloaded rows (one query each) plus point lookups."""

    def __init__(self, store: PostgresStore, devs: Sequence[str]) -> None:
        self.store = store
        self.devices = store.devices_for(devs)
        self.qs = store.last_qs(devs)

    def device(self, dev: str) -> Device | None:
        return self.devices.get(dev)

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        return self.store.block(dev, height)

    def last_q(self, dev: str, sensor: str) -> int | None:
        return self.qs.get((dev, sensor))


GUARD_PAUSE_S = 5.0
"""How long a candidate waits after a guard refused to let it lead."""


class Sequencer:
    """A candidate, and while elected the sequencer; `run` is its thread."""

    def __init__(self, settings: SequencerSettings, signer: Signer,
                 open_store: Callable[[], PostgresStore],
                 publish: Callable[[list[Publish]], None],
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.signer = signer
        self.open_store = open_store
        self.publish = publish
        self.stop = threading.Event()
        """Set to end: a leading sequencer drains what it can decide and signs first."""
        self.leading = threading.Event()
        self.terms = 0
        self.highest_seen = -1
        """The highest checkpoint height this process led or saw (it never leads a log
        that went back below it)."""
        self.blocks_in = 0
        self._told: dict[str, str] = {}

    def run(self) -> None:
        """Be a candidate until `stop`; lead whenever elected (the thread's target)."""
        poll = self.settings.poll_ms / 1000
        while not self.stop.is_set():
            pause = poll
            try:
                store = self.open_store()
            except EdgeLedgerError as exc:
                log.warning("sequencer candidate: %s; retrying", exc)
                self.stop.wait(max(poll, 1.0))
                continue
            try:
                self._candidate(store, poll)
            except StoreFault as exc:
                was = "sequencer" if self.leading.is_set() else "candidate"
                lost = "lost its database session (and the lock with it)" if exc.lost else \
                    "failed"
                log.warning("%s %s %s: %s; stepping down", was, self.settings.holder, lost, exc)
            except EdgeLedgerError as exc:  # a guard refused a write: nothing was committed
                log.error("sequencer %s: %s; stepping down and standing again",
                          self.settings.holder, exc)
                pause = max(poll, GUARD_PAUSE_S)  # one line every few seconds, not a flood
            finally:
                self.leading.clear()
                store.close()
            self.stop.wait(pause)

    def _candidate(self, store: PostgresStore, poll: float) -> None:
        key = lock_key(store.schema, "sequencer")
        while not self.stop.is_set():
            if store.one("SELECT pg_try_advisory_lock(%s)", (key,))[0]:
                self._lead(store)
                return
            self.stop.wait(poll)

    def _lead(self, store: PostgresStore) -> None:
        term = int(store.one("INSERT INTO sequencer_terms (holder, since_ms) VALUES (%s, %s) "
                             "RETURNING term", (self.settings.holder, clock.wall_ms()))[0])
        store.q(f"LISTEN {QUEUE_CHANNEL}")
        self.terms += 1
        self.leading.set()
        canonical = CanonicalLog(store, self.signer)
        checkpointer = Checkpointer(canonical, self.settings.checkpoint_interval_ms,
                                    self.settings.checkpoint_every)
        sync = AggregatorSync(Ingest(canonical, store, self.settings.policy), checkpointer,
                              self.settings.prefix)
        cursor = store.last_event_id()
        log.info("sequencer: elected (term %d, holder %s): log size %d, queue %d",
                 term, self.settings.holder, canonical.size, queue.depth(store))
        self._check_not_behind(canonical)
        checkpointer.maybe_sign(clock.wall_ms())
        self._publish_checkpoint(checkpointer.note)
        while True:
            self._seen_height(canonical)
            finishing = self.stop.is_set()
            out = self.append_batch(store, canonical)
            if out is not None:
                self.publish([self._ack(dev, ack, checkpointer.note) for dev, ack in out.acks])
            answered = self.answer_requests(store, sync)
            note = checkpointer.maybe_sign(clock.wall_ms())
            if note is not None:
                self._publish_checkpoint(note)
            cursor = _log_events(store, cursor)
            if out is not None and len(out.done) == self.settings.max_batch:
                continue
            if finishing and (out is None or not out.done) and not answered:
                break
            _wait(store, TICK_S)
        checkpointer.sign(clock.wall_ms())
        self._publish_checkpoint(checkpointer.note)
        log.info("sequencer: stepping down at stop (term %d): log size %d", term, canonical.size)

    def _check_not_behind(self, canonical: CanonicalLog) -> None:
        """Refuse to lead a log whose checkpoint chain is behind one this process saw: the
        store went back (a restore, a dropped schema), and signing on would fork the log."""
        last = canonical.checkpoint
        height = -1 if last is None else last.height
        if height < self.highest_seen:
            raise EdgeLedgerError(f"the store's last checkpoint is height {height}, but this "
                                  f"process saw height {self.highest_seen}: the log went "
                                  "back (a restore? a dropped schema?); refusing to sign a "
                                  "second chain with the same key")
        self._seen_height(canonical)

    def _seen_height(self, canonical: CanonicalLog) -> None:
        last = canonical.checkpoint
        if last is not None:
            self.highest_seen = max(self.highest_seen, last.height)

    def append_batch(self, store: PostgresStore, canonical: CanonicalLog) -> Outcome | None:
        """One transaction: decide up to max_batch queued blocks, append, journal, dequeue."""
        s = self.settings
        with store.transaction():
            base = store.size()
            rows = queue.fetch(store, s.max_batch)
            if not rows:
                return None
            out = decide(rows, _View(store, sorted({r.block.dev for r in rows})), base,
                         clock.wall_ms(), s.policy, s.hold_ms)
            for e in out.evidence:
                store.add_equivocation(e.dev, e.height, e.hash, e.block, e.time_ms)
            indexes = store.append_blocks(canonical, out.accepted)
            if indexes != list(range(base, base + len(out.accepted))):
                raise EdgeLedgerError(f"sequencer: log indexes {indexes[:3]}... are not "
                                      f"{base}..: another writer on the log?")
            store.add_events([(e.kind, e.dev, e.height, e.reason, e.time_ms)
                              for e in out.events])
            queue.delete(store, out.done)
        by_id = {r.id: r for r in rows}
        count_decided(self.metrics, [by_id[i] for i in out.done], out.acks, clock.wall_ms())
        self.blocks_in += len(out.accepted)
        if out.accepted:
            log.debug("sequencer: %d queued, %d appended, %d held; log size %d", len(rows),
                      len(out.accepted), len(out.held), base + len(out.accepted))
        return out

    def answer_requests(self, store: PostgresStore, sync: AggregatorSync) -> int:
        """Answer the hellos and drop records workers forwarded (after this batch's acks,
        from the state it committed), through AggregatorSync as one aggregator would; the
        number answered."""
        requests = queue.fetch_requests(store, self.settings.max_batch)
        if not requests:
            return 0
        messages = [(f"{self.settings.prefix}/dev/{dev}/{kind}", payload)
                    for _, (dev, kind, payload) in requests]
        for _, (dev, kind, _) in requests:
            if kind == "hello":  # as AggregatorSync does: the next ack carries the note
                self._told.pop(dev, None)
        self.publish(sync.receive_many(messages, clock.wall_ms()))
        queue.delete_requests(store, [i for i, _ in requests])
        return len(requests)

    def _ack(self, dev: str, ack: Ack, note: str | None) -> Publish:
        """The ack, with the latest checkpoint once per device per checkpoint."""
        if note is not None and self._told.get(dev) != note:
            self._told[dev] = note
            ack = Ack(ack.next, ack.status, ack.why, ack.log_index, note)
        return Publish(DeviceTopics(dev, self.settings.prefix).ack, ack.encode(), QOS_SYNC)

    def _publish_checkpoint(self, note: str | None) -> None:
        if note is not None:
            self.publish([Publish(checkpoint_topic(self.settings.prefix), note.encode(),
                                  QOS_SYNC, retain=True)])


def _wait(store: PostgresStore, timeout: float) -> None:
    """Wait up to `timeout` for a worker's NOTIFY (buffered ones return at once)."""
    try:
        for _ in store.connection.notifies(timeout=timeout, stop_after=1):
            pass
    except psycopg.Error as exc:
        raise StoreFault(f"store {store.where}: waiting for notifications: {exc}", True) from exc


def _log_events(store: PostgresStore, cursor: int) -> int:
    """One log line per event journalled since `cursor` (by any process); the new cursor."""
    routine = {"dup", "skew", "device-behind", "enrolled", "revoked", "rotated"}
    while events := store.events(cursor, 1000):
        for e in events:
            level = logging.INFO if e.kind in routine else logging.WARNING
            where = e.dev if e.height is None else f"{e.dev}/{e.height}"
            log.log(level, "event %s %s: %s", e.kind, where or "-", e.reason)
        cursor = events[-1].id
    return cursor

