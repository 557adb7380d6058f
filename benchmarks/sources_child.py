"""The child process of the CPU-share benchmark: one source, polled as the agent polls it.

    python -m benchmarks.sources_child PROFILE --readings N --timeout S

Builds the profile's one [[sensors]] entry with `build()`, starts it, and once its
port is open prints `ready` (the parent then starts writing). From that moment it
polls every IDLE_POLL_MS (the agent's idle poll interval) and turns every sample into
a Reading as the agent does (range check, per-sensor q, `Reading(...)`), until N
readings have been made or S seconds have passed. It then prints one JSON line: its
CPU time (time.process_time, every thread: the source's reader or worker thread
too), the main thread's own CPU time (time.thread_time), the wall time, and what it
received. Start-up (imports, reading the profile, opening the port) is outside the
window; so is stopping. The ledger is not involved: benchmarks.gateway measures it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks.sources_workload import load_profile
from edgeledger.core.reading import Reading
from edgeledger.gateway.agent import IDLE_POLL_MS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the window; print `ready`, then the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources_child")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--readings", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    entry, ranges = load_profile(args.profile)
    source = entry.build()
    source.start(time.monotonic_ns() // 1_000_000)
    link = getattr(source, "link", None)
    if link is not None and not link.wait_open(10):
        raise SystemExit(f"{args.profile}: the port did not open")
    print("ready", flush=True)

    q: Counter[str] = Counter()
    made = rejected = polls = 0
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    deadline = wall0 + args.timeout
    tick = wall0
    while made < args.readings and time.perf_counter() < deadline:
        tick += IDLE_POLL_MS / 1000
        time.sleep(max(0.0, tick - time.perf_counter()))
        samples = source.poll(time.monotonic_ns() // 1_000_000, time.time_ns() // 1_000_000)
        polls += 1
        for sample in samples:
            if ranges.check(sample.metric, sample.value) is not None:
                rejected += 1
                continue
            Reading(sample.name, sample.t_ms, q[sample.sensor], sample.value, sample.unit,
                    sample.attestation)
            q[sample.sensor] += 1
            made += 1
    wall = time.perf_counter() - wall0
    cpu, main_cpu = time.process_time() - cpu0, time.thread_time() - thread0
    stats = source.stats
    source.stop()
    print(json.dumps({"cpu_s": cpu, "main_thread_cpu_s": main_cpu, "wall_s": wall,
                      "readings": made, "rejected": rejected, "polls": polls,
                      "bad": stats.bad, "reopens": stats.reopens}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
