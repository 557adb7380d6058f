"""Ingest: every way a sync message is accepted, answered or rejected."""

from __future__ import annotations

import cbor2
import pytest

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.core.block import seal, sync_message
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
