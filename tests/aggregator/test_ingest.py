"""Ingest: every way a sync message is accepted, answered or rejected."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cbor2
import pytest

from edgeledger.aggregator.ingest import Ingest, MemoryBook
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.aggregator.store.sqlite import AcceptedBlock, SqliteStore
from edgeledger.core import cbor
from edgeledger.core.block import MAX_SYNC_MESSAGE, parse_sync_message, seal, sync_message
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

DEVICE = Signer("gw-1", bytes(32))
OTHER = Signer("gw-2", bytes([1]) * 32)


def _readings(start: int, count: int = 3) -> list[Reading]:
    return [Reading("s-1/temperature", 1000 + q, q, 20.0 + q, "Cel")
            for q in range(start, start + count)]


@pytest.fixture
def ingest() -> Ingest:
    ingest = Ingest(CanonicalLog(MemoryLogStore(), Signer("log.test/a", bytes([9]) * 32)))
    ingest.enroll("gw-1", DEVICE.public_key)
    return ingest


def test_blocks_in_order_are_appended_and_acked_ok(ingest: Ingest) -> None:
    chain = DeviceChain.after(DEVICE, None)
    for h in range(3):
        readings = _readings(h * 3)
        ack = ingest.receive("gw-1", sync_message(chain.seal(readings, 5000 + h), readings))
        assert (ack.status, ack.next, ack.log_index) == ("ok", h + 1, h)
    assert ingest.log.size == 3


def test_a_block_sent_twice_is_a_duplicate_and_not_appended_again(ingest: Ingest) -> None:
    block = seal(DEVICE, "gw-1", 0, bytes(32), _readings(0), 5000)
    message = sync_message(block, _readings(0))
    assert ingest.receive("gw-1", message).status == "ok"
    ack = ingest.receive("gw-1", message)
    assert (ack.status, ack.next, ack.log_index) == ("dup", 1, 0)
    assert ingest.log.size == 1


def _message(h: int, prev: bytes = bytes(32), signer: Signer = DEVICE, dev: str = "gw-1",
             readings: list[Reading] | None = None) -> bytes:
    readings = _readings(0) if readings is None else readings
    return sync_message(seal(signer, dev, h, prev, readings, 5000), readings)


@pytest.mark.parametrize(("case", "dev", "message", "status", "why"), [
    ("malformed", "gw-1", b"\xff\x00", "rejected", "malformed"),
    ("not a sync map", "gw-1", cbor2.dumps({"blk": 1}), "rejected", "missing key"),
    ("other device's topic", "gw-2", _message(0), "rejected", "sent as 'gw-2'"),
    ("unknown device", "gw-2", _message(0, signer=OTHER, dev="gw-2"), "rejected",
     "not enrolled"),
    ("forged signature", "gw-1", _message(0, signer=Signer("gw-1", bytes([7]) * 32)),
     "rejected", "kid"),
    ("height ahead", "gw-1", _message(5, prev=bytes([1]) * 32), "gap", "next expected is 0"),
    ("readings out of order", "gw-1",
     _message(0, readings=[*_readings(5, 1), *_readings(4, 1)]), "rejected", "q=4"),
])
def test_bad_or_early_blocks_get_their_own_answer(ingest: Ingest, case: str, dev: str,
                                                  message: bytes, status: str, why: str) -> None:
    ack = ingest.receive(dev, message)
    assert ack.status == status, case
    assert why in ack.why, (case, ack.why)
    assert ingest.log.size == 0


def test_a_sensor_sequence_that_goes_back_across_blocks_is_rejected(ingest: Ingest) -> None:
    """q strictly increases per sensor over the device's whole chain, not only in a block."""
    chain = DeviceChain.after(DEVICE, None)
    first = _readings(0, 3)
    assert ingest.receive("gw-1", sync_message(chain.seal(first, 5000), first)).status == "ok"
    again = [Reading("s-2/humidity", 1000, 0, 50.0, "%RH"), *_readings(2, 2)]
    ack = ingest.receive("gw-1", sync_message(chain.seal(again, 5001), again))
    assert ack.status == "rejected" and "sensor s-1 starts at q=2, not above q=2" in ack.why
    assert ingest.log.size == 1


