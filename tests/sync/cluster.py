"""A cluster of real processes for sync tests: N agents and one aggregator over a test broker.

Theory of operation. Every gateway is a real `edgeledger agent` process with simulated
sensors and a `[sync]` section; the aggregator is a real `edgeledger aggregator`
process on its own SQLite store; they talk through a Mosquitto from tests/mosquitto.py.
Nothing is mocked: a test cuts the broker, SIGKILLs processes and restarts them, and
the harness only starts, stops and watches them from outside (their logs, the
agents' state.json, a read-only look at the store).

Keys are made here before anything starts: the log key (so the agents' `log_key` is
known) and each device key in its data directory where the agent looks for it
(edgeledger/gateway/identity.py), enrolled in the store before the aggregator opens it.

Ending a run (`Cluster.drain`):
1. each agent is stopped cleanly (SIGTERM: it seals its open block and exits 0), and
   its tip is read from its local ledger;
2. each agent is started again in *drain mode*: the same device, data directory,
   journal and sync settings, but its only sensor is a replay of NaN, which the agent
   always rejects before signing, and no heartbeat or age seal is due within a day.
   So the tip stays where it is while the agent catches up (hello, resend, acks,
   checkpoints), and the wait "acked = covered = tip" is bounded and exact;
3. the drain agents are stopped cleanly (they seal nothing: their open block is empty).
Then `stop_aggregator()` (SIGTERM: a last checkpoint if the log grew) and
`check_cluster` compares every gateway's local ledger with the store, walks the whole
checkpoint chain with our verifier and, when given a built tests/interop sumdbcheck,
with Go's sumdb/note and sumdb/tlog.

Every process's stderr goes to its own file (one per start, numbered);
`Cluster.diagnostics()` gives their tails and the broker's, and a Cluster used as a
context manager prints them on the way out (pytest shows them when a test fails) and
SIGKILLs whatever is still running, so no process outlives its test.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from mosquitto import Mosquitto, free_port

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.clock import wall_ms
from edgeledger.core import merkle
from edgeledger.core.block import Block
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint, check_extends, open_checkpoint
from edgeledger.core.note import Signer
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.retention import first_kept_height
from edgeledger.keyfile import load_signer, write_signer

ROOT = Path(__file__).resolve().parents[2]
_VENV_PROGRAM = ROOT / ".venv" / "bin" / "edgeledger"
PROGRAM = [str(_VENV_PROGRAM)] if _VENV_PROGRAM.exists() else [sys.executable, "-m",
                                                                 "edgeledger.cli"]
ORIGIN = "faults.example/log"
PREFIX = "test/cluster"
DAY_MS = 86_400_000
ALLOWED_EVENTS = frozenset({"dup", "gap"})
"""Event kinds an honest cluster causes when messages are lost, repeated or reordered;
any other kind (equivocation, bad-prev, device-behind, bad-request, skew, ...) is a fault."""


# --- what runs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimSensor:
    """One `[[sensors]]` entry of type "sim"."""

    kind: str
    id: str
    interval_ms: int

    def toml(self) -> str:
        """The TOML table."""
        return (f'[[sensors]]\ntype = "sim"\nkind = "{self.kind}"\nid = "{self.id}"\n'
                f"interval_ms = {self.interval_ms}\n")


COUNTER = (SimSensor("counter", "counter-1", 20),)
"""One counter every 20 ms: ~3 KB of journal a second, blocks of ~20 readings."""
HEAVY = (*(SimSensor("environment", f"environment-monitor-with-a-long-name-for-big-records-{i}",
                     10) for i in range(1, 5)),
         SimSensor("counter", "counter-1", 20))
"""About 150 KB of journal a second: a 1 MiB quota is reached within 10 s, so retention prunes."""


@dataclass(frozen=True)
class GatewaySpec:
    """How each agent of a cluster is configured (besides its id and data directory)."""

    sensors: tuple[SimSensor, ...] = COUNTER
    max_readings: int = 100
    max_age_ms: int = 400
    heartbeat_ms: int = 1000
    fsync_window_ms: int = 100
    segment_bytes: int = 65536
    quota_bytes: int | None = None
    quota_policy: str = "stop"
    window: int = 16
    resend_ms: int = 1000


def agent_config(device: str, spec: GatewaySpec, broker: str, prefix: str, log_key: str,
                 drain: bool = False) -> str:
    """The agent's TOML; in drain mode nothing is ever recorded or sealed (see module doc)."""
    quota = (f'quota_bytes = {spec.quota_bytes}\nquota_policy = "{spec.quota_policy}"\n'
             if spec.quota_bytes is not None else "")
    if drain:
        sensors = ('[[sensors]]\ntype = "sim"\nkind = "replay"\nid = "drain-idle"\n'
                   f"interval_ms = {DAY_MS}\nvalues = [nan]\n")
        max_age = heartbeat = DAY_MS
    else:
        sensors = "\n".join(s.toml() for s in spec.sensors)
        max_age, heartbeat = spec.max_age_ms, spec.heartbeat_ms
    return f"""[device]
id = "{device}"

[journal]
fsync_window_ms = {spec.fsync_window_ms}
segment_bytes = {spec.segment_bytes}
{quota}
[sealing]
max_readings = {spec.max_readings}
max_age_ms = {max_age}
heartbeat_ms = {heartbeat}

{sensors}
[sync]
broker = "{broker}"
prefix = "{prefix}"
log_key = "{log_key}"
window = {spec.window}
resend_ms = {spec.resend_ms}
"""


