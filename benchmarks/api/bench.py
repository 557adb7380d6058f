"""Benchmark of the aggregator's API and stores (issue 7), through the real processes.

Run from the repository root:

    .venv/bin/python -m benchmarks.api            # full run, table on stdout
    .venv/bin/python -m benchmarks.api --json     # the same, JSON on stdout
    .venv/bin/python -m benchmarks.api --quick    # smoke run: small stores, short runs
    ... --pg DSN         # PostgreSQL for the ingest runs (default host=127.0.0.1 dbname=test)
    ... --cache DIR      # where built stores are kept (default benchmarks/results/cache)

Three questions. How long `/v1/proof` takes over HTTP (one keep-alive client, median
and p99) on a log of 10^3 and of 10^6 entries; target: the 10^6 median at most twice
the 10^3 one, since a proof reads O(log n) stored hashes. How many proofs a second the
API serves on this 2-core machine to several concurrent clients, and what CPU the
server uses. And how many blocks a second the PostgreSQL cluster ingests with 1 and 2
`edgeledger aggregator` processes, against the SQLite aggregator, driven by the sync
benchmark's 100 simulated gateways. The API server is the real `edgeledger aggregator`
process (SQLite store, ingest idle), whose uvicorn thread serves the HTTP API.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.api import ingest, proofs, store
from benchmarks.api.procs import pg_reason, pg_settings
from benchmarks.api.report import report
from benchmarks.harness import Say, command_line, machine
from benchmarks.sync.bench import WINDOW
from benchmarks.sync.procs import Broker, load_generators

DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test"
VERSIONS = ("fastapi", "starlette", "uvicorn", "h11", "pydantic", "psycopg", "paho-mqtt")


class Settings:
    """Sizes and repeats of one run: the full benchmark or the --quick smoke run."""

    def __init__(self, quick: bool, dsn: str, cache: Path) -> None:
        self.quick, self.dsn, self.cache = quick, dsn, cache
        self.sizes = (1_000, 10_000) if quick else (1_000, 1_000_000)
        self.check_proofs = 5 if quick else 50  # fetched and verified per store, untimed
        self.requests = 100 if quick else 2_000  # per latency run
        self.repeats = 2 if quick else 5
        self.clients = 2 if quick else 4  # client processes in the proofs/s runs
        self.duration_s = 1.0 if quick else 5.0
        self.gateways = 100
        self.blocks_per_gateway = 2 if quick else 150  # 200 / 15,000 blocks a run
        self.ingest_repeats = 2 if quick else 5
        self.interval_ms, self.every_blocks = 1000, 1000
        self.timeout_s = 60 if quick else 300


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {**machine(), "cores": os.cpu_count(), "sqlite": sqlite3.sqlite_version}
    for dist in VERSIONS:
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    return info


def _api(s: Settings, broker: Broker, workdir: Path, say: Say) -> dict[str, Any]:
    """Parts 1 and 2: the stores, the servers, latency and proofs/s."""
    say("stores ...")
    stores = [store.ready_store(n, say, s.cache) for n in s.sizes]
    servers = proofs.serve(stores, broker, workdir, say)
    try:
        checked = proofs.verify_servers(servers, stores, s.check_proofs)
        say("/v1/proof latency, one keep-alive client ...")
        latency = proofs.bench_latency([(st, agg.url, agg.pid) for st, agg in
                                        zip(stores, servers, strict=True)],
                                       s.requests, s.repeats, say)
        say("the same proofs in-process, without HTTP ...")
        inproc = proofs.bench_inprocess(stores, s.requests, s.repeats)
        say("/v1/proof throughput ...")
        tput = proofs.bench_throughput(stores[-1], servers[-1].url, servers[-1].pid,
                                       s.clients, s.duration_s, s.repeats, say)
    finally:
        exits = [agg.stop() for agg in servers]
    return {"stores": [store.as_json(st) for st in stores], "proofs_verified": checked,
            "server_exits": exits, "latency": latency, "in_process": inproc,
            "throughput": tput}


def _ingest(s: Settings, broker: Broker, workdir: Path, say: Say) -> dict[str, Any]:
    """Part 3: SQLite, PostgreSQL with 1 and 2 processes (only SQLite if no PostgreSQL)."""
    reason = pg_reason(s.dsn)
    kinds = ingest.KINDS if reason is None else ("sqlite",)
    out: dict[str, Any] = {"gateways": s.gateways, "blocks_per_gateway": s.blocks_per_gateway,
                           "window_per_device": WINDOW, "repeats": s.ingest_repeats,
                           "postgres": {"dsn": s.dsn, "unavailable": reason,
                                        "settings": None if reason else pg_settings(s.dsn)}}
    if reason:
        say(f"  PostgreSQL unavailable ({reason}): SQLite only")
    with load_generators(2) as gens:
        runner = ingest.IngestRuns(broker, gens, workdir, s.dsn, s.gateways, s.interval_ms,
                                   s.every_blocks, s.timeout_s)
        say(f"ingest: signing {s.gateways} x {s.blocks_per_gateway} blocks ...")
        out["build_s"] = runner.build(s.blocks_per_gateway)
        out["kinds"] = ingest.bench_ingest(runner, kinds, s.ingest_repeats, say)
    rates = {k["kind"]: k.get("blocks_per_s") for k in out["kinds"]}
    out["ratios"] = {f"{a}/{b}": rates[a] / rates[b] for a, b in
                     (("pg1", "sqlite"), ("pg2", "sqlite"), ("pg2", "pg1"))
                     if rates.get(a) and rates.get(b)}
    return out


def run_all(s: Settings, say: Say) -> dict[str, Any]:
    """Every benchmark, as one JSON-ready dict."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "edgeledger api", "quick": s.quick,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "method": {"statistic": "median of runs", "repeats": s.repeats,
                   "latency_requests_per_run": s.requests, "client": "http.client, keep-alive",
                   "server": "`edgeledger aggregator` (SQLite store, ingest idle): FastAPI on "
                             "uvicorn (h11, asyncio) on a thread of that one process",
                   "throughput_clients": s.clients, "throughput_duration_s": s.duration_s}}
    with tempfile.TemporaryDirectory(prefix="edgeledger-bench-api-") as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        try:
            result["broker"] = {"address": broker.address, "version": broker.version()}
            result["api"] = _api(s, broker, Path(tmp), say)
            say("ingest: SQLite vs PostgreSQL ...")
            result["ingest"] = _ingest(s, broker, Path(tmp), say)
        finally:
            broker.stop()
    lat = result["api"]["latency"]
    result["targets"] = {"latency_ratio": {"ratio": lat["ratio"], "target": lat["target"],
                                           "met": lat["met"]}}
    result["targets_met"] = lat["met"]
    result["total_s"] = time.perf_counter() - started
    return result


def _no_profile(quick: bool) -> None:
    raise SystemExit("--profile: not offered here; profile the aggregator with "
                     "`python -m benchmarks.sync --profile`")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with --json) and write the JSON file."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--pg", metavar="DSN", default=DEFAULT_DSN)
    pre.add_argument("--cache", metavar="DIR", type=Path, default=store.CACHE)
    opts, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return command_line("api", __doc__, rest,
                        lambda quick, say: run_all(Settings(quick, opts.pg, opts.cache), say),
                        report, _no_profile)
