"""Measure the API on a large store: `python tests/aggregator/api/bench_api.py [ENTRIES]`.

Not a test (pytest does not collect it). Builds a store of ENTRIES real blocks
(default 100,000: 4 devices, 8 readings each, made by the core and ingested in
batches of 500), signs a checkpoint, serves it with uvicorn on a free port, and
prints median and p95 latencies over HTTP (one keep-alive client) of /v1/proof,
/v1/devices/{id}/blocks/{h}, /v1/readings pages (by device and time, and by name),
/v1/consistency and /metrics, plus the ingest cost per block while building.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from apifleet import LOG_KEY, T0

from edgeledger.aggregator.api.app import create_app
from edgeledger.aggregator.api.metrics import Metrics
from edgeledger.aggregator.api.serve import ApiServer
from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import sync_message
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

DEVICES = [Signer(f"gw-{i}", bytes([i + 1]) * 32) for i in range(4)]
PER_BLOCK = 8
STEP_MS = 10_000


def build(path: Path, entries: int) -> float:
    """Fill the store; return the median ingest cost per block (s)."""
    store = SqliteStore(path)
    log = CanonicalLog(store, LOG_KEY)
    ingest = Ingest(log, store)
    for s in DEVICES:
        ingest.enroll(s.name, s.public_key, T0)
    chains = {s.name: DeviceChain.after(s, None) for s in DEVICES}
    costs, batch = [], []
    for n in range(entries):
        s = DEVICES[n % len(DEVICES)]
        h = chains[s.name].next_height
        t = T0 + h * STEP_MS
        readings = [Reading(f"s-{k}/temperature", t + k, h, 20.0 + k / 10, "Cel")
                    for k in range(PER_BLOCK)]
        batch.append((s.name, sync_message(chains[s.name].seal(readings, t + 999), readings)))
        if len(batch) == 500 or n == entries - 1:
            start = time.perf_counter()
            ingest.receive_batch(batch)
            costs.append((time.perf_counter() - start) / len(batch))
            batch = []
    log.sign_checkpoint(T0 + entries * STEP_MS)
    store.close()
    return statistics.median(costs)


def timed(client: httpx.Client, paths: list[str]) -> tuple[float, float]:
    """Median and p95 latency (ms) of GETs of `paths`, each expected to answer 200."""
    out = []
    for p in paths:
        start = time.perf_counter()
        r = client.get(p)
        out.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, (p, r.text[:200])
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.95)]


def main(entries: int) -> None:
    path = Path(tempfile.mkdtemp()) / "bench.db"
    start = time.perf_counter()
    cost = build(path, entries)
    print(f"store: {entries} entries in {time.perf_counter() - start:.0f} s; "
          f"ingest median {cost * 1e6:.0f} us/block; file {path.stat().st_size >> 20} MiB")
    app = create_app(lambda: SqliteStore(path, read_only=True), LOG_KEY.verifier(),
                     None, Metrics())
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    rng = random.Random(7)
    per_dev = entries // len(DEVICES)
    last_t = T0 + per_dev * STEP_MS
    cases = {
        "/v1/proof": [f"/v1/proof?device=gw-{rng.randrange(4)}&height={rng.randrange(per_dev)}"
                      f"&index={rng.randrange(PER_BLOCK)}" for _ in range(300)],
        "/v1/devices/{id}/blocks/{h}": [f"/v1/devices/gw-{rng.randrange(4)}/blocks/"
                                        f"{rng.randrange(per_dev)}" for _ in range(200)],
        "/v1/readings device+time, 100": [
            f"/v1/readings?device=gw-{rng.randrange(4)}&since={t}&until={t + 3_600_000}"
            for t in (rng.randrange(T0, last_t) for _ in range(100))],
        "/v1/readings name, 100": [f"/v1/readings?name=s-{rng.randrange(PER_BLOCK)}/temperature"
                                   f"&since={rng.randrange(T0, last_t)}" for _ in range(100)],
        "/v1/readings all, 1000": ["/v1/readings?limit=1000"] * 30,
        "/v1/consistency": [f"/v1/consistency?from={rng.randrange(1, entries)}"
                            for _ in range(200)],
        "/metrics": ["/metrics"] * 50,
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        timed(client, ["/v1/log"] * 20)  # warm up
        for name, paths in cases.items():
            median, p95 = timed(client, paths)
            print(f"{name:34s} median {median:7.2f} ms   p95 {p95:7.2f} ms   ({len(paths)} GETs)")
    server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
