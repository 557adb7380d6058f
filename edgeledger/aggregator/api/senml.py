"""Readings as SenML (RFC 8428) resolved records, for `/v1/readings?format=senml`.

Pure: readings in, a list of JSON-ready record dicts out. The rules, and why:

- Resolved records (RFC 8428 section 4.6): no base fields (`bn`, `bt`, `bu`, ...),
  every record carries its full name and absolute time; `to_senml` also sorts the
  records of a pack by time (stably), so a consumer can stream them.
- Name: `<device>/<reading name>`, e.g. `gw-1/bme280-1/temperature`. Device ids and
  reading names only use characters SenML allows in names (section 4.5.1), so
  nothing needs escaping there.
- Time: `t` in seconds (a float; ms resolution) since the Unix epoch. SenML reads a
  `t` below 2**28 as *relative* to now, so a reading stamped before 1978-07-05 (a
  gateway whose clock was never set) has no resolved SenML form: it is left out and
  counted in `Export.skipped` (the JSON format carries it as it was signed).
- Value: a number is `v`, a bool `vb`, text `vs`. A map (a GPS fix) becomes one
  record per key, named `<device>/<reading name>/<key>`: `lat` (unit `lat`), `lon`
  (unit `lon`), `alt` (unit `m`); other keys take no unit. A key with characters a
  SenML name cannot hold is spelled `_` + the hex of its UTF-8 (lossless, valid).
- Unit: a unit in the SenML units registry (RFC 8428 section 12.1) or the secondary
  units registry (RFC 8798: `kWh`, `Wh`, `hPa`, `ms`, ...) is copied as it is; values
  are never rescaled, so a SenML value is the signed value. A few common spellings
  are mapped (`°C` -> `Cel`). Any other unit is left out (a record with an
  unregistered `u` is not valid SenML); the JSON format keeps it verbatim.
- The attestation `a` and the sequence number `q` have no SenML field and are left
  out; the proof of a reading is `/v1/proof`, not the export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeledger.core.reading import Reading

MEDIA_TYPE = "application/senml+json"
MIN_ABSOLUTE_S = 1 << 28
"""SenML times below this are relative to now (RFC 8428 section 4.5.3)."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


PRIMARY_UNITS = _words("""
m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat m2 m3 l
m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH %EL EL 1/s
1/min beat/min beats S/m B VA VAs var vars J/m kg/m3 deg
""")
"""RFC 8428 section 12.1: the SenML Units registry as first published."""
SECONDARY_UNITS = _words("""
ms min h MHz kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s B/s MB/s mV mA dBm
ug/m3 mm/h m/h ppm /100 /1000 hPa mm cm km km/h
""")
"""RFC 8798: secondary units (scaled forms of the primary ones)."""
UNIT_ALIASES = {"°C": "Cel", "℃": "Cel", "degC": "Cel", "%rh": "%RH", "RH": "%RH",
                "kwh": "kWh", "KWh": "kWh", "wh": "Wh", "ohm": "Ohm", "Ω": "Ohm"}
"""Spellings seen in the field for registered units."""
MAP_UNITS = {"lat": "lat", "lon": "lon", "alt": "m"}
"""Units of the keys of a map value (DESIGN.md 2.1: a GPS fix)."""
_NAME_PART = re.compile(r"[A-Za-z0-9:._/-]+")


@dataclass
class Export:
    """A SenML pack under construction: resolved records, and what had no SenML form."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def senml_unit(unit: str | None) -> str | None:
    """The SenML unit for one of our unit strings, or None when there is none."""
    if unit is None:
        return None
    unit = UNIT_ALIASES.get(unit, unit)
    return unit if unit in PRIMARY_UNITS or unit in SECONDARY_UNITS else None


def key_name(key: str) -> str:
    """A map key as the last part of a SenML name (escaped when SenML cannot spell it)."""
    if _NAME_PART.fullmatch(key) and "/" not in key:
        return key
    return "_" + key.encode().hex()


def reading_records(device: str, reading: Reading) -> list[dict[str, Any]]:
    """The resolved records of one reading (several for a map value); [] if it has none."""
    t = reading.t / 1000
    if t < MIN_ABSOLUTE_S:
        return []
    name = f"{device}/{reading.n}"
    v = reading.v
    if isinstance(v, dict):
        out = []
        for key in sorted(v):
            record: dict[str, Any] = {"n": f"{name}/{key_name(key)}", "t": t}
            unit = MAP_UNITS.get(key)
            if unit is not None:
                record["u"] = unit
            record["v"] = v[key]
            out.append(record)
        return out
    record = {"n": name, "t": t}
    unit = senml_unit(reading.u)
    if unit is not None:
        record["u"] = unit
    if isinstance(v, bool):
        record["vb"] = v
    elif isinstance(v, str):
        record["vs"] = v
    else:
        record["v"] = v
    return [record]


def to_senml(readings: Iterable[tuple[str, Reading]]) -> Export:
    """A resolved SenML pack of (device, reading) pairs, in chronological order."""
    export = Export()
    for device, reading in readings:
        records = reading_records(device, reading)
        if not records:
            export.skipped += 1
        export.records += records
    export.records.sort(key=lambda r: r["t"])
    return export