def test_accepted_blocks_keep_their_readings_and_last_q(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "agg.db")
    ingest = Ingest(CanonicalLog(store, Signer("log.test/a", bytes([9]) * 32)))
    ingest.enroll("gw-1", DEVICE.public_key)
    chain = DeviceChain.after(DEVICE, None)
    messages = []
    for h in range(3):
        readings = _readings(h * 3)
        messages.append(("gw-1", sync_message(chain.seal(readings, 5000 + h), readings)))
    assert [a.status for a in ingest.receive_batch(messages)] == ["ok"] * 3
    try:
        for i in range(3):
            stored = store.readings(i)
            assert stored is not None
            assert cbor2.loads(stored) == [r.raw for r in _readings(i * 3)]
        assert store.last_q("gw-1", "s-1") == 8
    finally:
        store.close()


def test_wrong_prev_is_rejected(ingest: Ingest) -> None:
    assert ingest.receive("gw-1", _message(0)).status == "ok"
    ack = ingest.receive("gw-1", _message(1, prev=bytes([3]) * 32))
    assert ack.status == "rejected" and "prev" in ack.why


def test_equivocation_is_rejected_and_the_first_block_stays(ingest: Ingest) -> None:
    assert ingest.receive("gw-1", _message(0)).status == "ok"
    other = _message(0, readings=_readings(10))
    ack = ingest.receive("gw-1", other)
    assert ack.status == "rejected" and "equivocation" in ack.why
    assert ingest.log.size == 1


def test_a_duplicate_is_answered_for_the_block_sent(ingest: Ingest) -> None:
    """`next` and `log_index` of a `dup` name the block that was sent again, so the device
    learns where it is in the log even from a duplicate (edgeledger.sync.messages.Ack)."""
    chain = DeviceChain.after(DEVICE, None)
    messages = []
    for h in range(3):
        readings = _readings(h * 3)
        messages.append(sync_message(chain.seal(readings, 5000 + h), readings))
        assert ingest.receive("gw-1", messages[-1]).status == "ok"
    ack = ingest.receive("gw-1", messages[0])
    assert (ack.status, ack.next, ack.log_index) == ("dup", 1, 0)


# --- over the SQLite store: durable appends, events, evidence, skew ---------------------

LOG = Signer("log.test/ingest", bytes([9]) * 32)
NOW = 1_000_000


def _store_ingest(path: Path) -> tuple[SqliteStore, Ingest]:
    store = SqliteStore(path)
    return store, Ingest(CanonicalLog(store, LOG))


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[SqliteStore, Ingest]]:
    store, ingest = _store_ingest(tmp_path / "agg.db")
    ingest.enroll("gw-1", DEVICE.public_key, NOW)
    ingest.enroll("gw-2", OTHER.public_key, NOW)
    yield store, ingest
    store.close()


def _chain_messages(count: int, signer: Signer = DEVICE, ts: int = NOW) -> list[bytes]:
    chain = DeviceChain.after(signer, None)
    out = []
    for h in range(count):
        readings = _readings(h * 3)
        out.append(sync_message(chain.seal(readings, ts + h), readings))
    return out


def _forged(message: bytes) -> bytes:
    block, readings = parse_sync_message(message)
    cose = block.cose[:-1] + bytes([block.cose[-1] ^ 1])  # the signature's last byte
    return cbor.encode({"blk": cose, "rd": readings})


def _wrong_root(message: bytes) -> bytes:
    block, _ = parse_sync_message(message)
    return cbor.encode({"blk": block.cose, "rd": [r.raw for r in _readings(50)]})


