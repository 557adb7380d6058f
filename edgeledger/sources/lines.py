"""Text lines from serial devices: the splitter, the serial wiring, and CSV/JSON/kv sketches.

Theory of operation. Line protocols (this module's `lines` type, and NMEA in
nmea.py) share three layers:

* `LineReader` splits the byte stream into lines, numbering each one and
  remembering the byte offset where it began, so that a bad line can be named
  in a log ("line 812 at byte 40213"). A line longer than the cap is cut: it is
  reported once as a `BadLine` and skipped up to its end, so one runaway line
  never grows memory and the next line is read normally.
* A decoder (sans-I/O, like h11) turns lines into Samples or BadLines, in the
  order they arrived: `feed(data, t_ms)`, `reset()` after a reopen, and
  `flush(t_ms)` for decoders that hold a value back (NMEA pairs GGA with RMC).
* `LineSource` wires a `SerialLink` to a decoder. The link thread only stamps
  each chunk with its time of reception and queues it; `poll` decodes on the
  agent's thread, counts and logs bad lines, and hands Samples over. A reopen
  is queued as a marker in the same queue, so it is seen in stream order.

The `lines` type reads one format per source, named in the profile: `csv`
(fields in the order of `columns`), `json` (an object of metric -> number or
boolean), or `kv` (`temperature=21.5 humidity=40`). Units come from the
profile's `units` table (SenML symbols); the sketch never chooses them. A line
is taken whole or not at all: one bad field makes the whole line bad, because
a garbled line cannot be trusted in part. NaN and infinities are bad values.

A plain text line has no checksum, so the first line after every (re)open is
dropped: it may be the tail of a line that began before the port was open
(`21.5` arriving as `1.5`), and nothing in it could tell.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeledger.clock import wall_ms
from edgeledger.configtable import SENSOR_ID_RE as METRIC_RE
from edgeledger.configtable import ConfigTable, SerialSettings, serial_settings
from edgeledger.core.errors import DecodeError
from edgeledger.core.reading import MAX_UNIT
from edgeledger.sources.base import Sample, Source
from edgeledger.sources.serialport import SerialLink

log = logging.getLogger(__name__)

FORMATS = ("csv", "json", "kv")
MAX_LINE = 1024          # bytes of a text line, its CR included
MAX_PENDING = 4096       # chunks queued between the link thread and poll
POLL_MS = 100            # how often the agent should hand over what arrived
EXCERPT = 80             # bytes of a bad line quoted in its log line
LOG_BURST = 10           # bad lines logged as warnings per LOG_WINDOW_S; the rest at debug
LOG_WINDOW_S = 60.0
INT64 = (-(1 << 63), (1 << 63) - 1)
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_KV_SPLIT = re.compile(r"[\s,;]+")
# Spellings sketches print that are not SenML unit symbols (RFC 8428 12.1).
UNIT_HINTS = {"°C": "Cel", "degC": "Cel", "℃": "Cel", "RH": "%RH", "%rh": "%RH",
              "kwh": "kWh", "w": "W", "v": "V", "a": "A"}


@dataclass(frozen=True, slots=True)
class Line:
    """One line: its number (from 1) and starting byte offset since the source started."""

    number: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that gave no sample, and why; the source counts it in `stats.bad`."""

    number: int
    offset: int
    reason: str
    excerpt: bytes = b""


Decoded = Sample | BadLine


