"""Agent configuration: one TOML file, read and validated once, at start-up.

Theory of operation. Every value is read through a `ConfigTable`
(edgeledger/configtable.py) that knows the file
and the dotted key it stands for, so a fault is reported as
`<file>: <dotted key>: <reason>` (a ConfigError) and never as a KeyError or
TypeError later on. A table reports the keys it did not consume as unknown: a
misspelt key is an error, not a silently ignored default. All faults of a file
are collected, so `edgeledger check-config` shows them in one go.

The schema grows by sections and by sensor types: `[[sensors]]` entries are
dispatched on `type` to the `parse_config` of the source module registered in
SENSOR_TYPES (imported only when a file uses that type), after the keys every
entry shares (`type`, `ranges`) are read here; `[sync]` is read here so that
the sync driver (edgeledger/gateway/syncdriver.py) gets everything it needs,
keys included, already checked. Notes (a serial device that
is not present) are kept apart from errors: check-config prints them, the agent
starts anyway and waits for the device.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeledger.configtable import SENSOR_ID_RE as SENSOR_ID_RE  # noqa: PLC0414 - re-export
from edgeledger.configtable import ConfigTable, describe
from edgeledger.core.block import DEVICE_RE, MAX_READINGS
from edgeledger.core.errors import ConfigError, EdgeLedgerError
from edgeledger.core.note import Verifier
from edgeledger.keyfile import load_verifier
from edgeledger.sources.base import SourceConfig
from edgeledger.sources.ranges import NO_RANGES, Ranges, parse_ranges
from edgeledger.sources.simulator import SIM_KINDS as SIM_KINDS  # noqa: PLC0414 - re-export
from edgeledger.sources.simulator import SimSensorConfig as SimSensorConfig  # noqa: PLC0414
from edgeledger.sync.topics import valid_prefix

if TYPE_CHECKING:
    from edgeledger.aggregator.config import AggregatorConfigResult

MiB = 1 << 20
DAY_MS = 86_400_000
QUOTA_POLICIES = ("stop", "drop-oldest")
DEFAULT_DATA_DIR = Path("/var/lib/edgeledger")
DEFAULT_PREFIX = "edgeledger/v1"
_BROKER_RE = re.compile(r"[^\s:/]+:[0-9]{1,5}")
_PREFIX_RE = re.compile(r"[^\s#+]+(/[^\s#+]+)*")


@dataclass(frozen=True)
class DeviceConfig:
    """[device]: who this gateway is and where it keeps its data."""

    id: str
    data_dir: Path = DEFAULT_DATA_DIR


@dataclass(frozen=True)
class JournalConfig:
    """[journal]: durability window, segment size, disk quota."""

    fsync_window_ms: int = 1000
    segment_bytes: int = 4 * MiB
    quota_bytes: int | None = None
    quota_policy: str = "stop"
    memory_bytes: int = 16 * MiB


@dataclass(frozen=True)
class SealingConfig:
    """[sealing]: when a block is sealed, and how far the clock may jump unflagged."""

    max_readings: int = 100
    max_age_ms: int = 5000
    heartbeat_ms: int = 60_000
    clock_jump_ms: int = 2000


SensorConfig = SourceConfig


@dataclass(frozen=True)
class SyncConfig:
    """[sync]: the MQTT broker and aggregator log this gateway syncs to (none: offline only)."""

    broker: str | None = None
    prefix: str = DEFAULT_PREFIX
    log_key: Verifier | None = None
    """The aggregator log's note verifier key: every checkpoint is checked against it."""
    username: str | None = None
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    window: int = 16
    """Blocks sent and not yet acked, at most."""
    resend_ms: int = 10_000
    """A block (or a consistency request) not answered within this is sent again."""

    @property
    def host_port(self) -> tuple[str, int] | None:
        """The broker as (host, port), or None when sync is off."""
        if self.broker is None:
            return None
        host, _, port = self.broker.rpartition(":")
        return host, int(port)


@dataclass(frozen=True)
class AgentConfig:
    """A whole, valid agent configuration."""

    path: Path
    device: DeviceConfig
    journal: JournalConfig
    sealing: SealingConfig
    sensors: tuple[SensorConfig, ...]
    sync: SyncConfig | None = None
    ranges: Mapping[str, Ranges] = field(default_factory=dict)
    """Range checks by [[sensors]] entry id, for the samples of that entry's source."""

    def with_data_dir(self, data_dir: Path | None) -> AgentConfig:
        """This configuration with `--data-dir` applied."""
        if data_dir is None:
            return self
        return replace(self, device=DeviceConfig(self.device.id, data_dir))


# Kept for code written before the table reader became public.
_Table = ConfigTable
_describe = describe


# --- sections ------------------------------------------------------------------------

def _device(t: ConfigTable) -> DeviceConfig:
    dev = t.text("id", pattern=DEVICE_RE, what="a device id [a-z0-9][a-z0-9-]{0,63}")
    data_dir = t.text("data_dir", str(DEFAULT_DATA_DIR), what="a directory path")
    if data_dir == "":
        t.fail("data_dir", "must not be empty")
    t.done()
    return DeviceConfig(dev, Path(data_dir or DEFAULT_DATA_DIR))


