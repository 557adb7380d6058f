"""NMEA 0183 GPS receivers: GGA and RMC into one GPS fix per epoch, checksums checked.

Theory of operation. Bytes are split into lines by `LineReader` (lines.py), so a
sentence split across reads is joined, an overlong line is cut and counted, and
every fault names its line number and byte offset. Each line must be a whole
sentence: `$`, printable ASCII, `*` and a checksum that matches. The grammar is
pynmeagps's (`get_parts`, `calc_checksum`, and `NMEAReader.parse` for the two
sentences we use); we never hand-write it. A damaged line (no `$`, no checksum, a
wrong checksum, fields pynmeagps cannot read, a fix with an impossible position)
is a `BadLine`: counted in `stats.bad`, logged, skipped. A well-formed sentence
of another type (GSA, GSV, VTG, proprietary `$P...`) is normal receiver chatter:
skipped without a fault, counted in `NmeaDecoder.other`.

How GGA and RMC combine. A receiver reports each epoch (one position solution)
in several sentences that carry the same UTC time: GGA has the position, the
fix quality and the altitude; RMC has the position and a status, A (valid) or V
(void). The decoder pairs them by that time and emits at most one fix per epoch,
`<id>/fix` = {"lat", "lon", "alt"}, decided when both have arrived, or when a
sentence of a later epoch arrives, or `HOLD_MS` after the first one:

* GGA with quality 1-5 (GPS, DGPS, PPS, RTK fixed, RTK float) gives the fix, with
  lat/lon and alt from GGA, unless the same epoch's RMC says V: when the two
  disagree nothing is signed. Quality 0 (no fix), 6 (dead reckoning), 7 (manual
  input) and 8 (simulation) are not measurements: no fix. A receiver that has
  no fix often still prints a position (the MTK-3301 capture prints 90N 0E).
* RMC never makes a fix on its own: an epoch whose GGA was lost (a checksum
  error) gives no fix, so every fix of a source has the same keys. A receiver
  set to send RMC without GGA is configured `fix_from = "rmc"`: then every RMC
  with status A gives a 2-D fix {"lat", "lon"}, and GGA is ignored.
* A GGA with a fix but an empty altitude field gives {"lat", "lon"}.

Units. lat and lon are decimal degrees, WGS84, north and east positive (SenML
units `lat` and `lon`); alt is metres above mean sea level (the geoid), as GGA
reports it (SenML `m`). A Reading has one `u` for its value, and a fix map holds
three quantities, so the fix's `u` is left empty: the unit of each map key is
fixed by DESIGN.md 2.1 (the keys are named after their SenML units, and alt is
in m), and a SenML export expands a fix into lat/lon/m records. Emitting three
separate readings instead would split one position solution across three leaves
that could be proven (or lost) one without the others.

The time of a fix is the time its GGA (or RMC) was received, not the receiver's
UTC time: the gateway clock is what every source stamps (DESIGN.md 4).

pynmeagps is an extra (`pip install edgeledger[nmea]`), imported when an nmea
source is configured or built, never by the agent core.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgeledger.configtable import SENSOR_ID_RE as METRIC_RE
from edgeledger.configtable import ConfigTable, SerialSettings, serial_settings
from edgeledger.core.errors import ConfigError
from edgeledger.sources.base import Sample
from edgeledger.sources.lines import BadLine, Decoded, Line, LineReader, LineSource

INSTALL_HINT = "the nmea source needs pynmeagps: pip install edgeledger[nmea]"
MAX_SENTENCE = 512   # NMEA allows 82 characters; proprietary sentences run longer
HOLD_MS = 1500       # how long half an epoch (GGA without RMC) waits for the other half
FIX_QUALITIES = frozenset({1, 2, 3, 4, 5})
FIX_FROM = ("gga", "rmc")


def load_pynmeagps(where: str = "nmea source") -> ModuleType:
    """The pynmeagps module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("pynmeagps")
    except ImportError:
        raise ConfigError(where, "type", INSTALL_HINT) from None


@dataclass(frozen=True, slots=True)
class _Position:
    """What one GGA or RMC said about its epoch."""

    t_ms: int
    valid: bool                    # GGA: quality 1-5; RMC: status A
    fix: dict[str, int | float]    # lat, lon (and alt from GGA); empty when not valid


