"""Ingest: verify devices' sync messages and append their blocks to the canonical log.

Checks, in order, each failure with its own event kind (EVENT_KINDS): the message
fits the size cap (`oversized`) and decodes (`malformed`); the block names the
device whose topic it came on (`wrong-topic`); the device is enrolled
(`unknown-device`) and not revoked (`revoked-key`); the kid is the enrolled key's
(`unknown-key`) and the signature holds (`bad-signature`); the height: below the
device's next is a duplicate (`dup`, acked) or equivocation (`equivocation`),
above it is a `gap`; the prev link (`bad-prev`); the readings: count, Merkle root,
t0/t1, q strictly increasing per sensor within the block and after the sensor's last
q in the log (`bad-readings`). Only then is the block appended, with its readings
(kept for proofs and queries) and each sensor's new last q.

Durability. Ingest works over a DeviceBook: the SqliteStore (the aggregator) or a
MemoryBook (the one-process demo and unit tests). `receive_batch` verifies every
message of a batch inside one store transaction, appends all accepted blocks with
`append_blocks`, journals every event, and COMMITs once; the acks are returned
only after that COMMIT, so an `ok` always names a durable block. Verifying inside
the write transaction also means no `edgeledger revoke` can slip between a check
and its append.

Decisions
---------
- Clock skew is flagged, never rejected. A block is signed and immutable and the
  next block links to it: refusing it would stall the device's chain for good (its
  clock cannot be fixed retroactively), and blocks arriving late after an outage
  are normal. A block whose `ts` or `t1` is more than `max_ahead_ms` after the
  receive time, or whose `ts` is more than `max_behind_ms` before it, is appended,
  journalled as a `skew` event, and its `ok` ack says so in `why`.
- Equivocation: a second block at an accepted height, validly signed by the
  device's key, is kept as evidence (`add_equivocation`), the device is flagged,
  the ack is `rejected`; the accepted block stays the only one in the log. The
  signature alone makes it evidence (the device signed two headers for one height),
  so its readings are not checked. A flagged device's later blocks are still
  accepted: flagging is for the operator, and the chain stays provable.
- A revoked device is refused every block, duplicates included; its history stays
  in the log and the store, provable as before.
- A duplicate is journalled as a `dup` event: replays are visible to operators. A
  device resends at most its window after each reconnect, so the journal stays small.
- Without a receive time (`now_ms=None`, the in-memory demo), skew is not checked
  and events carry the last receive time seen (0 before any).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from edgeledger.aggregator.enrollment import (
    Action,
    DeviceState,
    EnrollmentError,
    Rotation,
    decide_rotation,
)
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import AcceptedBlock, Device, Event, SqliteStore
from edgeledger.core.block import (
    MAX_SYNC_MESSAGE,
    ZERO_HASH,
    parse_sync_message,
    readings_array,
    verify_readings,
)
from edgeledger.core.droprecord import MAX_DROP, DropRecord, parse_drop, verify_drop
from edgeledger.core.errors import DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.reading import Reading
from edgeledger.sync.messages import MAX_WHY, Ack

__all__ = ["EVENT_KINDS", "Ack", "DeviceBook", "Ingest", "IngestPolicy", "MemoryBook",
           "rotate_device"]

EVENT_KINDS = ("oversized", "malformed", "wrong-topic", "unknown-device", "revoked-key",
               "unknown-key", "bad-signature", "dup", "equivocation", "gap", "bad-prev",
               "bad-readings", "skew", "enrolled", "revoked", "rotated", "rotation-rejected",
               "dropped")
"""Event kinds Ingest journals; edgeledger.aggregator.service adds its own."""


@dataclass(frozen=True)
class IngestPolicy:
    """Limits ingest applies: the message size cap and the clock-skew bounds (ms)."""

    max_message: int = MAX_SYNC_MESSAGE
    max_ahead_ms: int = 60_000
    max_behind_ms: int = 7 * 24 * 3600 * 1000

    def __post_init__(self) -> None:
        for key in ("max_message", "max_ahead_ms", "max_behind_ms"):
            if getattr(self, key) <= 0:
                raise EdgeLedgerError(f"ingest policy: {key} must be positive, "
                                      f"got {getattr(self, key)}")


class DeviceBook(Protocol):
    """What ingest reads and writes besides the log; SqliteStore is the durable one."""

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together."""

    def device(self, dev: str) -> Device | None:
        """The record of `dev`, if enrolled."""

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`."""

    def enroll(self, dev: str, public_key: bytes, now_ms: int) -> None:
        """Enroll `dev` (again) with `public_key`, keeping its tip."""

    def revoke(self, dev: str, now_ms: int) -> None:
        """Stop accepting `dev`'s blocks."""

    def append_blocks(self, log: CanonicalLog, blocks: Sequence[AcceptedBlock]) -> list[int]:
        """Append verified blocks and move the tips; return their log indexes."""

    def add_equivocation(self, dev: str, height: int, block_hash: bytes, block: bytes,
                         now_ms: int) -> bool:
        """Keep a conflicting block as evidence and flag the device."""

    def add_event(self, kind: str, dev: str | None, height: int | None, reason: str,
                  now_ms: int) -> int:
        """Journal one event."""

    def last_q(self, dev: str, sensor: str) -> int | None:
        """The last q of `dev`'s sensor `sensor` in the log, if any."""

    def apply_drop(self, dev: str, record: DropRecord, payload: bytes, now_ms: int) -> None:
        """Move `dev` past the heights `record` drops (next h1 + 1, prev its `last`); keep it."""


@dataclass
class DeviceRecord:
    """One device in a MemoryBook."""

    public_key: bytes
    enrolled_ms: int = 0
    revoked_ms: int | None = None
    flagged_ms: int | None = None
    next_height: int = 0
    prev: bytes = ZERO_HASH
    blocks: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    """height -> (block hash, log index)"""
    last_q: dict[str, int] = field(default_factory=dict)
    """sensor -> its last q in the log"""


class MemoryBook:
    """A DeviceBook in memory (no durability): for the one-process demo and tests."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRecord] = {}
        self.evidence: list[tuple[str, int, bytes]] = []
        self.drops: list[bytes] = []
        self.events: list[Event] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Nothing to commit in memory."""
        yield

    def device(self, dev: str) -> Device | None:
        """The record of `dev` as the store would give it."""
        r = self.devices.get(dev)
        return None if r is None else Device(dev, r.public_key, r.enrolled_ms, r.revoked_ms,
                                             r.flagged_ms, r.next_height, r.prev)

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`."""
        r = self.devices.get(dev)
        return None if r is None else r.blocks.get(height)

    def enroll(self, dev: str, public_key: bytes, now_ms: int) -> None:
        """Enroll `dev`; re-enrolling keeps its tip and history."""
        r = self.devices.setdefault(dev, DeviceRecord(public_key))
        r.public_key, r.enrolled_ms, r.revoked_ms = public_key, now_ms, None

    def revoke(self, dev: str, now_ms: int) -> None:
        """Stop accepting `dev`'s blocks."""
        if dev not in self.devices:
            raise EdgeLedgerError(f"revoke {dev}: not enrolled")
        self.devices[dev].revoked_ms = now_ms

    def append_blocks(self, log: CanonicalLog, blocks: Sequence[AcceptedBlock]) -> list[int]:
        """Append each block to `log` and move its device's tip."""
        indexes = []
        for b in blocks:
            r = self.devices[b.dev]
            if r.next_height != b.height or r.revoked_ms is not None:
                raise EdgeLedgerError(f"block {b.dev}/{b.height}: not the device's next height")
            indexes.append(log.append(b.entry))
            r.blocks[b.height] = (b.hash, indexes[-1])
            r.next_height, r.prev = b.height + 1, b.hash
            r.last_q.update(b.last_q)
        return indexes

    def last_q(self, dev: str, sensor: str) -> int | None:
        """The last q of `dev`'s sensor `sensor` in the log, if any."""
        r = self.devices.get(dev)
        return None if r is None else r.last_q.get(sensor)

    def apply_drop(self, dev: str, record: DropRecord, payload: bytes, now_ms: int) -> None:
        """Move `dev` past the dropped heights and keep the record."""
        r = self.devices[dev]
        r.next_height, r.prev = record.h1 + 1, record.last
        self.drops.append(payload)

    def add_equivocation(self, dev: str, height: int, block_hash: bytes, block: bytes,
                         now_ms: int) -> bool:
        """Keep the evidence and flag the device; False if already kept."""
        r = self.devices[dev]
        r.flagged_ms = now_ms if r.flagged_ms is None else r.flagged_ms
        if (dev, height, block_hash) in self.evidence:
            return False
        self.evidence.append((dev, height, block_hash))
        return True

    def add_event(self, kind: str, dev: str | None, height: int | None, reason: str,
                  now_ms: int) -> int:
        """Journal one event; return its id."""
        self.events.append(Event(len(self.events) + 1, now_ms, kind, dev, height, reason))
        return len(self.events)


