"""The aggregator processes this benchmark runs, and the PostgreSQL processes it watches.

Theory of operation. Every server here is the real `edgeledger aggregator --config FILE`
process, started and stopped (SIGTERM, exit 0) by benchmarks.sync.procs.Aggregator,
whose constructor writes a TOML for a fresh SQLite store and enrolls devices there;
the subclasses below then replace that TOML with their own:

- `ServingAggregator`: the SQLite aggregator over a store built by store.py, with the
  log key that signed its checkpoint, serving the HTTP API on its uvicorn thread
  (edgeledger/aggregator/api/serve.py) while its ingest loop idles (no gateway
  connects). That is how the API runs in production: one process.
- `PgAggregator`: one process of the PostgreSQL cluster (aggregator/cluster/): an
  ingest worker and a sequencer candidate on a shared schema, as
  docs/aggregator-postgres.md ("Benchmark hook") describes.

PostgreSQL does part of the work in its own processes: the backend serving each of
our connections (found by matching our sockets' ports to pg_stat_activity) and the
server's shared helpers (WAL writer, checkpointer, background writer), whose CPU we
sample too.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.sync.fleet import device_id, device_signer
from benchmarks.sync.procs import LOOPBACK, Aggregator, Broker, free_port
from edgeledger.aggregator.store.postgres import PostgresStore
from edgeledger.core.note import Signer
from edgeledger.keyfile import write_signer

MAX_SKEW_MS = 604_800_000  # blocks are signed before timing: accept any age


def _common(origin: str, key_file: Path, broker: Broker, prefix: str, client_id: str,
            interval_ms: int, every_blocks: int, port: int) -> str:
    return f"""
[checkpoint]
interval_ms = {interval_ms}
every_blocks = {every_blocks}

[broker]
address = "{broker.address}"
prefix = "{prefix}"
client_id = "{client_id}"

[http]
listen = "{LOOPBACK}:{port}"

[aggregator]
origin = "{origin}"
key_file = "{key_file}"
max_skew_ms = {MAX_SKEW_MS}
"""


def write_key(path: Path, signer: Signer) -> Path:
    """`signer` in a key file at `path` (mode 0600), unless it is already there."""
    if not path.exists():
        write_signer(path, signer)
    return path


class ServingAggregator(Aggregator):
    """The real SQLite aggregator over an existing store, serving the HTTP API on `url`."""

    def __init__(self, workdir: Path, broker: Broker, prefix: str, store: Path,
                 signer: Signer) -> None:
        super().__init__(workdir, broker, prefix, 0, 1000, 1000)
        self.port = free_port()
        key = write_key(workdir / "log.key", signer)
        self.config.write_text(_common(signer.name, key, broker, prefix, self.client_id, 1000,
                                       1000, self.port) + f'\n[store]\npath = "{store}"\n')

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """The process id (once started)."""
        if self.proc is None:
            raise RuntimeError("the aggregator is not running")
        return self.proc.pid


class PgAggregator(Aggregator):
    """One process of the PostgreSQL cluster (worker + sequencer candidate) on `schema`."""

    def __init__(self, workdir: Path, broker: Broker, prefix: str, dsn: str, schema: str,
                 key_file: Path, signer: Signer, interval_ms: int, every_blocks: int,
                 port: int) -> None:
        super().__init__(workdir, broker, prefix, 0, interval_ms, every_blocks)
        self.config.write_text(
            _common(signer.name, key_file, broker, prefix, self.client_id, interval_ms,
                    every_blocks, port) +
            f'\n[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n')

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Until the process logs a line containing `text`."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the aggregator never logged {text!r}:\n" +
                                 "\n".join(self.lines[-20:]))
            time.sleep(0.02)


# --- PostgreSQL ----------------------------------------------------------------------


def pg_reason(dsn: str) -> str | None:
    """Why PostgreSQL at `dsn` cannot be used (None: it answers)."""
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def pg_settings(dsn: str) -> dict[str, str]:
    """The server's version and the settings that decide commit cost."""
    names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
             "full_page_writes", "shared_buffers", "commit_delay")
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            out[n] = "?" if row is None else str(row[0])
    return out


def enroll_pg(dsn: str, schema: str, devices: int) -> None:
    """Create `schema` (the store's tables) and enroll the simulated devices."""
    store = PostgresStore(dsn, schema)
    try:
        now = time.time_ns() // 1_000_000
        with store.transaction():
            for i in range(devices):
                store.enroll(device_id(i), device_signer(i).public_key, now)
    finally:
        store.close()


def drop_schema(dsn: str, schema: str) -> None:
    """DROP SCHEMA ... CASCADE (our per-run schema and everything in it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _socket_ports(pid: int, remote_port: int) -> set[int]:
    """Local TCP ports of process `pid`'s sockets connected to `remote_port`."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def pg_backends(dsn: str, pids: dict[str, int], server_port: int = 5432) -> dict[str, int]:
    """{"pg-<name>-<k>": backend pid} of the connections of our processes `pids`."""
    by_port = {port: name for name, pid in pids.items()
               for port in _socket_ports(pid, server_port)}
    if not by_port:
        return {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pid, client_port FROM pg_stat_activity WHERE client_port "
                            "= ANY(%s) ORDER BY pid", (list(by_port),)).fetchall()
    out: dict[str, int] = {}
    for pid, port in rows:  # pg-<name>-<k>: k counts that process's connections
        name = by_port[port]
        out[f"pg-{name}-{sum(key.startswith(f'pg-{name}-') for key in out)}"] = int(pid)
    return out


def pg_helpers() -> dict[str, int]:
    """{"pgaux-<role>": pid} of the server's WAL writer, checkpointer and background writer."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for role in ("walwriter", "checkpointer", "background writer"):
                if cmd.startswith("postgres: ") and cmd.rstrip().endswith(role):
                    out[f"pgaux-{role.replace(' ', '-')}"] = int(entry)
    return out
