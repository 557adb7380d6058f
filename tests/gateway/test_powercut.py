"""The power-cut test: cut the newest segment at every byte of its last records, or append
zeros or garbage; recovery always ends with a valid log and loses no whole record.
Damage in an older segment is set aside and reported, and what is sound is kept.

The ledger is built once; each case writes its bytes into a fresh data dir.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from edgeledger.core.block import verify_readings
from edgeledger.gateway.journal import HEADER, READING, SEAL, Journal, Position, Record
from edgeledger.gateway.ledger import Ledger

SEGMENT_BYTES = 900
TAIL_RECORDS = 6  # 2 readings, a seal, 3 open readings


@dataclass(frozen=True)
class Built:
    """The bytes of a data dir and what its journal holds."""

    files: dict[str, bytes]
    newest: str
    records: list[Record]  # every record, oldest first
    tail_start: int  # offset in the newest segment where the cut cases start

    def write(self, path: Path, newest: bytes | None = None) -> Path:
        """Write the data dir to `path`, the newest segment replaced by `newest`."""
        for name, data in self.files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(newest if newest is not None and name == self.newest
                                      else data)
        return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gw: ModuleType) -> Built:
    data = gw.new_data_dir(tmp_path_factory.mktemp("powercut"))
    ledger = gw.open_ledger(data, SEGMENT_BYTES)
    while len(ledger.journal.segments()) < 4 or ledger.journal.end.offset != 0:
        gw.fill(ledger, blocks=1, per_block=5)
    gw.add(ledger, 2)
    ledger.seal(gw.T0 + 90_000_000)  # stays in the newest segment: far below its size
    gw.add(ledger, 3)
    ledger.close()
    journal = Journal(data / "journal")
    records = list(journal.scan(Position(journal.segments()[0], 0)))
    newest = journal.segment_path(journal.segments()[-1])
    tail = [r for r in records if r.pos.segment == journal.segments()[-1]]
    assert [r.kind for r in tail] == [READING] * 2 + [SEAL] + [READING] * 3
    files = {str(p.relative_to(data)): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    return Built(files, str(newest.relative_to(data)), records, tail[-TAIL_RECORDS].pos.offset)


def _expected(built: Built, cut: int) -> tuple[list[bytes], list[bytes], int]:
    """Sealed readings, open readings and tip of the log cut at `cut` in the newest segment."""
    last = built.records[-1].pos.segment
    whole = [r for r in built.records
             if r.pos.segment < last or r.pos.offset + HEADER.size + len(r.payload) <= cut]
    seals = [i for i, r in enumerate(whole) if r.kind == SEAL]
    sealed = [r.payload for r in whole[:seals[-1]] if r.kind == READING]
    open_ = [r.payload for r in whole[seals[-1]:] if r.kind == READING]
    return sealed, open_, len(seals) - 1


def _recover_and_check(data: Path, built: Built, cut: int, gw: ModuleType,
                       torn: tuple[int, int] | None) -> None:
    """Log verify passes before and after recovery; nothing whole is lost; the log goes on."""
    status, line = gw.log_verify(data)
    assert status == 0, line
    assert ("torn tail" in line) == (torn is not None), line
    ledger = Ledger(data, gw.device_signer(), SEGMENT_BYTES)
    rec = ledger.recover()
    if torn is None:
        assert rec.damage == []
    else:
        (d,) = rec.damage
        assert d.torn_tail and (d.offset, d.bytes_lost) == torn
        assert d.segment.name == Path(built.newest).name
    sealed, open_, tip = _expected(built, cut)
    assert ledger.tip == rec.tip == tip
    assert gw.everything(ledger) == (sealed, open_)
    status, line = gw.log_verify(data)
    assert status == 0 and "torn tail" not in line and "past the tip" not in line, line
    gw.add(ledger, 1)
    assert ledger.seal(gw.T0 + 95_000_000).header.h == tip + 1
    ledger.close()
    assert gw.log_verify(data)[0] == 0


def _record_start(built: Built, cut: int) -> int:
    """Offset of the record that `cut` falls in (or `cut` itself at a boundary)."""
    last = built.records[-1].pos.segment
    starts = [r.pos.offset for r in built.records if r.pos.segment == last]
    starts.append(len(built.files[built.newest]))
    return max(s for s in starts if s <= cut)


def test_cut_at_every_byte_of_the_last_records(built: Built, tmp_path: Path,
                                               gw: ModuleType) -> None:
    full = built.files[built.newest]
    assert len(full) - built.tail_start > 300
    for cut in range(built.tail_start, len(full) + 1):
        data = built.write(tmp_path / f"cut-{cut}", full[:cut])
        start = _record_start(built, cut)
        torn = None if start == cut else (start, cut - start)
        _recover_and_check(data, built, cut, gw, torn)


@pytest.mark.parametrize("extra", [b"\0", bytes(8), bytes(9), bytes(4096),
                                   b"garbage:17", b"garbage:1000", b"garbage:5000"])
def test_zeros_or_garbage_after_the_end(built: Built, tmp_path: Path, gw: ModuleType,
                                        extra: bytes) -> None:
    if extra.startswith(b"garbage:"):
        extra = random.Random(extra).randbytes(int(extra[8:]))
    full = built.files[built.newest]
    data = built.write(tmp_path / "data", full + extra)
    _recover_and_check(data, built, len(full), gw, (len(full), len(extra)))


def test_garbage_after_a_cut(built: Built, tmp_path: Path, gw: ModuleType) -> None:
    full = built.files[built.newest]
    rng = random.Random(7)
    for cut in range(built.tail_start, len(full), 13):
        junk = rng.randbytes(rng.randrange(1, 300))
        data = built.write(tmp_path / f"cut-{cut}", full[:cut] + junk)
        start = _record_start(built, cut)
        _recover_and_check(data, built, cut, gw, (start, cut - start + len(junk)))


def _flip_reading(built: Built, tmp_path: Path) -> tuple[Path, Record, int]:
    """A data dir with one byte flipped in a reading in the middle of an older segment."""
    older = sorted({r.pos.segment for r in built.records})[1]
    in_older = [r for r in built.records if r.pos.segment == older and r.kind == READING]
    victim = in_older[len(in_older) // 2]
    data = built.write(tmp_path / "data")
    path = Journal(data / "journal").segment_path(older)
    raw = bytearray(path.read_bytes())
    raw[victim.pos.offset + HEADER.size + 3] ^= 0x40
    path.write_bytes(bytes(raw))
    height = sum(1 for r in built.records if r.kind == SEAL and r.pos < victim.pos)
    return data, victim, height


def test_damage_in_an_older_segment_is_named_by_log_verify(built: Built, tmp_path: Path,
                                                           gw: ModuleType) -> None:
    data, victim, height = _flip_reading(built, tmp_path)
    status, line = gw.log_verify(data)
    assert status == 1
    name = Journal(data / "journal").segment_path(victim.pos.segment).name
    assert f"{name} offset {victim.pos.offset} (block {height})" in line, line


def test_damage_in_an_older_segment_is_quarantined_on_a_full_replay(
        built: Built, tmp_path: Path, gw: ModuleType) -> None:
    """With the index gone, recovery replays every segment: the damaged one is copied aside,
    reported with file and offset, and every sound record is kept."""
    data, victim, height = _flip_reading(built, tmp_path)
    (data / "blocks.idx").unlink()
    ledger = Ledger(data, gw.device_signer(), SEGMENT_BYTES)
    rec = ledger.recover()
    (d,) = rec.damage
    assert not d.torn_tail and d.offset == victim.pos.offset
    assert d.segment.name == Journal(data / "journal").segment_path(victim.pos.segment).name
    assert d.quarantined is not None and d.quarantined.parent == data / "journal" / "quarantine"
    assert d.quarantined.read_bytes() != d.segment.read_bytes()
    assert f"offset {victim.pos.offset}" in d.describe()
    _, open_, tip = _expected(built, len(built.files[built.newest]))
    assert ledger.tip == tip and [r.raw for r in ledger.open] == open_
    for h in range(tip + 1):  # every other block checks out against its readings
        if h != height:
            verify_readings(*ledger.block(h))
    block, raws = ledger.block(height)
    assert victim.payload not in raws and len(raws) == block.header.cnt - 1
    status, line = gw.log_verify(data)
    assert status == 1 and f"(block {height})" in line, line  # the lost reading is named
