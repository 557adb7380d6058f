"""Ingest blocks/s: the SQLite aggregator against the PostgreSQL cluster with 1 and 2 processes.

Theory of operation. The sync benchmark's machinery drives all three (benchmarks/sync:
its Mosquitto, its two load-generator processes holding 100 gateways' pre-signed
blocks, each device keeping 16 unacked blocks in flight, its checkpoint watcher, its
steady-window analysis and /proc sampling). Only the aggregator differs:

- `sqlite`: benchmarks.sync.procs.Aggregator, exactly the sync benchmark's (a fresh
  SQLite store per run, WAL, synchronous=FULL).
- `pg1`, `pg2`: 1 or 2 `edgeledger aggregator` processes on `[store] backend =
  "postgres"` (procs.PgAggregator), a fresh schema per run (devices enrolled through
  PostgresStore, dropped after the run). The first process is started alone and
  must log `sequencer: elected` before the second starts, so process 1 is the
  sequencer (and a worker) and process 2 a worker (and a standby candidate).

The same blocks are sent in every run (the generators sign them once); runs rotate
sqlite, pg1, pg2, sqlite, ... so a change in the machine's load spreads over all
three. Per process we report CPU per block; PostgreSQL's share is the backends of
our connections plus the server's WAL writer, checkpointer and background writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.api import procs
from benchmarks.harness import Say, Stats
from benchmarks.sync.bench import WINDOW, _await_cover, _run_result
from benchmarks.sync.cpu import MACHINE, CpuSampler
from benchmarks.sync.procs import Aggregator, Broker, CheckpointWatch, LoadGen, free_port
from edgeledger.core.note import Signer

KINDS = ("sqlite", "pg1", "pg2")
ORIGIN = "bench.edgeledger.example/ingest"
SIGNER = Signer(ORIGIN, hashlib.sha256(b"edgeledger ingest benchmark log key").digest())


class IngestRuns:
    """The broker, the generators (blocks built once) and a counter for unique names."""

    def __init__(self, broker: Broker, gens: list[LoadGen], workdir: Path, dsn: str,
                 gateways: int, interval_ms: int, every_blocks: int, timeout_s: float) -> None:
        self.broker, self.gens, self.workdir, self.dsn = broker, gens, workdir, dsn
        self.gateways, self.interval_ms, self.every_blocks = gateways, interval_ms, every_blocks
        self.timeout_s, self.runs = timeout_s, 0

    def build(self, blocks: int) -> float:
        """Have the generators sign `blocks` per gateway (unpaced); the slowest's seconds."""
        for k, gen in enumerate(self.gens):
            first = k * self.gateways // len(self.gens)
            stop = (k + 1) * self.gateways // len(self.gens)
            gen.send({"cmd": "build", "first": first, "count": stop - first, "blocks": blocks,
                      "t0_ms": time.time_ns() // 1_000_000, "period_ms": 0,
                      "gateways": self.gateways})
        return max(float(gen.answer()["build_s"]) for gen in self.gens)

    def run(self, kind: str) -> dict[str, Any]:
        """One run of `kind` on a fresh store; what the sync benchmark records, plus
        every process's exit status and CPU."""
        self.runs += 1
        tag = f"{os.getpid()}-{self.runs}"
        prefix, workdir = f"edgeledger-bench-ingest/{tag}", self.workdir / f"ingest{self.runs}"
        schema = f"bench_api_{os.getpid()}_{self.runs}"
        aggs: list[Aggregator] = []
        watch: CheckpointWatch | None = None
        try:
            pids = self._start(kind, workdir, prefix, schema, aggs)
            watch = CheckpointWatch(self.broker, prefix)
            for k, gen in enumerate(self.gens):
                gen.send({"cmd": "run", "host": self.broker.host, "port": self.broker.port,
                          "prefix": prefix, "window": WINDOW, "paced": False,
                          "client_id": f"bench-gen-{tag}-{k}", "timeout_s": self.timeout_s})
            for gen in self.gens:
                gen.answer()
            pids |= {f"loadgen{k}": g.pid for k, g in enumerate(self.gens)}
            if self.broker.pid is not None:
                pids["broker"] = self.broker.pid
            with CpuSampler(pids) as cpu:
                for gen in self.gens:
                    gen.send({"cmd": "go"})
                done = [gen.answer() for gen in self.gens]
            records = [r for d in done for r in d["blocks"]]
            _await_cover(watch, records, self.interval_ms)
        finally:
            exits = [agg.stop() for agg in reversed(aggs)][::-1]  # standby first
            if watch is not None:
                watch.close()
            if kind != "sqlite":
                with contextlib.suppress(Exception):
                    procs.drop_schema(self.dsn, schema)
            shutil.rmtree(workdir, ignore_errors=True)
        status = next((e for e in exits if e != 0), 0)
        out = _run_result(self.gateways, False, self.interval_ms, self.every_blocks, done,
                          records, watch, cpu, [*pids, MACHINE], status, aggs[0].lines, [])
        out.update(kind=kind, exits=exits, processes=_per_process(out["throughput"]),
                   log_tails=[agg.lines[-3:] for agg in aggs],
                   schema=None if kind == "sqlite" else schema)
        return out

    def _start(self, kind: str, workdir: Path, prefix: str, schema: str,
               aggs: list[Aggregator]) -> dict[str, int]:
        """Start the aggregator(s) of `kind`; {name: pid} of everything to sample."""
        if kind == "sqlite":
            aggs.append(Aggregator(workdir, self.broker, prefix, self.gateways,
                                   self.interval_ms, self.every_blocks))
            return {"aggregator": aggs[0].start()}
        procs.enroll_pg(self.dsn, schema, self.gateways)
        key, port = procs.write_key(workdir / "log.key", SIGNER), free_port()
        pids: dict[str, int] = {}
        for k in range(int(kind[2:])):
            agg = procs.PgAggregator(workdir / f"p{k}", self.broker, prefix, self.dsn, schema,
                                     key, SIGNER, self.interval_ms, self.every_blocks, port)
            aggs.append(agg)
            pids["aggregator" if k == 0 else f"aggregator{k + 1}"] = agg.start()
            if k == 0:
                agg.wait_for("sequencer: elected")
        return pids | procs.pg_backends(self.dsn, pids) | procs.pg_helpers()