def rotate_device(book: DeviceBook, rotation: Rotation, now_ms: int) -> Action:
    """Apply a key rotation record to `book` with its event, in one transaction.

    Returns ROTATE or UNCHANGED (already applied). A forged, stale or misdirected
    record is journalled as `rotation-rejected` and its VerificationError or
    EnrollmentError re-raised, so the caller can tell the operator or the device.
    """
    try:
        with book.transaction():
            device = book.device(rotation.dev)
            state = None if device is None else DeviceState(device.public_key,
                                                            device.enrolled_ms,
                                                            device.revoked_ms)
            action = decide_rotation(rotation, state)
            if action is Action.ROTATE:
                book.enroll(rotation.dev, rotation.new, now_ms)
                book.add_event("rotated", rotation.dev, None, rotation.describe(), now_ms)
    except (VerificationError, EnrollmentError) as exc:
        book.add_event("rotation-rejected", rotation.dev, None,
                       f"rotation-rejected: {exc}"[:MAX_WHY], now_ms)
        raise
    return action


@dataclass
class _Batch:
    """What a batch has accepted so far, before its COMMIT: a view over the book."""

    base: int
    accepted: list[AcceptedBlock] = field(default_factory=list)
    tips: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    blocks: dict[tuple[str, int], tuple[bytes, int]] = field(default_factory=dict)
    last_q: dict[tuple[str, str], int] = field(default_factory=dict)

    def accept(self, block: AcceptedBlock) -> int:
        index = self.base + len(self.accepted)
        self.accepted.append(block)
        self.tips[block.dev] = (block.height + 1, block.hash)
        self.blocks[block.dev, block.height] = (block.hash, index)
        for sensor, q in block.last_q:
            self.last_q[block.dev, sensor] = q
        return index


