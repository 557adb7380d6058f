"""The PostgreSQL keys of `[store]` and the `[cluster]` table of an aggregator file.

    [store]    backend = "postgres", dsn | host, port, dbname, user; password_file,
               schema, connect_timeout_s
    [cluster]  group, failover_ms, poll_ms, hold_ms, max_batch

Read by edgeledger/aggregator/config.py with the same rules as every other key
(`<file>: <dotted key>: <reason>`, unknown keys are errors). The password is never
in the file: `password_file` (like the broker's), or libpq's own PGPASSFILE,
~/.pgpass or PGPASSWORD; a `dsn` holding one is refused. Nothing here imports
psycopg at module level, so `edgeledger check-config` runs on a gateway without
the aggregator extra; opening the store does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeledger.configtable import ConfigTable
from edgeledger.core.errors import ConfigError

if TYPE_CHECKING:
    from edgeledger.aggregator.store.postgres import PostgresStore

POSTGRES_KEYS = ("dsn", "host", "port", "dbname", "user", "password_file", "schema",
                 "connect_timeout_s")
HOST_RE = re.compile(r"[A-Za-z0-9._:-]{1,253}|/[^\s,]{0,4095}")
NAME_RE = re.compile(r"[^\s'\\=]{1,63}")
SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
GROUP_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
EXTRA_HINT = "pip install 'edgeledger[aggregator]'"


@dataclass(frozen=True)
class PostgresConfig:
    """[store] with backend "postgres": how to reach the database, and which schema."""

    dsn: str = ""
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password_file: Path | None = None
    schema: str = "edgeledger"
    connect_timeout_s: int = 5

    def where(self) -> str:
        """How errors name this store (never with a password)."""
        target = self.dsn or "/".join(x for x in (self.host or "", self.dbname or "") if x)
        return f"postgres {target or '(libpq defaults)'} schema {self.schema}"

    def conninfo(self, application: str, failover_ms: int = 5000) -> str:
        """The libpq connection string, with the password read from `password_file` now.

        TCP keepalives and `tcp_user_timeout` on our side too, so that a server host
        that vanished is noticed within about `failover_ms`, not after the kernel's
        two hours."""
        from psycopg.conninfo import make_conninfo

        password = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text().splitlines()[0]
            except (OSError, UnicodeDecodeError, IndexError) as exc:
                raise ConfigError(str(self.password_file), None,
                                  f"cannot read the PostgreSQL password: {exc}") from exc
        params = {"host": self.host, "port": self.port, "dbname": self.dbname,
                  "user": self.user, "password": password}
        probe = max(1, failover_ms // 3000)
        return make_conninfo(self.dsn, connect_timeout=self.connect_timeout_s,
                             application_name=application, keepalives=1,
                             keepalives_idle=probe, keepalives_interval=probe,
                             keepalives_count=3, tcp_user_timeout=failover_ms,
                             **{k: v for k, v in params.items() if v is not None})


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: the ingest workers and the sequencer on the postgres backend.

    `group` is the MQTT shared-subscription group of the workers. `failover_ms`
    bounds how long a sequencer that froze or lost its host keeps the role (its
    session is ended by the server, which frees the lock). Candidates try for the
    role every `poll_ms`. A block ahead of its device's next height is held
    `hold_ms` for its predecessor before it is answered `gap`. The sequencer
    appends at most `max_batch` queued blocks per transaction.
    """

    group: str = "edgeledger"
    failover_ms: int = 5000
    poll_ms: int = 500
    hold_ms: int = 1000
    max_batch: int = 2000


def read_postgres(t: ConfigTable) -> PostgresConfig:
    """The postgres keys of a [store] table whose backend is "postgres"."""
    d = PostgresConfig()
    if t.has("path"):
        t.seen.add("path")
        t.fail("path", "only for backend 'sqlite'; PostgreSQL is reached through dsn or "
                       "host/port/dbname/user")
    dsn = t.text("dsn", "", what="a libpq connection string or postgresql:// URI")
    host = t.optional_text("host", HOST_RE, what="a host name, address or socket directory")
    port = t.optional_integer("port", 1, 65535)
    dbname = t.optional_text("dbname", NAME_RE, what="a database name")
    user = t.optional_text("user", NAME_RE, what="a user name")
    password_file = t.file_path("password_file") if t.has("password_file") else None
    schema = t.text("schema", d.schema, SCHEMA_RE, what="a schema name [a-z_][a-z0-9_]{0,62}")
    timeout = t.integer("connect_timeout_s", 2, 300, d.connect_timeout_s, " (s)")
    if dsn and any(x is not None for x in (host, port, dbname, user)):
        t.fail("dsn", "give either dsn or host/port/dbname/user, not both")
    if dsn:
        _check_dsn(t, dsn)
    return PostgresConfig(dsn, host, port, dbname, user, password_file, schema, timeout)


def refuse_postgres_keys(t: ConfigTable, backend: str) -> None:
    """PostgreSQL keys in a [store] of another backend are mistakes: say so."""
    for key in POSTGRES_KEYS:
        if t.has(key):
            t.seen.add(key)
            t.fail(key, f"only for backend 'postgres' (backend is {backend!r})")


def _check_dsn(t: ConfigTable, dsn: str) -> None:
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        t.note("dsn", f"not checked: psycopg is not installed here ({EXTRA_HINT})")
        return
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        t.fail("dsn", f"not a libpq connection string: {' '.join(str(exc).split())}")
        return
    if "password" in params:
        t.fail("dsn", "holds a password; keep it out of this file (store.password_file, "
                      "PGPASSFILE or ~/.pgpass)")


def read_cluster(t: ConfigTable | None) -> ClusterConfig:
    """[cluster], defaults when absent."""
    d = ClusterConfig()
    if t is None:
        return d
    cfg = ClusterConfig(t.text("group", d.group, GROUP_RE, what="[A-Za-z0-9._-]{1,64}"),
                        t.integer("failover_ms", 1000, 600_000, d.failover_ms, " (ms)"),
                        t.integer("poll_ms", 20, 60_000, d.poll_ms, " (ms)"),
                        t.integer("hold_ms", 0, 60_000, d.hold_ms, " (ms)"),
                        t.integer("max_batch", 1, 100_000, d.max_batch))
    if cfg.poll_ms >= cfg.failover_ms:
        t.fail("poll_ms", f"must be below failover_ms ({cfg.failover_ms})")
    t.done()
    return cfg


def open_postgres_store(pg: PostgresConfig, cluster: ClusterConfig,
                        application: str = "edgeledger-aggregator",
                        settings: dict[str, str] | None = None,
                        read_only: bool = False, create: bool = True) -> PostgresStore:
    """Connect to the configured store (creating or migrating its schema unless `create`
    is False); ConfigError if psycopg is missing, the server cannot be reached, or the
    schema is not ours (or, without `create`, not there)."""
    try:
        from edgeledger.aggregator.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(pg.where(), "store.backend", f"the postgres backend needs psycopg: "
                                                       f"{EXTRA_HINT}") from exc
    return PostgresStore(pg.conninfo(application, cluster.failover_ms), pg.schema,
                         where=pg.where(),
                         failover_ms=cluster.failover_ms, settings=settings,
                         read_only=read_only, create=create)
