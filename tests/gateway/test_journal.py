"""The segment journal: framing, group commit, segment rolls, and full or read-only disks
injected at the FileOps seam."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeledger.gateway.journal import (
    HEADER,
    KINDS,
    READING,
    SEAL,
    DiskFullError,
    FileOps,
    Journal,
    Position,
    frame,
    parse_at,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

records = st.lists(st.tuples(st.sampled_from(sorted(KINDS)), st.binary(max_size=300),
                             st.booleans()), max_size=40)


@FAST
@given(records)
def test_random_records_survive_write_and_read(recs: list[tuple[int, bytes, bool]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp), segment_bytes=1000)
        journal.open_for_append(0, 0)
        positions = []
        for kind, payload, sync_now in recs:
            positions.append(journal.append(kind, payload))
            if sync_now:
                journal.sync()
            if kind == SEAL:
                journal.roll()
        journal.sync()
        got = list(journal.scan(Position(0, 0)))
        assert [(r.kind, r.payload) for r in got] == [(k, p) for k, p, _ in recs]
        assert [r.pos for r in got] == positions
        assert all(journal.read(p).payload == r.payload for p, r in zip(positions, got,
                                                                         strict=True))


@FAST
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=220))
def test_parse_at_never_crashes_on_random_bytes(data: bytes, offset: int) -> None:
    parsed = parse_at(data, offset)
    if parsed is not None:
        kind, payload = parsed
        assert data[offset:offset + HEADER.size + len(payload)] == frame(kind, payload)


@FAST
@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=100), st.data())
def test_any_flipped_bit_or_cut_is_caught(kind: int, payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(frame(kind, payload))
    assert parse_at(bytes(raw), 0) == (kind, payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    assert parse_at(bytes(raw[:cut]), 0) is None
    bit = data.draw(st.integers(min_value=0, max_value=len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert parse_at(bytes(raw) + bytes(200), 0) is None


def test_segments_roll_only_after_a_seal_once_full(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    journal.open_for_append(0, 0)
    for _ in range(10):
        journal.append(READING, b"r" * 20)
    journal.sync()
    assert journal.segments() == [0]  # readings never roll, however full
    journal.append(SEAL, b"s")
    assert journal.roll()
    assert journal.segments() == [0, 1] and journal.end == Position(1, 0)
    assert not journal.roll()  # the new segment is empty
    last = list(journal.scan(Position(0, 0)))[-1]
    assert last.kind == SEAL and last.pos.segment == 0


class CountingOps(FileOps):
    """Counts writes and fsyncs."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.writes = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self.writes += 1
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


def test_group_commit_nothing_durable_before_sync(tmp_path: Path) -> None:
    ops = CountingOps()
    journal = Journal(tmp_path, ops=ops)
    journal.open_for_append(0, 0)
    for i in range(500):
        journal.append(READING, i.to_bytes(4, "big"))
    assert journal.segment_path(0).stat().st_size == 0
    assert journal.durable_end == Position(0, 0) and ops.fsyncs == 0
    assert list(journal.scan(Position(0, 0))) == []
    end = journal.sync()
    assert ops.fsyncs == 1 and end == journal.end
    assert journal.segment_path(0).stat().st_size == 500 * (HEADER.size + 4)
    journal.sync()  # nothing pending: no fsync
    assert ops.fsyncs == 1


class FaultyOps(FileOps):
    """Injects OSError(errno) at chosen calls, as a full or read-only filesystem would.

    `budget`: bytes a write may still store before the disk is full (None: no limit).
    """

    def __init__(self) -> None:
        self.budget: int | None = None
        self.fail: dict[str, int] = {}

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise OSError(self.fail[op], os.strerror(self.fail[op]))

    def open_append(self, path: Path) -> int:
        self._maybe_fail("open")
        return super().open_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._maybe_fail("write")
        if self.budget is None:
            return super().write(fd, data)
        if self.budget == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = super().write(fd, data[:self.budget])  # a partial write, then ENOSPC
        self.budget -= n
        return n

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._maybe_fail("truncate")
        super().truncate(fd, size)

    def heal(self) -> None:
        self.budget, self.fail = None, {}


def _payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"reading {i:06d}".encode() * 3 for i in range(start, start + n)]


