"""Where the aggregator's time goes per block: `python -m benchmarks.sync --profile`.

Theory of operation. One unpaced run at 100 gateways, as in the benchmark, with a
sampling profiler on the real `edgeledger aggregator` process: py-spy (found on
PATH, or named by the PY_SPY environment variable; `pip install py-spy`), attached
with --nonblocking so the process is never paused, at 250 samples a second, idle
threads left out. Each sampled stack is put in one bucket (CATEGORIES) by the
first rule that matches: context first (the paho network thread, publishing acks,
signing checkpoints), then the innermost frame's module (nacl: signature; the
SQLite store; merkle; CBOR and reading decoding). A bucket's share of the samples
times the process's CPU time per block (from /proc, same run) is its cost per block.

Without py-spy, the same work runs with the aggregator in this process
(edgeledger.aggregator.server.AggregatorServer, the code the command runs) under
cProfile; cProfile sees only the thread it runs on, so the paho network thread's
share (MQTT receive) is missing from that table.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import human_time, table
from benchmarks.sync.procs import LoadGen, load_generators

if TYPE_CHECKING:
    from benchmarks.sync.bench import Session, Settings

GATEWAYS = 100
RATE_HZ = 250

# (bucket, where to look, what): the first rule that matches a stack wins. "frame": some
# frame of the stack is this function; "inner": the innermost frame of edgeledger, nacl
# or paho code is in this file or function.
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("MQTT out: broker PUBACKs of acks -> futures", "frame", "Client._handle_pubackcomp"),
    ("MQTT in: read + decode PUBLISH, PUBACK it", "frame", "Client.loop_read"),
    ("MQTT out: write ack packets", "frame", "Client.loop_write"),
    ("MQTT: network loop (select, misc)", "frame", "Client.loop_forever"),
    ("acks: publish_async (main thread)", "frame", "AggregatorServer._publish"),
    ("acks: Ack + topic + CBOR encode", "frame", "AggregatorSync._ack"),
    ("checkpoint signing", "frame", "CanonicalLog.sign_checkpoint"),
    ("event queue (MqttTransport.get)", "frame", "MqttTransport.get"),
    ("signature (Ed25519 verify, nacl)", "inner", "nacl/"),
    ("signature (Ed25519 verify, nacl)", "inner", "Block.verify"),
    ("SQLite store (queries, COMMIT)", "inner", "store/sqlite.py"),
    ("Merkle + SHA-256", "inner", "core/merkle.py"),
    ("Merkle + SHA-256", "inner", "Block.hash"),
    ("readings: 10 x Reading.decode + checks", "frame", "verify_readings"),
    ("CBOR decode/encode + checks (message, COSE, header)", "inner", "core/cbor.py"),
    ("CBOR decode/encode + checks (message, COSE, header)", "inner", "core/block.py"),
    ("CBOR decode/encode + checks (message, COSE, header)", "inner", "core/reading.py"),
    ("ingest / service logic (Python)", "inner", "edgeledger/"),
)
OTHER = "other (interpreter, logging, ...)"
_OURS = ("edgeledger/", "nacl/", "paho/")

# The buckets summed up as issue 6 asks: (group, bucket name prefixes).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MQTT receive (paho thread in, select loop, event queue)",
     ("MQTT in", "MQTT: network loop", "event queue")),
    ("CBOR decode (+ strict checks)", ("readings", "CBOR")),
    ("signature", ("signature",)),
    ("Merkle + SHA-256", ("Merkle",)),
    ("SQLite", ("SQLite",)),
    ("ack publish (encode, publish_async, write, broker PUBACK)", ("acks", "MQTT out")),
    ("other (ingest logic, checkpoints, interpreter)", ("ingest", "checkpoint", "other")),
)


def classify(frames: list[str]) -> str:
    """The bucket of one stack (py-spy frames `name (path:line)`, outermost first)."""
    names = {f.split(" (", 1)[0] for f in frames}
    inner = next((f for f in reversed(frames) if any(m in f for m in _OURS)), "")
    for bucket, where, needle in CATEGORIES:
        if (needle in names) if where == "frame" else (needle in inner):
            return bucket
    return OTHER


def read_raw(path: Path) -> Counter[str]:
    """py-spy's raw (collapsed) output as samples per bucket."""
    buckets: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            buckets[classify(stack.split(";"))] += int(count)
    return buckets


