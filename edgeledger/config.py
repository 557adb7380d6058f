"""Agent configuration: one TOML file, read and validated once, at start-up.

Theory of operation. Every value is read through a `_Table` that knows the file
and the dotted key it stands for, so a fault is reported as
`<file>: <dotted key>: <reason>` (a ConfigError) and never as a KeyError or
TypeError later on. A table reports the keys it did not consume as unknown: a
misspelt key is an error, not a silently ignored default. All faults of a file
are collected, so `edgeledger check-config` shows them in one go.

The schema grows by sections and by sensor types: `[[sensors]]` entries are
dispatched on `type` to a reader of their own (`sim` today; `serial` sources
arrive with their adapters), and `[sync]` is read here so that files written for
the MQTT issue are already valid.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeledger.core.block import DEVICE_RE, MAX_READINGS
from edgeledger.core.errors import ConfigError

MiB = 1 << 20
DAY_MS = 86_400_000
SENSOR_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SIM_KINDS = ("environment", "tracker", "counter")
QUOTA_POLICIES = ("stop", "drop-oldest")
DEFAULT_DATA_DIR = Path("/var/lib/edgeledger")
DEFAULT_PREFIX = "edgeledger/v1"


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


@dataclass(frozen=True)
class SimSensorConfig:
    """A [[sensors]] entry of type "sim": a simulated sensor polled every interval."""

    id: str
    kind: str
    interval_ms: int = 1000
    type: str = "sim"


SensorConfig = SimSensorConfig  # a union once serial sources arrive


@dataclass(frozen=True)
class SyncConfig:
    """[sync]: the broker the sync issue connects to (accepted, not used yet)."""

    broker: str | None = None
    prefix: str = DEFAULT_PREFIX


@dataclass(frozen=True)
class AgentConfig:
    """A whole, valid agent configuration."""

    path: Path
    device: DeviceConfig
    journal: JournalConfig
    sealing: SealingConfig
    sensors: tuple[SensorConfig, ...]
    sync: SyncConfig | None = None

    def with_data_dir(self, data_dir: Path | None) -> AgentConfig:
        """This configuration with `--data-dir` applied."""
        if data_dir is None:
            return self
        return AgentConfig(self.path, DeviceConfig(self.device.id, data_dir), self.journal,
                           self.sealing, self.sensors, self.sync)


class _Table:
    """One TOML table being read: typed getters that record faults under dotted keys.

    A getter returns the default (or a placeholder for a required key) after a
    fault; the caller discards the whole result when any fault was recorded.
    """

    def __init__(self, path: Path, key: str, data: dict[str, Any],
                 errors: list[ConfigError]) -> None:
        self.path, self.key, self.data, self.errors = path, key, data, errors
        self.seen: set[str] = set()

    def fail(self, key: str | None, reason: str) -> None:
        """Record a fault at `key` of this table (or the table itself)."""
        dotted = ".".join(k for k in (self.key, key) if k) or None
        self.errors.append(ConfigError(str(self.path), dotted, reason))

    def value(self, key: str, kind: type, what: str, required: bool) -> Any:
        """The value at `key` if present and of type `kind`, else None (fault recorded)."""
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.fail(key, f"missing; {what} is required")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"must be {what}, not {_describe(value)}")
            return None
        return value

    def optional_integer(self, key: str, low: int, high: int, unit: str = "") -> int | None:
        """An integer in [low, high], or None when absent."""
        value: int | None = self.value(key, int, f"an integer{unit}", required=False)
        if value is not None and not low <= value <= high:
            self.fail(key, f"{value} is out of range; must be {low} to {high}{unit}")
            return None
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None,
                unit: str = "") -> int:
        """An integer in [low, high]; required unless it has a default."""
        if default is None and key not in self.data:
            self.value(key, int, f"an integer{unit}", required=True)
            return 0
        value = self.optional_integer(key, low, high, unit)
        return value if value is not None else (default or 0)

    def text(self, key: str, default: str | None = None, pattern: re.Pattern[str] | None = None,
             choices: tuple[str, ...] = (), what: str = "text") -> str:
        """A string matching `pattern` or one of `choices`; required unless it has a default."""
        value: str | None = self.value(key, str, what if not choices else
                                       " or ".join(map(repr, choices)), default is None)
        if value is None:
            return default or ""
        if pattern is not None and pattern.fullmatch(value) is None:
            self.fail(key, f"{value!r} is not {what}")
        elif choices and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value

    def table(self, key: str, required: bool = False) -> _Table | None:
        """A sub-table, or None when absent."""
        value = self.value(key, dict, "a table ([section])", required)
        if value is None:
            return None
        return _Table(self.path, ".".join(k for k in (self.key, key) if k), value, self.errors)

    def done(self) -> None:
        """Report every key that nothing asked for."""
        for key in self.data:
            if key not in self.seen:
                self.fail(key, "unknown key")


def _describe(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "text",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


# --- sections ------------------------------------------------------------------------

def _device(t: _Table) -> DeviceConfig:
    dev = t.text("id", pattern=DEVICE_RE, what="a device id [a-z0-9][a-z0-9-]{0,63}")
    data_dir = t.text("data_dir", str(DEFAULT_DATA_DIR), what="a directory path")
    if data_dir == "":
        t.fail("data_dir", "must not be empty")
    t.done()
    return DeviceConfig(dev, Path(data_dir or DEFAULT_DATA_DIR))


def _journal(t: _Table | None) -> JournalConfig:
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


def _sealing(t: _Table | None) -> SealingConfig:
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


def _sim_sensor(t: _Table) -> SimSensorConfig:
    sensor_id = t.text("id", pattern=SENSOR_ID_RE,
                       what="a sensor id [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    kind = t.text("kind", choices=SIM_KINDS)
    interval = t.integer("interval_ms", 10, DAY_MS, 1000, " (ms)")
    return SimSensorConfig(sensor_id, kind, interval)


# How each `type` of [[sensors]] entry is read; serial sources add theirs here.
SENSOR_TYPES: dict[str, Callable[[_Table], SensorConfig]] = {"sim": _sim_sensor}


def _sensors(root: _Table) -> tuple[SensorConfig, ...]:
    entries = root.value("sensors", list, "an array of tables ([[sensors]])", required=True)
    if not isinstance(entries, list):
        return ()
    if not entries:
        root.fail("sensors", "at least one [[sensors]] entry is required")
    out: list[SensorConfig] = []
    ids: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            root.fail(f"sensors[{i}]", f"must be a table, not {_describe(entry)}")
            continue
        t = _Table(root.path, f"sensors[{i}]", entry, root.errors)
        kind = t.text("type", choices=tuple(SENSOR_TYPES))
        if kind not in SENSOR_TYPES:
            continue  # the other keys depend on the type: nothing more to say about them
        sensor = SENSOR_TYPES[kind](t)
        if sensor.id in ids:
            t.fail("id", f"{sensor.id!r} is used by an earlier sensor; ids must be unique")
        ids.add(sensor.id)
        out.append(sensor)
        t.done()
    return tuple(out)


def _sync(t: _Table | None) -> SyncConfig | None:
    if t is None:
        return None
    broker: str | None = None
    if "broker" in t.data:
        broker = t.text("broker", pattern=re.compile(r"[^\s:/]+:[0-9]{1,5}"), what="HOST:PORT")
    prefix = t.text("prefix", DEFAULT_PREFIX, re.compile(r"[^\s#+]+(/[^\s#+]+)*"),
                    what="an MQTT topic prefix without wildcards")
    t.done()
    return SyncConfig(broker, prefix)


# --- loading -------------------------------------------------------------------------

def parse_agent_config(path: Path) -> tuple[AgentConfig | None, list[ConfigError]]:
    """Read and validate an agent TOML file: the configuration, or every fault found."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        return None, [ConfigError(str(path), None, f"cannot read: {exc.strerror}")]
    except tomllib.TOMLDecodeError as exc:
        return None, [ConfigError(str(path), None, f"not valid TOML: {exc}")]
    errors: list[ConfigError] = []
    root = _Table(path, "", data, errors)
    device_table = root.table("device", required=True)
    device = _device(device_table) if device_table else None
    journal = _journal(root.table("journal"))
    sealing = _sealing(root.table("sealing"))
    sensors = _sensors(root)
    sync = _sync(root.table("sync"))
    root.done()
    if errors or device is None:
        return None, errors
    return AgentConfig(path, device, journal, sealing, sensors, sync), []


def load_agent_config(path: Path) -> AgentConfig:
    """The validated configuration; raises the first ConfigError found."""
    config, errors = parse_agent_config(path)
    if config is None:
        raise errors[0]
    return config


def check_config_files(files: list[Path]) -> int:
    """`edgeledger check-config`: "OK <file>" per good file, else each fault; 0 or 1."""
    status = 0
    for path in files:
        _, errors = parse_agent_config(path)
        for error in errors:
            print(f"{error}", file=sys.stderr)
        if errors:
            status = 1
        else:
            print(f"OK {path}")
    return status