@dataclass
class _Epoch:
    time: object                   # the sentences' UTC time (datetime.time), or None
    first_ms: int
    gga: _Position | None = None
    rmc: _Position | None = None


class NmeaDecoder:
    """NMEA bytes in, GPS fixes (Samples) and bad sentences (BadLines) out, in order."""

    protocol = "nmea"

    def __init__(self, sensor: str, metric: str = "fix", fix_from: str = "gga",
                 hold_ms: int = HOLD_MS) -> None:
        nmea = load_pynmeagps(f"nmea source {sensor}")
        self._get_parts = nmea.nmeahelpers.get_parts
        self._checksum = nmea.nmeahelpers.calc_checksum
        self._parse = nmea.NMEAReader.parse
        self._validate = nmea.VALMSGID  # the checksum is checked once, in _check
        self._errors: tuple[type[Exception], ...] = (
            nmea.NMEAParseError, nmea.NMEAMessageError, nmea.NMEATypeError,
            ValueError, TypeError, IndexError, OverflowError)
        self.sensor, self.metric, self.hold_ms = sensor, metric, hold_ms
        self.used = ("GGA", "RMC") if fix_from == "gga" else ("RMC",)
        self.reader = LineReader(MAX_SENTENCE)
        self.epoch: _Epoch | None = None
        self.other = 0  # well-formed sentences of other types, skipped

    def feed(self, data: bytes, t_ms: int) -> list[Decoded]:
        """Fixes and bad sentences from the lines `data` completes."""
        out: list[Decoded] = []
        for item in self.reader.feed(data):
            if isinstance(item, BadLine):
                out.append(item)
            elif item.data.strip():
                out += self.sentence(item, t_ms)
        return out

    def reset(self) -> list[Decoded]:
        """After a reopen: drop a partial sentence (a pending epoch stays)."""
        self.reader.reset()
        return []

    def flush(self, t_ms: int) -> list[Decoded]:
        """Decide an epoch that has waited `hold_ms` for its other half."""
        if self.epoch is not None and t_ms - self.epoch.first_ms >= self.hold_ms:
            return self._decide()
        return []

    def sentence(self, line: Line, t_ms: int) -> list[Decoded]:
        """One line: a fix or nothing (held, or another sentence type), or a BadLine."""
        try:
            kind, msg = self._check(line.data)
            if kind not in self.used:
                self.other += 1
                return []
            position = self._gga(msg, t_ms) if kind == "GGA" else self._rmc(msg, t_ms)
        except _Bad as exc:
            return [BadLine(line.number, line.offset, str(exc), line.data)]
        if self.used == ("RMC",):
            return self._fix(position)
        return self._add(kind, getattr(msg, "time", None) or None, position)

    # --- one sentence -----------------------------------------------------------------

    def _check(self, data: bytes) -> tuple[str, Any]:
        """The sentence type, and for GGA/RMC the parsed message; _Bad says what is wrong."""
        text = data.strip()
        if not text.startswith(b"$"):
            raise _Bad("not an NMEA sentence (no '$')")
        if not (text.isascii() and text.decode("ascii").isprintable()):
            raise _Bad("not printable ASCII")
        if b"*" not in text:
            raise _Bad("no checksum")
        try:
            content, _talker, msgid, _payload, checksum = self._get_parts(text)
        except self._errors as exc:
            raise _Bad(f"malformed: {exc}") from None
        expected = self._checksum(content)
        if checksum.upper() != expected:
            raise _Bad(f"checksum {checksum[:8]!r}, computed {expected}")
        if msgid not in self.used or content.startswith("P"):
            return msgid, None
        try:
            msg = self._parse(text, validate=self._validate)
        except self._errors as exc:
            raise _Bad(f"{msgid}: {exc}") from None
        if msg is None:
            raise _Bad(f"{msgid}: not understood")
        return str(msgid), msg

    def _gga(self, msg: Any, t_ms: int) -> _Position:
        quality = getattr(msg, "quality", None)
        if not isinstance(quality, int) or isinstance(quality, bool):
            raise _Bad(f"GGA: fix quality {quality!r} is not a number")
        if quality not in FIX_QUALITIES:
            return _Position(t_ms, False, {})
        fix = _lat_lon(msg, "GGA")
        alt, unit = getattr(msg, "alt", None), getattr(msg, "altUnit", None)
        if alt not in ("", None):
            if not isinstance(alt, float | int) or not math.isfinite(alt):
                raise _Bad(f"GGA: altitude {alt!r} is not a finite number")
            if unit != "M":
                raise _Bad(f"GGA: altitude unit {unit!r}, expected 'M'")
            fix["alt"] = float(alt)
        return _Position(t_ms, True, fix)

    def _rmc(self, msg: Any, t_ms: int) -> _Position:
        status = getattr(msg, "status", None)
        if status == "V":
            return _Position(t_ms, False, {})
        if status != "A":
            raise _Bad(f"RMC: status {status!r}, expected 'A' or 'V'")
        return _Position(t_ms, True, _lat_lon(msg, "RMC"))

    # --- pairing by epoch -------------------------------------------------------------

    def _add(self, kind: str, time: object, position: _Position) -> list[Decoded]:
        out: list[Decoded] = []
        epoch = self.epoch
        slot = "gga" if kind == "GGA" else "rmc"
        if epoch is not None and (time is None or epoch.time != time
                                  or getattr(epoch, slot) is not None):
            out += self._decide()
        if self.epoch is None:
            self.epoch = _Epoch(time, position.t_ms)
        setattr(self.epoch, slot, position)
        if self.epoch.gga is not None and self.epoch.rmc is not None:
            out += self._decide()
        return out

    def _decide(self) -> list[Decoded]:
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return []
        gga, rmc = epoch.gga, epoch.rmc
        if gga is None or (rmc is not None and not rmc.valid):
            return []
        return self._fix(gga)

    def _fix(self, position: _Position) -> list[Decoded]:
        if not position.valid:
            return []
        return [Sample(self.sensor, self.metric, dict(position.fix), None, position.t_ms)]


