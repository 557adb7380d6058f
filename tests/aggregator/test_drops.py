"""DROP records at the aggregator: a device's signed account of blocks its quota dropped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edgeledger.aggregator.ingest import Ingest, MemoryBook
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import Block, key_id, sync_message
from edgeledger.core.droprecord import DropRecord
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

DEVICE = Signer("gw-1", bytes([5]) * 32)
OTHER = Signer("gw-1", bytes([6]) * 32)


def _chain(n: int) -> tuple[list[Block], list[bytes]]:
    chain = DeviceChain.after(DEVICE, None)
    blocks, messages = [], []
    for h in range(n):
        readings = [Reading("s-1/temperature", 1000 + h, h, 20.0, "Cel")]
        block = chain.seal(readings, 2000 + h)
        blocks.append(block)
        messages.append(sync_message(block, readings))
    return blocks, messages


BLOCKS, MESSAGES = _chain(6)


def _record(h0: int, h1: int, signer: Signer = DEVICE, **changes: object) -> DropRecord:
    prev = bytes(32) if h0 == 0 else BLOCKS[h0 - 1].hash
    record = DropRecord(dev="gw-1", kid=key_id(signer.public_key), h0=h0, h1=h1, prev=prev,
                        last=BLOCKS[h1].hash, cnt=h1 - h0 + 1, t0=1000 + h0, t1=1000 + h1,
                        ts=9000)
    return replace(record, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def ingest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ingest]:
    signer = Signer("log.test/d", bytes([9]) * 32)
    if request.param == "memory":
        ingest = Ingest(CanonicalLog(MemoryLogStore(), signer), MemoryBook())
    else:
        ingest = Ingest(CanonicalLog(SqliteStore(tmp_path / "agg.db"), signer))
    ingest.enroll("gw-1", DEVICE.public_key, 1)
    for message in MESSAGES[:2]:
        assert ingest.receive("gw-1", message).status == "ok"
    yield ingest
    if isinstance(ingest.book, SqliteStore):
        ingest.book.close()


def _dropped_events(ingest: Ingest) -> int:
    book = ingest.book
    events = book.events if isinstance(book, MemoryBook) else book.events(0, 1000)
    return [e.kind for e in events].count("dropped")


def test_a_drop_lets_the_chain_continue_past_the_dropped_heights(ingest: Ingest) -> None:
    ack = ingest.receive_drop("gw-1", _record(2, 3).sign(DEVICE))
    assert (ack.status, ack.next, ack.log_index) == ("ok", 4, None)
    assert ack.why.startswith("dropped: gw-1 dropped blocks 2..3")
    assert ingest.receive("gw-1", MESSAGES[4]).status == "ok"  # links to the record's `last`
    assert ingest.log.size == 3
    again = ingest.receive_drop("gw-1", _record(2, 3).sign(DEVICE))
    assert (again.status, again.next) == ("dup", 5)
    assert _dropped_events(ingest) == 1
    if isinstance(ingest.book, SqliteStore):
        assert ingest.book.drops("gw-1") == [(2, 3, _record(2, 3).sign(DEVICE))]


def test_a_merged_record_starting_below_the_next_height_covers_it(ingest: Ingest) -> None:
    """An earlier drop merged in: 1..3 while the log already holds block 1."""
    ack = ingest.receive_drop("gw-1", _record(1, 3).sign(DEVICE))
    assert (ack.status, ack.next) == ("ok", 4)
    assert "dropped blocks 2..3" in ack.why
    assert ingest.receive("gw-1", MESSAGES[4]).status == "ok"


@pytest.mark.parametrize(("case", "payload", "status", "why"), [
    ("ahead of the log", _record(3, 4).sign(DEVICE), "gap", "gap: drop record 3..4 is ahead"),
    ("not linked", _record(2, 3, prev=bytes([1]) * 32).sign(DEVICE), "rejected", "bad-prev"),
    ("another key", _record(2, 3, OTHER).sign(OTHER), "rejected", "unknown-key"),
    ("forged", _record(2, 3).sign(OTHER), "rejected", "bad-signature"),
    ("another device", _record(2, 3, dev="gw-2").sign(DEVICE), "rejected", "wrong-topic"),
    ("not a record", b"\xa1\x61x\x01", "rejected", "malformed"),
    ("oversized", b"\x00" * 2000, "rejected", "oversized"),
])
def test_bad_drop_records_are_refused_and_change_nothing(ingest: Ingest, case: str,
                                                         payload: bytes, status: str,
                                                         why: str) -> None:
    ack = ingest.receive_drop("gw-1", payload)
    assert (ack.status, ack.next) == (status, 2), case
    assert ack.why.startswith(why), (case, ack.why)
    assert ingest.next_height("gw-1") == 2
    assert ingest.receive("gw-1", MESSAGES[2]).status == "ok"