class LineReader:
    """Bytes in, numbered lines out. Lines end at LF; a CR before it is dropped."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.number = 1        # of the line being read
        self.start = 0         # its first byte's offset
        self.consumed = 0      # bytes seen so far
        self._buf = bytearray()
        self._cut = False      # the current line was too long: skip to its end

    def feed(self, data: bytes) -> list[Line | BadLine]:
        """The lines `data` completes, and a BadLine for each line cut for length."""
        out: list[Line | BadLine] = []
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            stop = len(data) if end < 0 else end
            if not self._cut:
                room = self.max_line + 1 - len(self._buf)  # never hold more than the cap
                self._buf += data[pos:min(stop, pos + room)]
                if len(self._buf) > self.max_line:
                    out.append(BadLine(self.number, self.start, f"line longer than "
                                       f"{self.max_line} bytes, cut", bytes(self._buf[:EXCERPT])))
                    self._buf.clear()
                    self._cut = True
            self.consumed += stop - pos
            if end < 0:
                break
            self.consumed += 1
            if not self._cut:
                line = bytes(self._buf)
                out.append(Line(self.number, self.start, line[:-1] if line[-1:] == b"\r" else line))
            self._next_line()
            pos = end + 1
        return out

    def reset(self) -> bool:
        """Drop a partial line (after a reopen its start is gone); True if there was one."""
        partial = bool(self._buf) or self._cut
        if partial:
            self._next_line()
        self.start = self.consumed
        return partial

    def _next_line(self) -> None:
        self._buf.clear()
        self._cut = False
        self.number += 1
        self.start = self.consumed


class LineDecoder(Protocol):
    """What `LineSource` drives: bytes with their time of reception in, Samples out."""

    protocol: str

    def feed(self, data: bytes, t_ms: int) -> list[Decoded]:
        """Decode `data`, received at `t_ms` (Unix ms)."""

    def reset(self) -> list[Decoded]:
        """The port was (re)opened: forget partial input."""

    def flush(self, t_ms: int) -> list[Decoded]:
        """Samples held back that are due by `t_ms` (Unix ms)."""



class LineSource(Source):
    """A serial port read by a `SerialLink`, its bytes decoded line by line in `poll`."""

    def __init__(self, name: str, settings: SerialSettings, decoder: LineDecoder,
                 clock: Callable[[], int] = wall_ms, **link_options: Any) -> None:
        super().__init__(name)
        self.settings, self.decoder, self.clock = settings, decoder, clock
        self._chunks: deque[tuple[int, bytes | None]] = deque()
        self._gap = 0
        self._next_ms: int | None = None
        self._window = (time.monotonic(), 0)  # start of the log window, bad lines in it
        self.link = SerialLink(settings, self._on_data, self.stats, name=name,
                               on_open=self._on_open, **link_options)

    def start(self, now_ms: int) -> None:
        """Start the reader thread; it opens the port, or waits for it to appear."""
        self._next_ms = now_ms
        self.link.start()

    def stop(self) -> None:
        """Stop the reader thread and close the port."""
        self.link.stop()

    def next_due(self) -> int | None:
        """Now if bytes wait, else one poll interval after the last poll."""
        if self._chunks:
            return 0
        return self._next_ms

    def poll(self, now_ms: int, wall_ms: int) -> list[Sample]:
        """Decode what has arrived; count and log each bad line."""
        self._next_ms = now_ms + POLL_MS
        out: list[Sample] = []
        while self._chunks:
            t_ms, data = self._chunks.popleft()
            decoded = self.decoder.reset() if data is None else self.decoder.feed(data, t_ms)
            self._take(decoded, out)
        self._take(self.decoder.flush(wall_ms), out)
        self.stats.add(samples=len(out))
        return out

    def _take(self, decoded: list[Decoded], out: list[Sample]) -> None:
        for item in decoded:
            if isinstance(item, Sample):
                out.append(item)
            else:
                self.stats.add(bad=1)
                log.log(self._level(), "%s: protocol %s, line %d at byte %d: %s: %r",
                        self.settings.device, self.decoder.protocol, item.number, item.offset,
                        item.reason, item.excerpt[:EXCERPT])

    def _level(self) -> int:
        """WARNING for the first LOG_BURST bad lines a window, then DEBUG: a device at the
        wrong baud rate must not flood the journal (stats.bad still counts every one)."""
        start, count = self._window
        now = time.monotonic()
        if now - start >= LOG_WINDOW_S:
            if count > LOG_BURST:
                log.warning("%s: %d more bad lines in the last %.0f s (logged at debug)",
                            self.settings.device, count - LOG_BURST, now - start)
            start, count = now, 0
        self._window = (start, count + 1)
        return logging.WARNING if count < LOG_BURST else logging.DEBUG

    # --- on the link's thread -------------------------------------------------------

    def _on_open(self) -> None:
        self._chunks.append((self.clock(), None))

    def _on_data(self, data: bytes) -> None:
        if len(self._chunks) >= MAX_PENDING:  # the agent is not polling: do not grow
            self._gap += len(data)
            return
        if self._gap:
            log.warning("%s: %d bytes dropped while the agent was not reading",
                        self.settings.device, self._gap)
            self._gap = 0
            self._chunks.append((self.clock(), None))  # nothing may glue across the gap
        self._chunks.append((self.clock(), data))


# --- values ---------------------------------------------------------------------------

def parse_number(text: str) -> int | float:
    """A decimal integer (int64) or finite decimal float; DecodeError says why not."""
    text = text.strip()
    if _INT_RE.fullmatch(text):
        value = int(text)
        if not INT64[0] <= value <= INT64[1]:
            raise DecodeError(f"{text} is outside the 64-bit integer range")
        return value
    if not _FLOAT_RE.fullmatch(text):
        raise DecodeError(f"{text[:20]!r} is not a number")
    number = float(text)
    if not math.isfinite(number):
        raise DecodeError(f"{text[:20]} is not a finite number")
    return number


def _json_value(metric: str, value: object) -> int | float | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise DecodeError(f"{metric}: {value} is outside the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DecodeError(f"{metric}: {value} is not a finite number")
        return value
    raise DecodeError(f"{metric}: {type(value).__name__} is not a number or boolean")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise DecodeError(f"{name} is not a finite number")


# --- the `lines` type -----------------------------------------------------------------

@dataclass(frozen=True)
class LinesConfig:
    """A [[sensors]] entry of type "lines": a sketch printing one format of text line."""

    id: str
    serial: SerialSettings
    format: str
    columns: tuple[str, ...] = ()
    separator: str = ","
    units: tuple[tuple[str, str], ...] = ()
    type: str = "lines"

    def build(self) -> LineSource:
        """The source for this entry (not started)."""
        return LineSource(f"lines {self.format} {self.serial.device}", self.serial,
                          TextDecoder(self))


class TextDecoder:
    """CSV, JSON or kv lines into Samples named `<id>/<metric>`."""

    protocol = "lines"

    def __init__(self, config: LinesConfig) -> None:
        self.config = config
        self.units = dict(config.units)
        self.reader = LineReader(MAX_LINE)
        self.resync = True  # drop the first line after an open (see the module docstring)
        self._parse = {"csv": self._csv, "json": self._json, "kv": self._kv}[config.format]

    def feed(self, data: bytes, t_ms: int) -> list[Decoded]:
        """Samples and bad lines from the lines `data` completes."""
        out: list[Decoded] = []
        for item in self.reader.feed(data):
            if isinstance(item, BadLine):
                out.append(item)
                self.resync = False  # the reader skips to this line's end: in step again
            elif self.resync:
                self.resync = False
                log.debug("%s: dropped line %d, the first after opening the port",
                          self.config.serial.device, item.number)
            else:
                out += self.decode(item, t_ms)
        return out

    def reset(self) -> list[Decoded]:
        """After a reopen: drop the partial line, and the first whole one."""
        self.reader.reset()
        self.resync = True
        return []

    def flush(self, t_ms: int) -> list[Decoded]:
        """Nothing is held back."""
        return []

    def decode(self, line: Line, t_ms: int) -> list[Decoded]:
        """One line's samples, all or none."""
        try:
            text = line.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return [BadLine(line.number, line.offset, "not UTF-8 text", line.data)]
        if not text:
            return []
        try:
            values = self._parse(text)
        except DecodeError as exc:
            return [BadLine(line.number, line.offset, str(exc), line.data)]
        return [Sample(self.config.id, metric, value, self.units.get(metric), t_ms)
                for metric, value in values]

    def _csv(self, text: str) -> list[tuple[str, int | float | bool]]:
        fields = [f.strip() for f in text.split(self.config.separator)]
        columns = self.config.columns
        if len(fields) != len(columns):
            raise DecodeError(f"{len(fields)} fields, expected {len(columns)} "
                              f"({', '.join(c or '-' for c in columns)})")
        if all(f == c for f, c in zip(fields, columns, strict=True) if c):
            return []  # the sketch printed its header (after a reset): not a fault
        out: list[tuple[str, int | float | bool]] = []
        for metric, value in zip(columns, fields, strict=True):
            if metric and value:  # an unnamed column is ignored; an empty field is no value
                try:
                    out.append((metric, parse_number(value)))
                except DecodeError as exc:
                    raise DecodeError(f"{metric}: {exc}") from None
        return out

    def _json(self, text: str) -> list[tuple[str, int | float | bool]]:
        try:
            obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
        except ValueError as exc:  # JSONDecodeError
            raise DecodeError(f"not JSON: {exc}") from None
        except RecursionError:
            raise DecodeError("not JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise DecodeError(f"a JSON {type(obj).__name__}, not an object")
        return [(_metric(key), _json_value(key, value)) for key, value in obj.items()]

    def _kv(self, text: str) -> list[tuple[str, int | float | bool]]:
        out: list[tuple[str, int | float | bool]] = []
        seen: set[str] = set()
        for token in _KV_SPLIT.split(text):
            if not token:
                continue
            key, eq, value = token.partition("=")
            if not eq:
                raise DecodeError(f"{token[:20]!r} is not key=value")
            if key in seen:
                raise DecodeError(f"key {key!r} appears twice")
            seen.add(key)
            metric = _metric(key)
            try:
                out.append((metric, parse_number(value)))
            except DecodeError as exc:
                raise DecodeError(f"{key[:20]}: {exc}") from None
        return out


def _metric(key: str) -> str:
    if METRIC_RE.fullmatch(key) is None:
        raise DecodeError(f"{key[:20]!r} is not a metric name [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return key


def parse_config(t: ConfigTable) -> LinesConfig:
    """Read a `type = "lines"` entry: id, device, baud..., format, columns, separator, units."""
    sensor_id = t.sensor_id()
    settings = serial_settings(t, baud=115_200)
    fmt = t.text("format", choices=FORMATS)
    columns: tuple[str, ...] = ()
    separator = ","
    if fmt == "csv":
        columns = t.text_list("columns", pattern=re.compile(f"(?:{METRIC_RE.pattern})?"),
                              what="a metric name, or \"\" for a column to ignore")
        raw = t.data.get("columns")
        if isinstance(raw, list) and not any(c for c in raw if isinstance(c, str)):
            t.fail("columns", "at least one column must name a metric")
        named = [c for c in columns if c]
        if len(set(named)) != len(named):
            t.fail("columns", "a metric name appears twice")
        separator = t.text("separator", ",", choices=(",", ";", "\t", " ", "|"))
    else:
        for key in ("columns", "separator"):
            if t.has(key):
                t.seen.add(key)
                t.fail(key, f"only for format = \"csv\", not {fmt!r}")
    units = _units(t, columns if fmt == "csv" else None)
    return LinesConfig(sensor_id, settings, fmt, columns, separator, units)


def _units(t: ConfigTable, columns: tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    table = t.table("units")
    if table is None:
        return ()
    out: list[tuple[str, str]] = []
    for metric in list(table.data):
        unit = table.text(metric, what="a SenML unit symbol")
        if METRIC_RE.fullmatch(metric) is None:
            table.fail(metric, "is not a metric name")
        elif columns is not None and metric not in columns:
            table.fail(metric, f"is not one of the columns ({', '.join(c for c in columns if c)})")
        elif unit in UNIT_HINTS:
            table.fail(metric, f"{unit!r} is not a SenML unit symbol; write {UNIT_HINTS[unit]!r}")
        elif not (0 < len(unit) <= MAX_UNIT and unit.isprintable() and " " not in unit):
            table.fail(metric, f"{unit!r} is not a SenML unit symbol (Cel, %RH, Pa, W, ...)")
        else:
            out.append((metric, unit))
    table.done()
    return tuple(out)
