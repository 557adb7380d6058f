"""The disk quota: pruning, both policies, the signed DROP record, and a full disk.

Every test works on real files in a tmp dir. The shape used throughout: 12 blocks of
4 readings with 1200-byte segments gives segments 0..3 holding blocks 0-2, 3-5, 6-8,
9-11, and an empty newest segment 4, so the tip's seal (block 11) is not in the
newest segment. `layout` reads that shape back from the seal records themselves, an
oracle independent of the block-index search retention uses.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cbor2
import pytest

from edgeledger.core import cbor
from edgeledger.core.block import ZERO_HASH, Block, key_id
from edgeledger.core.droprecord import DROP_CONTEXT, DropRecord, verify_drop
from edgeledger.core.errors import ConfigError, DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.gateway.journal import DROP, SEAL, DiskFullError, FileOps, Position
from edgeledger.gateway.ledger import Ledger, PrunedError, Seal
from edgeledger.gateway.retention import Retention, first_kept_height

SEGMENT = 1200
BLOCKS, PER_BLOCK = 12, 4
NOW = 1_700_000_900_000
LOGGER = "edgeledger.gateway.retention"


def build(gw: ModuleType, path: Path, ops: FileOps | None = None) -> Ledger:
    """The standard shape (see the module doc), synced."""
    ledger: Ledger = gw.open_ledger(gw.new_data_dir(path), SEGMENT, ops)
    gw.fill(ledger, BLOCKS, PER_BLOCK)
    assert layout(ledger) == {0: [0, 1, 2], 1: [3, 4, 5], 2: [6, 7, 8], 3: [9, 10, 11], 4: []}
    return ledger


def layout(ledger: Ledger) -> dict[int, list[int]]:
    """Segment -> heights of the seal records it holds, read from the files."""
    out: dict[int, list[int]] = {}
    for n in ledger.journal.segments():
        size = ledger.journal.segment_path(n).stat().st_size
        out[n] = [Seal.decode(r.payload, "seal").block.header.h
                  for r in ledger.journal.read_range(Position(n, 0), size) if r.kind == SEAL]
    return out


def sizes(ledger: Ledger) -> dict[int, int]:
    """Segment -> bytes on disk."""
    return {n: ledger.journal.segment_path(n).stat().st_size for n in ledger.journal.segments()}


def usage(ledger: Ledger) -> int:
    """The journal's bytes, the oracle way: every file plus the buffer."""
    return ledger.journal.size_on_disk() + ledger.journal.pending


def drop_payloads(ledger: Ledger) -> list[bytes]:
    """Every DROP record still in the journal."""
    first = ledger.journal.segments()[0]
    return [r.payload for r in ledger.journal.scan(Position(first, 0)) if r.kind == DROP]


def snapshot(ledger: Ledger) -> dict[int, tuple[bytes, list[bytes]]]:
    """Every block's COSE bytes and readings, by height."""
    out = {}
    for h in range(BLOCKS if ledger.tip is None else ledger.tip + 1):
        block, raws = ledger.block(h)
        out[h] = (block.cose, raws)
    return out


def assert_kept_and_pruned(ledger: Ledger, before: dict[int, tuple[bytes, list[bytes]]],
                           gone: set[int]) -> None:
    """Heights in `gone` raise PrunedError naming them; every other one is as before."""
    for h, (cose, raws) in before.items():
        if h in gone:
            with pytest.raises(PrunedError, match=rf"block {h} was pruned") as caught:
                ledger.block(h)
            assert caught.value.height == h
        else:
            block, got = ledger.block(h)
            assert (block.cose, got) == (cose, raws), f"block {h} changed"


# --- pruning -------------------------------------------------------------------------

Quota = Callable[[int, dict[int, int]], int]

PRUNE_CASES: list[tuple[str, int | None, Quota, list[int], bool]] = [
    # name, prunable_through, quota from (usage, sizes), segments pruned, intake stopped
    ("nothing acked and covered", None, lambda u, s: u - 1, [], True),
    ("acked inside the first segment", 1, lambda u, s: u - 1, [], True),
    ("first segment acked, one is enough", 2, lambda u, s: u - 1, [0], False),
    ("all acked, but room: keep it", 11, lambda u, s: u + 1, [], False),
    ("all acked, exactly at the quota", 11, lambda u, s: u, [0], False),
    ("all acked, oldest first, only what is needed", 11, lambda u, s: u - s[0] - 1, [0, 1],
     False),
    ("acked in the middle of a segment", 7, lambda u, s: 1, [0, 1], True),
    ("never the tip's segment nor the newest", 11, lambda u, s: 1, [0, 1, 2], True),
]