def aggregator_config(workdir: Path, broker: str, prefix: str, interval_ms: int,
                      every_blocks: int) -> str:
    """The aggregator's TOML: store and key in `workdir`, a checkpoint every `interval_ms`."""
    return f"""[aggregator]
origin = "{ORIGIN}"
key_file = "{workdir / 'log.key'}"

[store]
path = "{workdir / 'aggregator.db'}"

[checkpoint]
interval_ms = {interval_ms}
every_blocks = {every_blocks}

[broker]
address = "{broker}"
prefix = "{prefix}"
client_id = "cluster-aggregator"
keepalive_s = 5

[http]
listen = "127.0.0.1:{free_port()}"
"""


class Child:
    """One program that is started, stopped and killed again and again; a log file per start."""

    def __init__(self, name: str, command: Callable[[], list[str]], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.starts = self.kills = 0

    @property
    def running(self) -> bool:
        """True while the current process exists."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> Path:
        """The current (or last) run's stderr."""
        return self.logs[-1]

    def start(self) -> None:
        """Start the program (it must not be running)."""
        assert not self.running, f"{self.name} is already running"
        log = self.workdir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG"))}
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=env,
                                         cwd=self.workdir)
        self.starts += 1

    def text(self) -> str:
        """The current run's stderr so far."""
        return self.log.read_text(errors="replace") if self.logs else ""

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        """Wait for `needle` in the current run's stderr; AssertionError if it exits first."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before "
                                     f"logging {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not log {needle!r} within {timeout} s:"
                                     f"\n{self.tail()}")
            time.sleep(0.02)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit status (AssertionError if it does not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout} s of SIGTERM:\n"
                                 f"{self.tail()}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and require exit status 0."""
        status = self.terminate(timeout)
        assert status == 0, f"{self.name} exited {status} on SIGTERM:\n{self.tail()}"

    def pause(self) -> None:
        """SIGSTOP: frozen, its sockets open; what it is sent piles up."""
        assert self.proc is not None and self.running, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None and self.running, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (if running) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def tail(self, chars: int = 3000) -> str:
        """The end of the current run's stderr."""
        return self.text()[-chars:]

    def lines(self, needle: str) -> list[str]:
        """Every line of every run's stderr that holds `needle`, in order."""
        return [line for p in self.logs for line in p.read_text(errors="replace").splitlines()
                if needle in line]

    def tracebacks(self) -> list[str]:
        """Logs of any run that hold a Python traceback (an unhandled crash)."""
        return [p.name for p in self.logs if "Traceback (most recent call last)"
                in p.read_text(errors="replace")]


