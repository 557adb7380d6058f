"""The ledger over the journal: restart, block lookup across segments, index repair."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from edgeledger.gateway.blockindex import ENTRY, HEADER
from edgeledger.gateway.journal import READING, SEAL, Journal, JournalError, Position
from edgeledger.gateway.ledger import Ledger, Seal


def test_restart_continues_heights_q_and_the_open_block(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data, segment_bytes=700)
    gw.fill(ledger, blocks=6, per_block=5, open_readings=3)
    open_before = [r.raw for r in ledger.open]
    q_before, tip_hash = dict(ledger.last_q), ledger.last_block.hash
    ledger.close()

    again = Ledger(data, gw.device_signer(), 700)
    rec = again.recover()
    assert rec.tip == 5 and rec.open_readings == 3 and rec.damage == [] and rec.index_dropped == 0
    assert [r.raw for r in again.open] == open_before
    assert again.last_q == q_before and again.durable_q == q_before
    assert again.next_q("env-1") == q_before["env-1"] + 1
    block = again.seal(gw.T0 + 99_000_000)
    assert block.header.h == 6 and block.header.prev == tip_hash and block.header.cnt == 3
    again.sync()
    with pytest.raises(JournalError):
        again.add(gw.reading("env-1", q_before["env-1"]))  # q must move forward
    again.close()
    assert gw.log_verify(data)[0] == 0


def test_block_returns_its_readings_across_segment_rolls(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data, segment_bytes=500)
    added: list[list[bytes]] = []
    for i in range(12):
        before = len(ledger.journal.segments())
        gw.add(ledger, i % 4)  # 0 readings: a heartbeat block
        added.append([r.raw for r in ledger.open])
        ledger.seal(gw.T0 + 50_000_000 + i)
        ledger.sync()
        assert len(ledger.journal.segments()) >= before
    assert len(ledger.journal.segments()) >= 3
    for h, raws in enumerate(added):
        block, got = ledger.block(h)
        assert block.header.h == h and got == raws
    journal = Journal(data / "journal")
    for number in journal.segments()[:-1]:  # every full segment ends in a seal
        assert list(journal.scan(Position(number, 0)))[-1].kind == SEAL
    with pytest.raises(JournalError):
        ledger.block(12)


def test_block_is_found_from_the_index_without_a_scan(tmp_path: Path, gw: ModuleType) -> None:
    """Reading block h touches the index and one segment, not the others."""
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data, segment_bytes=400)
    gw.fill(ledger, blocks=10, per_block=3)
    pos = ledger.index.get(7)
    aside = tmp_path / "aside"
    aside.mkdir()
    for number in ledger.journal.segments():
        if number not in (pos.segment, ledger.journal.end.segment):
            ledger.journal.segment_path(number).rename(aside / str(number))
    block, raws = ledger.block(7)
    assert block.header.h == 7 and len(raws) == 3


def _cut_seals(data: Path, seals: int) -> int:
    """Cut the newest segment just before its last `seals` seal records; return the cut."""
    journal = Journal(data / "journal")
    newest = journal.segments()[-1]
    found = [r for r in journal.scan(Position(newest, 0)) if r.kind == SEAL]
    cut = found[-seals].pos.offset
    with open(journal.segment_path(newest), "r+b") as f:
        f.truncate(cut)
    return cut


def test_index_is_trimmed_when_the_journal_lost_seals(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data)
    gw.fill(ledger, blocks=8, per_block=2)
    ledger.close()
    _cut_seals(data, 3)  # blocks 5, 6, 7 lost their seals; their readings are whole
    status, line = gw.log_verify(data)
    assert status == 0 and "entries past the tip" in line
    again = Ledger(data, gw.device_signer())
    rec = again.recover()
    assert rec.index_dropped == 3 and rec.tip == 4 and again.index.count == 5
    assert rec.open_readings == 2  # block 5's readings, before the cut, are the open block
    assert again.seal(gw.T0 + 80_000_000).header.h == 5
    again.close()
    assert gw.log_verify(data)[0] == 0
    assert (data / "blocks.idx").stat().st_size == HEADER.size + 6 * ENTRY.size


def test_index_that_lags_or_is_lost_is_rebuilt(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data, segment_bytes=300)
    gw.fill(ledger, blocks=9, per_block=3, open_readings=2)
    ledger.close()
    want = gw.everything(gw.open_ledger(data, segment_bytes=300))
    idx = data / "blocks.idx"
    for keep in (4, 0):  # a crash between journal sync and index flush; a lost index
        with open(idx, "r+b") as f:
            f.truncate(HEADER.size + keep * ENTRY.size)
        status, line = gw.log_verify(data)
        assert status == 0 and "lacks blocks" in line, line
        again = gw.open_ledger(data, segment_bytes=300)
        assert again.tip == 8 and gw.everything(again) == want
        again.close()
    idx.unlink()
    assert gw.everything(gw.open_ledger(data, segment_bytes=300)) == want


def test_seal_record_holds_the_block_and_every_sensors_q(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = gw.open_ledger(data)
    gw.fill(ledger, blocks=2, per_block=3)
    rec = ledger.journal.read(ledger.index.get(1))
    seal = Seal.decode(rec.payload, "seal")
    assert seal.block == ledger.last_block and seal.last_q == ledger.last_q
    assert Seal.decode(seal.encode(), "again") == seal
    readings = [r for r in ledger.journal.scan(Position(0, 0)) if r.kind == READING]
    assert len(readings) == 6


def test_empty_data_dir_starts_an_empty_chain(tmp_path: Path, gw: ModuleType) -> None:
    data = gw.new_data_dir(tmp_path)
    ledger = Ledger(data, gw.device_signer())
    rec = ledger.recover()
    assert rec.tip is None and rec.open_readings == 0
    assert ledger.seal(gw.T0).header.h == 0  # a heartbeat as block 0
    ledger.close()
    status, line = gw.log_verify(data)
    assert status == 0 and line.startswith("OK: 1 blocks"), line