@pytest.mark.parametrize(("name", "through", "quota", "pruned", "stopped"), PRUNE_CASES,
                         ids=[c[0] for c in PRUNE_CASES])
def test_prunes_only_acked_and_covered_segments_oldest_first(
        gw: ModuleType, tmp_path: Path, name: str, through: int | None, quota: Quota,
        pruned: list[int], stopped: bool) -> None:
    ledger = build(gw, tmp_path)
    before, shape, sz = snapshot(ledger), layout(ledger), sizes(ledger)
    retention = Retention(quota(usage(ledger), sz), "stop", gw.device_signer())

    result = retention.enforce(ledger, through, NOW)

    assert [s.segment for s in result.pruned] == pruned
    assert ledger.journal.segments() == [n for n in shape if n not in pruned]
    gone = {h for n in pruned for h in shape[n]}
    assert [(s.first, s.last) for s in result.pruned] == [(shape[n][0], shape[n][-1])
                                                          for n in pruned]
    assert retention.counters.pruned_segments == len(pruned)
    assert retention.counters.pruned_blocks == len(gone)
    assert result.intake_stopped is stopped
    assert retention.counters.intake_stopped == int(stopped)
    assert result.usage == usage(ledger)
    assert_kept_and_pruned(ledger, before, gone)
    assert first_kept_height(ledger) == min(set(before) - gone)


def test_pruned_heights_stay_pruned_and_the_chain_goes_on_after_reopening(
        gw: ModuleType, tmp_path: Path) -> None:
    ledger = build(gw, tmp_path)
    before = snapshot(ledger)
    Retention(1, "stop", gw.device_signer()).enforce(ledger, 11, NOW)
    assert ledger.journal.segments() == [3, 4]
    ledger.close()

    again: Ledger = gw.open_ledger(tmp_path, SEGMENT)
    assert again.tip == 11  # the tip's segment was kept: the chain did not restart at 0
    assert_kept_and_pruned(again, before, set(range(9)))
    assert first_kept_height(again) == 9
    gw.add(again, 2)
    block = again.seal(gw.T0 + 20_000_000)
    again.sync()
    assert block.header.h == 12
    assert block.header.prev == Block.parse(before[11][0]).hash


def test_usage_matches_the_files_across_rolls_and_pruning(gw: ModuleType,
                                                          tmp_path: Path) -> None:
    ledger = build(gw, tmp_path)
    retention = Retention(1 << 30, "stop", gw.device_signer())
    assert retention.usage(ledger) == usage(ledger)
    gw.add(ledger, 3)  # buffered only
    assert retention.usage(ledger) == usage(ledger)
    gw.fill(ledger, 5, PER_BLOCK)  # rolls into new segments
    assert retention.usage(ledger) == usage(ledger)
    retention.quota_bytes = usage(ledger) - 1
    assert retention.enforce(ledger, 11, NOW).pruned
    assert retention.usage(ledger) == usage(ledger)


# --- the stop policy -----------------------------------------------------------------

