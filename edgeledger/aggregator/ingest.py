"""Ingest: verify a device's sync message and append its block to the canonical log.

Checks, in order: the message decodes; it comes from the device it names; the
device is enrolled; the signature; the height (duplicate, gap or equivocation);
the prev link; the readings (count, Merkle root, t0/t1, q per sensor). Only then
is the block appended. Pure apart from the log store it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.core.block import ZERO_HASH, Block, parse_sync_message, verify_readings
from edgeledger.core.errors import DecodeError, VerificationError


@dataclass(frozen=True)
class Ack:
    """The aggregator's answer to one block (DESIGN.md 3, the `ack` topic)."""

    next: int
    status: str
    why: str = ""
    log_index: int | None = None


@dataclass
class DeviceRecord:
    """What the aggregator knows of one enrolled device."""

    public_key: bytes
    next_height: int = 0
    prev: bytes = ZERO_HASH
    blocks: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    """height -> (block hash, log index)"""


class Ingest:
    """Verifies sync messages from enrolled devices and appends their blocks in order."""

    def __init__(self, log: CanonicalLog) -> None:
        self.log = log
        self.devices: dict[str, DeviceRecord] = {}

    def enroll(self, dev: str, public_key: bytes) -> None:
        """Accept blocks signed by `public_key` from device `dev`."""
        self.devices[dev] = DeviceRecord(public_key)

    def receive(self, dev: str, message: bytes) -> Ack:
        """Check one sync message received on device `dev`'s topic; append it if valid."""
        record = self.devices.get(dev)
        expected = record.next_height if record else 0
        try:
            block, readings = parse_sync_message(message, f"sync message from {dev}")
        except DecodeError as exc:
            return Ack(expected, "rejected", f"malformed: {exc}")
        hdr = block.header
        if hdr.dev != dev:
            return Ack(expected, "rejected", f"block names device {hdr.dev!r}, sent as {dev!r}")
        if record is None:
            return Ack(0, "rejected", f"device {dev} is not enrolled")
        try:
            block.verify(record.public_key)
        except VerificationError as exc:
            return Ack(expected, "rejected", str(exc))
        if hdr.h < expected:
            return self._seen(record, block)
        if hdr.h > expected:
            return Ack(expected, "gap", f"block {hdr.h} is ahead; next expected is {expected}")
        if hdr.prev != record.prev:
            return Ack(expected, "rejected", f"block {dev}/{hdr.h}: prev does not link to "
                                             f"block {hdr.h - 1}")
        try:
            verify_readings(block, readings)
        except VerificationError as exc:
            return Ack(expected, "rejected", str(exc))
        index = self.log.append(block.cose)
        record.blocks[hdr.h] = (block.hash, index)
        record.next_height, record.prev = hdr.h + 1, block.hash
        return Ack(record.next_height, "ok", log_index=index)

    def _seen(self, record: DeviceRecord, block: Block) -> Ack:
        """A block at a height already accepted: a duplicate, or equivocation."""
        known_hash, index = record.blocks[block.header.h]
        if known_hash == block.hash:
            # `next` and `log_index` answer the block sent (edgeledger.sync.messages.Ack):
            # the device learns where its block is, even from a duplicate.
            return Ack(block.header.h + 1, "dup", log_index=index)
        return Ack(record.next_height, "rejected",
                   f"equivocation: a different block {block.header.dev}/{block.header.h} "
                   "was already accepted")
