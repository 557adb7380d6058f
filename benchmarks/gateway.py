"""Benchmarks of the gateway's local ledger, through the real Ledger on real files.

Run from the repository root:

    .venv/bin/python -m benchmarks.gateway            # full run, table on stdout
    .venv/bin/python -m benchmarks.gateway --json     # the same, JSON on stdout
    .venv/bin/python -m benchmarks.gateway --quick    # smoke run: small sizes, 2 repeats
    .venv/bin/python -m benchmarks.gateway --profile  # cProfile of the same work

Three questions from issue 4. How many readings a second one core sustains with
group commit and the default 1 s durability window, against an fsync per reading.
Whether appending a block costs the same at height 1,000,000 as at height 10.
Whether recovery (a fresh Ledger object's `recover()`) stays flat as the log grows
from 10^3 to 10^6 blocks. The ledgers live in a temporary directory under
benchmarks/results/, on the same filesystem as the repository, and are deleted.
"""

from __future__ import annotations

import cProfile
import datetime
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.gateway_workload import (
    FsyncCounter,
    LogBuilder,
    Snapshot,
    add_reading,
    disk_bytes,
    drop_cache,
    filesystem,
    open_ledger,
    remove_tree,
    scratch,
    verify_log,
)
from benchmarks.harness import RESULTS, Stats, command_line, human_time, machine, table, time_runs
from edgeledger.gateway.ledger import Ledger

RATE_TARGET = 20_000  # readings per second, one core, default window
APPEND_TARGET = 1.1  # append cost at the big height / at height 10
RECOVERY_TARGET = 1.5  # recovery at the largest log / at the smallest ("flat")
WINDOW_S = 1.0  # the default durability window
SEAL_EVERY = 100  # readings per block in the throughput runs