class _Bad(Exception):
    """Why a sentence is bad (internal: becomes a BadLine, never escapes)."""


def _lat_lon(msg: Any, kind: str) -> dict[str, int | float]:
    ns, ew = getattr(msg, "NS", None), getattr(msg, "EW", None)
    lat = _coordinate(getattr(msg, "lat", None), "latitude", 90, kind)
    lon = _coordinate(getattr(msg, "lon", None), "longitude", 180, kind)
    if ns not in ("N", "S") or ew not in ("E", "W"):
        raise _Bad(f"{kind}: hemisphere {ns!r}/{ew!r}, expected N/S and E/W")
    return {"lat": lat, "lon": lon}


def _coordinate(value: object, name: str, limit: int, kind: str) -> float:
    if not isinstance(value, float | int) or isinstance(value, bool):
        raise _Bad(f"{kind}: a fix without a {name} ({value!r})")
    if not (math.isfinite(value) and -limit <= value <= limit):
        raise _Bad(f"{kind}: {name} {value} is out of range")
    return float(value)


# --- configuration ----------------------------------------------------------------------

@dataclass(frozen=True)
class NmeaConfig:
    """A [[sensors]] entry of type "nmea": a GPS receiver on a serial port."""

    id: str
    serial: SerialSettings
    metric: str = "fix"
    fix_from: str = "gga"
    type: str = "nmea"

    def build(self) -> LineSource:
        """The source for this entry (not started); ConfigError without pynmeagps."""
        return LineSource(f"nmea {self.serial.device}", self.serial,
                          NmeaDecoder(self.id, self.metric, self.fix_from))


def parse_config(t: ConfigTable) -> NmeaConfig:
    """Read a `type = "nmea"` entry: id, device, baud (default 9600), ..., metric, fix_from."""
    if importlib.util.find_spec("pynmeagps") is None:
        t.fail("type", INSTALL_HINT)
    sensor_id = t.sensor_id()
    settings = serial_settings(t, baud=9600)
    metric = t.text("metric", "fix", pattern=METRIC_RE, what="a metric name")
    fix_from = t.text("fix_from", "gga", choices=FIX_FROM)
    return NmeaConfig(sensor_id, settings, metric, fix_from)
