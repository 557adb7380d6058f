"""Helper process for the kill test: append blocks to a SqliteStore until killed.

Usage: python sqlite_writer.py STORE SEED

Appends blocks of 4 devices, singly or in batches (append_blocks), signs a checkpoint
now and then, and prints each log index on its own line only after its transaction
committed: what it printed is what it promised.
"""

from __future__ import annotations

import hashlib
import random
import sys

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import AcceptedBlock, SqliteStore
from edgeledger.clock import wall_ms
from edgeledger.core.note import Signer

DEVICES = [f"dev-{i}" for i in range(4)]
SIGNER = Signer("kill.test/log", bytes([5]) * 32)


def entry_for(dev: str, height: int, prev: bytes) -> bytes:
    """The log entry of block `dev`/`height`: recognisable, and linked to its prev."""
    return f"{dev}/{height}/".encode() + prev


def main() -> None:
    """Append forever; see the module docstring."""
    store = SqliteStore(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    log = CanonicalLog(store, SIGNER)
    with store.transaction():
        for dev in DEVICES:
            if store.device(dev) is None:
                store.enroll(dev, bytes(32), 0)
    tips = {d.dev: (d.next_height, d.prev) for d in store.devices()}
    print("ready", flush=True)
    while True:
        batch = []
        for _ in range(rng.choice([1, 1, 2, 5])):
            dev = rng.choice(DEVICES)
            height, prev = tips[dev]
            entry = entry_for(dev, height, prev)
            batch.append(AcceptedBlock(dev, height, hashlib.sha256(entry).digest(), entry))
            tips[dev] = (height + 1, batch[-1].hash)
        indexes = store.append_blocks(log, batch)
        print("\n".join(map(str, indexes)), flush=True)
        if rng.random() < 0.05:
            log.sign_checkpoint(wall_ms())


if __name__ == "__main__":
    main()