def _check_full_disk(journal: Journal, ops: FaultyOps, before: list[bytes]) -> None:
    """Append more, fail a sync, then heal: everything is on disk exactly once."""
    durable = journal.durable_end
    size = journal.segment_path(durable.segment).stat().st_size
    more = _payloads(50, len(before))
    for p in more:
        journal.append(READING, p)
    pending = journal.pending
    with pytest.raises(DiskFullError):
        journal.sync()
    assert journal.segment_path(durable.segment).stat().st_size == size  # cut back
    assert journal.pending == pending and journal.durable_end == durable  # buffer kept
    with pytest.raises(DiskFullError):
        journal.sync()  # still full: still nothing half-written
    assert journal.segment_path(durable.segment).stat().st_size == size
    ops.heal()
    journal.sync()
    assert [r.payload for r in journal.scan(Position(0, 0))] == before + more
    assert journal.pending == 0


@pytest.mark.parametrize("fault", ["enospc-partial", "enospc-fsync", "erofs-write",
                                   "erofs-fsync", "edquot-write"])
def test_full_or_read_only_disk_loses_and_duplicates_nothing(tmp_path: Path, fault: str) -> None:
    ops = FaultyOps()
    journal = Journal(tmp_path, ops=ops)
    journal.open_for_append(0, 0)
    before = _payloads(20)
    for p in before:
        journal.append(READING, p)
    journal.sync()
    if fault == "enospc-partial":
        ops.budget = 300
    else:
        name, op = fault.split("-")
        ops.fail[op] = {"enospc": errno.ENOSPC, "erofs": errno.EROFS,
                        "edquot": errno.EDQUOT}[name]
    _check_full_disk(journal, ops, before)


def test_read_only_disk_that_cannot_even_truncate(tmp_path: Path) -> None:
    """The cut-back fails too: the file holds a half-written buffer until the next sync,
    which must cut it (or report the disk full again), never write after it."""
    ops = FaultyOps()
    journal = Journal(tmp_path, ops=ops)
    journal.open_for_append(0, 0)
    before = _payloads(5)
    for p in before:
        journal.append(READING, p)
    journal.sync()
    ops.budget = 100
    ops.fail["truncate"] = errno.EROFS
    for p in _payloads(10, 5):
        journal.append(READING, p)
    with pytest.raises(DiskFullError):
        journal.sync()
    ops.fail["open"] = errno.EROFS  # still read-only when the journal tries again
    with pytest.raises(DiskFullError):
        journal.sync()
    del ops.fail["open"]  # it can open the file but still not cut the garbage off
    with pytest.raises(DiskFullError):
        journal.sync()
    assert journal.segment_path(0).stat().st_size > journal.durable_end.offset
    ops.heal()
    journal.sync()
    assert [r.payload for r in journal.scan(Position(0, 0))] == before + _payloads(10, 5)


def test_other_write_errors_are_not_disk_full(tmp_path: Path) -> None:
    ops = FaultyOps()
    journal = Journal(tmp_path, ops=ops)
    journal.open_for_append(0, 0)
    journal.append(READING, b"x")
    ops.fail["fsync"] = errno.EIO
    with pytest.raises(Exception) as info:
        journal.sync()
    assert not isinstance(info.value, DiskFullError)
    assert journal.segment_path(0).stat().st_size == 0 and journal.pending > 0


def test_ledger_survives_a_full_disk_across_a_segment_roll(tmp_path: Path,
                                                           gw: ModuleType) -> None:
    ops = FaultyOps()
    data = gw.new_data_dir(tmp_path / "data")
    ledger = gw.open_ledger(data, segment_bytes=600, ops=ops)
    gw.fill(ledger, blocks=3, per_block=4)
    ops.budget = 0
    gw.add(ledger, 10)
    with pytest.raises(DiskFullError):
        ledger.sync()
    block = ledger.seal(gw.T0 + 20_000_000)  # a seal that fills the segment: the roll waits
    assert block.header.h == 3
    gw.add(ledger, 2)
    ops.heal()
    ledger.sync()
    ledger.seal(gw.T0 + 20_000_001)
    gw.add(ledger, 3)
    ledger.close()
    assert gw.log_verify(data)[0] == 0
    again = gw.open_ledger(data, segment_bytes=600)
    sealed, open_ = gw.everything(again)
    assert again.tip == 4 and len(sealed) == 3 * 4 + 12 and len(open_) == 3
