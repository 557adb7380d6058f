"""The disk quota: prune what the aggregator holds for good, and never drop data silently.

Theory of operation. The journal's segments roll only after a seal record, so every
segment but the newest holds whole blocks, and deleting a whole segment is the only
way data leaves the device. The agent calls

    result = retention.enforce(ledger, prunable_through, now_ms, disk_full=False)

once per loop iteration (or after each sync). `prunable_through` is the highest block
height that is both acked by the aggregator and covered by a checkpoint the device
verified (min of the two; None when either is missing). `disk_full` is True when the
agent's last `ledger.sync()` raised DiskFullError. The result says what was pruned or
dropped and whether intake must stop; `Retention.counters` are what the agent exposes.

Usage is the journal's bytes: every segment file plus what is buffered for the next
sync. The block index (12 bytes a block) and the state file are not counted.

1. Pruning. Segments whose blocks are all at or below `prunable_through` are deleted
   oldest first, and only while the quota needs room (or the disk is full). Pruning
   is not eager: a block the aggregator holds is still the device's own copy, worth
   keeping for re-sync after an aggregator restore and for `log verify`, and deleting
   a segment when room is needed costs one unlink, so keeping data while there is room
   costs nothing. Two segments are never removed: the newest (being written) and the
   one holding the tip's seal, from which the ledger restarts; removing that one would
   make a restart begin the chain again at height 0.
2. When the quota is still reached (usage >= quota) and nothing more may be pruned:
   - "stop": intake must stop until room returns (acks and checkpoints let pruning
     free a segment). Logged at error level once per episode; `intake_stopped`
     counts episodes. Seals and heartbeats go on: they are small.
   - "drop-oldest": the oldest remaining segments (never those two) are dropped, but
     only after a signed DROP record naming them is durable in the journal: if that
     record cannot be written (ENOSPC), nothing is deleted, intake stops, and the same
     record is retried on the next call. At most one drop a call, and only if it
     brings usage under the quota: if even dropping all it may would not, nothing is
     dropped and intake stops. Logged at error level, counted.
   A real ENOSPC below the quota (the quota is larger than the card's free space)
   prunes everything prunable; if that frees nothing, intake stops under either
   policy: unacked data is not dropped because the card was smaller than promised.
   The config requires a quota of at least two segments, since everything may sit in
   the two segments that are never removed; three leave slack.

Removed heights make `Ledger.block(h)` raise PrunedError (h and the segment named);
`first_kept_height(ledger)` says where the blocks on disk begin, and the result's
`drop_payload` is what the sync layer can forward to the aggregator as is.

DROP record (journal record kind DROP): the device's signed account of what a drop
took, format in edgeledger/core/droprecord.py; the sync layer forwards it to the
aggregator, which lets the device's chain continue past the dropped heights.
`prev` and `last` let a verifier bridge the gap: block h1+1 names `last` as its prev.
`verify_drop(payload, public_key)` checks all of it. If the device dies between the
durable record and the deletion, the blocks are still there and a later record may
name them again: a DROP record says "may be missing", never "never existed".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

from edgeledger.core import cbor
from edgeledger.core.block import key_id
from edgeledger.core.droprecord import DropRecord, parse_drop
from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer
from edgeledger.gateway.journal import (
    DISK_FULL_ERRNOS,
    DROP,
    SEAL,
    DiskFullError,
    JournalError,
    Position,
)
from edgeledger.gateway.ledger import Ledger, Seal

log = logging.getLogger(__name__)

POLICIES = ("stop", "drop-oldest")


@dataclass(frozen=True)
class Span:
    """One segment and the block heights it holds (first..last; empty if last < first)."""

    segment: int
    first: int
    last: int
    size: int

    @property
    def blocks(self) -> int:
        """How many blocks the segment holds."""
        return max(0, self.last - self.first + 1)


@dataclass
class Counters:
    """What the agent exposes (and may persist in its state)."""

    pruned_segments: int = 0
    pruned_blocks: int = 0
    dropped_blocks: int = 0
    dropped_readings: int = 0
    intake_stopped: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


@dataclass(frozen=True)
class RetentionResult:
    """What one `enforce` call did, and whether the agent may take readings."""

    usage: int
    pruned: tuple[Span, ...] = ()
    dropped: tuple[Span, ...] = ()
    drop: DropRecord | None = None
    drop_payload: bytes | None = None
    stop_reason: str = ""

    @property
    def intake_stopped(self) -> bool:
        """True while the agent must not take readings."""
        return bool(self.stop_reason)


@dataclass
class _PendingDrop:
    end: Position
    record: DropRecord
    payload: bytes
    spans: list[Span]
    readings: int
    """readings in `spans` (the record may also carry an earlier drop's, merged in)"""


@dataclass
class Retention:
    """Applies the quota to one ledger; keeps the counters and the stop episode."""

    quota_bytes: int
    policy: str
    signer: Signer
    counters: Counters = field(default_factory=Counters)
    _ledger: Ledger | None = field(default=None, init=False, repr=False)
    _sizes: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _spans: dict[int, Span] = field(default_factory=dict, init=False, repr=False)
    _pending: _PendingDrop | None = field(default=None, init=False, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError("[journal]", "quota_policy",
                              f"must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if not cbor.is_int(self.quota_bytes) or self.quota_bytes <= 0:
            raise ConfigError("[journal]", "quota_bytes",
                              f"must be a positive integer, not {self.quota_bytes!r}")

    def enforce(self, ledger: Ledger, prunable_through: int | None, now_ms: int,
                disk_full: bool = False) -> RetentionResult:
        """Apply the quota once; see the module doc. May sync the ledger (DROP records)."""
        self._bind(ledger)
        drop, reason = self._finish_pending(ledger)
        if reason:
            return self._result(ledger, [], None, reason)
        usage = self.usage(ledger)
        if not disk_full and usage < self.quota_bytes:
            return self._result(ledger, [], drop, "")
        candidates = self._candidates(ledger)
        pruned = self._prune(ledger, candidates, prunable_through, usage, disk_full)
        usage -= sum(s.size for s in pruned)
        if usage < self.quota_bytes:
            if disk_full and not pruned:
                reason = "disk full and no acked, checkpointed segment is left to prune"
        elif self.policy == "stop":
            reason = (f"journal holds {usage} bytes of its {self.quota_bytes}-byte quota "
                      "and no acked, checkpointed segment is left to prune")
        elif drop is None:  # at most one drop a call; a retried one may just have been done
            drop, reason = self._drop(ledger, candidates[len(pruned):], usage, now_ms)
        return self._result(ledger, pruned, drop, reason)

    def usage(self, ledger: Ledger) -> int:
        """The journal's bytes: older segments (sizes cached) plus the newest, buffer included."""
        self._bind(ledger)
        end = ledger.journal.end
        total = end.offset
        for number in ledger.journal.segments():
            if number < end.segment:
                if number not in self._sizes:
                    self._sizes[number] = ledger.journal.segment_path(number).stat().st_size
                total += self._sizes[number]
        return total

    # --- the steps -------------------------------------------------------------------

    def _bind(self, ledger: Ledger) -> None:
        """Caches hold for one Ledger object; a reopened ledger starts them afresh."""
        if ledger is not self._ledger:
            self._ledger, self._sizes, self._spans, self._pending = ledger, {}, {}, None

    def _candidates(self, ledger: Ledger) -> list[Span]:
        """Segments that may ever be removed, oldest first: those older than the tip's seal."""
        if ledger.tip is None:
            return []
        below = min(ledger.index.get(ledger.tip).segment, ledger.journal.end.segment)
        out = []
        for number in ledger.journal.segments():
            if number >= below:
                break
            if number not in self._spans:
                self._spans[number] = segment_span(ledger, number)
            out.append(self._spans[number])
        return out

    def _prune(self, ledger: Ledger, candidates: list[Span], prunable_through: int | None,
               usage: int, disk_full: bool) -> list[Span]:
        """Remove the oldest acked, checkpointed segments while room is needed."""
        pruned: list[Span] = []
        for span in candidates:
            if not disk_full and usage < self.quota_bytes:
                break
            if prunable_through is None or span.last > prunable_through:
                break
            self._remove(ledger, span)
            usage -= span.size
            pruned.append(span)
        self._count_pruned(pruned)
        return pruned

    def _remove(self, ledger: Ledger, span: Span) -> None:
        ledger.journal.remove_segment(span.segment)
        ledger.index.release_below(span.last + 1)
        self._sizes.pop(span.segment, None)
        self._spans.pop(span.segment, None)

    def _count_pruned(self, pruned: list[Span]) -> None:
        if not pruned:
            return
        self.counters.pruned_segments += len(pruned)
        self.counters.pruned_blocks += sum(s.blocks for s in pruned)
        log.info("retention: pruned %d segment(s) %d..%d holding acked, checkpointed blocks "
                 "%d..%d", len(pruned), pruned[0].segment, pruned[-1].segment,
                 pruned[0].first, pruned[-1].last)

    def _drop(self, ledger: Ledger, rest: list[Span], usage: int,
              now_ms: int) -> tuple[_PendingDrop | None, str]:
        """Journal a signed DROP record for the oldest segments, then delete them."""
        chosen: list[Span] = []
        for span in rest:
            if usage < self.quota_bytes or span.blocks == 0:
                break
            chosen.append(span)
            usage -= span.size
        if usage >= self.quota_bytes:
            return None, (f"journal holds {usage} bytes of its {self.quota_bytes}-byte quota "
                          "after dropping all it may: only the newest segment and the tip's "
                          "are left (quota too small for the segment size?)")
        record, readings = self._describe(ledger, chosen, now_ms)
        payload = record.sign(self.signer)
        ledger.append_drop(payload)
        self._pending = _PendingDrop(ledger.journal.end, record, payload, chosen, readings)
        return self._finish_pending(ledger)

    def _describe(self, ledger: Ledger, spans: list[Span],
                  now_ms: int) -> tuple[DropRecord, int]:
        """The DROP record for `spans`, from the seal records they hold, and their readings.

        An earlier DROP record inside `spans` whose range ends just before theirs is
        merged in (its h0, prev, count and times), so deleting the segment that holds
        it never loses the account of a drop the aggregator may not have seen yet.
        """
        seals: list[Seal] = []
        earlier: list[DropRecord] = []
        for span in spans:
            for record in ledger.journal.read_range(Position(span.segment, 0), span.size):
                if record.kind == SEAL:
                    seals.append(Seal.decode(record.payload, f"seal in segment {span.segment}"))
                elif record.kind == DROP:
                    earlier.append(parse_drop(record.payload)[0])
        first, last = seals[0].block, seals[-1].block
        want = (spans[0].first, spans[-1].last, sum(s.blocks for s in spans))
        if (first.header.h, last.header.h, len(seals)) != want:
            raise JournalError(f"retention: segments {spans[0].segment}..{spans[-1].segment} "
                               f"hold seals {first.header.h}..{last.header.h} ({len(seals)}), "
                               f"the block index says {want[0]}..{want[1]}; not dropping them")
        drop = DropRecord(
            dev=first.header.dev, kid=key_id(self.signer.public_key),
            h0=first.header.h, h1=last.header.h, prev=first.header.prev, last=last.hash,
            cnt=sum(s.block.header.cnt for s in seals),
            t0=min(s.block.header.t0 for s in seals), t1=max(s.block.header.t1 for s in seals),
            ts=now_ms)
        readings = drop.cnt
        for old in sorted(earlier, key=lambda r: r.h1, reverse=True):
            if old.h1 + 1 == drop.h0 and old.last == drop.prev:
                drop = replace(drop, h0=old.h0, prev=old.prev, cnt=old.cnt + drop.cnt,
                               t0=min(old.t0, drop.t0), t1=max(old.t1, drop.t1))
        return drop, readings

    def _finish_pending(self, ledger: Ledger) -> tuple[_PendingDrop | None, str]:
        """Delete the segments of a journaled DROP record once the record is durable."""
        pending = self._pending
        if pending is None:
            return None, ""
        rec = pending.record
        if ledger.journal.durable_end < pending.end:
            try:
                ledger.sync()
            except (DiskFullError, OSError) as exc:  # the block index writes plain OSError
                if isinstance(exc, OSError) and exc.errno not in DISK_FULL_ERRNOS:
                    raise
                return None, (f"disk full: the record of dropping blocks {rec.h0}..{rec.h1} "
                              f"is not durable yet, so nothing was dropped ({exc})")
        for span in pending.spans:
            self._remove(ledger, span)
        self._pending = None
        spans = pending.spans
        self.counters.dropped_blocks += sum(s.blocks for s in spans)
        self.counters.dropped_readings += pending.readings
        log.error("retention: quota %d bytes reached with unacked data: DROPPED blocks %d..%d "
                  "(%d readings) of device %s; signed DROP record for %d..%d (times %d..%d) "
                  "journaled", self.quota_bytes, spans[0].first, spans[-1].last,
                  pending.readings, rec.dev, rec.h0, rec.h1, rec.t0, rec.t1)
        return pending, ""

    def _result(self, ledger: Ledger, pruned: list[Span], drop: _PendingDrop | None,
                reason: str) -> RetentionResult:
        if reason and not self._stopped:
            self.counters.intake_stopped += 1
            log.error("retention: intake STOPPED (policy %s): %s", self.policy, reason)
        elif self._stopped and not reason:
            log.warning("retention: room again; intake resumes")
        self._stopped = bool(reason)
        if drop is None:
            return RetentionResult(self.usage(ledger), tuple(pruned), stop_reason=reason)
        return RetentionResult(self.usage(ledger), tuple(pruned), tuple(drop.spans),
                               drop.record, drop.payload, reason)


def segment_span(ledger: Ledger, segment: int) -> Span:
    """The heights whose seals lie in `segment`, from O(log n) block-index reads."""
    size = ledger.journal.segment_path(segment).stat().st_size
    return Span(segment, _last_before(ledger, segment) + 1, _last_before(ledger, segment + 1),
                size)


def first_kept_height(ledger: Ledger) -> int | None:
    """The lowest height whose block is still on disk (None if there are no blocks)."""
    segments = ledger.journal.segments()
    if ledger.tip is None or not segments:
        return None
    return _last_before(ledger, segments[0]) + 1


def _last_before(ledger: Ledger, segment: int) -> int:
    """The highest height whose seal lies in a segment numbered below `segment`, or -1.

    Index positions grow with height, so this is a binary search.
    """
    lo, hi = ledger.index.base, ledger.index.count
    while lo < hi:
        mid = (lo + hi) // 2
        if ledger.index.get(mid).segment < segment:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1  # base - 1 when nothing below `segment` is indexed