def find_py_spy() -> str | None:
    """py-spy from $PY_SPY or PATH, if installed."""
    env = os.environ.get("PY_SPY")
    if env and os.access(env, os.X_OK):
        return env
    return shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(binary: str, out: Path, pid: int) -> Iterator[None]:
    """py-spy record on `pid` for as long as the block runs (stopped with SIGINT)."""
    proc = subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", str(RATE_HZ),
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"py-spy failed ({proc.returncode}): {err[-1000:]}")


def breakdown(buckets: Counter[str], cpu_per_block: float) -> str:
    """Tables: each bucket's, then each group's share of the samples and CPU per block."""
    total = sum(buckets.values())

    def row(name: str, n: int) -> tuple[str, ...]:
        return name, f"{n / total:.1%}", human_time(cpu_per_block * n / total)

    groups = Counter({group: sum(n for b, n in buckets.items() if b.startswith(prefixes))
                      for group, prefixes in GROUPS})
    end = ("total (aggregator CPU per block, /proc)", f"{total} samples",
           human_time(cpu_per_block))
    return "\n".join([
        table("Aggregator CPU per block, by where py-spy found it", ("", "share", "per block"),
              [*(row(b, n) for b, n in buckets.most_common()), end]),
        table("The same, grouped", ("", "share", "per block"),
              [*(row(g, n) for g, n in groups.most_common()), end])])


def profile_aggregator(s: Settings) -> None:
    """Profile one 100-gateway run; print the breakdown (and the raw stacks' path) to stderr."""
    from benchmarks.sync.bench import Session, _build

    blocks = max(1, (2_000 if s.quick else 20_000) // GATEWAYS)
    binary = find_py_spy()
    with tempfile.TemporaryDirectory(prefix="edgeledger-bench-sync-") as tmp:
        sess = Session(s, Path(tmp))
        try:
            with load_generators(2) as gens:
                _build(gens, GATEWAYS, blocks, time.time_ns() // 1_000_000, 0)
                if binary is None:
                    _cprofile(sess, gens)
                    return
                raw = Path(tmp) / "aggregator.pyspy.txt"
                run = sess.run(gens, GATEWAYS, False, s.interval_ms, s.every_blocks,
                               observe=lambda pid: py_spy(binary, raw, pid))
                keep = Path(tempfile.gettempdir()) / "edgeledger-sync-aggregator.pyspy.txt"
                shutil.copy(raw, keep)
        finally:
            sess.broker.stop()
    t = run["throughput"]
    print(f"\n{GATEWAYS} gateways, {t['blocks']:,} blocks: {t['blocks_per_s']:,.0f} blocks/s "
          f"under py-spy ({RATE_HZ} Hz, --nonblocking); raw stacks: {keep}\n", file=sys.stderr)
    print(breakdown(read_raw(keep), t["aggregator_cpu_per_block_s"]), file=sys.stderr)


def _cprofile(sess: Session, gens: list[LoadGen]) -> None:
    """No py-spy: the aggregator in this process, its main thread under cProfile."""
    sess.profiler = prof = cProfile.Profile()
    run = sess.run(gens, GATEWAYS, False, sess.s.interval_ms, sess.s.every_blocks)
    t = run["throughput"]
    print(f"\n{GATEWAYS} gateways, {t['blocks']:,} blocks: {t['blocks_per_s']:,.0f} blocks/s "
          "with AggregatorServer in this process, its main thread under cProfile "
          "(no py-spy: `pip install py-spy` or set PY_SPY for the real process)\n",
          file=sys.stderr)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
