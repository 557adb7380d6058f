"""Inputs and disk helpers for the gateway benchmark: readings, big logs, snapshots.

Everything here goes through the real `Ledger` on real files. The only file surgery
is `Snapshot.restore`, which cuts a ledger's files back to a size they had before a
timed run (untimed), so every run appends at the same height.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import workload
from edgeledger.core.block import verify_readings
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.ledger import Ledger

PATTERN = workload.reading_fields(400)  # (n, t, q, v, u): BME280 x3 and a GPS fix, in turn
SENSOR = [n.split("/", 1)[0] for n, *_ in PATTERN]
SIGNER = Signer("bench-device", workload.SEED)
DEVICE_KEY = SIGNER.public_key


class FsyncCounter:
    """Counts every os.fsync in the process while active: journal, index and directories.

    The ledger's modules call `os.fsync` through the `os` module, so replacing the
    attribute for the length of a run sees all of them; it is put back afterwards.
    """

    def __init__(self) -> None:
        self.count = 0
        self._real: Callable[[int], None] | None = None

    def __enter__(self) -> FsyncCounter:
        self._real = real = os.fsync

        def fsync(fd: int) -> None:
            self.count += 1
            real(fd)

        os.fsync = fsync
        return self

    def __exit__(self, *exc: object) -> None:
        if self._real is not None:
            os.fsync = self._real


def open_ledger(data_dir: Path) -> Ledger:
    """A fresh Ledger object on `data_dir`, recovered: what the agent does on start."""
    ledger = Ledger(data_dir, SIGNER)
    ledger.recover()
    return ledger


def add_reading(ledger: Ledger, i: int) -> None:
    """Construct reading number `i` of the workload (next q of its sensor) and add it."""
    n, _, _, v, u = PATTERN[i % 400]
    ledger.add(Reading(n, workload.T0 + 250 * i, ledger.next_q(SENSOR[i % 400]), v, u))


# --- temporary data directories ------------------------------------------------------


@contextmanager
def scratch(parent: Path) -> Iterator[Path]:
    """A temporary directory under `parent` (same disk as the repo), removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="gateway-bench-", dir=parent))
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Delete `path` and all below it (no error if it is gone)."""
    if not path.exists():
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)


def disk_bytes(path: Path) -> int:
    """Bytes in the files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def filesystem(path: Path) -> dict[str, str]:
    """The mount that holds `path`: mount point, type, device and options (/proc/mounts)."""
    real = os.path.realpath(path)
    best: dict[str, str] = {"mount": "?", "type": "?", "device": "?", "options": "?"}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        device, mount, fstype, options, *_ = line.split()
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best["mount"] == "?" or len(mount) >= len(best["mount"])):
            best = {"mount": mount, "type": fstype, "device": device, "options": options}
    return best


def drop_cache(data_dir: Path) -> None:
    """Evict the ledger files' pages from the page cache (no root needed).

    posix_fadvise(DONTNEED) drops clean pages of each file; inodes and directory
    entries stay cached. The files must have been synced (they are: closed ledgers).
    """
    for path in data_dir.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --- big logs --------------------------------------------------------------------------


class LogBuilder:
    """Grows a ledger through the real Ledger: one reading per block, synced in batches.

    `grow_to(n)` adds and seals blocks until the ledger holds `n` blocks, syncing
    every `sync_every` blocks (group commit), then syncs and closes, so the files are
    what an agent leaves behind after a clean stop.
    """

    def __init__(self, data_dir: Path, sync_every: int = 10_000) -> None:
        self.data_dir = data_dir
        self.sync_every = sync_every
        self.blocks = 0
        self.readings = 0
        self.seconds = 0.0

    def grow_to(self, blocks: int) -> None:
        """Append blocks until there are `blocks`; close the ledger afterwards."""
        start = time.perf_counter()
        ledger = open_ledger(self.data_dir)
        i = self.readings
        for h in range(self.blocks, blocks):
            add_reading(ledger, i)
            ledger.seal(workload.T0 + 250 * i + 1)
            i += 1
            if h % self.sync_every == self.sync_every - 1:
                ledger.sync()
        ledger.close()
        self.blocks, self.readings = blocks, i
        self.seconds += time.perf_counter() - start


def verify_log(data_dir: Path, blocks: int) -> dict[str, Any]:
    """Recover a fresh Ledger and read the last block back; raise unless all checks out.

    Checks: recovery finds tip `blocks - 1`, no open readings and no damage;
    `block(tip)` has that height, a valid signature, its reading matches the Merkle
    root, and its `prev` is the hash of `block(tip - 1)`; `block(0)` reads back too.
    """
    ledger = Ledger(data_dir, SIGNER)
    try:
        rec = ledger.recover()
        tip = blocks - 1
        if rec.tip != tip or rec.open_readings or rec.damage or rec.index_dropped:
            raise AssertionError(f"recovery of the {blocks}-block log found {rec}")
        block, readings = ledger.block(tip)
        if block.header.h != tip or len(readings) != 1:
            raise AssertionError(f"block({tip}) read back as height {block.header.h} "
                                 f"with {len(readings)} readings")
        block.verify(DEVICE_KEY)
        verify_readings(block, readings)
        if block.header.prev != ledger.block(tip - 1)[0].hash:
            raise AssertionError(f"block({tip}).prev is not the hash of block({tip - 1})")
        first, _ = ledger.block(0)
        first.verify(DEVICE_KEY)
        return {"tip": tip, "recovered": True, "block_tip_read_back": True,
                "signature_ok": True, "merkle_root_ok": True, "prev_links_ok": True}
    finally:
        ledger.close()


@dataclass(frozen=True)
class Snapshot:
    """A ledger's file sizes at one moment, to cut it back after a timed run.

    Appending only grows the index and the newest segment, and may start new
    segments; restoring truncates the first two and deletes the new segments.
    """

    data_dir: Path
    index_bytes: int
    segment: Path
    segment_bytes: int

    @classmethod
    def take(cls, data_dir: Path) -> Snapshot:
        """The sizes of a closed ledger's index and newest segment."""
        segments = sorted((data_dir / "journal").glob("seg-*.log"))
        index = data_dir / "blocks.idx"
        return cls(data_dir, index.stat().st_size, segments[-1], segments[-1].stat().st_size)

    def restore(self) -> None:
        """Cut the ledger back to the snapshot (it must be closed)."""
        for path in (self.data_dir / "journal").glob("seg-*.log"):
            if path.name > self.segment.name:
                path.unlink()
        os.truncate(self.segment, self.segment_bytes)
        os.truncate(self.data_dir / "blocks.idx", self.index_bytes)
