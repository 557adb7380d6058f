"""The stateless half of ingest: what a worker checks before a block enters the queue.

A worker checks, in Ingest's order (edgeledger/aggregator/ingest.py) and with its
event kinds: the size cap (`oversized`), the sync message's shape (`malformed`),
the topic names the block's device (`wrong-topic`), the device is enrolled
(`unknown-device`) and not revoked (`revoked-key`), the kid and the signature
(`unknown-key`, `bad-signature`). Everything up to here needs only the block and
the device's enrolled key, so any worker can do it, in parallel with the others.

What a worker does not decide: everything that depends on the log's state (the
height, the prev link, the per-sensor q continuity across blocks, duplicates and
equivocation). Those are the sequencer's (sequence.py), in one transaction with
the append. The readings are checked here too (count, Merkle root, t0/t1, q order
inside the block), but a failure is carried to the sequencer as `fault` instead
of being answered: Ingest answers a block at an already accepted height by its
signed header alone (a `dup`, or `equivocation` evidence, whatever its readings),
and only a block at the expected height is refused for its readings. Keeping that
order is what makes a cluster answer exactly what one aggregator would.

Pure: no store, no clock, no I/O; the caller passes the device record it read.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeledger.aggregator.store.reader import Device
from edgeledger.core.block import parse_sync_message, readings_array, verify_readings
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.sync.messages import MAX_WHY

SensorRun = tuple[str, int, int]
"""(sensor id, its first q in the block, its last q in the block)."""


@dataclass(frozen=True)
class Verified:
    """A block whose stateless checks passed, with what the sequencer needs to decide it.

    `key` is the enrolled public key the signature was checked with (the sequencer
    refuses the block if the device's key changed since). `fault` is empty, or why
    its readings are not valid (decided by the sequencer, see the module doc).
    """

    dev: str
    height: int
    hash: bytes
    prev: bytes
    entry: bytes
    readings: bytes
    key: bytes
    ts: int
    t0: int
    t1: int
    sensors: tuple[SensorRun, ...] = ()
    fault: str = ""


@dataclass(frozen=True)
class Refusal:
    """A failed check: the event kind, the height if known, and the detail."""

    kind: str
    height: int | None
    detail: str

    @property
    def why(self) -> str:
        """The ack's `why` and the event's reason: `<kind>: <detail>`, capped."""
        return f"{self.kind}: {self.detail}"[:MAX_WHY]


def verify_message(dev: str, message: bytes, record: Device | None,
                   max_message: int) -> Verified | Refusal:
    """Check one sync message received on device `dev`'s topic; `record` is `dev`'s."""
    if len(message) > max_message:
        return Refusal("oversized", None, f"sync message of {len(message)} bytes from {dev}; "
                                          f"at most {max_message}")
    try:
        block, raws = parse_sync_message(message, f"sync message from {dev}")
    except DecodeError as exc:
        return Refusal("malformed", None, str(exc))
    hdr = block.header
    if hdr.dev != dev:
        return Refusal("wrong-topic", hdr.h, f"block names device {hdr.dev!r}, sent as {dev!r}")
    if record is None:
        return Refusal("unknown-device", hdr.h, f"device {dev} is not enrolled")
    if record.revoked_ms is not None:
        return Refusal("revoked-key", hdr.h, f"device {dev}'s key was revoked at "
                                             f"{record.revoked_ms}")
    try:
        block.verify(record.public_key)
    except VerificationError as exc:
        return Refusal("unknown-key" if exc.check == "kid" else "bad-signature", hdr.h, str(exc))
    fault, runs = "", tuple[SensorRun, ...]()
    try:
        runs = sensor_runs([(r.sensor, r.q) for r in verify_readings(block, raws)])
    except VerificationError as exc:
        fault = str(exc)
    return Verified(dev, hdr.h, block.hash, hdr.prev, block.cose, readings_array(raws),
                    record.public_key, hdr.ts, hdr.t0, hdr.t1, runs, fault)


def sensor_runs(qs: list[tuple[str, int]]) -> tuple[SensorRun, ...]:
    """Each sensor's first and last q in a block, in order of first appearance."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for sensor, q in qs:
        first.setdefault(sensor, q)
        last[sensor] = q
    return tuple((sensor, q, last[sensor]) for sensor, q in first.items())