class Settings:
    """Sizes and repeats of one run: the full benchmark or the --quick smoke run."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 2 if quick else 7
        self.rate_repeats = 2 if quick else 5
        self.group_run_s = 0.1 if quick else 3.0  # length of one sustained run
        self.fsync_run_s = 0.05 if quick else 1.0
        self.recovery_repeats = 2 if quick else 25
        self.small_height = 10
        self.sizes = (100, 1_000, 10_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
        self.append_blocks = 50 if quick else 1_000  # blocks per timed append run
        self.append_block_readings = 10
        self.append_sync_every = 100  # blocks


def measure(run: Callable[[Any], object], ops: int, repeats: int, setup: Callable[[], Any],
            teardown: Callable[[Any, Any], object]) -> Stats:
    """harness.time_runs, one run at a time, then `teardown(state, what run returned)`.

    The teardown is untimed: closing a ledger, deleting its files.
    """
    made: list[Any] = []
    returned: list[Any] = []

    def keep() -> Any:
        made.append(setup())
        return made[-1]

    def call(state: Any) -> None:
        returned.append(run(state))

    per_op: list[float] = []
    for _ in range(repeats):
        per_op += time_runs(call, ops, 1, keep).per_op
        teardown(made[-1], returned[-1])
    return Stats(tuple(per_op), ops)


# --- readings per second ---------------------------------------------------------------


def group_commit(ledger: Ledger, count: int, window: float = WINDOW_S) -> int:
    """Add `count` readings, seal every 100, sync once per `window` of wall time.

    The clock is read at each seal (every 100 readings, well under a millisecond
    apart), so the window is honoured to within that. Ends with a sync, so every
    reading is durable when this returns. Returns the number of syncs.
    """
    last, syncs = time.perf_counter(), 0
    for i in range(count):
        add_reading(ledger, i)
        if i % SEAL_EVERY == SEAL_EVERY - 1:
            ledger.seal(workload.T0 + 250 * i + 1)
            now = time.perf_counter()
            if now - last >= window:
                ledger.sync()
                last, syncs = now, syncs + 1
    ledger.sync()
    return syncs + 1


def fsync_each(ledger: Ledger, count: int) -> int:
    """Add `count` readings with a sync after each one (sealing every 100)."""
    for i in range(count):
        add_reading(ledger, i)
        if i % SEAL_EVERY == SEAL_EVERY - 1:
            ledger.seal(workload.T0 + 250 * i + 1)
        ledger.sync()
    return count


def bench_rate(name: str, loop: Callable[[Ledger, int], int], run_s: float,
               s: Settings, parent: Path) -> dict[str, Any]:
    """Readings per second of `loop` on a fresh, empty ledger per run.

    An untimed pilot run (also the warm-up) sizes the runs to about `run_s` each.
    """
    pilot = 20_000 if name == "group_commit" and not s.quick else 1_000
    with scratch(parent) as d:
        ledger = open_ledger(d / "pilot")
        start = time.perf_counter()
        loop(ledger, pilot)
        rate = pilot / (time.perf_counter() - start)
        ledger.close()
    count = max(SEAL_EVERY, round(rate * run_s / SEAL_EVERY) * SEAL_EVERY)
    extra: dict[str, list[int]] = {"syncs": [], "fsyncs": [], "bytes": []}

    with scratch(parent) as d:
        def setup() -> tuple[Ledger, Path]:
            where = d / f"run{len(extra['bytes'])}"
            return open_ledger(where), where

        def run(state: tuple[Ledger, Path]) -> None:
            with FsyncCounter() as fsyncs:
                extra["syncs"].append(loop(state[0], count))
            extra["fsyncs"].append(fsyncs.count)

        def teardown(state: tuple[Ledger, Path], _: object) -> None:
            state[0].close()
            extra["bytes"].append(disk_bytes(state[1]))
            remove_tree(state[1])

        stats = measure(run, count, s.rate_repeats, setup, teardown)
    return {"mode": name, "readings_per_run": count, "seal_every": SEAL_EVERY,
            "stats": stats.as_json(), **{f"{k}_per_run": v for k, v in extra.items()}}


def bench_throughput(s: Settings, parent: Path) -> dict[str, Any]:
    """Group commit with the default window against an fsync per reading."""
    group = bench_rate("group_commit", group_commit, s.group_run_s, s, parent)
    group["window_s"] = WINDOW_S
    each = bench_rate("fsync_per_reading", fsync_each, s.fsync_run_s, s, parent)
    rate = group["stats"]["per_s"]
    return {"group_commit": group, "fsync_per_reading": each,
            "speedup": rate / each["stats"]["per_s"], "target_per_s": RATE_TARGET,
            "met": rate >= RATE_TARGET}


# --- a big log: recovery against size, then append cost against height ------------------


def time_recovery(data_dir: Path, s: Settings, cold: bool) -> Stats:
    """Seconds for `Ledger(...)` + `recover()` on a closed ledger (closing is untimed)."""
    def setup() -> Path:
        if cold:
            drop_cache(data_dir)
        return data_dir

    return measure(open_ledger, 1, s.recovery_repeats, setup, lambda _, ledger: ledger.close())


def bench_recovery(builder: LogBuilder, s: Settings) -> dict[str, Any]:
    """Grow the log through `s.sizes`, timing recovery (warm and cold cache) at each."""
    rows = []
    for size in s.sizes:
        builder.grow_to(size)
        open_ledger(builder.data_dir).close()  # warm-up, untimed
        segments = sorted((builder.data_dir / "journal").glob("seg-*.log"))
        rows.append({"blocks": size, "warm": time_recovery(builder.data_dir, s, False).as_json(),
                     "cold": time_recovery(builder.data_dir, s, True).as_json(),
                     "segments": len(segments), "newest_segment_bytes": segments[-1].stat().st_size,
                     "log_bytes": disk_bytes(builder.data_dir)})
    ratio = rows[-1]["warm"]["median_s"] / rows[0]["warm"]["median_s"]
    cold_ratio = rows[-1]["cold"]["median_s"] / rows[0]["cold"]["median_s"]
    return {"sizes": rows, "ratio": ratio, "cold_ratio": cold_ratio, "target": RECOVERY_TARGET,
            "met": ratio <= RECOVERY_TARGET and cold_ratio <= RECOVERY_TARGET}


def bench_append(small: LogBuilder, big: LogBuilder, s: Settings) -> dict[str, Any]:
    """Blocks appended per second at height 10 and at the big log's height, interleaved.

    Each run: cut the log back to its snapshot and recover a fresh Ledger (untimed),
    then add and seal `append_blocks` blocks of 10 readings, syncing every 100 blocks
    and at the end (timed). So every run appends at the same heights.
    """
    k, per_block = s.append_blocks, s.append_block_readings

    def timed(builder: LogBuilder) -> Callable[[], Stats]:
        snap, base = Snapshot.take(builder.data_dir), builder.readings

        def setup() -> Ledger:
            snap.restore()
            return open_ledger(builder.data_dir)

        def run(ledger: Ledger) -> None:
            i = base
            for b in range(k):
                for _ in range(per_block):
                    add_reading(ledger, i)
                    i += 1
                ledger.seal(workload.T0 + 250 * i)
                if b % s.append_sync_every == s.append_sync_every - 1:
                    ledger.sync()
            ledger.sync()

        def close(ledger: Ledger, _: object) -> None:
            ledger.close()

        return lambda: measure(run, k, 1, setup, close)

    runs = {"small": timed(small), "big": timed(big)}
    per_op: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(s.repeats + 1):  # the first round is a warm-up
        for key, fn in runs.items():
            per_op[key].append(fn().per_op[0])
    stats = {key: Stats(tuple(v[1:]), k) for key, v in per_op.items()}
    ratio = stats["big"].median / stats["small"].median
    out: dict[str, Any] = {"blocks_per_run": k, "readings_per_block": per_block,
                           "sync_every_blocks": s.append_sync_every}
    for key, builder in (("small", small), ("big", big)):
        out[key] = {"height": builder.blocks, "stats": stats[key].as_json()}
    out.update(ratio=ratio, target=APPEND_TARGET, met=ratio <= APPEND_TARGET)
    return out


def bench_log(s: Settings, parent: Path) -> tuple[dict[str, Any], dict[str, Any],
                                                  dict[str, Any]]:
    """Build the big log (timing recovery on the way), verify it, then time appends."""
    with scratch(parent) as d:
        big, small = LogBuilder(d / "big"), LogBuilder(d / "small")
        recovery = bench_recovery(big, s)
        verified = verify_log(big.data_dir, big.blocks)
        info = {"blocks": big.blocks, "readings": big.readings, "build_s": big.seconds,
                "bytes": disk_bytes(big.data_dir), "verified": verified,
                "built_by": "the real Ledger: add(reading) + seal(ts) per block, one reading "
                            "a block, sync every 10,000 blocks; then a fresh Ledger.recover() "
                            "finds the tip, and block(tip) reads back, verifies (signature, "
                            "Merkle root) and links to block(tip - 1)"}
        small.grow_to(s.small_height)
        verify_log(small.data_dir, small.blocks)
        append = bench_append(small, big, s)
    return info, recovery, append


# --- running and reporting -------------------------------------------------------------


def run_all(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Every benchmark, as one JSON-ready dict."""
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "edgeledger gateway", "quick": s.quick,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "filesystem": filesystem(RESULTS),
        "method": {"timer": "time.perf_counter", "statistic": "median of repeats",
                   "spread": "(max - min) / median", "repeats": s.repeats,
                   "rate_repeats": s.rate_repeats,
                   "recovery_repeats": s.recovery_repeats, "gc": "disabled during timed runs",
                   "data_dir": "a temporary directory under benchmarks/results/, deleted"}}
    log("readings per second: group commit, then fsync per reading ...")
    result["throughput"] = bench_throughput(s, RESULTS)
    log(f"building a {s.sizes[-1]:,}-block log, timing recovery at {s.sizes} blocks; "
        f"then appends ...")
    result["big_log"], result["recovery"], result["append"] = bench_log(s, RESULTS)
    result["targets_met"] = all(result[k]["met"] for k in ("throughput", "append", "recovery"))
    result["total_s"] = time.perf_counter() - started
    return result


