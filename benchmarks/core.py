"""Benchmarks of the pure core: sealing, verifying, Merkle appends and proofs.

Run from the repository root:

    .venv/bin/python -m benchmarks.core            # full run, table on stdout
    .venv/bin/python -m benchmarks.core --json     # the same, JSON on stdout
    .venv/bin/python -m benchmarks.core --quick    # smoke run: small sizes, 2 repeats
    .venv/bin/python -m benchmarks.core --profile  # cProfile of sealing and proofs

Each figure is the median of several timed runs, with the spread between the
fastest and slowest run. Sealing is compared with the raw cost of its parts timed
in the same run (CBOR encoding of the readings' maps, one SHA-256 per leaf, one
Ed25519 signature), so the ratio says what EdgeLedger's own code adds.
"""

from __future__ import annotations

import cProfile
import datetime
import hashlib
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import nacl.signing

from benchmarks import workload
from benchmarks.harness import (
    Stats,
    command_line,
    human_time,
    machine,
    table,
    time_calls,
    time_runs,
)
from edgeledger.core import merkle
from edgeledger.core.block import parse_sync_message, seal, sync_message, verify_readings
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading

SEAL_TARGET = 1.5  # sealing / raw parts
PROOF_TARGET = 2.0  # inclusion proof + verify at the large tree / at the small tree
DEVICE = "greenhouse-7"


