"""The stateful half of ingest: what the sequencer decides for each queued block.

Workers verified the blocks (verify.py); the sequencer decides them against the
log's state, inside the transaction that appends them, with Ingest's rules and
event kinds (edgeledger/aggregator/ingest.py), in this order for each block:

- the device is still enrolled with the key the worker checked (`unknown-device`,
  `revoked-key`, `unknown-key`): an `edgeledger revoke` or a key rotation that
  committed after the worker's check still stops the block;
- below the device's next height: a `dup` (same hash; acked with its log index)
  or `equivocation` (kept as evidence, device flagged, `rejected`);
- above it: a `gap`. Unlike Ingest, a gap is first *held* for `hold_ms` after
  the block was received: two workers verify a device's consecutive blocks in
  parallel, so block h + 1 can reach the queue before block h. Answering `gap` at
  once would make the device resend its whole window; holding lets block h
  arrive. Only a gap still open after `hold_ms` is answered (and journalled);
- the prev link (`bad-prev`), the readings (`bad-readings`, the worker's `fault`),
  each sensor's first q above its last q in the log (`bad-readings`);
- then the block is accepted; a clock skew is journalled and said in the ack.

Blocks are decided in (device, height, queue id) order, so a batch holding a
device's blocks in any arrival order appends them in height order, and a block
queued twice is accepted once and answered `dup` the second time.

Pure: the sequencer passes a `BookView` (its reads, inside its transaction) and
the log size; this returns what to write and what to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgeledger.aggregator.cluster.verify import Verified
from edgeledger.aggregator.ingest import IngestPolicy
from edgeledger.aggregator.store.reader import Device
from edgeledger.aggregator.store.sqlite import AcceptedBlock
from edgeledger.core.block import ZERO_HASH
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.sync.messages import MAX_WHY, Ack


@dataclass(frozen=True)
class Queued:
    """A verified block as queued: its queue id and the time a worker received it."""

    id: int
    received_ms: int
    block: Verified


class BookView(Protocol):
    """The committed state the decisions read (inside the sequencer's transaction)."""

    def device(self, dev: str) -> Device | None:
        """The record of `dev`, if enrolled."""

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`."""

    def last_q(self, dev: str, sensor: str) -> int | None:
        """The last q of `dev`'s `sensor` in the log, if any."""


@dataclass(frozen=True)
class Evidence:
    """A second, validly signed block at an accepted height."""

    dev: str
    height: int
    hash: bytes
    block: bytes
    time_ms: int


@dataclass(frozen=True)
class EventRow:
    """One event to journal."""

    kind: str
    dev: str | None
    height: int | None
    reason: str
    time_ms: int


@dataclass
class Outcome:
    """What a batch decided: rows done (to delete), blocks to append, answers, journal.

    `acks` are (device, Ack) in decision order; an `ok` ack's log index assumes
    `accepted` is appended from the `base` passed to `decide`.
    """

    done: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    accepted: list[AcceptedBlock] = field(default_factory=list)
    acks: list[tuple[str, Ack]] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, kind: str, height: int, detail: str, status: str = "rejected") -> None:
        super().__init__(detail)
        self.kind, self.height, self.detail, self.status = kind, height, detail, status


@dataclass
class _Tips:
    """The view plus what this batch accepted so far (before its COMMIT)."""

    view: BookView
    base: int
    tips: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    blocks: dict[tuple[str, int], tuple[bytes, int]] = field(default_factory=dict)
    last_q: dict[tuple[str, str], int] = field(default_factory=dict)
    count: int = 0

    def expected(self, dev: str, record: Device | None) -> tuple[int, bytes]:
        if dev in self.tips:
            return self.tips[dev]
        return (0, ZERO_HASH) if record is None else (record.next_height, record.prev)

    def held_q(self, dev: str, sensor: str) -> int | None:
        held = self.last_q.get((dev, sensor))
        return self.view.last_q(dev, sensor) if held is None else held

    def accept(self, b: Verified) -> int:
        index = self.base + self.count
        self.count += 1
        self.tips[b.dev] = (b.height + 1, b.hash)
        self.blocks[b.dev, b.height] = (b.hash, index)
        for sensor, _, last in b.sensors:
            self.last_q[b.dev, sensor] = last
        return index


def decide(rows: Sequence[Queued], view: BookView, base: int, now_ms: int,
           policy: IngestPolicy, hold_ms: int) -> Outcome:
    """Decide `rows` against `view` with the log at size `base`; see the module doc."""
    out, tips = Outcome(), _Tips(view, base)
    for row in sorted(rows, key=lambda r: (r.block.dev, r.block.height, r.id)):
        b, record = row.block, view.device(row.block.dev)
        try:
            ack = _one(row, record, tips, out, policy)
        except _Refused as refused:
            if refused.status == "gap" and now_ms - row.received_ms < hold_ms:
                out.held.append(row.id)
                continue
            why = f"{refused.kind}: {refused.detail}"[:MAX_WHY]
            out.events.append(EventRow(refused.kind, b.dev, refused.height, why,
                                       row.received_ms))
            ack = Ack(tips.expected(b.dev, record)[0], refused.status, why)
        out.done.append(row.id)
        out.acks.append((b.dev, ack))
    return out


def _one(row: Queued, record: Device | None, tips: _Tips, out: Outcome,
         policy: IngestPolicy) -> Ack:
    b, now = row.block, row.received_ms
    if record is None:
        raise _Refused("unknown-device", b.height, f"device {b.dev} is not enrolled")
    if record.revoked_ms is not None:
        raise _Refused("revoked-key", b.height, f"device {b.dev}'s key was revoked at "
                                                f"{record.revoked_ms}")
    if record.public_key != b.key:
        raise _Refused("unknown-key", b.height, f"block {b.dev}/{b.height} was signed with a "
                                                "key the device no longer has (rotated or "
                                                "re-enrolled since it was verified)")
    expected, prev = tips.expected(b.dev, record)
    if b.height < expected:
        return _seen(row, tips, out)
    if b.height > expected:
        raise _Refused("gap", b.height, f"block {b.height} is ahead; next expected is "
                                        f"{expected}", status="gap")
    if b.prev != prev:
        raise _Refused("bad-prev", b.height, f"block {b.dev}/{b.height}: prev does not link "
                                             f"to block {b.height - 1}")
    if b.fault:
        raise _Refused("bad-readings", b.height, b.fault)
    for sensor, first, _ in b.sensors:
        held = tips.held_q(b.dev, sensor)
        if held is not None and first <= held:
            raise _Refused("bad-readings", b.height,
                           f"block {b.dev}/{b.height}: sensor {sensor} starts at q={first}, "
                           f"not above q={held} already in the log")
    index = tips.accept(b)
    out.accepted.append(AcceptedBlock(b.dev, b.height, b.hash, b.entry, b.readings,
                                      tuple((s, last) for s, _, last in b.sensors)))
    skew = skew_reason(b.ts, b.t1, now, policy)
    if skew:
        out.events.append(EventRow("skew", b.dev, b.height,
                                   f"skew: block {b.dev}/{b.height}: {skew}", now))
    return Ack(b.height + 1, "ok", f"skew: {skew}"[:MAX_WHY] if skew else "", log_index=index)


def _seen(row: Queued, tips: _Tips, out: Outcome) -> Ack:
    """A block at a height already accepted: a duplicate, or equivocation."""
    b = row.block
    known = tips.blocks.get((b.dev, b.height)) or tips.view.block(b.dev, b.height)
    if known is None:
        raise EdgeLedgerError(f"sequencer: device {b.dev} is past height {b.height}, but the "
                              "store has no such block")
    if known[0] == b.hash:
        out.events.append(EventRow("dup", b.dev, b.height, f"dup: block {b.dev}/{b.height} "
                                   f"is already at log index {known[1]}", row.received_ms))
        return Ack(b.height + 1, "dup", log_index=known[1])
    out.evidence.append(Evidence(b.dev, b.height, b.hash, b.entry, row.received_ms))
    raise _Refused("equivocation", b.height, f"a different block {b.dev}/{b.height} was "
                                             f"already accepted at log index {known[1]}; kept "
                                             "as evidence, device flagged")


def skew_reason(ts: int, t1: int, now: int, policy: IngestPolicy) -> str:
    """Why a block's times are implausible against its receive time `now`, or ''.

    The same bounds and words as Ingest's: flagged, never refused.
    """
    ahead = max(ts, t1) - now
    if ahead > policy.max_ahead_ms:
        return (f"block time {max(ts, t1)} is {ahead} ms ahead of the receive time {now} "
                f"(at most {policy.max_ahead_ms})")
    if now - ts > policy.max_behind_ms:
        return (f"seal time {ts} is {now - ts} ms behind the receive time {now} "
                f"(at most {policy.max_behind_ms})")
    return ""
