"""`edgeledger log verify`: a summary for a sound log, the first fault (file, offset, height)
for each kind of damage or forgery, and no change to anything on disk."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from edgeledger.core import b64
from edgeledger.core.block import seal
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.blockindex import ENTRY, HEADER
from edgeledger.gateway.journal import DROP, READING, SEAL, Journal, Position, frame
from edgeledger.gateway.ledger import Seal

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data(tmp_path: Path, gw: ModuleType) -> Path:
    """Five blocks of four readings over several segments, and two open readings."""
    path = gw.new_data_dir(tmp_path / "data")
    ledger = gw.open_ledger(path, segment_bytes=500)
    gw.fill(ledger, blocks=5, per_block=4, open_readings=2)
    ledger.close()
    return path


def _newest(data: Path) -> Path:
    journal = Journal(data / "journal")
    return journal.segment_path(journal.segments()[-1])


def _append(data: Path, kind: int, payload: bytes) -> int:
    """Append a well-framed record to the newest segment; return its offset."""
    path = _newest(data)
    offset = path.stat().st_size
    with open(path, "ab") as f:
        f.write(frame(kind, payload))
    return offset


def _records(data: Path) -> list:  # type: ignore[type-arg]
    journal = Journal(data / "journal")
    return list(journal.scan(Position(journal.segments()[0], 0)))


def test_sound_log_gives_one_summary_line(data: Path) -> None:
    done = subprocess.run([str(ROOT / ".venv/bin/edgeledger"), "log", "verify", "--data-dir",
                           str(data)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    size = sum(p.stat().st_size for p in (data / "journal").glob("seg-*.log"))
    segments = len(list((data / "journal").glob("seg-*.log")))
    assert lines[0] == (f"OK: 5 blocks (heights 0..4), 20 readings, 2 open readings, "
                        f"{segments} segments, {size} bytes, tip 4"), lines[0]
    assert segments >= 3


def test_state_gives_acked_height_and_backlog(data: Path, gw: ModuleType) -> None:
    state = data / "state.json"
    state.write_text(json.dumps({"sync": {"1": {"acked": 1}}, "clock": {}}))
    assert gw.log_verify(data)[1].endswith("tip 4, acked 1, backlog 3")
    state.write_text(json.dumps({"_default": {}}))
    assert gw.log_verify(data)[1].endswith("tip 4, acked none, backlog 5")


def test_key_is_read_whatever_its_mode_or_from_the_state(data: Path, gw: ModuleType) -> None:
    key = data / "device.key"
    key.chmod(0o644)  # the agent refuses this; log verify needs only the public half
    assert gw.log_verify(data)[0] == 0
    public = Signer.parse(key.read_text()).public_key
    key.unlink()
    status, line = gw.log_verify(data)
    assert status == 1 and "no device key" in line
    (data / "state.json").write_text(json.dumps(
        {"identity": {"1": {"device_id": gw.DEVICE, "public_key": b64.encode(public),
                            "created_ms": 0}}}))
    assert gw.log_verify(data)[0] == 0


def test_nothing_on_disk_changes(data: Path, gw: ModuleType) -> None:
    with open(_newest(data), "ab") as f:
        f.write(b"\x00\x00\x01")  # a torn tail the agent would cut
    (data / "blocks.idx").write_bytes((data / "blocks.idx").read_bytes()[:-12])

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {str(p): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in data.rglob("*") if p.is_file()}

    before = snapshot()
    status, line = gw.log_verify(data)
    assert status == 0 and "torn tail" in line and "lacks blocks 4..4" in line, line
    assert snapshot() == before and not (data / "journal" / "quarantine").exists()


def test_missing_journal_is_a_fault(tmp_path: Path, gw: ModuleType) -> None:
    status, line = gw.log_verify(tmp_path)
    assert status == 1 and "no journal" in line


def _signer(gw: ModuleType) -> Signer:
    signer: Signer = gw.device_signer()
    return signer


def _tip(data: Path, gw: ModuleType) -> Seal:
    seals = [r for r in _records(data) if r.kind == SEAL]
    return Seal.decode(seals[-1].payload, "tip")


Forge = Callable[[Path, ModuleType], tuple[int, str]]


def _bad_prev(data: Path, gw: ModuleType) -> tuple[int, str]:
    block = seal(_signer(gw), gw.DEVICE, 5, bytes(32), [], gw.T0 + 99_000_000)
    return _append(data, SEAL, Seal(block, {}).encode()), f"(block 5): prev {'0' * 16}"


def _height_gap(data: Path, gw: ModuleType) -> tuple[int, str]:
    tip = _tip(data, gw).block
    block = seal(_signer(gw), gw.DEVICE, 6, tip.hash, [], gw.T0 + 99_000_000)
    return _append(data, SEAL, Seal(block, {}).encode()), "(block 6): height 6 follows height 4"


def _other_device(data: Path, gw: ModuleType) -> tuple[int, str]:
    tip = _tip(data, gw).block
    block = seal(_signer(gw), "someone-else", 5, tip.hash, [], gw.T0 + 99_000_000)
    return _append(data, SEAL, Seal(block, {}).encode()), "(block 5): device 'someone-else'"


def _other_key(data: Path, gw: ModuleType) -> tuple[int, str]:
    tip = _tip(data, gw).block
    block = seal(Signer(gw.DEVICE, bytes(32)), gw.DEVICE, 5, tip.hash, [], gw.T0 + 99_000_000)
    return _append(data, SEAL, Seal(block, {}).encode()), "(block 5): kid"


def _readings_do_not_match(data: Path, gw: ModuleType) -> tuple[int, str]:
    tip = _tip(data, gw).block
    block = seal(_signer(gw), gw.DEVICE, 5, tip.hash, [gw.reading("env-1", 1000)],
                 gw.T0 + 99_000_000)  # the journal's open readings are others
    return _append(data, SEAL, Seal(block, {}).encode()), "(block 5): readings: "


def _seal_q_disagrees(data: Path, gw: ModuleType) -> tuple[int, str]:
    tip = _tip(data, gw)
    records = _records(data)
    opened = [r.payload for r in records[records.index(max(
        (r for r in records if r.kind == SEAL), key=lambda r: r.pos)) + 1:]]
    block = seal(_signer(gw), gw.DEVICE, 5, tip.block.hash, [Reading.decode(p) for p in opened],
                 gw.T0 + 99_000_000)
    wrong = {k: v + 1 for k, v in tip.last_q.items()}
    return _append(data, SEAL, Seal(block, wrong).encode()), "(block 5): seal says sensor"


def _q_goes_back(data: Path, gw: ModuleType) -> tuple[int, str]:
    return _append(data, READING, gw.reading("env-1", 0).raw), "(block 5): reading env-1/count"


def _not_a_reading(data: Path, gw: ModuleType) -> tuple[int, str]:
    return _append(data, READING, b"\xa0"), "(block 5): reading"


def _bad_drop(data: Path, gw: ModuleType) -> tuple[int, str]:
    return _append(data, DROP, b"\xa0"), "(block 5): "


@pytest.mark.parametrize("forge", [_bad_prev, _height_gap, _other_device, _other_key,
                                   _readings_do_not_match, _seal_q_disagrees, _q_goes_back,
                                   _not_a_reading, _bad_drop])
def test_forged_records_are_named(data: Path, gw: ModuleType, forge: Forge) -> None:
    offset, expect = forge(data, gw)
    status, line = gw.log_verify(data)
    assert status == 1, line
    assert line.startswith(f"FAULT: {_newest(data).name} offset {offset} {expect}"), line


def test_damage_followed_by_whole_records_is_not_a_torn_tail(data: Path,
                                                             gw: ModuleType) -> None:
    path = _newest(data)
    records = [r for r in _records(data) if r.pos.segment == int(path.name[4:14])]
    victim = records[0]
    raw = bytearray(path.read_bytes())
    raw[victim.pos.offset + 12] ^= 1
    path.write_bytes(bytes(raw))
    status, line = gw.log_verify(data)
    assert status == 1 and f"{path.name} offset {victim.pos.offset}" in line
    assert "followed by whole records" in line


def test_a_lost_reading_is_named_at_its_block(data: Path, gw: ModuleType) -> None:
    """A reading spliced out of the middle of a block: every frame is whole, the root is not."""
    records = _records(data)
    victim = [r for r in records if r.kind == READING][5]  # block 1 of 4-reading blocks
    path = Journal(data / "journal").segment_path(victim.pos.segment)
    raw = path.read_bytes()
    path.write_bytes(raw[:victim.pos.offset] + raw[victim.pos.offset + victim.size:])
    status, line = gw.log_verify(data)
    assert status == 1 and "(block 1): readings: " in line and path.name in line, line


def test_index_entry_that_points_elsewhere(data: Path, gw: ModuleType) -> None:
    idx = data / "blocks.idx"
    raw = bytearray(idx.read_bytes())
    at = HEADER.size
    raw[at + 2 * ENTRY.size:at + 3 * ENTRY.size] = raw[at + 3 * ENTRY.size:at + 4 * ENTRY.size]
    idx.write_bytes(bytes(raw))
    status, line = gw.log_verify(data)
    assert status == 1 and line.startswith("FAULT: blocks.idx entry 2: says segment"), line


def test_pruned_segments_leave_a_chain_that_starts_later(data: Path, gw: ModuleType) -> None:
    journal = Journal(data / "journal")
    first = journal.segments()[0]
    last_in_first = [r for r in _records(data) if r.pos.segment == first][-1]
    assert last_in_first.kind == SEAL
    journal.segment_path(first).unlink()
    status, line = gw.log_verify(data)
    h = Seal.decode(last_in_first.payload, "x").block.header.h
    assert status == 0 and line.startswith(f"OK: {4 - h} blocks (heights {h + 1}..4)"), line
    os.truncate(data / "blocks.idx", 0)  # the index is lost too: the agent rebuilds it
    status, line = gw.log_verify(data)  # from the journal, starting at the first kept block
    assert status == 0 and "lacks blocks" in line, line
    again = gw.open_ledger(data)
    assert again.tip == 4 and again.index.base == h + 1
    again.close()
    assert gw.log_verify(data) == (0, gw.log_verify(data)[1])