def test_stop_is_logged_once_per_episode_and_ends_when_room_returns(
        gw: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = build(gw, tmp_path)
    retention = Retention(usage(ledger) - 1, "stop", gw.device_signer())
    caplog.set_level(logging.INFO, logger=LOGGER)

    for _ in range(3):
        result = retention.enforce(ledger, None, NOW)
        assert result.intake_stopped and "quota" in result.stop_reason
    assert ledger.journal.segments() == [0, 1, 2, 3, 4]  # unacked: nothing deleted
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "STOPPED" in errors[0].getMessage()
    assert retention.counters.intake_stopped == 1

    result = retention.enforce(ledger, 2, NOW)  # acks and a checkpoint arrive
    assert not result.intake_stopped and [s.segment for s in result.pruned] == [0]
    assert retention.counters.intake_stopped == 1

    gw.fill(ledger, 4, PER_BLOCK)  # over the quota again, nothing new acked
    assert retention.enforce(ledger, 2, NOW).intake_stopped
    assert retention.counters.intake_stopped == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


# --- the drop-oldest policy ----------------------------------------------------------

DROP_CASES: list[tuple[str, int | None, Quota, list[int], list[int], bool]] = [
    # name, prunable_through, quota, segments pruned, segments dropped, intake stopped
    ("oldest unacked segment", None, lambda u, s: u - 1, [], [0], False),
    ("prune first, then drop", 2, lambda u, s: u - s[0] - 1, [0], [1], False),
    ("a segment only partly prunable is dropped", 4, lambda u, s: u - s[0] - 1, [0], [1],
     False),
    ("as many as needed, in one record", None, lambda u, s: u - s[0] - s[1] + 1, [], [0, 1],
     False),
    ("dropping all it may would not do: keep it and stop", None, lambda u, s: 1, [], [], True),
]


@pytest.mark.parametrize(("name", "through", "quota", "pruned", "dropped", "stopped"),
                         DROP_CASES, ids=[c[0] for c in DROP_CASES])
def test_drop_oldest_journals_a_signed_record_of_what_it_dropped(
        gw: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str,
        through: int | None, quota: Quota, pruned: list[int], dropped: list[int],
        stopped: bool) -> None:
    ledger = build(gw, tmp_path)
    before, shape = snapshot(ledger), layout(ledger)
    signer: Signer = gw.device_signer()
    retention = Retention(quota(usage(ledger), sizes(ledger)), "drop-oldest", signer)
    caplog.set_level(logging.ERROR, logger=LOGGER)

    result = retention.enforce(ledger, through, NOW)

    heights = [h for n in dropped for h in shape[n]]
    blocks = [Block.parse(before[h][0]) for h in heights]
    assert [s.segment for s in result.pruned] == pruned
    assert [s.segment for s in result.dropped] == dropped
    assert ledger.journal.segments() == [n for n in shape if n not in pruned + dropped]
    assert result.intake_stopped is stopped
    gone = {h for n in pruned + dropped for h in shape[n]}
    assert_kept_and_pruned(ledger, before, gone)
    if not dropped:
        assert result.drop is None and drop_payloads(ledger) == []
        assert retention.counters.dropped_blocks == 0
        assert "after dropping all it may" in result.stop_reason
        return
    assert result.drop == DropRecord(
        dev=gw.DEVICE, kid=blocks[0].kid, h0=heights[0], h1=heights[-1],
        prev=blocks[0].header.prev, last=blocks[-1].hash,
        cnt=sum(b.header.cnt for b in blocks), t0=min(b.header.t0 for b in blocks),
        t1=max(b.header.t1 for b in blocks), ts=NOW, why="quota")
    assert result.drop.prev == (ZERO_HASH if heights[0] == 0 else
                                Block.parse(before[heights[0] - 1][0]).hash)
    assert drop_payloads(ledger) == [result.drop_payload]
    assert result.drop_payload is not None
    assert verify_drop(result.drop_payload, signer.public_key) == result.drop
    counters = retention.counters
    assert (counters.dropped_blocks, counters.dropped_readings) == (len(heights),
                                                                    len(heights) * PER_BLOCK)
    assert any("DROPPED" in r.getMessage() for r in caplog.records)


def test_nothing_dropped_when_the_record_cannot_be_written(gw: ModuleType,
                                                           tmp_path: Path) -> None:
    ops = FullDisk()
    ledger = build(gw, tmp_path, ops)
    before, signer = snapshot(ledger), gw.device_signer()
    retention = Retention(usage(ledger) - 1, "drop-oldest", signer)
    ops.full = True
    gw.add(ledger, 3)

    for _ in range(3):
        result = retention.enforce(ledger, None, NOW)
        assert result.intake_stopped and "not durable" in result.stop_reason
        assert result.drop is None and not result.dropped
        assert ledger.journal.segments() == [0, 1, 2, 3, 4]
    assert retention.counters.intake_stopped == 1
    assert retention.counters.dropped_blocks == 0

    ops.full = False
    result = retention.enforce(ledger, None, NOW + 1)
    assert not result.intake_stopped and [s.segment for s in result.dropped] == [0]
    assert result.drop is not None and result.drop.ts == NOW  # the record first made
    assert drop_payloads(ledger) == [result.drop_payload]  # once, not once per retry
    ledger.close()

    again: Ledger = gw.open_ledger(tmp_path, SEGMENT)
    assert len(again.open) == 3 and drop_payloads(again) == [result.drop_payload]
    assert_kept_and_pruned(again, before, {0, 1, 2})


def test_a_drop_waits_when_the_block_index_cannot_be_written(
        gw: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = build(gw, tmp_path)
    retention = Retention(usage(ledger) - 1, "drop-oldest", gw.device_signer())

    def no_space(*_: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    gw.add(ledger, 1)
    ledger.seal(gw.T0 + 50_000_000)  # unsynced: its index entry waits for the next sync
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", no_space)  # BlockIndex writes without FileOps
        result = retention.enforce(ledger, None, NOW)
    assert result.intake_stopped and "not durable" in result.stop_reason
    assert ledger.journal.segments()[0] == 0
    result = retention.enforce(ledger, None, NOW)
    assert [s.segment for s in result.dropped] == [0] and not result.intake_stopped
    assert drop_payloads(ledger) == [result.drop_payload]


# --- the DROP record -----------------------------------------------------------------

def _record(**changes: object) -> DropRecord:
    base = {"dev": "gw-test-1", "kid": bytes(range(8)), "h0": 3, "h1": 5,
            "prev": b"\x01" * 32, "last": b"\x02" * 32, "cnt": 12, "t0": 10, "t1": 20,
            "ts": NOW, "why": "quota"}
    base.update(changes)
    return DropRecord(**base)  # type: ignore[arg-type]


def _wrap(rec: bytes, sig: bytes) -> bytes:
    return cbor.encode({"rec": rec, "sig": sig})


def _tampered(signer: Signer, other: Signer) -> list[tuple[str, bytes]]:
    """(name, payload) pairs that must all be refused under `signer`'s key."""
    kid = _own_kid(signer)
    good = _record(kid=kid)
    rec = good.encode()
    sig = signer.sign(DROP_CONTEXT + rec)

    def signed(m: dict[str, object]) -> bytes:
        raw = cbor.encode(m)
        return _wrap(raw, signer.sign(DROP_CONTEXT + raw))

    fields = good.__dict__
    return [
        ("other device key", _record(kid=_own_kid(other)).sign(other)),
        ("signed by another key, our kid", _wrap(rec, other.sign(DROP_CONTEXT + rec))),
        ("signed without the context", _wrap(rec, signer.sign(rec))),
        ("h1 raised after signing", _wrap(_record(kid=kid, h1=6).encode(), sig)),
        ("cnt lowered after signing", _wrap(_record(kid=kid, cnt=1).encode(), sig)),
        ("h0 after h1, signed", signed({**fields, "h0": 9})),
        ("t0 after t1, signed", signed({**fields, "t0": 99})),
        ("extra key, signed", signed({**fields, "note": "x"})),
        ("missing key, signed", signed({k: v for k, v in fields.items() if k != "cnt"})),
        ("version 2, signed", signed({**fields, "v": 2})),
        ("bad device id, signed", signed({**fields, "dev": "GW 1"})),
        ("short signature", _wrap(rec, sig[:63])),
        ("trailing byte", _wrap(rec, sig) + b"\x00"),
        ("not deterministic", cbor2.dumps({"sig": sig, "rec": rec})),
        ("record not a map", _wrap(cbor.encode([1, 2]), sig)),
        ("empty", b""),
    ]


def _own_kid(signer: Signer) -> bytes:
    return key_id(signer.public_key)


def test_drop_record_verifies_and_any_tampered_one_does_not(gw: ModuleType) -> None:
    signer: Signer = gw.device_signer()
    other = Signer("gw-other", b"\x07" * 32)
    good = _record(kid=_own_kid(signer))
    payload = good.sign(signer)
    assert verify_drop(payload, signer.public_key) == good
    assert DropRecord.decode(good.encode()) == good

    for name, bad in _tampered(signer, other):
        with pytest.raises((DecodeError, VerificationError)):
            verify_drop(bad, signer.public_key)
            pytest.fail(f"{name}: accepted")
    with pytest.raises(VerificationError, match="kid"):
        verify_drop(payload, other.public_key)
    for i in range(len(payload) * 8):  # every single flipped bit is caught
        flipped = bytearray(payload)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(EdgeLedgerError):
            verify_drop(bytes(flipped), signer.public_key)


# --- a full or read-only disk --------------------------------------------------------

class FullDisk(FileOps):
    """A disk that fills on demand: while `full`, writes fail with `code` (after one short
    write if `partial`), and truncation fails too if `stuck` (a read-only remount)."""

    def __init__(self, code: int = errno.ENOSPC, partial: bool = False,
                 stuck: bool = False) -> None:
        self.full, self.code, self.partial, self.stuck = False, code, partial, stuck
        self.short_writes = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if not self.full:
            return super().write(fd, data)
        if self.partial and len(data) > 1 and self.short_writes == 0:
            self.short_writes += 1
            return super().write(fd, data[:len(data) // 2])  # half lands, then the disk is full
        raise OSError(self.code, os.strerror(self.code))

    def truncate(self, fd: int, size: int) -> None:
        if self.full and self.stuck:
            raise OSError(self.code, os.strerror(self.code))
        super().truncate(fd, size)


FAULTS: dict[str, Callable[[], FullDisk]] = {
    "enospc": FullDisk,
    "enospc after a short write": lambda: FullDisk(partial=True),
    "read-only, cannot even truncate": lambda: FullDisk(errno.EROFS, partial=True, stuck=True),
}


@pytest.mark.parametrize("ending", ["power cut while full", "space returns"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_full_disk_never_corrupts_the_log_and_retention_resumes(
        gw: ModuleType, tmp_path: Path, fault: str, ending: str) -> None:
    ops = FAULTS[fault]()
    ledger = build(gw, tmp_path, ops)
    before, signer = snapshot(ledger), gw.device_signer()
    retention = Retention(1 << 30, "drop-oldest", signer)  # a roomy quota; the card is not

    ops.full = True
    gw.add(ledger, PER_BLOCK)
    with contextlib.suppress(DiskFullError):
        ledger.seal(gw.T0 + 30_000_000)  # sealing may roll the segment, which syncs
    for _ in range(2):  # the agent retries every window while the disk stays full
        with pytest.raises(DiskFullError):
            ledger.sync()
    result = retention.enforce(ledger, None, NOW, disk_full=True)
    assert result.intake_stopped and "disk full" in result.stop_reason
    assert not result.pruned and ledger.journal.segments() == [0, 1, 2, 3, 4]
    result = retention.enforce(ledger, 5, NOW, disk_full=True)  # acked: prune to make room
    assert not result.intake_stopped and [s.segment for s in result.pruned] == [0, 1]
    assert not result.dropped and result.drop is None

    if ending == "space returns":
        ops.full = False
        ledger.sync()
        assert ledger.tip == BLOCKS
        before[BLOCKS] = (ledger.block(BLOCKS)[0].cose, ledger.block(BLOCKS)[1])
        gw.fill(ledger, 3, PER_BLOCK)
        retention.quota_bytes = usage(ledger) - 1
        assert [s.segment for s in retention.enforce(ledger, 8, NOW).pruned] == [2]
        ledger.sync()
        ledger.close()
    again: Ledger = gw.open_ledger(tmp_path, SEGMENT)
    assert again.tip == max(before) + (3 if ending == "space returns" else 0)
    gone = set(range(9 if ending == "space returns" else 6))
    assert_kept_and_pruned(again, before, gone)  # every synced block is intact
    assert drop_payloads(again) == []
    gw.add(again, 2)
    block = again.seal(gw.T0 + 40_000_000)
    again.sync()
    assert block.header.prev == again.block(block.header.h - 1)[0].hash
    assert not Retention(usage(again) + 1, "stop", signer).enforce(again, None, NOW).intake_stopped


# --- settings ------------------------------------------------------------------------

@pytest.mark.parametrize(("quota", "policy", "key"), [
    (1 << 20, "delete-everything", "quota_policy"),
    (1 << 20, "Stop", "quota_policy"),
    (0, "stop", "quota_bytes"),
    (-5, "drop-oldest", "quota_bytes"),
    (True, "stop", "quota_bytes"),
])
def test_bad_settings_are_refused(gw: ModuleType, quota: int, policy: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Retention(quota, policy, gw.device_signer())
    assert caught.value.key == key


def test_a_second_drop_that_deletes_the_first_record_carries_it_forward(
        gw: ModuleType, tmp_path: Path) -> None:
    """The DROP record of 0..2 sits in a segment a later drop deletes: the later record
    covers 0..N, so the aggregator still learns of every dropped height."""
    ledger, signer = build(gw, tmp_path), gw.device_signer()
    retention = Retention(usage(ledger) - 1, "drop-oldest", signer)
    first = retention.enforce(ledger, None, NOW)
    assert first.drop is not None and (first.drop.h0, first.drop.h1) == (0, 2)
    home = ledger.journal.end.segment  # where the first record went
    gw.fill(ledger, 9, PER_BLOCK)  # the first record's segment is no longer the newest
    assert ledger.journal.end.segment > home
    kept = sum(size for n, size in sizes(ledger).items() if n > home)
    retention.quota_bytes = kept + ledger.journal.pending + 1  # room once `home` is gone
    result = retention.enforce(ledger, None, NOW + 1)
    second = result.drop
    assert home not in ledger.journal.segments()
    assert second is not None and second.h0 == 0 and second.h1 > 2
    assert second.prev == ZERO_HASH
    assert second.last == Block.parse(ledger.block(second.h1 + 1)[0].cose).header.prev
    payloads = drop_payloads(ledger)
    assert [verify_drop(p, signer.public_key).h0 for p in payloads][-1] == 0
    assert retention.counters.dropped_blocks == second.h1 + 1
