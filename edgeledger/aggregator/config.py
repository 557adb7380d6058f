"""Aggregator configuration: one TOML file, read and validated once, at start-up.

Theory of operation. The same reader as the agent's (edgeledger/configtable.py):
every fault is `<file>: <dotted key>: <reason>`, all faults of a file are collected
in one pass, and an unknown key is an error. A file is an aggregator file when it
has an `[aggregator]` table; `edgeledger check-config` dispatches on that.

    [aggregator]  origin, key_file, max_skew_ms
    [store]       backend ("sqlite" or "postgres"), path (sqlite); dsn or host, port,
                  dbname, user, password_file, schema, connect_timeout_s (postgres)
    [checkpoint]  interval_ms, every_blocks
    [broker]      address, prefix, client_id, username, password_file,
                  mqtt_version, keepalive_s, [broker.tls] ca_file, cert_file, key_file
    [http]        listen
    [cluster]     group, failover_ms, poll_ms, hold_ms, max_batch (postgres only)

The postgres keys and [cluster] are read by edgeledger/aggregator/pgconfig.py.

Files that may live on another machine than the one running check-config (a
password file, TLS material) are notes when absent, errors when present but unfit.
The log key may be absent: the aggregator creates it on first start
(`load_or_create_log_signer`), named after `origin`, like the agent's device key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeledger.aggregator.ingest import IngestPolicy
from edgeledger.aggregator.pgconfig import (
    ClusterConfig,
    PostgresConfig,
    open_postgres_store,
    read_cluster,
    read_postgres,
    refuse_postgres_keys,
)
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.configtable import ConfigTable
from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer, valid_name
from edgeledger.keyfile import load_signer, write_signer
from edgeledger.sync.topics import DEFAULT_PREFIX, MAX_PREFIX, valid_prefix

if TYPE_CHECKING:
    from edgeledger.aggregator.store.postgres import PostgresStore

DAY_MS = 86_400_000
BACKENDS = ("sqlite", "postgres")
AVAILABLE_BACKENDS = ("sqlite", "postgres")
MQTT_VERSIONS = ("3.1.1", "5")
DEFAULT_STORE = Path("/var/lib/edgeledger-aggregator/aggregator.db")
DEFAULT_LISTEN = "127.0.0.1:8080"
ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
ADDRESS_WHAT = "HOST:PORT (an IPv6 host in brackets)"
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
USERNAME_RE = re.compile(r"[^\s#+/]{1,128}")


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where the canonical log and the device table live."""

    backend: str = "sqlite"
    path: Path = DEFAULT_STORE
    postgres: PostgresConfig | None = None
    """Set exactly when `backend` is "postgres"."""


@dataclass(frozen=True)
class CheckpointConfig:
    """[checkpoint]: sign a checkpoint after `interval_ms` or `every_blocks` new entries,
    whichever comes first, and only when the log has grown."""

    interval_ms: int = 1000
    every_blocks: int = 1000