class Gateway(Child):
    """One agent: its device key, data directory and two configurations (normal, drain)."""

    def __init__(self, device: str, workdir: Path, spec: GatewaySpec, broker: str,
                 prefix: str, log_key: str) -> None:
        super().__init__(device, self._command, workdir)
        self.device = device
        self.spec = spec
        self.data_dir = workdir / f"{device}-data"
        self.config = workdir / f"{device}.toml"
        self.drain_config = workdir / f"{device}-drain.toml"
        self.config.write_text(agent_config(device, spec, broker, prefix, log_key))
        self.drain_config.write_text(agent_config(device, spec, broker, prefix, log_key,
                                                  drain=True))
        self.signer = Signer.generate(device)
        write_signer(self.data_dir / "device.key", self.signer)
        self.draining = False

    def _command(self) -> list[str]:
        config = self.drain_config if self.draining else self.config
        return [*PROGRAM, "agent", "--config", str(config), "--data-dir", str(self.data_dir),
                "--log-level", "debug"]

    def start_and_wait(self, timeout: float = 30.0) -> None:
        """Start and wait for the agent's "running" line."""
        self.start()
        self.wait_for(" running: ", timeout)

    def pruned(self) -> bool:
        """Whether retention logged a prune in any run so far."""
        return any("retention: pruned" in p.read_text(errors="replace") for p in self.logs)

    def sync_doc(self) -> dict[str, Any]:
        """The `sync` document of state.json (written atomically by the agent)."""
        return _table(self.data_dir, "sync")

    def counters(self) -> dict[str, Any]:
        """The `counters` document of state.json."""
        return _table(self.data_dir, "counters")

    def tip(self) -> int | None:
        """The local ledger's tip; only while the agent is not running."""
        assert not self.running, f"{self.name}: read the ledger only while the agent is stopped"
        ledger = Ledger(self.data_dir, load_signer(self.data_dir / "device.key"),
                        self.spec.segment_bytes)
        try:
            return ledger.recover().tip
        finally:
            ledger.close()


def _table(data_dir: Path, table: str) -> dict[str, Any]:
    try:
        db = json.loads((data_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    docs = list(db.get(table, {}).values())
    return dict(docs[0]) if docs else {}


class Aggregator(Child):
    """The aggregator process; its log key is made here so that its verifier key is known."""

    def __init__(self, workdir: Path, broker: str, prefix: str, interval_ms: int,
                 every_blocks: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "aggregator.toml"
        super().__init__("aggregator", lambda: [*PROGRAM, "aggregator", "--config",
                                                str(self.config), "--log-level", "debug"],
                         workdir)
        self.config.write_text(aggregator_config(workdir, broker, prefix, interval_ms,
                                                 every_blocks))
        self.store_path = workdir / "aggregator.db"
        self.signer = Signer.generate(ORIGIN)
        write_signer(workdir / "log.key", self.signer)

    def start_and_wait(self, timeout: float = 30.0) -> None:
        """Start and wait until it is connected and subscribed."""
        self.start()
        self.wait_for("aggregator running", timeout)

    def enroll(self, devices: Sequence[Gateway]) -> None:
        """Enroll the devices' keys in the store (creating the store if new)."""
        store = SqliteStore(self.store_path)
        try:
            for gw in devices:
                store.enroll(gw.device, gw.signer.public_key, wall_ms())
        finally:
            store.close()

    def log_size(self) -> int:
        """Entries in the log, read without writing (0 if the store cannot be read now)."""
        return self._peek("SELECT count(*) FROM entries", ())

    def next_height(self, device: str) -> int:
        """The store's next height for `device` (0 if unknown or unreadable)."""
        return self._peek("SELECT next_height FROM devices WHERE dev = ?", (device,))

    def _peek(self, sql: str, args: tuple[object, ...]) -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.store_path}?mode=ro",
                                                    uri=True, timeout=2)) as db:
                row = db.execute(sql, args).fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0]) if row and row[0] is not None else 0


# --- the cluster -----------------------------------------------------------------------------

