"""Reading one TOML table with every fault named: the helper all config readers share.

Theory of operation. Every value is read through a `ConfigTable` that knows the
file and the dotted key it stands for, so a fault is recorded as
`<file>: <dotted key>: <reason>` (a ConfigError) and never surfaces as a KeyError
or TypeError later on. A getter records the fault and returns a placeholder; the
caller discards the whole result when any fault was recorded, so one pass over a
file reports all its faults. `done()` reports the keys nothing asked for: a
misspelt key is an error, not a silently ignored default.

Notes are softer than errors: something `check-config` should say (a serial
device that is not plugged in on this machine) but that must not stop an agent,
because a USB device may appear after the agent starts.

Source modules read their `[[sensors]]` entry with this class (`parse_config(t)`);
the serial keys every serial source shares are read once, by `serial_settings`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeledger.core.errors import ConfigError

SENSOR_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SENSOR_ID_WHAT = "a sensor id [A-Za-z0-9][A-Za-z0-9._-]{0,63}"


class ConfigTable:
    """One TOML table being read: typed getters that record faults under dotted keys."""

    def __init__(self, path: Path, key: str, data: dict[str, Any],
                 errors: list[ConfigError], notes: list[ConfigError] | None = None) -> None:
        self.path, self.key, self.data, self.errors = path, key, data, errors
        self.notes: list[ConfigError] = notes if notes is not None else []
        self.seen: set[str] = set()

    # --- faults --------------------------------------------------------------------

    def dotted(self, key: str | None) -> str | None:
        """The dotted key of `key` in this table (or of the table itself)."""
        return ".".join(k for k in (self.key, key) if k) or None

    def fail(self, key: str | None, reason: str) -> None:
        """Record a fault at `key` of this table (or the table itself)."""
        self.errors.append(ConfigError(str(self.path), self.dotted(key), reason))

    def note(self, key: str | None, reason: str) -> None:
        """Record a warning at `key`: shown by check-config, never stops the agent."""
        self.notes.append(ConfigError(str(self.path), self.dotted(key), reason))

    @property
    def failed(self) -> bool:
        """Whether any fault has been recorded (in this file, not just this table)."""
        return bool(self.errors)

    # --- scalars -------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether `key` is present (does not mark it as read)."""
        return key in self.data

    def value(self, key: str, kind: type | tuple[type, ...], what: str, required: bool) -> Any:
        """The value at `key` if present and of type `kind`, else None (fault recorded)."""
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.fail(key, f"missing; {what} is required")
            return None
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            self.fail(key, f"must be {what}, not {describe(value)}")
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

    def optional_number(self, key: str, low: float = -math.inf, high: float = math.inf,
                        unit: str = "") -> float | None:
        """A finite number (integer or float) in [low, high] as a float, or None when absent."""
        value = self.value(key, (int, float), f"a number{unit}", required=False)
        if value is None:
            return None
        number = float(value)
        if not math.isfinite(number):
            self.fail(key, f"{value} is not a finite number")
            return None
        if not low <= number <= high:
            self.fail(key, f"{value} is out of range; must be {low:g} to {high:g}{unit}")
            return None
        return number

    def number(self, key: str, low: float = -math.inf, high: float = math.inf,
               default: float | None = None, unit: str = "") -> float:
        """A finite number in [low, high]; required unless it has a default."""
        if default is None and key not in self.data:
            self.value(key, (int, float), f"a number{unit}", required=True)
            return 0.0
        value = self.optional_number(key, low, high, unit)
        return value if value is not None else (default or 0.0)

    def boolean(self, key: str, default: bool) -> bool:
        """true or false; `default` when absent."""
        value: bool | None = self.value(key, bool, "true or false", required=False)
        return default if value is None else value

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

    def optional_text(self, key: str, pattern: re.Pattern[str] | None = None,
                      choices: tuple[str, ...] = (), what: str = "text") -> str | None:
        """Like `text`, but None when absent."""
        self.seen.add(key)
        if key not in self.data:
            return None
        return self.text(key, "", pattern, choices, what)

    def sensor_id(self, key: str = "id") -> str:
        """The required sensor id of a [[sensors]] entry."""
        return self.text(key, pattern=SENSOR_ID_RE, what=SENSOR_ID_WHAT)

    def file_path(self, key: str, default: str | None = None, must_exist: bool = False,
                  missing: str = "does not exist") -> Path:
        """A non-empty filesystem path; a missing one is a note (or a fault if `must_exist`)."""
        value = self.text(key, default, what="a path")
        given = isinstance(self.data.get(key), str)
        if given and value == "":
            self.fail(key, "must not be empty")
        elif given and not os.path.exists(value):
            (self.fail if must_exist else self.note)(key, f"{value} {missing}")
        return Path(value or default or ".")

    def text_list(self, key: str, default: tuple[str, ...] | None = None,
                  pattern: re.Pattern[str] | None = None, what: str = "text") -> tuple[str, ...]:
        """An array of strings (each matching `pattern`); required unless it has a default."""
        values = self.value(key, list, f"an array of {what}", default is None)
        if values is None:
            return default or ()
        out: list[str] = []
        for i, item in enumerate(values):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"must be {what}, not {describe(item)}")
            elif pattern is not None and pattern.fullmatch(item) is None:
                self.fail(f"{key}[{i}]", f"{item!r} is not {what}")
            else:
                out.append(item)
        return tuple(out)

    # --- tables --------------------------------------------------------------------

    def child(self, key: str, data: dict[str, Any]) -> ConfigTable:
        """A table for `data`, found under `key` of this one (sharing errors and notes)."""
        return ConfigTable(self.path, self.dotted(key) or "", data, self.errors, self.notes)

    def table(self, key: str, required: bool = False) -> ConfigTable | None:
        """A sub-table, or None when absent."""
        value = self.value(key, dict, "a table ([section])", required)
        if value is None:
            return None
        return self.child(key, value)

    def tables(self, key: str, required: bool = False) -> list[ConfigTable]:
        """An array of tables ([[key]] or key = [{...}, ...]); each one must be a table."""
        entries = self.value(key, list, f"an array of tables ([[{key}]])", required)
        out: list[ConfigTable] = []
        for i, entry in enumerate(entries or ()):
            if not isinstance(entry, dict):
                self.fail(f"{key}[{i}]", f"must be a table, not {describe(entry)}")
            else:
                out.append(self.child(f"{key}[{i}]", entry))
        return out

    def done(self) -> None:
        """Report every key that nothing asked for."""
        for key in self.data:
            if key not in self.seen:
                self.fail(key, "unknown key")