def _journal(t: ConfigTable | None) -> JournalConfig:
    if t is None:
        return JournalConfig()
    d = JournalConfig()
    window = t.integer("fsync_window_ms", 1, 60_000, d.fsync_window_ms, " (ms)")
    segment = t.integer("segment_bytes", 64 << 10, 1 << 30, d.segment_bytes, " (bytes)")
    quota = t.optional_integer("quota_bytes", 1 * MiB, 1 << 50, " (bytes)")
    policy = t.text("quota_policy", d.quota_policy, choices=QUOTA_POLICIES)
    memory = t.integer("memory_bytes", 64 << 10, 1 << 30, d.memory_bytes, " (bytes)")
    if quota is not None and quota < 2 * segment:
        t.fail("quota_bytes", f"{quota} is less than two segments (2 x segment_bytes = "
                              f"{2 * segment}); pruning frees a whole segment at a time")
    t.done()
    return JournalConfig(window, segment, quota, policy, memory)


def _sealing(t: ConfigTable | None) -> SealingConfig:
    if t is None:
        return SealingConfig()
    d = SealingConfig()
    cfg = SealingConfig(
        t.integer("max_readings", 1, MAX_READINGS, d.max_readings),
        t.integer("max_age_ms", 10, DAY_MS, d.max_age_ms, " (ms)"),
        t.integer("heartbeat_ms", 100, DAY_MS, d.heartbeat_ms, " (ms)"),
        t.integer("clock_jump_ms", 10, DAY_MS, d.clock_jump_ms, " (ms)"))
    t.done()
    return cfg


# Where each `type` of [[sensors]] entry is read: a module exporting
# `parse_config(t: ConfigTable) -> <X>Config` (a frozen dataclass with `id`, `type`
# and `build() -> Source`). Modules are imported when a file uses their type, so a
# protocol library that is not installed only matters to profiles that need it.
SENSOR_TYPES: dict[str, str] = {
    "sim": "edgeledger.sources.simulator",
    "framed": "edgeledger.sources.framed",
    "nmea": "edgeledger.sources.nmea",
    "modbus": "edgeledger.sources.modbus",
    "lines": "edgeledger.sources.lines",
}
# The pip extra that brings a type's protocol library (pyproject.toml).
SENSOR_EXTRAS = {"nmea": "nmea", "modbus": "modbus"}


