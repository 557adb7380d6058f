"""Timing, machine description and output for the benchmarks.

Theory of operation: a measurement is `repeats` timed runs of the same work, each
reported as seconds per operation. We keep every run and report the median (the
figure we quote) and the spread (max - min, relative to the median), because on a
shared two-core machine a single run or a mean says little. Runs use
time.perf_counter with the garbage collector off, as timeit does, so a collection
triggered by earlier work does not land in one run and not another. Nothing here
asserts a time: the benchmark reports, people judge.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Seconds per operation, one figure per timed run."""

    per_op: tuple[float, ...]
    ops: int  # operations in each run

    @property
    def median(self) -> float:
        """Median seconds per operation over the runs."""
        return statistics.median(self.per_op)

    @property
    def spread(self) -> float:
        """(slowest - fastest run) / median: 0.05 means the runs lie within 5%."""
        return (max(self.per_op) - min(self.per_op)) / self.median

    @property
    def rate(self) -> float:
        """Operations per second at the median."""
        return 1.0 / self.median

    def as_json(self) -> dict[str, Any]:
        """The figures as a JSON object (seconds, operations per second)."""
        return {"median_s": self.median, "min_s": min(self.per_op), "max_s": max(self.per_op),
                "spread": self.spread, "per_s": self.rate, "repeats": len(self.per_op),
                "ops_per_repeat": self.ops, "runs_s": list(self.per_op)}


def time_runs(run: Callable[[Any], object], ops: int, repeats: int,
              setup: Callable[[], Any] = lambda: None) -> Stats:
    """Time `run(setup())`, which must do `ops` operations, `repeats` times.

    `setup` is called before each run and is not timed (a fresh store, say).
    """
    per_op = []
    for _ in range(repeats):
        state = setup()
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            run(state)
            elapsed = time.perf_counter() - start
        finally:
            if gc_was_on:
                gc.enable()
        per_op.append(elapsed / ops)
    return Stats(tuple(per_op), ops)


def time_calls(fn: Callable[[], object], repeats: int, min_time: float) -> Stats:
    """Time `fn()` in a loop sized so that one run takes at least `min_time` seconds."""
    number = calibrate(fn, min_time)

    def run(_: object) -> None:
        for _ in range(number):
            fn()

    return time_runs(run, number, repeats)


def calibrate(fn: Callable[[], object], min_time: float) -> int:
    """How many calls of `fn` take at least `min_time` (1, 2, 5, 10, 20, 50, ...)."""
    number = 1
    while True:
        for step in (1, 2, 5):
            start = time.perf_counter()
            for _ in range(number * step):
                fn()
            if time.perf_counter() - start >= min_time:
                return number * step
        number *= 10


def machine() -> dict[str, str]:
    """The CPU, Python and library versions the figures were taken with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "python": sys.version.split()[0],
            "python_impl": platform.python_implementation(), "platform": platform.platform()}
    for dist in ("cbor2", "pynacl"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    return info


def human_time(seconds: float) -> str:
    """Seconds in ns, µs, ms or s, three significant figures."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain-text table: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *map(line, rows), ""])


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, making the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


RESULTS = Path(__file__).resolve().parent / "results"

Say = Callable[[str], None]


def command_line(name: str, doc: str | None, argv: Sequence[str] | None,
                 run: Callable[[bool, Say], dict[str, Any]],
                 report: Callable[[dict[str, Any]], str],
                 profile: Callable[[bool], None]) -> int:
    """The one command line of every benchmark: `python -m benchmarks.NAME [--quick]
    [--json] [--out PATH] [--profile]`; writes results/NAME.json (NAME-quick.json)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--out", type=Path, help=f"JSON file (default: benchmarks/results/"
                                                 f"{name}.json, or {name}-quick.json)")
    parser.add_argument("--profile", action="store_true", help="cProfile instead of timing")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.quick)
        return 0
    result = run(args.quick, lambda msg: print(msg, file=sys.stderr, flush=True))
    out = args.out or RESULTS / (f"{name}-quick.json" if args.quick else f"{name}.json")
    write_json(out, result)
    if args.json:
        print(report(result), file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0