def describe(value: object) -> str:
    """How a TOML value's type reads in a message ("an integer", "text", ...)."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "text",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


# --- serial ports -----------------------------------------------------------------------

PARITIES = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)


@dataclass(frozen=True)
class SerialSettings:
    """How to open a serial port: the keys every serial [[sensors]] entry shares.

    `parity` is pyserial's letter ("N", "E", "O", "M", "S"); `timeout_s` is the
    read timeout, which also bounds how long a reader thread takes to notice stop().
    """

    device: Path
    baud: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: float = 1
    timeout_s: float = 0.1


def serial_settings(t: ConfigTable, baud: int = 9600, parity: str = "none",
                    stopbits: float = 1, timeout_s: float = 0.1) -> SerialSettings:
    """Read `device`, `baud`, `parity`, `bytesize`, `stopbits`, `timeout_s` from a sensor entry.

    The defaults are the protocol's usual ones (NMEA: 9600 8N1; Modbus meters often
    9600 8N1 or 8E1). A device path that does not exist is a note, not a fault: USB
    devices appear when they are plugged in, and the agent waits for them.
    """
    device = t.file_path("device", missing="is not present on this machine (not plugged "
                                           "in?); the agent starts anyway and waits for it")
    if t.has("device") and not str(device).startswith("/"):
        t.fail("device", f"{device} must be an absolute path (/dev/serial/by-id/...)")
    rate = t.integer("baud", 1200, 921_600, baud, " (bit/s)")
    parity_name = t.text("parity", parity, choices=tuple(PARITIES))
    bytesize = t.integer("bytesize", 5, 8, 8, " (bits)")
    stop = t.number("stopbits", 1, 2, stopbits)
    if stop not in STOPBITS:
        t.fail("stopbits", f"{stop:g} is not 1, 1.5 or 2")
    timeout = t.number("timeout_s", 0.01, 10.0, timeout_s, " (s)")
    return SerialSettings(device, rate, PARITIES.get(parity_name, "N"), bytesize, stop, timeout)

