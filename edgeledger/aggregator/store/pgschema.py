"""The PostgreSQL store's schema, connections and session settings.

Theory of operation. One PostgreSQL schema (`[store] schema`, default
`edgeledger`) holds one aggregator's tables: the same log, checkpoints, devices,
blocks, evidence, events, readings and sensors as the SQLite file, plus what only
a cluster needs: `log_head` (the log's size in one row, the fork guard), `counters`
(event ids handed out in commit order), `queue` (blocks verified by workers,
waiting for the sequencer), `requests` (hellos and drop records, which the
sequencer answers) and `sequencer_terms` (who was elected when).
`drops` keeps the DROP records devices forwarded and `device_keys` every key a
device has had, as in SQLite.
`meta` names the schema as ours and its version: a schema holding other tables is
refused, a newer version is refused, an older one is migrated. Creation and
migration run under a transaction-level advisory lock, so processes starting
together do it once.

Every connection sets what makes failures visible quickly (`session_settings`):
`idle_in_transaction_session_timeout` (a process frozen inside a transaction loses
its locks), TCP keepalives and `tcp_user_timeout` on both ends (a dead host or a
cut link is noticed), and `synchronous_commit` at least `on` (a COMMIT that
returned is flushed, so an ack may follow it). The sequencer's connection also
sets `idle_session_timeout` (sequencer.py says why).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import psycopg
from psycopg import sql

from edgeledger.core.errors import ConfigError, EdgeLedgerError

SCHEMA_VERSION = 1
"""`meta.schema_version` this code writes; older schemas are migrated, newer refused."""
SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SCHEMA_WHAT = "a PostgreSQL schema name [a-z_][a-z0-9_]{0,62}"
QUEUE_CHANNEL = "edgeledger_queue"
"""NOTIFY channel workers wake the sequencer on; the payload is the schema name."""

Conn = psycopg.Connection[tuple[Any, ...]]

_TABLES = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE log_head (one boolean PRIMARY KEY DEFAULT true CHECK (one),
                       size bigint NOT NULL CHECK (size >= 0));
CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE entries (idx bigint PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE hashes (pos bigint PRIMARY KEY, hash bytea NOT NULL);
CREATE TABLE checkpoints (height bigint PRIMARY KEY, size bigint NOT NULL,
                          note text NOT NULL);
CREATE TABLE devices (dev text COLLATE "C" PRIMARY KEY, public_key bytea NOT NULL,
                      enrolled_ms bigint NOT NULL, revoked_ms bigint, flagged_ms bigint,
                      next_height bigint NOT NULL DEFAULT 0, prev bytea NOT NULL);
CREATE TABLE blocks (dev text COLLATE "C" NOT NULL REFERENCES devices(dev),
                     height bigint NOT NULL, hash bytea NOT NULL,
                     log_index bigint NOT NULL UNIQUE REFERENCES entries(idx),
                     t0 bigint, t1 bigint, span integer, PRIMARY KEY (dev, height));
CREATE INDEX blocks_dev_time ON blocks (dev, span, t0, log_index) WHERE span IS NOT NULL;
CREATE INDEX blocks_time ON blocks (span, t0, log_index) WHERE span IS NOT NULL;
CREATE TABLE equivocations (id bigserial PRIMARY KEY,
                            dev text COLLATE "C" NOT NULL REFERENCES devices(dev),
                            height bigint NOT NULL, hash bytea NOT NULL, block bytea NOT NULL,
                            time_ms bigint NOT NULL, UNIQUE (dev, height, hash));
CREATE TABLE events (id bigint PRIMARY KEY, time_ms bigint NOT NULL, kind text NOT NULL,
                     dev text COLLATE "C", height bigint, reason text NOT NULL);
CREATE INDEX events_kind ON events (kind, id);
CREATE INDEX events_dev ON events (dev, id);
CREATE TABLE readings (log_index bigint PRIMARY KEY REFERENCES entries(idx),
                       data bytea NOT NULL);
CREATE TABLE sensors (dev text COLLATE "C" NOT NULL REFERENCES devices(dev),
                      sensor text NOT NULL, last_q bigint NOT NULL, PRIMARY KEY (dev, sensor));
CREATE TABLE queue (id bigserial PRIMARY KEY, received_ms bigint NOT NULL,
                    worker text NOT NULL, dev text COLLATE "C" NOT NULL,
                    height bigint NOT NULL, hash bytea NOT NULL, prev bytea NOT NULL,
                    entry bytea NOT NULL, readings bytea NOT NULL, key bytea NOT NULL,
                    ts bigint NOT NULL, t0 bigint NOT NULL, t1 bigint NOT NULL,
                    runs text NOT NULL, fault text NOT NULL);
CREATE TABLE requests (id bigserial PRIMARY KEY, received_ms bigint NOT NULL,
                       dev text COLLATE "C" NOT NULL, kind text NOT NULL,
                       payload bytea NOT NULL);
CREATE TABLE device_keys (dev text COLLATE "C" NOT NULL REFERENCES devices(dev),
                          from_height bigint NOT NULL, public_key bytea NOT NULL,
                          enrolled_ms bigint NOT NULL, PRIMARY KEY (dev, from_height));
CREATE TABLE drops (id bigserial PRIMARY KEY, dev text COLLATE "C" NOT NULL
                    REFERENCES devices(dev), h0 bigint NOT NULL, h1 bigint NOT NULL,
                    record bytea NOT NULL, time_ms bigint NOT NULL);
CREATE TABLE sequencer_terms (term bigserial PRIMARY KEY, holder text NOT NULL,
                              since_ms bigint NOT NULL);
INSERT INTO log_head (size) VALUES (0);
INSERT INTO counters (name, value) VALUES ('events', 0);
"""
_MIGRATIONS: dict[int, str] = {}
"""From schema_version N to N + 1."""


