"""/v1/proof over HTTP: latency at two store sizes, and proofs/s under concurrent clients.

Theory of operation. One real aggregator process per store (procs.ServingAggregator)
serves the API; both run at once, idle but for us, and the latency runs alternate
between them (small, large, small, ...), so a change in the machine's load (it is
shared) lands on both sizes alike. The first pair of runs is a warm-up and is not
counted. Before any timing, `check_proofs` fetches proofs of random readings from
each server and verifies every bundle offline (edgeledger.core.bundle.verify_bundle
with the log key), and compares the reading, device, log index and checkpoint with
what the store was built from: the timed answers are real, checkable proofs.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.api.clients import Client, proof_cases, proof_paths, timed_gets
from benchmarks.api.procs import ServingAggregator
from benchmarks.api.store import DEVICES, LOG_KEY, READINGS, SPACING_MS, BuiltStore, seal_ms
from benchmarks.harness import Say, Stats
from benchmarks.sync.analysis import summary
from benchmarks.sync.cpu import MACHINE, CpuSampler, cpu_seconds, machine_busy_seconds
from benchmarks.sync.fleet import block_readings, device_id
from benchmarks.sync.procs import ROOT, Broker, LoadGen
from edgeledger.aggregator.api.views import proof_bundle
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import Block
from edgeledger.core.bundle import ProofBundle, verify_bundle

LATENCY_TARGET = 2.0  # median /v1/proof latency at 10^6 entries / at 10^3


class ClientProc(LoadGen):
    """A child running benchmarks.api.clients (LoadGen's JSON-line protocol and closing)."""

    def __init__(self) -> None:  # LoadGen's, with our module instead of the load generator
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.api.clients"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)


def check_proofs(url: str, store: BuiltStore, count: int, seed: int) -> int:
    """Fetch `count` random proofs and check each fully; SystemExit on the first fault."""
    client = Client(url)
    paths = proof_paths(seed, DEVICES, store.heights, READINGS)
    verifier = LOG_KEY.verifier()
    try:
        status, body = client.get("/v1/log")
        if status != 200 or json.loads(body)["size"] != store.entries:
            raise SystemExit(f"{url}/v1/log: {status} {body[:200]!r}, expected size "
                             f"{store.entries}")
        for _ in range(count):
            path = next(paths)
            status, body = client.get(path)
            if status != 200:
                raise SystemExit(f"{url}{path}: {status} {body[:300]!r}")
            _check_bundle(ProofBundle.from_json(body), path, store, verifier)
    finally:
        client.close()
    return count


def _check_bundle(bundle: ProofBundle, path: str, store: BuiltStore, verifier: Any) -> None:
    proven = verify_bundle(bundle, verifier)
    query = dict(kv.split("=") for kv in path.split("?", 1)[1].split("&"))
    d, h, i = int(query["device"].rsplit("-", 1)[1]), int(query["height"]), int(query["index"])
    expected = block_readings(h, seal_ms(d, h), SPACING_MS)[i].raw
    header = Block.parse(bundle.block).header
    faults = [what for what, ok in (
        ("device", bundle.device == device_id(d) == header.dev), ("height", header.h == h),
        ("reading", bundle.reading == expected and bundle.reading_index == i),
        ("log index", bundle.log_index == h * DEVICES + d == proven.log_index),
        ("checkpoint", bundle.checkpoint == store.checkpoint)) if not ok]
    if faults:
        raise SystemExit(f"{path}: the bundle verifies but its {', '.join(faults)} is not "
                         "what the store was built with")


def _latency_run(client: Client, store: BuiltStore, requests: int, seed: int,
                 server: int, servers: list[int]) -> dict[str, Any]:
    """One timed run; CPU read from /proc before and after only (no sampler thread here):
    the `server` pid's per request, and what processes not ours used meanwhile."""
    gen = proof_paths(seed, DEVICES, store.heights, READINGS)
    paths = [next(gen) for _ in range(requests)]
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        before = _cpu(servers)
        took, errors = timed_gets(client, paths)
        after = _cpu(servers)
    finally:
        if gc_was_on:
            gc.enable()
    used = {k: after[k] - before[k] for k in before}
    wall, machine = used.pop("wall"), used.pop(MACHINE)
    return {**summary(took), "errors": errors,
            "server_cpu_per_proof_s": used[str(server)] / requests,
            "others_cores": max(0.0, machine - sum(used.values())) / wall}


def _cpu(servers: list[int]) -> dict[str, float]:
    """CPU seconds of the machine, the servers and this process, and the wall time."""
    out = {str(pid): cpu_seconds(pid) for pid in servers}
    out |= {MACHINE: machine_busy_seconds(), "self": time.process_time(),
            "wall": time.perf_counter()}
    return out


def bench_latency(servers: list[tuple[BuiltStore, str, int]], requests: int, repeats: int,
                  say: Say) -> dict[str, Any]:
    """Sequential GETs on one keep-alive connection per server (store, url, pid), runs
    alternating sizes."""
    clients = [Client(url) for _, url, _ in servers]
    pids = [pid for _, _, pid in servers]
    runs: list[list[dict[str, Any]]] = [[] for _ in servers]
    try:
        for r in range(repeats + 1):
            say(f"  latency: run {r + 1}/{repeats + 1}" + (" (warm-up)" if r == 0 else ""))
            for k, (store, _, pid) in enumerate(servers):
                run = _latency_run(clients[k], store, requests, 1000 * r + k, pid, pids)
                if r:
                    runs[k].append(run)
    finally:
        for client in clients:
            client.close()
    sizes = []
    for (store, _, _), size_runs in zip(servers, runs, strict=True):
        stats = Stats(tuple(run["median_s"] for run in size_runs), requests)
        sizes.append({"entries": store.entries, "stats": stats.as_json(),
                      "median_s": stats.median, **{key: statistics.median(
                          run[key] for run in size_runs) for key in (
                          "server_cpu_per_proof_s", "others_cores")},
                      "p99_s": statistics.median(run["p99_s"] for run in size_runs),
                      "p90_s": statistics.median(run["p90_s"] for run in size_runs),
                      "errors": sum(run["errors"] for run in size_runs), "runs": size_runs})
    small, large = sizes[0], sizes[-1]
    ratio = large["median_s"] / small["median_s"]
    return {"requests_per_run": requests, "repeats": repeats, "sizes": sizes,
            "ratio": ratio, "p99_ratio": large["p99_s"] / small["p99_s"],
            "target": LATENCY_TARGET, "met": ratio <= LATENCY_TARGET}


def bench_inprocess(stores: list[BuiltStore], requests: int, repeats: int) -> dict[str, Any]:
    """The endpoint's own work without HTTP: views.proof_bundle + to_json on a read-only
    SqliteStore (what /v1/proof runs inside FastAPI), alternating sizes, first run warm-up."""
    readers = [SqliteStore(st.path, read_only=True) for st in stores]
    per_op: list[list[float]] = [[] for _ in stores]
    try:
        for r in range(repeats + 1):
            for k, (st, reader) in enumerate(zip(stores, readers, strict=True)):
                gen = proof_cases(500_000 + 1000 * r + k, DEVICES, st.heights, READINGS)
                cases = [next(gen) for _ in range(requests)]
                gc.disable()
                try:
                    start = time.perf_counter()
                    for dev, h, i in cases:
                        proof_bundle(reader, dev, h, i).to_json()
                    took = (time.perf_counter() - start) / requests
                finally:
                    gc.enable()
                if r:
                    per_op[k].append(took)
    finally:
        for reader in readers:
            reader.close()
    stats = [Stats(tuple(runs), requests) for runs in per_op]
    return {"sizes": [{"entries": st.entries, "stats": st_stats.as_json()}
                      for st, st_stats in zip(stores, stats, strict=True)],
            "ratio": stats[-1].median / stats[0].median}


def bench_throughput(store: BuiltStore, url: str, server_pid: int, clients: int,
                     duration_s: float, repeats: int, say: Say) -> dict[str, Any]:
    """`clients` child processes GET proofs flat out for `duration_s`; `repeats` runs."""
    procs = [ClientProc() for _ in range(clients)]
    runs = []
    try:
        for r in range(repeats):
            say(f"  proofs/s, {clients} clients: run {r + 1}/{repeats} ...")
            start = time.time() + 1.5  # children connect and warm up first
            for k, proc in enumerate(procs):
                proc.send({"cmd": "run", "url": url, "seed": 7919 * (r + 1) + k,
                           "devices": DEVICES, "heights": store.heights, "readings": READINGS,
                           "start_at": start, "end_at": start + duration_s})
            pids = {"server": server_pid, **{f"client{k}": p.pid for k, p in enumerate(procs)}}
            with CpuSampler(pids) as cpu:
                done = [proc.answer() for proc in procs]
            runs.append(_throughput_run(done, cpu, [*pids, MACHINE], start, duration_s))
    finally:
        for proc in procs:
            proc.close()
    stats = Stats(tuple(duration_s / run["requests"] for run in runs), runs[0]["requests"])
    cores = {name: statistics.median(run["cores"][name] for run in runs)
             for name in ("server", "clients", "others")}
    return {"entries": store.entries, "clients": clients, "duration_s": duration_s,
            "stats": stats.as_json(), "proofs_per_s": stats.rate, "cores": cores,
            "server_cpu_per_proof_s": statistics.median(run["server_cpu_per_proof_s"]
                                                        for run in runs),
            "latency": {q: statistics.median(run["latency"][q] for run in runs)
                        for q in ("median_s", "p99_s")},
            "errors": sum(run["errors"] for run in runs), "runs": runs}


def _throughput_run(done: list[dict[str, Any]], cpu: CpuSampler, names: list[str],
                    start: float, duration_s: float) -> dict[str, Any]:
    requests = sum(d["requests"] for d in done)
    used = {name: cpu.between(name, start, start + duration_s) for name in names}
    machine = used.pop(MACHINE)
    clients = sum(v for k, v in used.items() if k.startswith("client"))
    cores = {"server": used["server"] / duration_s, "clients": clients / duration_s,
             "others": max(0.0, machine - sum(used.values())) / duration_s}
    return {"requests": requests, "errors": sum(d["errors"] for d in done),
            "proofs_per_s": requests / duration_s, "cores": cores,
            "server_cpu_per_proof_s": used["server"] / requests,
            "latency": {q: statistics.median(d["latency"][q] for d in done)
                        for q in ("median_s", "p99_s")},
            "per_client": done}


def serve(stores: list[BuiltStore], broker: Broker, workdir: Path,
          say: Say) -> list[ServingAggregator]:
    """One real aggregator process per store, serving its API; started and checked."""
    servers = []
    for store in stores:
        agg = ServingAggregator(workdir / f"api-{store.entries}", broker,
                                f"edgeledger-bench-api/{store.entries}", store.path, LOG_KEY)
        servers.append(agg)
        agg.start()
        say(f"  serving {store.entries:,} entries at {agg.url}; checking proofs ...")
    return servers


def verify_servers(servers: list[ServingAggregator], stores: list[BuiltStore],
                   count: int) -> dict[str, int]:
    """`check_proofs` on every server: {entries: proofs verified}."""
    return {str(store.entries): check_proofs(agg.url, store, count, 42)
            for agg, store in zip(servers, stores, strict=True)}