@dataclass(frozen=True)
class TlsConfig:
    """[broker.tls]: the CA that signed the broker's certificate, and our own if any."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class BrokerConfig:
    """[broker]: the MQTT broker the gateways publish to."""

    host: str
    port: int
    prefix: str = DEFAULT_PREFIX
    client_id: str = "edgeledger-aggregator"
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    mqtt_version: str = "3.1.1"
    """3.1.1 by default: everything sync needs, and paho handles each message ~10% faster
    than with MQTT 5's properties (benchmarks/sync); "5" for session expiry."""
    keepalive_s: int = 30

    def password(self) -> str | None:
        """The password: the first line of `password_file` (read now, never kept in config)."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(self.password_file), None,
                              f"cannot read the broker password file: {exc}") from exc
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ConfigError(str(self.password_file), None, "the first line is empty; it "
                                                             "must hold the broker password")
        return lines[0]


@dataclass(frozen=True)
class HttpConfig:
    """[http]: where the HTTP API listens."""

    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class AggregatorConfig:
    """A whole, valid aggregator configuration."""

    path: Path
    origin: str
    key_file: Path
    max_skew_ms: int
    store: StoreConfig
    checkpoint: CheckpointConfig
    broker: BrokerConfig
    http: HttpConfig
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def ingest_policy(self) -> IngestPolicy:
        """What ingest enforces: blocks further than `max_skew_ms` ahead of the receive
        time are flagged (0 is taken as 1 ms: the policy needs a positive bound)."""
        return IngestPolicy(max_ahead_ms=max(1, self.max_skew_ms))


@dataclass(frozen=True)
class AggregatorConfigResult:
    """What reading a file found: the configuration (None on any error), errors, notes."""

    config: AggregatorConfig | None
    errors: list[ConfigError]
    notes: list[ConfigError]


# --- sections ------------------------------------------------------------------------

def _address(t: ConfigTable, key: str, default: str | None) -> tuple[str, int]:
    text = t.text(key, default, ADDRESS_RE, what=ADDRESS_WHAT)
    match = ADDRESS_RE.fullmatch(text)
    if match is None:
        return "", 0
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if not 1 <= port <= 65535:
        t.fail(key, f"port {port} is out of range; must be 1 to 65535")
    return host, port


def _aggregator(t: ConfigTable) -> tuple[str, Path, int]:
    origin = t.text("origin", what="a log origin (no spaces or '+', e.g. example.com/log)")
    if origin and not valid_name(origin):
        t.fail("origin", f"{origin!r} is not a log origin (non-empty, no spaces or '+')")
    # Absent is fine, not even a note: the aggregator creates the key on first start.
    key_text = t.text("key_file", what="a file path")
    if t.has("key_file") and key_text == "":
        t.fail("key_file", "must not be empty")
    key_file = Path(key_text or ".")
    if key_text and key_file.exists() and origin:
        _check_log_key(t, key_file, origin)
    skew = t.integer("max_skew_ms", 0, 7 * DAY_MS, 300_000, " (ms)")
    t.done()
    return origin, key_file, skew


def _check_log_key(t: ConfigTable, key_file: Path, origin: str) -> None:
    try:
        signer = load_signer(key_file)
    except ConfigError as exc:
        t.fail("key_file", exc.reason)
        return
    if signer.name != origin:
        t.fail("key_file", f"{key_file} holds the key named {signer.name!r}; the log key's "
                           f"name must be the origin {origin!r}")


def _store(t: ConfigTable | None) -> StoreConfig:
    if t is None:
        return StoreConfig()
    backend = t.text("backend", "sqlite", choices=BACKENDS)
    if backend in BACKENDS and backend not in AVAILABLE_BACKENDS:
        t.fail("backend", f"{backend!r} is not available in this version of edgeledger; "
                          "use 'sqlite'")
    if backend == "postgres":
        postgres = read_postgres(t)
        t.done()
        return StoreConfig(backend, DEFAULT_STORE, postgres)
    refuse_postgres_keys(t, backend)
    path = t.text("path", str(DEFAULT_STORE), what="a file path")
    if path == "":
        t.fail("path", "must not be empty")
    t.done()
    return StoreConfig(backend, Path(path or DEFAULT_STORE))


def _checkpoint(t: ConfigTable | None) -> CheckpointConfig:
    if t is None:
        return CheckpointConfig()
    d = CheckpointConfig()
    cfg = CheckpointConfig(t.integer("interval_ms", 10, DAY_MS, d.interval_ms, " (ms)"),
                           t.integer("every_blocks", 1, 10_000_000, d.every_blocks))
    t.done()
    return cfg


def _tls(t: ConfigTable | None) -> TlsConfig | None:
    if t is None:
        return None
    ca = t.file_path("ca_file")
    cert = t.file_path("cert_file") if t.has("cert_file") else None
    key = t.file_path("key_file") if t.has("key_file") else None
    if (cert is None) != (key is None):
        t.fail("cert_file" if cert is None else "key_file",
               "cert_file and key_file go together (a client certificate and its key)")
    t.done()
    return TlsConfig(ca, cert, key)


def _broker(t: ConfigTable) -> BrokerConfig:
    d = BrokerConfig("", 0)
    host, port = _address(t, "address", None)
    prefix = t.text("prefix", DEFAULT_PREFIX, what=f"an MQTT topic prefix: 1..{MAX_PREFIX} "
                    "characters of levels [A-Za-z0-9._-]+ joined by '/'")
    if not valid_prefix(prefix):
        t.fail("prefix", f"{prefix!r} is not an MQTT topic prefix (1..{MAX_PREFIX} characters "
                         "of levels [A-Za-z0-9._-]+ joined by '/', no wildcards)")
    client_id = t.text("client_id", d.client_id, CLIENT_ID_RE, what="[A-Za-z0-9._-]{1,64}")
    username = t.optional_text("username", USERNAME_RE, what="an MQTT user name (no spaces, "
                                                             "'#', '+' or '/')")
    password_file = None
    if t.has("password_file"):
        password_file = t.file_path("password_file", missing="does not exist on this machine")
        _check_secret(t, "password_file", password_file)
        if username is None:
            t.fail("password_file", "a password needs a user name: set broker.username")
    version = t.text("mqtt_version", d.mqtt_version, choices=MQTT_VERSIONS)
    keepalive = t.integer("keepalive_s", 5, 3600, d.keepalive_s, " (s)")
    tls = _tls(t.table("tls"))
    t.done()
    return BrokerConfig(host, port, prefix, client_id, username, password_file, tls,
                        version, keepalive)


def _check_secret(t: ConfigTable, key: str, path: Path) -> None:
    """A secret file may be shared with a group (root:edgeledger 0640), never with others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IRWXO:
        t.fail(key, f"{path} has mode {stat.S_IMODE(mode):04o}; others must not read a "
                    f"secret (chmod 600 {path})")