class Settings:
    """Sizes and repeats of one run: the full benchmark or the --quick smoke run."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 2 if quick else 7
        self.min_time = 0.005 if quick else 0.1  # seconds per timed run, at least
        self.seal_sizes = (1, 10, 100)
        self.verify_size = 10
        self.appends = 1 << 10 if quick else 1 << 16
        self.small_tree = 1_000
        self.large_tree = 1 << 14 if quick else 1_000_000
        self.proof_cases = 256 if quick else 1024


# --- sealing and verifying -----------------------------------------------------------


def bench_seal(size: int, s: Settings) -> dict[str, Any]:
    """Sealing `size` readings against the raw cost of its parts, timed in turn."""
    signer = Signer("bench-device", workload.SEED)
    fields = workload.reading_fields(size)
    maps = workload.reading_maps(fields)
    prev, ts = hashlib.sha256(b"block 0").digest(), workload.T0 + 60_000

    def sealing() -> object:
        readings = [Reading(n, t, q, v, u) for n, t, q, v, u in fields]
        return seal(signer, DEVICE, 1, prev, readings, ts)

    block = seal(signer, DEVICE, 1, prev, [Reading(*f) for f in fields], ts)
    message = cbor2.dumps(["Signature1", block.protected, b"", block.payload], canonical=True)
    key, dumps, sha = nacl.signing.SigningKey(workload.SEED), cbor2.dumps, hashlib.sha256
    encoded = [dumps(m, canonical=True) for m in maps]
    if encoded != [Reading(*f).raw for f in fields]:
        raise AssertionError("the raw CBOR differs from the readings' bytes")

    def raw() -> None:
        for m in maps:
            sha(b"\x00" + dumps(m, canonical=True)).digest()
        key.sign(message)

    def raw_cbor() -> None:
        for m in maps:
            dumps(m, canonical=True)

    def raw_sha256() -> None:
        for e in encoded:
            sha(b"\x00" + e).digest()

    seal_stats = time_calls(sealing, s.repeats, s.min_time)
    raw_stats = time_calls(raw, s.repeats, s.min_time)
    parts = {"cbor": time_calls(raw_cbor, s.repeats, s.min_time),
             "sha256": time_calls(raw_sha256, s.repeats, s.min_time),
             "sign": time_calls(lambda: key.sign(message), s.repeats, s.min_time)}
    ratio = seal_stats.median / raw_stats.median
    return {"readings": size, "seal": seal_stats.as_json(), "raw": raw_stats.as_json(),
            "raw_parts": {k: v.as_json() for k, v in parts.items()},
            "ratio": ratio, "target": SEAL_TARGET, "met": ratio <= SEAL_TARGET}


def bench_verify(s: Settings) -> dict[str, Any]:
    """Parse + signature check + verify_readings of one sync message."""
    signer = Signer("bench-device", workload.SEED)
    readings = [Reading(*f) for f in workload.reading_fields(s.verify_size)]
    block = seal(signer, DEVICE, 1, bytes(32), readings, workload.T0 + 60_000)
    message, public_key = sync_message(block, readings), signer.public_key

    def verify() -> None:
        parsed, encoded = parse_sync_message(message)
        parsed.verify(public_key)
        verify_readings(parsed, encoded)

    verify()
    return {"readings": s.verify_size, "message_bytes": len(message),
            "verify": time_calls(verify, s.repeats, s.min_time).as_json()}


# --- Merkle trees ----------------------------------------------------------------------


def bench_append(s: Settings) -> dict[str, Any]:
    """Appends per second into an empty tree, through MemoryHashes and append_hashes."""
    leaves = workload.leaf_hashes(s.appends)

    def memory(mem: merkle.MemoryHashes) -> None:
        for leaf in leaves:
            mem.append(leaf)

    def into_dict(store: dict[int, bytes]) -> None:
        read, count = (lambda ps: [store[p] for p in ps]), 0
        for size, leaf in enumerate(leaves):
            for h in merkle.append_hashes(size, leaf, read):
                store[count] = h
                count += 1

    def into_list(store: list[bytes]) -> None:
        read = lambda ps: [store[p] for p in ps]  # noqa: E731
        for size, leaf in enumerate(leaves):
            store.extend(merkle.append_hashes(size, leaf, read))

    runs: list[tuple[str, Callable[[Any], object], Callable[[], Any]]] = [
        ("memory_hashes", memory, merkle.MemoryHashes),
        ("append_hashes_dict", into_dict, dict), ("append_hashes_list", into_list, list)]
    out: dict[str, Any] = {"appends": s.appends}
    for name, run, setup in runs:
        out[name] = time_runs(run, s.appends, s.repeats, setup).as_json()
    return out


def bench_inclusion(s: Settings) -> dict[str, Any]:
    """inclusion_proof + verify_inclusion at random leaves of a small and a large tree."""
    small = merkle.MemoryHashes()
    for leaf in workload.leaf_hashes(s.small_tree):
        small.append(leaf)
    start = time.perf_counter()
    leaves = workload.leaf_hashes(s.large_tree)
    large = workload.memory_hashes(leaves)
    build = time.perf_counter() - start
    start = time.perf_counter()
    workload.check_stored(large.hashes, leaves)
    check = time.perf_counter() - start
    del leaves
    out = {"small": proof_figures(small, s), "large": proof_figures(large, s)}
    out["large"].update(build_s=build, check_s=check, built_by=(
        "benchmarks.workload.stored_hashes: one pass writing each leaf hash and every "
        "subtree hash it completes, the layout MemoryHashes.append writes, cross-checked "
        "against MemoryHashes.append (first 4096 leaves), stored_count and "
        "root_from_leaf_hashes"))
    ratio = out["large"]["proof_and_verify"]["median_s"] / out["small"]["proof_and_verify"][
        "median_s"]
    out.update(ratio=ratio, target=PROOF_TARGET, met=ratio <= PROOF_TARGET)
    return out


def proof_figures(mem: merkle.MemoryHashes, s: Settings) -> dict[str, Any]:
    """Time proof+verify, proof alone and verify alone over the same random leaves."""
    rng = random.Random(mem.size)
    size, root, read = mem.size, mem.root(), mem.read_hashes
    cases = [(i, mem.hashes[merkle.stored_index(0, i)])
             for i in (rng.randrange(size) for _ in range(s.proof_cases))]
    paths = [merkle.inclusion_proof(i, size, read) for i, _ in cases]

    def both() -> None:
        for i, leaf in cases:
            merkle.verify_inclusion(leaf, i, size, merkle.inclusion_proof(i, size, read), root)

    def proofs() -> None:
        for i, _ in cases:
            merkle.inclusion_proof(i, size, read)

    def verifies() -> None:
        for (i, leaf), path in zip(cases, paths, strict=True):
            merkle.verify_inclusion(leaf, i, size, path, root)

    figures = {name: per_case(time_calls(fn, s.repeats, s.min_time), len(cases)).as_json()
               for name, fn in (("proof_and_verify", both), ("proof", proofs),
                                ("verify", verifies))}
    return {"leaves": size, "path_hashes_mean": sum(map(len, paths)) / len(paths), **figures}


def per_case(stats: Stats, cases: int) -> Stats:
    """Stats of a loop over `cases` items, as seconds per item."""
    return Stats(tuple(t / cases for t in stats.per_op), stats.ops * cases)


# --- running and reporting -------------------------------------------------------------


def run_all(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Every benchmark, as one JSON-ready dict."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "edgeledger core", "quick": s.quick,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "method": {"timer": "time.perf_counter", "statistic": "median of repeats",
                   "spread": "(max - min) / median", "repeats": s.repeats,
                   "min_run_s": s.min_time, "gc": "disabled during timed runs"}}
    result["seal"] = []
    for size in s.seal_sizes:
        log(f"sealing {size} readings ...")
        result["seal"].append(bench_seal(size, s))
    log("verifying ...")
    result["verify"] = bench_verify(s)
    log("merkle appends ...")
    result["merkle_append"] = bench_append(s)
    log(f"inclusion proofs at {s.small_tree} and {s.large_tree} leaves ...")
    result["inclusion"] = bench_inclusion(s)
    result["targets_met"] = (all(r["met"] for r in result["seal"])
                             and result["inclusion"]["met"])
    result["total_s"] = time.perf_counter() - started
    return result


def report(r: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    def fig(stats: dict[str, Any]) -> tuple[str, str]:
        return human_time(stats["median_s"]), f"{stats['spread']:.1%}"

    head = ("", "median", "spread", "per second")
    seal_rows = []
    for s in r["seal"]:
        n, p = s["readings"], s["raw_parts"]
        for label, st in ((f"seal {n} readings", s["seal"]), ("  raw parts together", s["raw"]),
                          (f"  cbor2.dumps x{n}", p["cbor"]), (f"  sha256 x{n}", p["sha256"]),
                          ("  Ed25519 sign", p["sign"])):
            seal_rows.append((label, *fig(st), f"{st['per_s']:,.0f}"))
        met = "met" if s["met"] else "NOT met"
        seal_rows.append((f"  seal / raw = {s['ratio']:.2f}x (target {s['target']}x: {met})",
                          "", "", ""))
    v, a, inc = r["verify"], r["merkle_append"], r["inclusion"]
    other = [(f"verify sync message, {v['readings']} readings", *fig(v["verify"]),
              f"{v['verify']['per_s']:,.0f}")]
    for key in ("memory_hashes", "append_hashes_dict", "append_hashes_list"):
        other.append((f"merkle append: {key} ({a['appends']:,} appends)", *fig(a[key]),
                      f"{a[key]['per_s']:,.0f}"))
    for key in ("small", "large"):
        t = inc[key]
        for part in ("proof_and_verify", "proof", "verify"):
            other.append((f"inclusion {part} @ {t['leaves']:,} leaves", *fig(t[part]),
                          f"{t[part]['per_s']:,.0f}"))
    met = "met" if inc["met"] else "NOT met"
    m = r["machine"]
    return "\n".join([
        table("Sealing (construct Readings + seal) vs raw parts", head, seal_rows),
        table("Verifying and Merkle", head, other),
        f"inclusion proof+verify large/small = {inc['ratio']:.2f}x "
        f"(target {inc['target']}x: {met})",
        f"large tree ({inc['large']['leaves']:,} leaves) built in "
        f"{inc['large']['build_s']:.1f} s, cross-checked in {inc['large']['check_s']:.1f} s",
        f"{m['cpu']}, Python {m['python']}, cbor2 {m['cbor2']}, pynacl {m['pynacl']}; "
        f"{r['method']['repeats']} repeats, spread = (max-min)/median; "
        f"total {r['total_s']:.0f} s", ""])


def profile(s: Settings) -> None:
    """cProfile sealing 100 readings, verifying, and proofs in the large tree, to stderr."""
    sized = Settings(s.quick)
    sized.large_tree = s.large_tree
    signer = Signer("bench-device", workload.SEED)
    fields = workload.reading_fields(100)
    leaves = workload.leaf_hashes(sized.large_tree)
    mem = workload.memory_hashes(leaves)
    root, read, size = mem.root(), mem.read_hashes, mem.size
    rng = random.Random(0)
    cases = [rng.randrange(size) for _ in range(20_000)]

    def sealing() -> None:
        for _ in range(2_000):
            seal(signer, DEVICE, 1, bytes(32), [Reading(*f) for f in fields], workload.T0)

    def proofs() -> None:
        for i in cases:
            merkle.verify_inclusion(leaves[i], i, size, merkle.inclusion_proof(i, size, read),
                                    root)

    for name, fn in (("seal 100 readings x2000", sealing), ("inclusion x20000", proofs)):
        prof = cProfile.Profile()
        prof.runcall(fn)
        print(f"\n=== {name} ===", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with --json) and write the JSON file."""
    return command_line("core", __doc__, argv, lambda quick, say: run_all(Settings(quick), say),
                        report, lambda quick: profile(Settings(quick)))

if __name__ == "__main__":
    sys.exit(main())