class Cluster:
    """N gateways and an aggregator over `broker`; see the module doc. Use it in a `with`."""

    def __init__(self, workdir: Path, broker: Mosquitto, gateways: int = 3,
                 spec: GatewaySpec | None = None, prefix: str = PREFIX,
                 checkpoint_interval_ms: int = 250, every_blocks: int = 64) -> None:
        self.workdir = workdir
        self.broker = broker
        self.prefix = prefix
        self.aggregator = Aggregator(workdir / "aggregator", broker.address, prefix,
                                     checkpoint_interval_ms, every_blocks)
        log_key = self.aggregator.signer.verifier().text()
        self.gateways = [Gateway(f"gw-{i}", workdir, spec or GatewaySpec(), broker.address,
                                 prefix, log_key) for i in range(gateways)]
        self.aggregator.enroll(self.gateways)
        self.tips: dict[str, int | None] = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for child in self.children:
            child.kill()
        print(self.diagnostics())  # captured: pytest shows it when the test fails

    @property
    def children(self) -> list[Child]:
        """Every process the cluster runs."""
        return [*self.gateways, self.aggregator]

    def start(self, timeout: float = 30.0) -> None:
        """Start the aggregator, then every agent; return once each device's blocks arrive."""
        self.aggregator.start_and_wait(timeout)
        for gw in self.gateways:
            gw.start()
        for gw in self.gateways:
            gw.wait_for(" running: ", timeout)
        self.wait(f"a first block from each of {len(self.gateways)} devices",
                  lambda: all(self.aggregator.next_height(g.device) > 0 for g in self.gateways),
                  timeout)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float,
             poll: float = 0.05) -> float:
        """Wait until `predicate()`, or raise naming `what`; the seconds it took."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            for child in self.children:
                if child.proc is not None and child.proc.poll() not in (None, 0, -9):
                    raise AssertionError(f"{child.name} died ({child.proc.returncode}) while "
                                         f"waiting for {what}:\n{child.tail()}")
            time.sleep(poll)
        return time.monotonic() - start

    def wait_growth(self, entries: int, timeout: float) -> int:
        """Wait until the log holds `entries` more entries than now; the new size."""
        target = self.aggregator.log_size() + entries
        self.wait(f"the log to grow to {target} entries", lambda: self.aggregator.log_size()
                  >= target, timeout)
        return self.aggregator.log_size()

    def drain(self, timeout: float = 60.0) -> dict[str, int | None]:
        """Stop the agents cleanly, let each catch up to its tip in drain mode, stop them.

        Returns each device's tip; afterwards every gateway's acked and covered
        heights equal its tip (or AssertionError after `timeout`).
        """
        for gw in self.gateways:
            if gw.running:
                gw.stop()
        self.tips = {gw.device: gw.tip() for gw in self.gateways}
        for gw in self.gateways:
            gw.draining = True
            gw.start()

        def caught_up() -> bool:
            for gw in self.gateways:
                doc = gw.sync_doc()
                if (doc.get("acked"), doc.get("covered")) != (self.tips[gw.device],) * 2:
                    return False
            return True

        try:
            self.wait("every gateway's acked and covered heights to reach its tip "
                      f"{self.tips}", caught_up, timeout)
        except AssertionError as exc:
            got = {gw.device: (gw.sync_doc().get("acked"), gw.sync_doc().get("covered"))
                   for gw in self.gateways}
            raise AssertionError(f"{exc}; (acked, covered) now {got}") from None
        for gw in self.gateways:
            gw.stop()
            gw.draining = False
        after = {gw.device: gw.tip() for gw in self.gateways}
        assert after == self.tips, f"drain mode sealed blocks: tips {self.tips} -> {after}"
        return self.tips

    def stop_aggregator(self) -> None:
        """SIGTERM the aggregator; it must sign its last checkpoint and exit 0."""
        self.aggregator.stop()

    def diagnostics(self, chars: int = 2500) -> str:
        """Where the logs are, and the tails of every child's current log and the broker's."""
        parts = [f"=== cluster in {self.workdir}: every run's stderr is a NAME-N.log there"]
        parts += [f"--- {c.name}: {c.starts} starts, {c.kills} kills; tail of "
                  f"{c.log.name if c.logs else 'nothing'} ---\n{c.tail(chars)}"
                  for c in self.children]
        parts.append(f"--- mosquitto {self.broker.address} ---\n"
                     f"{self.broker.log_text()[-chars:]}")
        return "\n".join(parts)


# --- the checks --------------------------------------------------------------------------------

@dataclass
class Report:
    """What `check_cluster` saw."""

    log_size: int = 0
    blocks: dict[str, int] = field(default_factory=dict)
    """device -> blocks in the store (= its tip + 1)"""
    pruned: dict[str, int] = field(default_factory=dict)
    """device -> heights below its first kept height (gone locally, held by the log)"""
    checkpoints: int = 0
    go_cases: int = 0
    go_consistency: int = 0
    events: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the test output."""
        return (f"log size {self.log_size}, blocks {self.blocks}, pruned {self.pruned}, "
                f"{self.checkpoints} checkpoints ({self.go_consistency} consistency proofs "
                f"checked by Go, {self.go_cases} Go cases), events {self.events}")


