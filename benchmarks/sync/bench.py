"""Benchmark of sync (issue 6): the real aggregator ingesting through a real Mosquitto.

Run from the repository root:

    .venv/bin/python -m benchmarks.sync            # full run, table on stdout
    .venv/bin/python -m benchmarks.sync --json     # the same, JSON on stdout
    .venv/bin/python -m benchmarks.sync --quick    # smoke run: tiny runs, 2 repeats
    .venv/bin/python -m benchmarks.sync --profile  # where the aggregator's time goes
    ... --broker HOST:PORT                          # use that broker, not our own

Three questions. How many blocks (of 10 readings) a second `edgeledger aggregator`
(the real process, SQLite store) ingests from 1, 10 and 100 gateways, each keeping
at most 16 unacked blocks in flight as the agent does. How long a reading waits for
the signed checkpoint that covers it, with a checkpoint interval of 1000 ms (and
100 ms). And what ingest costs against the raw cost of its unavoidable parts
(Ed25519 verification and SHA-256 hashing, timed in this process in the same run):
the aggregator process's CPU time per block (utime + stime from /proc) over that raw
sum. Targets: at least 3,000 blocks/s on this 2-core machine, ratio at most 2.

Everything runs on this machine: our own Mosquitto on a free loopback port, the
aggregator, and the simulated gateways in one or two load-generator processes
(benchmarks/sync/loadgen.py) that hold pre-signed blocks; they share the two cores,
so the table also gives each process's share of a core.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Say, Stats, command_line, machine
from benchmarks.sync import analysis, rawcost
from benchmarks.sync.cpu import MACHINE, CpuSampler
from benchmarks.sync.fleet import READINGS, BlockTimes
from benchmarks.sync.procs import (
    Aggregator,
    Broker,
    CheckpointWatch,
    LoadGen,
    forget_session,
    load_generators,
)
from benchmarks.sync.report import report

RATE_TARGET = 3_000  # blocks of 10 readings per second, at 100 gateways
RATIO_TARGET = 2.0  # aggregator CPU per block / raw parts
WINDOW = 16  # unacked blocks per device: the agent's default ([sync] window)
GENERATORS = 2  # load-generator processes
Observer = Callable[[int], contextlib.AbstractContextManager[object]]


class Settings:
    """Sizes and repeats of one run: the full benchmark or the --quick smoke run."""

    def __init__(self, quick: bool, broker: str | None = None) -> None:
        self.quick = quick
        self.broker = broker
        self.repeats = 2 if quick else 5
        self.gateways = (1, 10, 100)
        # blocks per run, all gateways together: about 5 s a run at the target rate
        self.run_blocks = {1: 200, 10: 200, 100: 200} if quick else \
            {1: 3_000, 10: 15_000, 100: 15_000}
        self.interval_ms = 1000  # checkpoint interval in the throughput runs
        self.every_blocks = 1000  # ... or every this many blocks (the default)
        self.latency_gateways = 100
        self.latency_period_ms = 1000  # each gateway seals a block a second
        self.latency_blocks = 2 if quick else 15  # per gateway and run
        self.latency_intervals = (1000, 100)
        self.latency_every_blocks = 10_000_000  # so that only the interval counts
        self.latency_repeats = 1 if quick else 3
        self.raw_repeats = 2 if quick else 7
        self.raw_min_time = 0.005 if quick else 0.1
        self.timeout_s = 60 if quick else 300


class Session:
    """The broker, a scratch directory, and a counter that makes each run's names unique."""

    def __init__(self, s: Settings, workdir: Path) -> None:
        self.s, self.workdir, self.runs = s, workdir, 0
        self.profiler: cProfile.Profile | None = None  # set: the aggregator runs in-process
        self.broker = Broker(workdir, s.broker)
        self.broker.start()

    def run(self, gens: list[LoadGen], gateways: int, paced: bool, interval_ms: int,
            every_blocks: int, period_ms: int = 0, build: Callable[[], None] | None = None,
            observe: Observer | None = None) -> dict[str, Any]:
        """One run on a fresh aggregator; `build` (paced runs) signs the blocks first;
        `observe(pid)` (a profiler) is entered around the timed part."""
        self.runs += 1
        tag = f"{os.getpid()}-{self.runs}"
        prefix = f"edgeledger-bench/{tag}"
        workdir = self.workdir / f"run{self.runs}"
        agg = Aggregator(workdir, self.broker, prefix, gateways, interval_ms, every_blocks,
                         self.profiler)
        watch: CheckpointWatch | None = None
        try:
            pid = agg.start()
            watch = CheckpointWatch(self.broker, prefix)
            if build is not None:
                build()
            for k, gen in enumerate(gens):
                gen.send({"cmd": "run", "host": self.broker.host, "port": self.broker.port,
                          "prefix": prefix, "window": WINDOW, "paced": paced,
                          "client_id": f"bench-gen-{tag}-{k}", "timeout_s": self.s.timeout_s})
            for gen in gens:
                gen.answer()
            pids = {"aggregator": pid, **{f"loadgen{k}": g.pid for k, g in enumerate(gens)}}
            if self.broker.pid is not None:
                pids["broker"] = self.broker.pid
            with CpuSampler(pids) as cpu, observe(pid) if observe else contextlib.nullcontext():
                for gen in gens:
                    gen.send({"cmd": "go"})
                done = [gen.answer() for gen in gens]
            records = [r for d in done for r in d["blocks"]]
            _await_cover(watch, records, interval_ms)
        finally:
            status = agg.stop()
            if watch is not None:
                watch.close()
            if self.broker.external:
                forget_session(self.broker, agg.client_id)
            shutil.rmtree(workdir, ignore_errors=True)
        lags = BlockTimes(0, period_ms, gateways).reading_lags_ms() if paced else []
        return _run_result(gateways, paced, interval_ms, every_blocks, done, records, watch,
                           cpu, [*pids, MACHINE], status, agg.lines, lags)