BLOCKS = _chain_messages(4)
# Each attack arrives after blocks 0 and 1 were accepted: (dev, message, status, kind, height)
ATTACKS: dict[str, tuple[str, bytes, str, str, int | None]] = {
    "forged signature": ("gw-1", _forged(BLOCKS[2]), "rejected", "bad-signature", 2),
    "unknown key": ("gw-1", _message(2, signer=Signer("gw-1", bytes([7]) * 32)), "rejected",
                    "unknown-key", 2),
    "revoked key": ("gw-2", _message(0, signer=OTHER, dev="gw-2"), "rejected",
                    "revoked-key", 0),
    "replayed block": ("gw-1", BLOCKS[1], "dup", "dup", 1),
    "wrong prev": ("gw-1", _message(2, prev=bytes([3]) * 32), "rejected", "bad-prev", 2),
    "wrong root": ("gw-1", _wrong_root(BLOCKS[2]), "rejected", "bad-readings", 2),
    "reordered heights": ("gw-1", BLOCKS[3], "gap", "gap", 3),
    "equivocation": ("gw-1", _message(1, prev=parse_sync_message(BLOCKS[0])[0].hash,
                                      readings=_readings(40)), "rejected", "equivocation", 1),
    "malformed CBOR": ("gw-1", b"\xa2\x63blk\xff", "rejected", "malformed", None),
    "oversized message": ("gw-1", bytes(MAX_SYNC_MESSAGE + 1), "rejected", "oversized", None),
    "another device's topic": ("gw-2", BLOCKS[2], "rejected", "wrong-topic", 2),
    "unknown device": ("gw-3", _message(0, signer=Signer("gw-3", bytes([5]) * 32), dev="gw-3"),
                       "rejected", "unknown-device", 0),
}


@pytest.mark.parametrize("case", ATTACKS)
def test_each_attack_is_refused_with_its_own_reason_and_journalled(
        stored: tuple[SqliteStore, Ingest], case: str) -> None:
    store, ingest = stored
    for h in range(2):
        assert ingest.receive("gw-1", BLOCKS[h], NOW).status == "ok"
    ingest.revoke("gw-2", NOW)
    dev, message, status, kind, height = ATTACKS[case]
    before = store.events()[-1].id
    ack = ingest.receive(dev, message, NOW + 1)
    assert (ack.status, ack.why.split(":")[0] if status != "dup" else "dup") == (status, kind)
    events = store.events(after=before)
    assert [(e.kind, e.dev, e.height, e.time_ms) for e in events] == [(kind, dev, height, NOW + 1)]
    assert events[0].reason.startswith(kind)
    assert ingest.log.size == 2 and [h for h, _, _ in store.blocks("gw-1")] == [0, 1]
    assert ack.next == (2 if dev == "gw-1" else 0)


def test_the_attack_reasons_are_all_different() -> None:
    kinds = [kind for _, _, _, kind, _ in ATTACKS.values()]
    assert len(set(kinds)) == len(kinds)


def test_equivocation_is_kept_as_evidence_and_the_device_flagged(
        stored: tuple[SqliteStore, Ingest]) -> None:
    store, ingest = stored
    ingest.receive("gw-1", BLOCKS[0], NOW)
    other = _message(0, readings=_readings(10))
    assert ingest.receive("gw-1", other, NOW + 5).status == "rejected"
    assert ingest.receive("gw-1", other, NOW + 6).status == "rejected"  # kept once
    [evidence] = store.equivocations("gw-1")
    assert (evidence.height, evidence.log_index, evidence.block) == (
        0, 0, parse_sync_message(other)[0].cose)
    device = store.device("gw-1")
    assert device is not None and device.flagged_ms == NOW + 5
    assert list(store.entries()) == [parse_sync_message(BLOCKS[0])[0].cose]
    assert ingest.receive("gw-1", BLOCKS[1], NOW + 7).status == "ok"  # flagged, still accepted