def check_cluster(cluster: Cluster, go: Any | None = None) -> Report:
    """Every check of the module doc, on a stopped cluster; AssertionError names the fault.

    `go` is a tests/interop/gosumdb.GoSumdb (or None to skip the Go side).
    """
    for child in cluster.children:
        assert not child.running, f"{child.name} is still running"
        assert not child.tracebacks(), f"{child.name} crashed: see {child.tracebacks()}"
    report = Report()
    store = SqliteStore(cluster.aggregator.store_path)
    try:
        log = CanonicalLog(store, cluster.aggregator.signer)
        report.log_size = store.size()
        entries = _check_entries(store, cluster.gateways)
        for gw in cluster.gateways:
            _check_gateway(gw, store, entries, report)
        assert sum(report.blocks.values()) == report.log_size, \
            f"the log holds {report.log_size} entries, the devices' blocks are {report.blocks}"
        _check_events(store, report)
        chain = _check_checkpoints(store, log, report)
        if go is not None:
            _check_with_go(go, store, log, chain, cluster.aggregator.signer, report)
    finally:
        store.close()
    return report


def _check_entries(store: SqliteStore, gateways: Sequence[Gateway]) -> dict[tuple[str, int],
                                                                            tuple[int, Block]]:
    """Every log entry: a validly signed block of an enrolled device, each (dev, h) once,
    its leaf hash stored where tlog puts it."""
    keys = {gw.device: gw.signer.public_key for gw in gateways}
    seen: dict[tuple[str, int], tuple[int, Block]] = {}
    size = store.size()
    leaves = store.read_hashes([merkle.stored_index(0, i) for i in range(size)])
    assert len(leaves) == size, f"the store holds {len(leaves)} leaf hashes for {size} entries"
    for i, entry in enumerate(store.entries()):
        block = Block.parse(entry, f"log entry {i}")
        dev, h = block.header.dev, block.header.h
        assert dev in keys, f"log entry {i} is a block of {dev!r}, which no gateway is"
        block.verify(keys[dev], f"log entry {i} signature")
        assert (dev, h) not in seen, \
            f"block {dev}/{h} is in the log twice: entries {seen[(dev, h)][0]} and {i}"
        assert leaves[i] == merkle.leaf_hash(entry), f"stored leaf hash of entry {i} is wrong"
        seen[(dev, h)] = (i, block)
    return seen


def _check_gateway(gw: Gateway, store: SqliteStore,
                   entries: dict[tuple[str, int], tuple[int, Block]], report: Report) -> None:
    """The device's chain in the store is exactly 0..tip, in log order, and its local blocks
    (from the first kept height) are the same bytes; the pruned ones are held."""
    dev = gw.device
    ledger = Ledger(gw.data_dir, load_signer(gw.data_dir / "device.key"), gw.spec.segment_bytes)
    try:
        tip = ledger.recover().tip
        first = first_kept_height(ledger)
        rows = store.blocks(dev)
        heights = [h for h, _, _ in rows]
        want = list(range((tip if tip is not None else -1) + 1))
        if heights != want:
            missing = sorted(set(want) - set(heights))[:10]
            extra = sorted(set(heights) - set(want))[:10]
            raise AssertionError(f"{dev}: the store holds {len(heights)} heights, the "
                                 f"gateway's tip is {tip}; missing {missing}, beyond the "
                                 f"tip {extra}")
        indexes = [i for _, _, i in rows]
        assert indexes == sorted(indexes), f"{dev}: log indexes do not increase with height"
        prev = ZERO_HASH
        for h, block_hash, index in rows:
            at, block = entries.get((dev, h), (None, None))
            assert at == index and block is not None, \
                f"{dev}/{h}: store row says log index {index}, the log has it at {at}"
            assert block.hash == block_hash, f"{dev}/{h}: the row's hash is not the entry's"
            assert block.header.prev == prev, f"{dev}/{h}: prev does not link to block {h - 1}"
            prev = block_hash
            if first is not None and h >= first:
                local = ledger.block(h)[0]
                assert local.hash == block_hash and local.cose == block.cose, \
                    f"{dev}/{h}: the gateway's block is not the one in the log"
        report.blocks[dev] = len(rows)
        report.pruned[dev] = first or 0
    finally:
        ledger.close()
    alarms = gw.lines("sync alarm")
    assert gw.counters().get("sync_alarms", 0) == 0 and not alarms, \
        f"{dev} raised {len(alarms)} sync alarms, the first: {alarms[:3]}"
    device = store.device(dev)
    assert device is not None and device.flagged_ms is None, f"{dev} was flagged: {device}"