def _http(t: ConfigTable | None) -> HttpConfig:
    if t is None:
        return HttpConfig()
    host, port = _address(t, "listen", DEFAULT_LISTEN)
    t.done()
    return HttpConfig(host, port)


# --- loading -------------------------------------------------------------------------

def is_aggregator_file(path: Path) -> bool:
    """Whether `path` is TOML with an [aggregator] table (else it is read as an agent file)."""
    try:
        with open(path, "rb") as f:
            return isinstance(tomllib.load(f).get("aggregator"), dict)
    except (OSError, tomllib.TOMLDecodeError):
        return False


def read_aggregator_config(path: Path) -> AggregatorConfigResult:
    """Read and validate an aggregator TOML file, keeping notes apart from errors."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        return AggregatorConfigResult(None, [ConfigError(str(path), None,
                                                         f"cannot read: {exc.strerror}")], [])
    except tomllib.TOMLDecodeError as exc:
        return AggregatorConfigResult(None, [ConfigError(str(path), None,
                                                         f"not valid TOML: {exc}")], [])
    errors: list[ConfigError] = []
    notes: list[ConfigError] = []
    root = ConfigTable(path, "", data, errors, notes)
    agg = root.table("aggregator", required=True)
    origin, key_file, skew = _aggregator(agg) if agg else ("", Path(), 0)
    store = _store(root.table("store"))
    checkpoint = _checkpoint(root.table("checkpoint"))
    broker_table = root.table("broker", required=True)
    broker = _broker(broker_table) if broker_table else None
    http = _http(root.table("http"))
    cluster_table = root.table("cluster")
    if cluster_table is not None and store.backend != "postgres":
        cluster_table.note(None, "only used with store.backend = 'postgres'")
    cluster = read_cluster(cluster_table)
    root.done()
    if errors or broker is None:
        return AggregatorConfigResult(None, errors, notes)
    config = AggregatorConfig(path, origin, key_file, skew, store, checkpoint, broker, http,
                              cluster)
    return AggregatorConfigResult(config, [], notes)


def load_aggregator_config(path: Path) -> AggregatorConfig:
    """The validated configuration; raises the first ConfigError found."""
    result = read_aggregator_config(path)
    if result.config is None:
        raise result.errors[0]
    return result.config


# --- what the configuration names ----------------------------------------------------

def load_or_create_log_signer(config: AggregatorConfig) -> Signer:
    """The log's signer key from `key_file`, created (mode 0600) if absent.

    Its name must be the origin: checkpoints are signed notes whose signature line
    names the key, and `/v1/log` publishes the verifier key under that name.
    """
    if not config.key_file.exists():
        write_signer(config.key_file, Signer.generate(config.origin))
    signer = load_signer(config.key_file)
    if signer.name != config.origin:
        raise ConfigError(str(config.path), "aggregator.key_file",
                          f"{config.key_file} holds the key named {signer.name!r}; the log "
                          f"key's name must be the origin {config.origin!r}")
    return signer


def open_store(config: AggregatorConfig) -> SqliteStore:
    """Open (creating if new) the configured SQLite store; its directory is made 0700 if absent.

    The postgres backend is opened with `pgconfig.open_postgres_store`.
    """
    if config.store.postgres is not None:
        raise ConfigError(str(config.path), "store.backend",
                          "this command works on the 'sqlite' backend only, for now")
    path = config.store.path
    if not path.parent.exists():
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(str(config.path), "store.path",
                              f"cannot create {path.parent}: {exc.strerror}") from exc
    return SqliteStore(path)


def open_any_store(config: AggregatorConfig) -> SqliteStore | PostgresStore:
    """The configured store, whichever the backend (for enroll, revoke, devices)."""
    if config.store.postgres is not None:
        return open_postgres_store(config.store.postgres, config.cluster, "edgeledger-cli")
    return open_store(config)