def _per_process(tput: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds per block of each of our processes, and groups of them, in the window."""
    blocks, cpu = tput["window_blocks"], tput["cpu_s"]
    groups = {"aggregators": [n for n in cpu if n.startswith("aggregator")],
              "postgres": [n for n in cpu if n.startswith("pg-")],
              "postgres_aux": [n for n in cpu if n.startswith("pgaux-")]}
    per_block = {name: c / blocks for name, c in cpu.items()}
    for group, names in groups.items():
        per_block[group] = sum(cpu[n] for n in names) / blocks
    per_block["store_total"] = (per_block["aggregators"] + per_block["postgres"]
                                + per_block["postgres_aux"])
    cores = {g: sum(tput["cores"][n] for n in names) for g, names in groups.items()}
    return {"cpu_per_block_s": per_block, "cores": cores,
            "backends": len(groups["postgres"])}


def summarize(kind: str, runs: list[dict[str, Any]], processes: int) -> dict[str, Any]:
    """Medians over the runs of one kind."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"kind": kind, "processes": processes, "runs": runs,
                           "errors": [r["error"] for r in runs if "error" in r]}
    if not ok:
        return out
    tputs = [r["throughput"] for r in ok]
    stats = Stats(tuple(t["window_s"] / t["window_blocks"] for t in tputs), tputs[0]["blocks"])
    names = [n for n in ok[0]["processes"]["cpu_per_block_s"]  # in every run
             if all(n in r["processes"]["cpu_per_block_s"] for r in ok)]
    out.update(stats=stats.as_json(), blocks_per_s=stats.rate,
               readings_per_s=statistics.median(t["readings_per_s"] for t in tputs),
               complete=all(r["complete"] for r in ok),
               cpu_per_block_s={n: statistics.median(r["processes"]["cpu_per_block_s"][n]
                                                     for r in ok) for n in names},
               cores={n: statistics.median(t["cores"][n] for t in tputs)
                      for n in ("loadgen0", "loadgen1", "broker", "others")
                      if n in tputs[0]["cores"]} |
                     {g: statistics.median(r["processes"]["cores"][g] for r in ok)
                      for g in ("aggregators", "postgres", "postgres_aux")},
               ack_p99_s=statistics.median(r["latency"]["publish_to_ack"]["p99_s"] for r in ok),
               checkpoint_p99_s=statistics.median(r["latency"]["block_to_checkpoint"]["p99_s"]
                                                  for r in ok))
    return out


def bench_ingest(runner: IngestRuns, kinds: tuple[str, ...], repeats: int,
                 say: Say) -> list[dict[str, Any]]:
    """`repeats` rounds of one run per kind, in rotation; a failed run is kept with its
    error (and the remaining runs of that kind skipped), the others go on."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(repeats):
        for kind in kinds:
            if any("error" in x for x in runs[kind]):
                continue
            say(f"  ingest {kind}: run {r + 1}/{repeats} ...")
            try:
                runs[kind].append(runner.run(kind))
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - report it, measure the rest
                runs[kind].append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"})
                say(f"  ingest {kind} FAILED: {exc}")
    return [summarize(k, runs[k], 1 if k == "sqlite" else int(k[2:])) for k in kinds]