def _check_events(store: SqliteStore, report: Report) -> None:
    after = 0
    bad: list[str] = []
    while batch := store.events(after, 1000):
        for event in batch:
            report.events[event.kind] = report.events.get(event.kind, 0) + 1
            if event.kind not in ALLOWED_EVENTS:
                bad.append(f"{event.kind} {event.dev}/{event.height}: {event.reason}")
        after = batch[-1].id
    assert not bad, f"the aggregator journalled faults an honest cluster never causes: {bad[:5]}"


def _check_checkpoints(store: SqliteStore, log: CanonicalLog,
                       report: Report) -> list[tuple[str, Checkpoint]]:
    """Heights 0..last, each signed, each extending the one before (prev, consistency)."""
    verifier = log.signer.verifier()
    last_note = store.last_checkpoint()
    assert last_note is not None, "the aggregator signed no checkpoint"
    last = open_checkpoint(last_note, verifier)
    chain: list[tuple[str, Checkpoint]] = []
    for height in range(last.height + 1):
        note = store.checkpoint(height)
        assert note is not None, f"checkpoint {height} is missing (the last is {last.height})"
        cp = open_checkpoint(note, verifier)
        assert cp.height == height, f"checkpoint row {height} holds height {cp.height}"
        assert cp.root == log.root(cp.size), f"checkpoint {height}: root is not the log's"
        if chain:
            old = chain[-1][1]
            assert cp.prev == old.hash, f"checkpoint {height}: prev is not checkpoint " \
                                        f"{height - 1}'s hash"
            proof = log.consistency_proof(old.size, cp.size)
            merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof,
                                      check=f"checkpoints {height - 1} -> {height}")
            check_extends(old, cp, proof)
        else:
            assert cp.prev == ZERO_HASH
        chain.append((note, cp))
    assert last.size == store.size(), \
        f"the last checkpoint covers {last.size} entries of {store.size()} (no final checkpoint)"
    report.checkpoints = len(chain)
    return chain


def _check_with_go(go: Any, store: SqliteStore, log: CanonicalLog,
                   chain: list[tuple[str, Checkpoint]], signer: Signer, report: Report) -> None:
    """Go's note.Open on every checkpoint, tlog.CheckTree on every consecutive pair (sizes
    from 1: tlog has no size-0 tree), tlog.TreeHash over our stored hashes for every size,
    and tlog.ProveTree giving exactly our proofs."""
    from gosumdb import b64  # tests/interop, on sys.path when `go` was built

    vkey = signer.verifier().text()
    size = store.size()
    hashes = store.read_hashes(range(merkle.stored_count(size)))
    cases: list[dict[str, Any]] = []
    for note, cp in chain:
        cases.append({"id": f"open {cp.height}", "op": "open", "note": note, "vkeys": [vkey],
                      "checkpoint": True})
        if cp.size:
            cases.append({"id": f"treehash {cp.height}", "op": "tree_hash", "store": "log",
                          "size": cp.size})
    ours: dict[str, list[bytes]] = {}
    for (_, old), (_, new) in itertools.pairwise(chain):
        if old.size == 0:
            continue  # tlog.CheckTree refuses size 0; ours checked it above
        key = f"{old.height}->{new.height}"
        ours[key] = log.consistency_proof(old.size, new.size)
        cases.append({"id": f"check {key}", "op": "check_tree", "size": new.size,
                      "root": b64(new.root), "old_size": old.size, "old_root": b64(old.root),
                      "proof": [b64(h) for h in ours[key]]})
        cases.append({"id": f"prove {key}", "op": "prove_tree", "store": "log",
                      "size": new.size, "old_size": old.size})
    results = go.run(cases, {"log": hashes})
    refused = [f"{i}: {r.get('error')}" for i, r in results.items() if not r["ok"]]
    assert not refused, f"Go refused: {refused[:5]}"
    for _, cp in chain:
        r = results[f"open {cp.height}"]
        assert r["text"] == cp.text() and r["checkpoint"]["tlog_size"] == cp.size, cp.height
        assert r["checkpoint"]["tlog_root"] == b64(cp.root), cp.height
        if cp.size:
            assert results[f"treehash {cp.height}"]["hash"] == b64(cp.root), cp.height
    for key, proof in ours.items():
        assert results[f"prove {key}"].get("hashes", []) == [b64(h) for h in proof], key
    report.go_cases = len(cases)
    report.go_consistency = len(ours)


__all__ = ["COUNTER", "HEAVY", "Aggregator", "Child", "Cluster", "Gateway", "GatewaySpec",
           "Report", "SimSensor", "check_cluster"]
