"""A store full of real blocks for the API tests, made by the core and ingested for real.

`build_fleet(path)` enrolls three gateways and feeds Ingest (on a SqliteStore)
sync messages sealed by DeviceChain, with readings of every value kind (float, int,
bool, text, a GPS fix map), registered and unregistered units, a heartbeat block,
a block whose readings span a clock jump, readings stamped before 1978 (no SenML
form), refused messages (bad signature, gap, equivocation: events and a flagged
device), a key rotation (older blocks unprovable with the new key), and three
checkpoints at sizes that are not powers of two, plus blocks after the last
checkpoint (not provable yet). `Fleet` records what went in, so tests can compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import Block, seal, sync_message
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

ORIGIN = "api.test/agg-1"
LOG_KEY = Signer(ORIGIN, hashlib.sha256(b"api test log key").digest())
T0 = 1_700_000_000_000
STEP_MS = 10_000
JUMP_AT = (("gw-2", 4),)
"""Blocks whose first reading is stamped 1970 (a clock set late): a long time span."""


def key(name: str) -> Signer:
    return Signer(name, hashlib.sha256(f"device key {name}".encode()).digest())


DEVICES = {name: key(name) for name in ("gw-1", "gw-2", "gw-3")}


@dataclass
class Fleet:
    """What `build_fleet` put in the store."""

    path: Path
    blocks: dict[tuple[str, int], tuple[Block, list[Reading], int]] = field(default_factory=dict)
    """(device, height) -> (block, readings, log index)"""
    checkpoints: list[str] = field(default_factory=list)
    rotated: tuple[str, int] = ("gw-3", 0)
    """(device, first height signed with its new key)"""

    @property
    def size(self) -> int:
        return len(self.blocks)


def readings_for(dev: str, h: int, q: int) -> list[Reading]:
    """The readings of block `h` of `dev` (sensor q values from `q` on)."""
    t = T0 + h * STEP_MS
    out = [Reading("bme-1/temperature", t, q, 20.5 + h / 10, "Cel"),
           Reading("bme-1/humidity", t + 1, q + 1, 40 + h, "%RH"),
           Reading("meter-1/energy", t + 2, q, 1000 + h, "kWh"),
           Reading("door-1/open", t + 3, q, h % 2 == 0),
           Reading("gps-1/fix", t + 4, q, {"lat": 52.5 + h / 1000, "lon": 13.4, "alt": 34.0}),
           Reading("note-1/status", t + 5, q, f"ok {h}"),
           Reading("odd-1/length", t + 6, q, 3.25, "furlong")]
    if (dev, h) in JUMP_AT:
        out.insert(0, Reading("clock-1/tick", 1_000 + h, q, 1))
    if dev == "gw-1" and h == 2:
        out.append(Reading("clock-1/boot", 5_000, q, 7))
    return out


def build_fleet(path: Path, heights: int = 12, tail: int = 2) -> Fleet:
    """Fill a new store at `path`; see the module doc. Log size 3 * (heights + tail)."""
    store = SqliteStore(path)
    log = CanonicalLog(store, LOG_KEY)
    ingest = Ingest(log, store)
    fleet = Fleet(path)
    for name, signer in DEVICES.items():
        ingest.enroll(name, signer.public_key, T0)
    chains = {name: DeviceChain.after(signer, None) for name, signer in DEVICES.items()}
    sign_at = {5: 0, 9: 1, heights: 2}
    for h in range(heights + tail):
        if h == 8:  # gw-3 rotates its key: its blocks 0..7 are signed by the old one
            new = key("gw-3-rotated")
            ingest.enroll("gw-3", new.public_key, T0 + h * STEP_MS)
            last = fleet.blocks["gw-3", 7][0]
            chains["gw-3"] = DeviceChain.after(Signer("gw-3", new.seed), last)
            fleet.rotated = ("gw-3", 8)
        batch = []
        for name in DEVICES:
            readings = [] if (name, h) == ("gw-1", 6) else readings_for(name, h, h * 2)
            block = chains[name].seal(readings, T0 + h * STEP_MS + 500)
            batch.append((name, sync_message(block, readings)))
            fleet.blocks[name, h] = (block, readings, -1)
        acks = ingest.receive_batch(batch, T0 + h * STEP_MS + 600)
        for (name, _), ack in zip(batch, acks, strict=True):
            assert ack.status == "ok", (name, h, ack)
            block, readings, _ = fleet.blocks[name, h]
            fleet.blocks[name, h] = (block, readings, ack.log_index or 0)
        if h + 1 in sign_at:
            fleet.checkpoints.append(log.sign_checkpoint(T0 + h * STEP_MS + 700))
    _refusals(ingest, fleet)
    store.close()
    return fleet


def _refusals(ingest: Ingest, fleet: Fleet) -> None:
    """A bad signature, a gap and an equivocation: events, and gw-2 flagged."""
    forged = seal(key("intruder"), "gw-1", 99, bytes(32), [], T0)
    ahead = seal(DEVICES["gw-1"], "gw-1", 99, bytes([1]) * 32, [], T0)
    prev = fleet.blocks["gw-2", 0][0].hash
    twin = seal(DEVICES["gw-2"], "gw-2", 1, prev, readings_for("gw-2", 1, 2)[:1], T0 + 1)
    acks = ingest.receive_batch([("gw-1", sync_message(forged, [])),
                                 ("gw-1", sync_message(ahead, [])),
                                 ("gw-2", sync_message(twin, readings_for("gw-2", 1, 2)[:1]))],
                                T0 + 20 * STEP_MS)
    assert [a.status for a in acks] == ["rejected", "gap", "rejected"], acks
