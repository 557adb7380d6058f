"""The stores the API is measured on: real signed blocks, appended by the real store code.

Theory of operation. A store of N entries holds DEVICES (100) simulated gateways'
chains of N / DEVICES blocks each (the sync benchmark's devices and readings:
benchmarks/sync/fleet.py, 10 readings a block), interleaved by height as an
aggregator would receive them, then one checkpoint signed by CanonicalLog over all of
them. Every block is sealed by the core (DeviceChain.seal: real Ed25519 signatures,
real readings), so every (device, height, index) has a proof that verifies.

Ingest is skipped, not the store: blocks go in through `SqliteStore.append_blocks`
in transactions of CHUNK_HEIGHTS * DEVICES blocks, which runs CanonicalLog.append
(Merkle stored hashes), the block rows, tips, readings and sensors exactly as ingest
does after verification. Signing is the slow part (about 110 µs a block), so it runs
in one child process per core, each owning a share of the devices, while this
process appends the previous chunk.

The 10^6 store (1.1 GB) is built once and cached under benchmarks/results/cache/
(git-ignored with benchmarks/results/), named by FORMAT, the SQLite schema version and
the size, with its build time beside it (`<name>.json`); a build writes a temporary
file and renames it when complete, so an interrupted build is never used. `check`
confirms a cached store before each use.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS
from benchmarks.sync.fleet import block_readings, device_id, device_signer
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SCHEMA_VERSION, AcceptedBlock, SqliteStore
from edgeledger.core.block import readings_array
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.note import Signer
from edgeledger.gateway.chain import DeviceChain

FORMAT = 1  # bump when what `build` writes changes: old caches are then ignored
CACHE = RESULTS / "cache"
ORIGIN = "bench.edgeledger.example/api"
LOG_KEY = Signer(ORIGIN, hashlib.sha256(b"edgeledger api benchmark log key").digest())
DEVICES = 100
T0_MS = 1_764_000_000_000  # Unix ms, late 2025
PERIOD_MS = 1000  # between a device's blocks
SPACING_MS = 100  # between a block's readings
CHUNK_HEIGHTS = 100  # heights per transaction: 10,000 blocks
READINGS = 10  # per block (benchmarks/sync/fleet.py)

Say = Callable[[str], None]
Row = tuple[int, int, bytes, bytes, bytes, tuple[tuple[str, int], ...], int, int]
"""(device index, height, block hash, COSE bytes, readings array, last q, t0, t1)"""


@dataclass(frozen=True)
class BuiltStore:
    """A store ready to serve: where it is, its size, and how it came to be."""

    path: Path
    entries: int
    heights: int  # blocks per device
    checkpoint: str
    cached: bool  # True: found in the cache, not built by this run
    build_s: float | None  # seconds this run spent building it (None when cached)
    built_s: float | None  # seconds the build took, whenever it was (None: not recorded)
    bytes: int


def cache_path(entries: int, cache: Path = CACHE) -> Path:
    """Where the store of `entries` entries is cached in the folder `cache`."""
    return cache / f"api-f{FORMAT}-schema{SCHEMA_VERSION}-{entries}.db"


def seal_ms(d: int, h: int) -> int:
    """The seal time of block h of device d (devices staggered within a period)."""
    return T0_MS + h * PERIOD_MS + d * PERIOD_MS // DEVICES


def _sign_rows(chains: dict[int, DeviceChain], h0: int, h1: int) -> list[Row]:
    """Seal heights h0..h1-1 of every chain in `chains` (by height, then device)."""
    rows: list[Row] = []
    for h in range(h0, h1):
        for d, chain in chains.items():
            readings = block_readings(h, seal_ms(d, h), SPACING_MS)
            block = chain.seal(readings, seal_ms(d, h))
            last: dict[str, int] = {}
            for r in readings:
                last[r.sensor] = r.q
            rows.append((d, h, block.hash, block.cose, readings_array([r.raw for r in readings]),
                         tuple(last.items()), block.header.t0, block.header.t1))
    return rows


def _signer_child(conn: Connection, devices: list[int]) -> None:
    """A signing child: extend its devices' chains by each (h0, h1) asked for."""
    chains = {d: DeviceChain.after(device_signer(d), None) for d in devices}
    while (ask := conn.recv()) is not None:
        conn.send(_sign_rows(chains, *ask))
    conn.close()