def sensor_parser(kind: str) -> Callable[[ConfigTable], SensorConfig] | str:
    """The `parse_config` of a sensor type, or why that type cannot be used here."""
    module_name = SENSOR_TYPES[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return f"sensor type {kind!r} is not available in this version of edgeledger"
        extra = SENSOR_EXTRAS.get(kind)
        hint = f" (pip install 'edgeledger[{extra}]')" if extra else ""
        return f"sensor type {kind!r} needs the Python package {exc.name!r}{hint}"
    parser: Callable[[ConfigTable], SensorConfig] = module.parse_config
    return parser


def _sensors(root: ConfigTable, ranges: dict[str, Ranges]) -> tuple[SensorConfig, ...]:
    entries = root.value("sensors", list, "an array of tables ([[sensors]])", required=True)
    if not isinstance(entries, list):
        return ()
    if not entries:
        root.fail("sensors", "at least one [[sensors]] entry is required")
    out: list[SensorConfig] = []
    ids: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            root.fail(f"sensors[{i}]", f"must be a table, not {describe(entry)}")
            continue
        t = root.child(f"sensors[{i}]", entry)
        kind = t.text("type", choices=tuple(SENSOR_TYPES))
        if kind not in SENSOR_TYPES:
            continue  # the other keys depend on the type: nothing more to say about them
        parser = sensor_parser(kind)
        if isinstance(parser, str):
            t.fail("type", parser)
            continue
        entry_ranges = parse_ranges(t)
        sensor = parser(t)
        if sensor.id in ids:
            t.fail("id", f"{sensor.id!r} is used by an earlier sensor; ids must be unique")
        ids.add(sensor.id)
        out.append(sensor)
        if entry_ranges != NO_RANGES:
            ranges[sensor.id] = entry_ranges
        t.done()
    return tuple(out)


def _sync(t: ConfigTable | None) -> SyncConfig | None:
    if t is None:
        return None
    d = SyncConfig()
    broker: str | None = None
    if "broker" in t.data:
        errors = len(t.errors)
        broker = t.text("broker", pattern=_BROKER_RE, what="HOST:PORT")
        if len(t.errors) == errors and not 0 < int(broker.rpartition(":")[2]) < 65536:
            t.fail("broker", f"{broker!r}: port must be 1 to 65535")
        if len(t.errors) > errors:
            broker = None  # faulty: reported once, and nothing else depends on it
    prefix = t.text("prefix", DEFAULT_PREFIX, _PREFIX_RE,
                    what="an MQTT topic prefix without wildcards")
    if _PREFIX_RE.fullmatch(prefix) and not valid_prefix(prefix):
        t.fail("prefix", f"{prefix!r}: levels of [A-Za-z0-9._-]+ joined by '/', at most "
                         "128 characters")
    log_key = _log_key(t)
    if broker is not None and log_key is None and not t.has("log_key"):
        t.note("log_key", f"missing: the agent records offline and does not sync to {broker} "
                          "until it has the aggregator's log key (it cannot verify "
                          "checkpoints without it)")
    username = t.optional_text("username", re.compile(r"[^\s]{1,256}"),
                               what="a user name (no spaces)")
    password = _optional_file(t, "password_file")
    ca, cert, key = (_optional_file(t, f"tls_{k}_file") for k in ("ca", "cert", "key"))
    if (cert is None) != (key is None):
        t.fail("tls_cert_file" if cert is None else "tls_key_file",
               "tls_cert_file and tls_key_file go together (a client certificate and its key)")
    if cert is not None and ca is None:
        t.fail("tls_ca_file", "missing; a client certificate needs TLS (tls_ca_file)")
    if password is not None and username is None:
        t.fail("username", "missing; password_file needs a user name")
    window = t.integer("window", 1, 1024, d.window, " (blocks)")
    resend_ms = t.integer("resend_ms", 100, 3_600_000, d.resend_ms, " (ms)")
    t.done()
    return SyncConfig(broker, prefix, log_key, username, password, ca, cert, key, window,
                      resend_ms)


def _log_key(t: ConfigTable) -> Verifier | None:
    """`log_key`: verifier key text (<name>+<hash>+<key>) or a file holding it."""
    spec = t.optional_text("log_key", what="a verifier key or a file holding one")
    if spec is None:  # allowed, so that files written before this key stay valid: the
        return None     # agent then says at start-up that it cannot sync, and records offline
    try:
        return load_verifier(spec)
    except EdgeLedgerError as exc:
        t.fail("log_key", str(exc))
        return None


def _optional_file(t: ConfigTable, key: str) -> Path | None:
    """A path that must exist when given, or None when absent."""
    if not t.has(key):
        t.seen.add(key)
        return None
    return t.file_path(key, must_exist=True)


# --- loading -------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigResult:
    """What reading a file found: the configuration (None on any error), errors, notes."""

    config: AgentConfig | None
    errors: list[ConfigError]
    notes: list[ConfigError]


def read_agent_config(path: Path) -> ConfigResult:
    """Read and validate an agent TOML file, keeping warnings (notes) apart from errors."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        return ConfigResult(None, [ConfigError(str(path), None,
                                               f"cannot read: {exc.strerror}")], [])
    except tomllib.TOMLDecodeError as exc:
        return ConfigResult(None, [ConfigError(str(path), None, f"not valid TOML: {exc}")], [])
    errors: list[ConfigError] = []
    notes: list[ConfigError] = []
    root = ConfigTable(path, "", data, errors, notes)
    device_table = root.table("device", required=True)
    device = _device(device_table) if device_table else None
    journal = _journal(root.table("journal"))
    sealing = _sealing(root.table("sealing"))
    ranges: dict[str, Ranges] = {}
    sensors = _sensors(root, ranges)
    sync = _sync(root.table("sync"))
    root.done()
    if errors or device is None:
        return ConfigResult(None, errors, notes)
    config = AgentConfig(path, device, journal, sealing, sensors, sync, ranges)
    return ConfigResult(config, [], notes)


def parse_agent_config(path: Path) -> tuple[AgentConfig | None, list[ConfigError]]:
    """Read and validate an agent TOML file: the configuration, or every fault found."""
    result = read_agent_config(path)
    return result.config, result.errors


def load_agent_config(path: Path) -> AgentConfig:
    """The validated configuration; raises the first ConfigError found."""
    config, errors = parse_agent_config(path)
    if config is None:
        raise errors[0]
    return config


def check_config_files(files: list[Path]) -> int:
    """`edgeledger check-config`: "OK <file>" per good file, else each fault; 0 or 1.

    Agent and aggregator files are told apart by an [aggregator] table.

    Notes (a serial device not present on this machine) are printed as
    `warning: <file>: <key>: <reason>` and do not fail the check: the agent starts
    without the device and opens it when it appears.
    """
    from edgeledger.aggregator.config import is_aggregator_file, read_aggregator_config

    status = 0
    for path in files:
        # A file with an [aggregator] table is an aggregator file; anything else,
        # unreadable files included, is read (and its faults reported) as an agent file.
        result: ConfigResult | AggregatorConfigResult = (
            read_aggregator_config(path) if is_aggregator_file(path) else read_agent_config(path))
        for error in result.errors:
            print(f"{error}", file=sys.stderr)
        for note in result.notes:
            print(f"warning: {note}", file=sys.stderr)
        if result.errors:
            status = 1
        else:
            print(f"OK {path}")
    return status