class _Refused(Exception):
    """One check failed: the event kind, the height (if known) and the detail."""

    def __init__(self, kind: str, height: int | None, detail: str,
                 status: str = "rejected") -> None:
        super().__init__(detail)
        self.kind, self.height, self.detail, self.status = kind, height, detail, status


class Ingest:
    """Verifies sync messages from enrolled devices and appends their blocks in order."""

    def __init__(self, log: CanonicalLog, book: DeviceBook | None = None,
                 policy: IngestPolicy | None = None) -> None:
        self.log = log
        if book is None:
            book = log.store if isinstance(log.store, SqliteStore) else MemoryBook()
        self.book: DeviceBook = book
        self.policy = policy or IngestPolicy()
        self._now = 0

    @property
    def devices(self) -> dict[str, DeviceRecord]:
        """The devices of a MemoryBook (the demo's view); a store has `devices()`."""
        if not isinstance(self.book, MemoryBook):
            raise EdgeLedgerError("ingest: device records are in the store (store.devices())")
        return self.book.devices

    def enroll(self, dev: str, public_key: bytes, now_ms: int | None = None) -> None:
        """Accept blocks signed by `public_key` from device `dev` (journalled)."""
        now = self._clock(now_ms)
        with self.book.transaction():
            self.book.enroll(dev, public_key, now)
            self.book.add_event("enrolled", dev, None, f"key {public_key.hex()[:16]}...", now)

    def revoke(self, dev: str, now_ms: int | None = None) -> None:
        """Refuse `dev`'s blocks from now on; what the log holds stays provable."""
        now = self._clock(now_ms)
        with self.book.transaction():
            self.book.revoke(dev, now)
            self.book.add_event("revoked", dev, None, "key revoked", now)

    def event(self, kind: str, dev: str | None, height: int | None, reason: str,
              now_ms: int | None = None) -> None:
        """Journal an event found outside ingest (the service's bad topics, requests)."""
        self.book.add_event(kind, dev, height, reason[:MAX_WHY], self._clock(now_ms))

    def next_height(self, dev: str) -> int:
        """The height ingest expects next from `dev` (0 if unknown)."""
        record = self.book.device(dev)
        return 0 if record is None else record.next_height

    def receive(self, dev: str, message: bytes, now_ms: int | None = None) -> Ack:
        """Check one sync message received on device `dev`'s topic; append it if valid."""
        return self.receive_batch([(dev, message)], now_ms)[0]

    def receive_batch(self, messages: Sequence[tuple[str, bytes]],
                      now_ms: int | None = None) -> list[Ack]:
        """Check (device, message) pairs in order; append the valid blocks in one COMMIT.

        Return one Ack per message, after the COMMIT: each `ok` is durable.
        """
        now = self._clock(now_ms)
        with self.book.transaction():
            batch = _Batch(self.log.size)
            acks = [self._one(dev, message, now, now_ms is not None, batch)
                    for dev, message in messages]
            indexes = self.book.append_blocks(self.log, batch.accepted)
            if indexes != list(range(batch.base, batch.base + len(indexes))):
                raise EdgeLedgerError(f"ingest: log indexes {indexes[:3]}... are not the "
                                      f"batch's {batch.base}..: another writer on the log?")
        return acks

    def receive_drop(self, dev: str, payload: bytes, now_ms: int | None = None) -> Ack:
        """A device's signed DROP record: let its chain continue past the dropped heights.

        Checked like a block (size, format, topic, enrollment, kid and signature); then,
        against the device's next expected height N: a record ending below N is
        already covered (`dup`); one starting above N is a `gap`; one starting at N
        must link (`prev`) to the device's last block; one starting below N (an
        earlier drop merged in, or acks lost) covers N by the device's signature. The
        device's next height becomes h1 + 1 and its prev the record's `last`, so its
        next block links across the gap; the record is kept and journalled (`dropped`).
        """
        now = self._clock(now_ms)
        with self.book.transaction():
            batch = _Batch(self.log.size)
            try:
                return self._drop(dev, payload, now)
            except _Refused as refused:
                why = f"{refused.kind}: {refused.detail}"[:MAX_WHY]
                self.book.add_event(refused.kind, dev, refused.height, why, now)
                status = "gap" if refused.status == "gap" else "rejected"
                return Ack(self._expected(dev, batch)[0], status, why)

    def _drop(self, dev: str, payload: bytes, now: int) -> Ack:
        if len(payload) > MAX_DROP:
            raise _Refused("oversized", None, f"drop record of {len(payload)} bytes from "
                                              f"{dev}; at most {MAX_DROP}")
        try:
            record = parse_drop(payload)[0]
        except DecodeError as exc:
            raise _Refused("malformed", None, str(exc)) from exc
        if record.dev != dev:
            raise _Refused("wrong-topic", record.h0, f"drop record names device "
                                                     f"{record.dev!r}, sent as {dev!r}")
        device = self._enrolled(dev, record.h0)
        try:
            verify_drop(payload, device.public_key)
        except VerificationError as exc:
            kind = "unknown-key" if exc.check == "kid" else "bad-signature"
            raise _Refused(kind, record.h0, str(exc)) from exc
        n, span = device.next_height, f"{record.h0}..{record.h1}"
        if record.h1 < n:
            return Ack(n, "dup", f"dup: drop record {span} is behind the next height {n}")
        if record.h0 > n:
            raise _Refused("gap", record.h0, f"drop record {span} is ahead; next expected "
                                             f"is {n}", status="gap")
        if record.h0 == n and record.prev != device.prev:
            raise _Refused("bad-prev", n, f"drop record {span}: prev does not link to "
                                          f"block {n - 1}")
        self.book.apply_drop(dev, record, payload, now)
        why = (f"dropped: {dev} dropped blocks {n}..{record.h1} under its disk quota "
               f"(record {span}, {record.cnt} readings, times {record.t0}..{record.t1})")
        self.book.add_event("dropped", dev, n, why[:MAX_WHY], now)
        return Ack(record.h1 + 1, "ok", why[:MAX_WHY])

    def _enrolled(self, dev: str, height: int | None) -> Device:
        record = self.book.device(dev)
        if record is None:
            raise _Refused("unknown-device", height, f"device {dev} is not enrolled")
        if record.revoked_ms is not None:
            raise _Refused("revoked-key", height, f"device {dev}'s key was revoked at "
                                                  f"{record.revoked_ms}")
        return record

    def _clock(self, now_ms: int | None) -> int:
        if now_ms is not None:
            self._now = now_ms
        return self._now

    def _one(self, dev: str, message: bytes, now: int, check_skew: bool, batch: _Batch) -> Ack:
        """Check one message; journal what happened; the Ack (ok ones are in `batch`)."""
        try:
            return self._check(dev, message, now, check_skew, batch)
        except _Refused as refused:
            why = f"{refused.kind}: {refused.detail}"[:MAX_WHY]
            self.book.add_event(refused.kind, dev, refused.height, why, now)
            expected = self._expected(dev, batch)[0]
            if refused.status == "gap":
                return Ack(expected, "gap", why)
            return Ack(expected, "rejected", why)

    def _expected(self, dev: str, batch: _Batch) -> tuple[int, bytes]:
        if dev in batch.tips:
            return batch.tips[dev]
        record = self.book.device(dev)
        return (0, ZERO_HASH) if record is None else (record.next_height, record.prev)

    def _check(self, dev: str, message: bytes, now: int, check_skew: bool,
               batch: _Batch) -> Ack:
        if len(message) > self.policy.max_message:
            raise _Refused("oversized", None, f"sync message of {len(message)} bytes from "
                                              f"{dev}; at most {self.policy.max_message}")
        try:
            block, readings = parse_sync_message(message, f"sync message from {dev}")
        except DecodeError as exc:
            raise _Refused("malformed", None, str(exc)) from exc
        hdr = block.header
        if hdr.dev != dev:
            raise _Refused("wrong-topic", hdr.h, f"block names device {hdr.dev!r}, "
                                                 f"sent as {dev!r}")
        record = self._enrolled(dev, hdr.h)
        try:
            block.verify(record.public_key)
        except VerificationError as exc:
            kind = "unknown-key" if exc.check == "kid" else "bad-signature"
            raise _Refused(kind, hdr.h, str(exc)) from exc
        expected, prev = self._expected(dev, batch)
        if hdr.h < expected:
            return self._seen(dev, block.hash, block.cose, hdr.h, now, batch)
        if hdr.h > expected:
            raise _Refused("gap", hdr.h, f"block {hdr.h} is ahead; next expected is {expected}",
                           status="gap")
        if hdr.prev != prev:
            raise _Refused("bad-prev", hdr.h, f"block {dev}/{hdr.h}: prev does not link to "
                                              f"block {hdr.h - 1}")
        try:
            decoded = verify_readings(block, readings)
        except VerificationError as exc:
            raise _Refused("bad-readings", hdr.h, str(exc)) from exc
        last_q = self._check_q(dev, hdr.h, decoded, batch)
        index = batch.accept(AcceptedBlock(dev, hdr.h, block.hash, block.cose,
                                           readings_array(readings), last_q,
                                           (hdr.t0, hdr.t1) if decoded else None))
        skew = self._skew(hdr.ts, hdr.t1, now) if check_skew else ""
        if skew:
            self.book.add_event("skew", dev, hdr.h, f"skew: block {dev}/{hdr.h}: {skew}", now)
        return Ack(hdr.h + 1, "ok", f"skew: {skew}" if skew else "", log_index=index)

    def _check_q(self, dev: str, height: int, readings: list[Reading],
                 batch: _Batch) -> tuple[tuple[str, int], ...]:
        """Each sensor's first q here is above its last q in the log; its new last q.

        verify_readings checked the order inside the block; this carries it across
        blocks, so a replayed or rewound sensor sequence is refused.
        """
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for r in readings:
            first.setdefault(r.sensor, r.q)
            last[r.sensor] = r.q
        for sensor, q in first.items():
            held = batch.last_q.get((dev, sensor))
            if held is None:
                held = self.book.last_q(dev, sensor)
            if held is not None and q <= held:
                raise _Refused("bad-readings", height,
                               f"block {dev}/{height}: sensor {sensor} starts at q={q}, not "
                               f"above q={held} already in the log")
        return tuple(last.items())

    def _seen(self, dev: str, block_hash: bytes, cose: bytes, height: int, now: int,
              batch: _Batch) -> Ack:
        """A validly signed block at a height already accepted: a duplicate, or equivocation."""
        known = batch.blocks.get((dev, height)) or self.book.block(dev, height)
        if known is None:
            raise EdgeLedgerError(f"ingest: device {dev} is past height {height}, "
                                  "but the store has no such block")
        if known[0] == block_hash:
            self.book.add_event("dup", dev, height, f"dup: block {dev}/{height} is already "
                                                    f"at log index {known[1]}", now)
            # `next` and `log_index` answer the block sent (edgeledger.sync.messages.Ack):
            # the device learns where its block is, even from a duplicate.
            return Ack(height + 1, "dup", log_index=known[1])
        self.book.add_equivocation(dev, height, block_hash, cose, now)
        raise _Refused("equivocation", height, f"a different block {dev}/{height} was already "
                                               f"accepted at log index {known[1]}; kept as "
                                               "evidence, device flagged")

    def _skew(self, ts: int, t1: int, now: int) -> str:
        """Why the block's times are implausible against the receive time `now`, or ''."""
        ahead = max(ts, t1) - now
        if ahead > self.policy.max_ahead_ms:
            return (f"block time {max(ts, t1)} is {ahead} ms ahead of the receive time {now} "
                    f"(at most {self.policy.max_ahead_ms})")
        if now - ts > self.policy.max_behind_ms:
            return (f"seal time {ts} is {now - ts} ms behind the receive time {now} "
                    f"(at most {self.policy.max_behind_ms})")
        return ""