def build(path: Path, entries: int, say: Say) -> float:
    """Write a store of `entries` blocks and one covering checkpoint at `path`; seconds."""
    if entries % DEVICES:
        raise ValueError(f"{entries} entries: must be a multiple of {DEVICES} devices")
    heights, started = entries // DEVICES, time.perf_counter()
    ctx = multiprocessing.get_context("fork")  # before the store is open: nothing to inherit
    workers = max(1, min(os.cpu_count() or 1, 8))
    pipes, procs = [], []
    for k in range(workers):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_signer_child, args=(theirs, list(range(k, DEVICES, workers))),
                           daemon=True)
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    chunks = [(h, min(h + CHUNK_HEIGHTS, heights)) for h in range(0, heights, CHUNK_HEIGHTS)]
    store = SqliteStore(path)
    log = CanonicalLog(store, LOG_KEY)
    with store.transaction():
        for d in range(DEVICES):
            store.enroll(device_id(d), device_signer(d).public_key, T0_MS)
    try:
        for pipe in pipes:
            pipe.send(chunks[0])
        for i, _ in enumerate(chunks):
            if i + 1 < len(chunks):  # the children sign the next chunk while we append
                for pipe in pipes:
                    pipe.send(chunks[i + 1])
            rows = sorted((r for pipe in pipes for r in pipe.recv()), key=lambda r: (r[1], r[0]))
            store.append_blocks(log, [AcceptedBlock(device_id(d), h, bh, cose, rd, lq, (t0, t1))
                                      for d, h, bh, cose, rd, lq, t0, t1 in rows])
            if (i + 1) % 10 == 0:
                say(f"    {chunks[i][1] * DEVICES:,} / {entries:,} entries "
                    f"({time.perf_counter() - started:.0f} s)")
        log.sign_checkpoint(seal_ms(DEVICES, heights))
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(30)
        store.close()
    return time.perf_counter() - started


def check(path: Path, entries: int) -> str:
    """The checkpoint note, after confirming the store at `path` is complete and ours."""
    store = SqliteStore(path, read_only=True)
    try:
        note = store.last_checkpoint()
        size = store.size()
        last = store.device(device_id(DEVICES - 1))
    finally:
        store.close()
    if note is None or size != entries:
        raise RuntimeError(f"{path}: {size} entries, checkpoint {note is not None}; "
                           f"expected {entries} and one: delete it to rebuild")
    cp = Checkpoint.parse(note[:note.rfind("\n\n") + 1])
    if cp.size != entries or cp.origin != ORIGIN or last is None or \
            last.next_height != entries // DEVICES:
        raise RuntimeError(f"{path}: checkpoint size {cp.size}, origin {cp.origin}, "
                           f"last device {last}: not the store expected; delete it")
    return note


def ready_store(entries: int, say: Say, cache: Path = CACHE) -> BuiltStore:
    """The store of `entries` entries: from the folder `cache` if there, else built there."""
    path = cache_path(entries, cache)
    cached = path.exists()
    build_s = None
    if not cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        _forget_stale(path.parent, entries)
        tmp = path.with_name(path.name + f".building-{os.getpid()}")
        say(f"  building a store of {entries:,} entries ({DEVICES} devices x "
            f"{entries // DEVICES:,} blocks of {READINGS} readings) ...")
        build_s = build(tmp, entries, say)
        Path(f"{path}.json").write_text(json.dumps({"build_s": build_s, "cpus": os.cpu_count()}))
        tmp.replace(path)
        say(f"  built in {build_s:.1f} s: {path}")
    note = check(path, entries)
    try:
        built_s = float(json.loads(Path(f"{path}.json").read_text())["build_s"])
    except (OSError, ValueError, KeyError):
        built_s = None
    return BuiltStore(path, entries, entries // DEVICES, note, cached, build_s, built_s,
                      path.stat().st_size)


def _forget_stale(cache: Path, entries: int) -> None:
    """Delete older formats' stores of this size (a GB each at 10^6) and what builds that
    died left behind (`.building-PID`, with its -wal and -shm, whose PID is gone)."""
    for old in cache.glob(f"api-f*-schema*-{entries}.db*"):
        pid = old.name.partition(".building-")[2].split("-")[0]
        if not pid or not Path(f"/proc/{pid}").exists():
            old.unlink(missing_ok=True)


def as_json(s: BuiltStore) -> dict[str, Any]:
    """The store's description for the results."""
    return {"entries": s.entries, "devices": DEVICES, "blocks_per_device": s.heights,
            "readings_per_block": READINGS, "path": str(s.path), "mib": s.bytes / 2**20,
            "cached": s.cached, "build_s": s.build_s, "built_s": s.built_s, "format": FORMAT,
            "schema_version": SCHEMA_VERSION}