def _fig(stats: dict[str, Any]) -> tuple[str, str]:
    return human_time(stats["median_s"]), f"{stats['spread']:.1%}"


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def report(r: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    t, a, rec, big = r["throughput"], r["append"], r["recovery"], r["big_log"]
    rate_rows = []
    for key in ("group_commit", "fsync_per_reading"):
        m = t[key]
        rate_rows.append((key.replace("_", " "), f"{m['stats']['per_s']:,.0f}",
                          f"{m['stats']['spread']:.1%}", *_fig(m["stats"]),
                          f"{m['readings_per_run']:,}", str(max(m["syncs_per_run"])),
                          str(max(m["fsyncs_per_run"]))))
    append_rows = [(f"append at height {a[k]['height']:,}", *_fig(a[k]["stats"]),
                    f"{a[k]['stats']['per_s']:,.0f}") for k in ("small", "big")]
    rec_rows = [(f"{row['blocks']:,} blocks", *_fig(row["warm"]), *_fig(row["cold"]),
                 str(row["segments"]), f"{row['newest_segment_bytes'] / 1e6:.2f} MB")
                for row in rec["sizes"]]
    m, fs = r["machine"], r["filesystem"]
    return "\n".join([
        table(f"Readings per second, one core (1 s window; seal every {SEAL_EVERY})",
              ("", "readings/s", "spread", "per reading", "spread", "readings/run",
               "syncs/run", "fsyncs/run"), rate_rows),
        f"group commit / fsync per reading = {t['speedup']:.1f}x; "
        f"target >= {t['target_per_s']:,}/s: {_met(t['met'])}", "",
        table(f"Append a block ({a['readings_per_block']} readings + seal, sync every "
              f"{a['sync_every_blocks']} blocks; {a['blocks_per_run']} blocks a run)",
              ("", "per block", "spread", "blocks/s"), append_rows),
        f"height {a['big']['height']:,} / height {a['small']['height']} = {a['ratio']:.3f}x "
        f"(target {a['target']}x: {_met(a['met'])})", "",
        table("Recovery: Ledger(...) + recover() on a fresh object",
              ("log", "warm", "spread", "cold", "spread", "segments", "newest segment"),
              rec_rows),
        f"largest / smallest = {rec['ratio']:.2f}x warm, {rec['cold_ratio']:.2f}x cold "
        f"(target {rec['target']}x: {_met(rec['met'])})", "",
        f"big log: {big['blocks']:,} blocks, {big['bytes'] / 1e6:.0f} MB, built through Ledger "
        f"in {big['build_s']:.0f} s; recovered and block({big['verified']['tip']:,}) read back "
        f"and verified",
        f"{m['cpu']}, Python {m['python']}; {fs['type']} on {fs['device']} ({fs['mount']}); "
        f"{r['method']['repeats']} repeats ({r['method']['rate_repeats']} for readings/s, "
        f"{r['method']['recovery_repeats']} for recovery), "
        f"spread = (max-min)/median; total {r['total_s']:.0f} s", ""])


def profile(s: Settings) -> None:
    """cProfile a sustained group-commit run, then appends and recoveries at the big log."""
    with scratch(RESULTS) as d:
        ledger = open_ledger(d / "rate")
        work: list[tuple[str, Callable[[], object]]] = [
            ("group commit, 100,000 readings", lambda: group_commit(ledger, 100_000))]
        builder = LogBuilder(d / "big")
        builder.grow_to(s.sizes[-1])
        big = open_ledger(builder.data_dir)

        def append() -> None:
            for i in range(builder.readings, builder.readings + 10_000):
                add_reading(big, i)
                if i % 10 == 9:
                    big.seal(workload.T0 + 250 * i)
            big.sync()

        def recover() -> None:
            for _ in range(200):
                open_ledger(builder.data_dir).close()

        work += [(f"append 1,000 blocks of 10 at height {builder.blocks:,}", append)]
        for name, fn in work:
            prof = cProfile.Profile()
            prof.runcall(fn)
            print(f"\n=== {name} ===", file=sys.stderr)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)
        big.close()
        prof = cProfile.Profile()
        prof.runcall(recover)
        print(f"\n=== recovery x200 at {builder.blocks:,} blocks ===", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)
        ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with --json) and write the JSON file."""
    return command_line("gateway", __doc__, argv,
                        lambda quick, say: run_all(Settings(quick), say), report,
                        lambda quick: profile(Settings(quick)))

if __name__ == "__main__":
    sys.exit(main())