@pytest.mark.parametrize(("ts", "receive", "flagged"), [
    (NOW, NOW, False),
    (NOW + 60_000, NOW, False),
    (NOW + 60_001, NOW, True),               # ahead of the receive time
    (NOW - 7 * 24 * 3600 * 1000, NOW, False),
    (NOW - 7 * 24 * 3600 * 1000 - 1, NOW, True),  # far behind
])
def test_clock_skew_is_accepted_and_flagged(stored: tuple[SqliteStore, Ingest], ts: int,
                                            receive: int, flagged: bool) -> None:
    store, ingest = stored
    readings = [Reading("s-1/temperature", ts, 0, 20.0, "Cel")]
    message = sync_message(seal(DEVICE, "gw-1", 0, bytes(32), readings, ts), readings)
    ack = ingest.receive("gw-1", message, receive)
    assert ack.status == "ok" and ("skew" in ack.why) == flagged
    skews = [e for e in store.events() if e.kind == "skew"]
    assert [(e.dev, e.height) for e in skews] == ([("gw-1", 0)] if flagged else [])


def test_a_reading_time_ahead_of_the_receive_time_is_skew(
        stored: tuple[SqliteStore, Ingest]) -> None:
    _store, ingest = stored
    readings = [Reading("s-1/temperature", NOW + 3_600_000, 0, 20.0, "Cel")]
    message = sync_message(seal(DEVICE, "gw-1", 0, bytes(32), readings, NOW), readings)
    assert "ahead" in ingest.receive("gw-1", message, NOW).why


def test_a_batch_is_one_commit_and_acks_name_durable_indexes(
        stored: tuple[SqliteStore, Ingest]) -> None:
    store, ingest = stored
    messages = [("gw-1", m) for m in BLOCKS] + [("gw-1", BLOCKS[1]), ("gw-1", b"junk")]
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    acks = ingest.receive_batch(messages, NOW)
    store._db.set_trace_callback(None)
    assert [(a.status, a.next, a.log_index) for a in acks] == [
        ("ok", 1, 0), ("ok", 2, 1), ("ok", 3, 2), ("ok", 4, 3), ("dup", 2, 1),
        ("rejected", 4, None)]
    assert seen.count("COMMIT") == 1 and seen.count("BEGIN IMMEDIATE") == 1
    assert [(h, i) for h, _, i in store.blocks("gw-1")] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [e.kind for e in store.events()][-2:] == ["dup", "malformed"]


def test_reopening_after_a_crash_keeps_every_acked_block_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "agg.db"
    store, ingest = _store_ingest(path)
    ingest.enroll("gw-1", DEVICE.public_key, NOW)
    messages = _chain_messages(8)
    acked = [ingest.receive("gw-1", m, NOW) for m in messages[:5]]
    real = store.append_blocks

    def power_cut(log: CanonicalLog, blocks: Sequence[AcceptedBlock]) -> list[int]:
        real(log, blocks)
        raise OSError("power cut before COMMIT")

    store.append_blocks = power_cut  # type: ignore[method-assign]
    with pytest.raises(OSError, match="power cut"):
        ingest.receive_batch([("gw-1", m) for m in messages[5:]], NOW)
    store.close()

    store, ingest = _store_ingest(path)
    assert store.size() == 5 and ingest.next_height("gw-1") == 5
    acks = ingest.receive_batch([("gw-1", m) for m in messages], NOW + 1)
    assert [a.status for a in acks] == ["dup"] * 5 + ["ok"] * 3
    assert [a.log_index for a in acks[:5]] == [a.log_index for a in acked]
    entries = list(store.entries())
    assert entries == [parse_sync_message(m)[0].cose for m in messages]
    store.close()


def test_the_memory_book_gives_the_same_answers(ingest: Ingest) -> None:
    ingest.revoke("gw-1", 5)
    ack = ingest.receive("gw-1", _message(0))
    assert ack.status == "rejected" and ack.why.startswith("revoked-key")
    book = ingest.book
    assert isinstance(book, MemoryBook)
    assert [e.kind for e in book.events] == ["enrolled", "revoked", "revoked-key"]