def _await_cover(watch: CheckpointWatch, records: list[list[float]], interval_ms: int) -> None:
    """Wait for the checkpoint covering every block (so SIGTERM does not sign it early)."""
    need = 1 + max(int(r[3]) for r in records)
    deadline = time.time() + 3 * interval_ms / 1000 + 5
    while time.time() < deadline and max((s for _, s in watch.arrivals), default=0) < need:
        time.sleep(0.01)


def _run_result(gateways: int, paced: bool, interval_ms: int, every_blocks: int,
                done: list[dict[str, Any]], records: list[list[float]],
                watch: CheckpointWatch, cpu: CpuSampler, names: list[str], status: int | None,
                lines: list[str], lags: list[int]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    for d in done:
        statuses.update(d["statuses"])
    acked = [r for r in records if r[3] >= 0]  # all of them unless the run timed out
    tput = analysis.throughput(acked, cpu.between, names, READINGS)
    return {"gateways": gateways, "paced": paced, "interval_ms": interval_ms,
            "every_blocks": every_blocks, "blocks_sent": len(records), "throughput": tput,
            "latency": analysis.latencies(acked, watch.arrivals, paced, lags),
            "checkpoints": analysis.checkpoint_gaps(watch.arrivals, *tput["window"]),
            "statuses": dict(statuses), "complete": all(d["complete"] for d in done),
            "resends": sum(d["resends"] for d in done),
            "connection_lost": sum(d["connection_lost"] for d in done),
            "loadgen_cpu_s": [d["cpu_s"] for d in done], "aggregator_exit": status,
            "aggregator_log_tail": lines[-5:]}


# --- the benchmarks ----------------------------------------------------------------------


def _build(gens: list[LoadGen], gateways: int, blocks: int, t0_ms: int,
           period_ms: int) -> float:
    """Have the generators sign `blocks` blocks per gateway; the slowest build's seconds."""
    for k, gen in enumerate(gens):
        first, stop = k * gateways // len(gens), (k + 1) * gateways // len(gens)
        gen.send({"cmd": "build", "first": first, "count": stop - first, "blocks": blocks,
                  "t0_ms": t0_ms, "period_ms": period_ms, "gateways": gateways})
    return max(float(gen.answer()["build_s"]) for gen in gens)


def bench_throughput(sess: Session, gateways: int, raw_s: float, say: Say) -> dict[str, Any]:
    """`repeats` unpaced runs at `gateways`, each on a fresh aggregator, same blocks."""
    s = sess.s
    per_device = max(1, s.run_blocks[gateways] // gateways)
    with load_generators(min(GENERATORS, gateways)) as gens:
        build_s = _build(gens, gateways, per_device, time.time_ns() // 1_000_000, 0)
        runs = []
        for i in range(s.repeats):
            say(f"  {gateways} gateway(s): run {i + 1}/{s.repeats} ...")
            runs.append(sess.run(gens, gateways, False, s.interval_ms, s.every_blocks))
    per_block = [r["throughput"]["window_s"] / r["throughput"]["window_blocks"] for r in runs]
    stats = Stats(tuple(per_block), per_device * gateways)
    cpu = statistics.median(r["throughput"]["aggregator_cpu_per_block_s"] for r in runs)
    cores = {name: statistics.median(r["throughput"]["cores"][name] for r in runs)
             for name in runs[0]["throughput"]["cores"]}
    lat = {key: {q: statistics.median(r["latency"][key][q] for r in runs)
                 for q in ("median_s", "p90_s", "p99_s", "max_s")}
           for key in ("publish_to_ack", "block_to_checkpoint")}
    return {"gateways": gateways, "generators": min(GENERATORS, gateways),
            "blocks_per_gateway": per_device, "build_s": build_s, "stats": stats.as_json(),
            "blocks_per_s": stats.rate, "readings_per_s": stats.rate * READINGS,
            "aggregator_cpu_per_block_s": cpu, "aggregator_capacity_per_core": 1 / cpu,
            "cores": cores, "ratio": cpu / raw_s, "target": RATIO_TARGET,
            "met": cpu / raw_s <= RATIO_TARGET,
            "latency": lat, "complete": all(r["complete"] for r in runs), "runs": runs}


def bench_latency(sess: Session, interval_ms: int, say: Say) -> dict[str, Any]:
    """Paced runs: 100 gateways sealing a block a second each, checkpoint every interval."""
    s = sess.s
    g, period = s.latency_gateways, s.latency_period_ms
    runs = []
    with load_generators(GENERATORS) as gens:
        for i in range(s.latency_repeats):
            say(f"  checkpoint interval {interval_ms} ms: run {i + 1}/{s.latency_repeats} "
                f"({s.latency_blocks * period / 1000:.0f} s) ...")

            def build() -> None:
                t0 = time.time_ns() // 1_000_000 + 1000 + g * s.latency_blocks // 5
                _build(gens, g, s.latency_blocks, t0, period)

            runs.append(sess.run(gens, g, True, interval_ms, s.latency_every_blocks, period,
                                 build))
    keys = ("block_to_checkpoint", "reading_to_checkpoint")
    out: dict[str, Any] = {"interval_ms": interval_ms, "gateways": g, "period_ms": period,
                           "offered_blocks_per_s": g * 1000 / period}
    for key in keys:
        out[key] = {q: statistics.median(r["latency"][key][q] for r in runs)
                    for q in ("median_s", "p90_s", "p99_s", "max_s")}
    out["complete"] = all(r["complete"] for r in runs)
    out["runs"] = runs
    return out


def run_all(s: Settings, say: Say) -> dict[str, Any]:
    """Every benchmark, as one JSON-ready dict."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "edgeledger sync", "quick": s.quick,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cores": os.cpu_count()},
        "method": {"statistic": "median of runs", "repeats": s.repeats,
                   "latency_repeats": s.latency_repeats, "window_per_device": WINDOW,
                   "readings_per_block": READINGS, "generators": GENERATORS,
                   "steady_window": "10th to 90th percentile of ack times",
                   "checkpoint_interval_ms": s.interval_ms,
                   "checkpoint_every_blocks": s.every_blocks,
                   "store": "SQLite (WAL, synchronous=FULL), fresh per run"}}
    say("raw parts: Ed25519 verify, SHA-256 ...")
    result["raw"] = rawcost.measure(s.raw_repeats, s.raw_min_time)
    raw_s = result["raw"]["total"]["median_s"]
    with tempfile.TemporaryDirectory(prefix="edgeledger-bench-sync-") as tmp:
        sess = Session(s, Path(tmp))
        try:
            result["broker"] = {"address": sess.broker.address, "ours": not sess.broker.external,
                                "version": sess.broker.version(),
                                "config": "as configured there" if sess.broker.external else
                                "max_queued_messages 10000 (docs/mosquitto), otherwise "
                                "mosquitto's defaults"}
            say("throughput, unpaced, fresh aggregator per run ...")
            result["throughput"] = [bench_throughput(sess, g, raw_s, say) for g in s.gateways]
            say("checkpoint latency, paced ...")
            result["latency"] = [bench_latency(sess, ms, say) for ms in s.latency_intervals]
        finally:
            sess.broker.stop()
    top = result["throughput"][-1]
    result["targets"] = {
        "rate": {"gateways": top["gateways"], "blocks_per_s": top["blocks_per_s"],
                 "target": RATE_TARGET, "met": top["blocks_per_s"] >= RATE_TARGET},
        "ratio": {"gateways": top["gateways"], "ratio": top["ratio"], "target": RATIO_TARGET,
                  "met": top["met"]}}
    result["targets_met"] = all(t["met"] for t in result["targets"].values())
    result["total_s"] = time.perf_counter() - started
    return result


def profile(s: Settings) -> None:
    """Where the aggregator's time goes: see benchmarks/sync/profile.py."""
    from benchmarks.sync.profile import profile_aggregator

    profile_aggregator(s)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with --json) and write the JSON file."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--broker", metavar="HOST:PORT")
    opts, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return command_line("sync", __doc__, rest,
                        lambda quick, say: run_all(Settings(quick, opts.broker), say), report,
                        lambda quick: profile(Settings(quick, opts.broker)))

