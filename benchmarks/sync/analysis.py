"""What one run's records say: throughput in a steady window, latencies, CPU shares. Pure.

A record is one block as its generator saw it: [seal time (Unix ms), publish time,
ack time (Unix s), log index]. Checkpoint arrivals are (Unix s, tree size) in the
order the subscriber got them.

Throughput is counted between the 10th and the 90th percentile of ack times, so the
ramp-up (windows filling, SQLite's first pages) and the tail (the last devices
finishing alone) are left out; the CPU time of each process is taken over the same
wall-clock window. A block's checkpoint latency runs from its seal time (paced runs)
or its publish time (unpaced runs, whose blocks were all sealed before timing) to
the arrival of the first checkpoint whose size exceeds its log index; a reading's
adds the time it waited in its open block before the seal.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.sync.cpu import MACHINE
from benchmarks.sync.fleet import percentile

TRIM = 0.1  # left out at each end of the ack times


def steady_window(acks: Sequence[float]) -> tuple[float, float, int]:
    """(start, end, blocks acked in between) of the trimmed window over sorted ack times."""
    n = len(acks)
    lo, hi = int(n * TRIM), n - 1 - int(n * TRIM)
    if hi <= lo:
        return acks[0], acks[-1], max(1, n - 1)
    return acks[lo], acks[hi], hi - lo


def coverage(arrivals: Sequence[tuple[float, int]]) -> Callable[[int], float | None]:
    """A function: log index -> arrival time of the first checkpoint covering it (or None)."""
    times, sizes, best = [], [], 0
    for when, size in arrivals:
        if size > best:  # sizes only grow; ignore a stale or repeated one
            times.append(when)
            sizes.append(size)
            best = size

    def covered_at(index: int) -> float | None:
        at = bisect.bisect_right(sizes, index)
        return times[at] if at < len(times) else None

    return covered_at


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, p90, p99, max and count of a sample (seconds)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "median_s": statistics.median(ordered),
            "p90_s": percentile(ordered, 0.90), "p99_s": percentile(ordered, 0.99),
            "min_s": ordered[0], "max_s": ordered[-1]}


def latencies(records: Sequence[Sequence[float]], arrivals: Sequence[tuple[float, int]],
              paced: bool, reading_lags_ms: Sequence[int]) -> dict[str, Any]:
    """Checkpoint latency of blocks (and readings, when paced), ack latency, and misses."""
    covered_at = coverage(arrivals)
    blocks: list[float] = []
    readings: list[float] = []
    acks: list[float] = []
    missed = 0
    for ts_ms, pub, ack, index in records:
        start = ts_ms / 1000 if paced else pub
        acks.append(ack - pub)
        when = covered_at(int(index))
        if when is None:
            missed += 1
            continue
        blocks.append(when - start)
        if paced:
            readings.extend(when - start + lag / 1000 for lag in reading_lags_ms)
    out = {"block_to_checkpoint": summary(blocks), "publish_to_ack": summary(acks),
           "uncovered_blocks": missed,
           "from": "seal time (ts)" if paced else "publish time (blocks pre-built)"}
    if paced:
        out["reading_to_checkpoint"] = summary(readings)
        out["publish_lag"] = summary([pub - ts / 1000 for ts, pub, _, _ in records])
    return out


def checkpoint_gaps(arrivals: Sequence[tuple[float, int]], start: float,
                    end: float) -> dict[str, Any]:
    """How many checkpoints arrived in [start, end], and the median gap between them."""
    inside = [t for t, _ in arrivals if start <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    return {"count": len(inside), "median_gap_s": statistics.median(gaps) if gaps else None}


def throughput(records: Sequence[Sequence[float]], cpu_between: Callable[[str, float, float],
               float], names: Sequence[str], readings_per_block: int) -> dict[str, Any]:
    """Blocks/s and readings/s in the steady window, and each process's CPU in it.

    `names` are the processes sampled plus MACHINE; `others` is what the rest of the
    machine (processes not ours) used in the window.
    """
    acks = sorted(r[2] for r in records)
    start, end, blocks = steady_window(acks)
    wall = end - start
    cpu = {name: cpu_between(name, start, end) for name in names}
    cpu["others"] = max(0.0, cpu.pop(MACHINE) - sum(cpu.values()))
    first_pub = min(r[1] for r in records)
    return {"blocks": len(records), "window_blocks": blocks, "window_s": wall,
            "blocks_per_s": blocks / wall, "readings_per_s": blocks * readings_per_block / wall,
            "overall_blocks_per_s": len(records) / (acks[-1] - first_pub),
            "cpu_s": cpu, "cores": {name: c / wall for name, c in cpu.items()},
            "aggregator_cpu_per_block_s": cpu["aggregator"] / blocks,
            "window": (start, end)}