def lock_key(schema: str, purpose: str) -> int:
    """A signed 64-bit advisory lock key for `purpose` in `schema` (a hash: no collisions
    between the schemas of one database in practice)."""
    digest = hashlib.sha256(f"edgeledger:{schema}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def session_settings(failover_ms: int) -> dict[str, str]:
    """The per-session settings of every store connection (see the module doc)."""
    seconds = max(1, failover_ms // 3000)
    return {"idle_in_transaction_session_timeout": f"{failover_ms}ms",
            "tcp_keepalives_idle": str(seconds), "tcp_keepalives_interval": str(seconds),
            "tcp_keepalives_count": "3", "tcp_user_timeout": f"{failover_ms}ms"}


_REFUSALS = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied",
             "no password supplied", "password is required")
"""libpq's words for a server that answered no (connect fails with no SQLSTATE): retrying
will not help. Anything else (refused connection, timeout, starting up, too many
clients) may pass."""


class StoreFault(EdgeLedgerError):
    """The database failed a store call; `lost` when the connection itself is gone (or
    the server could not be reached): the caller may reconnect and try again."""

    def __init__(self, message: str, lost: bool) -> None:
        super().__init__(message)
        self.lost = lost


def connect(conninfo: str, where: str, schema: str, settings: dict[str, str],
            read_only: bool = False, create: bool = True) -> Conn:
    """An autocommit connection with `settings` applied and `schema` first on the path.

    A server that does not answer is a StoreFault (`lost`: try again later); one that
    answers with a refusal (authentication, no such database, privileges) is a
    ConfigError naming `where`: retrying will not help. `read_only` (the HTTP API's
    readers) changes no schema and refuses writes: the schema must exist, current.
    `create=False` (every reconnect after a process's first open) requires the schema
    too: a schema that vanished under a running process (dropped, a restore) is a
    fault, never re-created empty, which would let its sequencer sign a second chain.
    """
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        text = _one_line(exc)
        if any(refusal in text for refusal in _REFUSALS):
            raise ConfigError(where, None, f"PostgreSQL refused us: {text}") from exc
        raise StoreFault(f"{where}: cannot reach PostgreSQL: {text}", True) from exc
    except psycopg.Error as exc:
        raise ConfigError(where, None, f"cannot connect to PostgreSQL: {_one_line(exc)}") from exc
    try:
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        if conn.execute("SHOW synchronous_commit").fetchone() in (("off",), ("local",)):
            conn.execute("SET synchronous_commit = on")
        if read_only or not create:
            _check_current(conn, schema, where)
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        elif create:
            prepare_schema(conn, schema, where)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    except BaseException:
        conn.close()
        raise
    return conn


def prepare_schema(conn: Conn, schema: str, where: str) -> None:
    """Create `schema` and its tables if new, migrate them if older; refuse foreign or newer."""
    if not SCHEMA_RE.fullmatch(schema):
        raise ConfigError(where, "store.schema", f"{schema!r} is not {SCHEMA_WHAT}")
    ident = sql.Identifier(schema)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema, "schema"),))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            version = _version(conn, schema, where)
            if version == 0:
                conn.execute(_TABLES)
                conn.execute("INSERT INTO meta (key, value) VALUES ('application', 'edgeledger'),"
                             " ('schema_version', %s)", (str(SCHEMA_VERSION),))
                version = SCHEMA_VERSION
            for old in range(version, SCHEMA_VERSION):
                conn.execute(_MIGRATIONS[old])
                conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                             (str(old + 1),))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(where, "store.schema", f"cannot create or use schema {schema!r}: "
                                                 f"{_one_line(exc)}") from exc


def _check_current(conn: Conn, schema: str, where: str) -> None:
    """A reader's check: `schema` holds a current EdgeLedger store."""
    if not SCHEMA_RE.fullmatch(schema):
        raise ConfigError(where, "store.schema", f"{schema!r} is not {SCHEMA_WHAT}")
    version = _version(conn, schema, where)
    if version != SCHEMA_VERSION:
        raise ConfigError(where, "store.schema", f"schema {schema!r} holds no current "
                                                 f"EdgeLedger store (version {version}); "
                                                 "start the aggregator first")


def _version(conn: Conn, schema: str, where: str) -> int:
    """The schema's version, 0 when it is empty; ConfigError when it is not ours or newer."""
    tables = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
    if not tables:
        return 0
    meta: dict[str, str] = {}
    if "meta" in tables:
        meta = dict(conn.execute(sql.SQL("SELECT key, value FROM {}.meta").format(
            sql.Identifier(schema))).fetchall())
    if meta.get("application") != "edgeledger":
        raise ConfigError(where, "store.schema", f"schema {schema!r} is not an EdgeLedger store "
                                                 f"({len(tables)} tables, no EdgeLedger meta)")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise ConfigError(where, "store.schema", f"store schema version {version} is newer than "
                                                 f"this program's {SCHEMA_VERSION}; upgrade it")
    return version


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
