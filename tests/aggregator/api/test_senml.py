"""SenML export (edgeledger/aggregator/api/senml.py): a table of cases, then properties.

The properties hold for any reading the core accepts: every record is a resolved
RFC 8428 record (a valid name, an absolute time, exactly one value field, a
registered unit or none, no base fields), the value is the signed one, and a pack
is in time order.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.aggregator.api.senml import (
    MIN_ABSOLUTE_S,
    PRIMARY_UNITS,
    SECONDARY_UNITS,
    key_name,
    reading_records,
    senml_unit,
    to_senml,
)
from edgeledger.core.reading import Reading

T = 1_700_000_000_123
SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")
VALUE_FIELDS = ("v", "vb", "vs", "vd")

CASES: list[tuple[str, Reading, list[dict[str, Any]]]] = [
    ("float with a primary unit", Reading("bme-1/temperature", T, 1, 21.5, "Cel"),
     [{"n": "gw-1/bme-1/temperature", "t": 1_700_000_000.123, "u": "Cel", "v": 21.5}]),
    ("int with %RH", Reading("bme-1/humidity", T, 1, 40, "%RH"),
     [{"n": "gw-1/bme-1/humidity", "t": 1_700_000_000.123, "u": "%RH", "v": 40}]),
    ("secondary unit kept, value not rescaled", Reading("m-1/energy", T, 1, 12, "kWh"),
     [{"n": "gw-1/m-1/energy", "t": 1_700_000_000.123, "u": "kWh", "v": 12}]),
    ("Wh, hPa and W as they are", Reading("m-1/p", T, 1, 1013.2, "hPa"),
     [{"n": "gw-1/m-1/p", "t": 1_700_000_000.123, "u": "hPa", "v": 1013.2}]),
    ("an alias becomes the registered unit", Reading("t-1/t", T, 1, 3.0, "°C"),
     [{"n": "gw-1/t-1/t", "t": 1_700_000_000.123, "u": "Cel", "v": 3.0}]),
    ("an unknown unit is left out", Reading("odd-1/len", T, 1, 2, "furlong"),
     [{"n": "gw-1/odd-1/len", "t": 1_700_000_000.123, "v": 2}]),
    ("bool", Reading("door-1/open", T, 1, True),
     [{"n": "gw-1/door-1/open", "t": 1_700_000_000.123, "vb": True}]),
    ("text", Reading("s-1/status", T, 1, "ok"),
     [{"n": "gw-1/s-1/status", "t": 1_700_000_000.123, "vs": "ok"}]),
    ("a GPS fix is lat/lon/alt records", Reading("gps-1/fix", T, 1,
                                                 {"lat": 52.5, "lon": 13.4, "alt": 34}),
     [{"n": "gw-1/gps-1/fix/alt", "t": 1_700_000_000.123, "u": "m", "v": 34},
      {"n": "gw-1/gps-1/fix/lat", "t": 1_700_000_000.123, "u": "lat", "v": 52.5},
      {"n": "gw-1/gps-1/fix/lon", "t": 1_700_000_000.123, "u": "lon", "v": 13.4}]),
    ("other map keys have no unit; odd ones are escaped",
     Reading("gps-1/fix", T, 1, {"hdop": 0.9, "sp ed": 3}),
     [{"n": "gw-1/gps-1/fix/hdop", "t": 1_700_000_000.123, "v": 0.9},
      {"n": "gw-1/gps-1/fix/_7370206564", "t": 1_700_000_000.123, "v": 3}]),
    ("a time before 1978 has no resolved form", Reading("c-1/tick", 5_000, 1, 1), []),
    ("a negative time neither", Reading("c-1/tick", -5_000, 1, 1), []),
    ("the attestation is not exported", Reading("s-1/x", T, 1, 1, "W", b"sig"),
     [{"n": "gw-1/s-1/x", "t": 1_700_000_000.123, "u": "W", "v": 1}]),
]


@pytest.mark.parametrize(("case", "reading", "records"), CASES, ids=[c[0] for c in CASES])
def test_reading_records(case: str, reading: Reading, records: list[dict[str, Any]]) -> None:
    assert reading_records("gw-1", reading) == records


def test_a_pack_is_sorted_by_time_and_counts_what_it_left_out() -> None:
    late, early = Reading("a-1/x", T + 5, 1, 1), Reading("a-1/y", T, 2, 2)
    export = to_senml([("gw-1", late), ("gw-2", early), ("gw-1", Reading("c-1/t", 9, 1, 0))])
    assert [r["n"] for r in export.records] == ["gw-2/a-1/y", "gw-1/a-1/x"]
    assert export.skipped == 1


@pytest.mark.parametrize(("unit", "senml"), [("Cel", "Cel"), ("kWh", "kWh"), ("Wh", "Wh"),
                                             ("°C", "Cel"), ("degC", "Cel"), ("C", "C"),
                                             ("lat", "lat"), ("%", "%"), ("mph", None),
                                             (None, None), ("", None)])
def test_units(unit: str | None, senml: str | None) -> None:
    assert senml_unit(unit) == senml


def test_unit_tables_hold_what_our_sources_emit() -> None:
    for unit in ("Cel", "%RH", "Pa", "W", "V", "A", "lat", "lon", "m"):
        assert unit in PRIMARY_UNITS
    for unit in ("Wh", "kWh", "hPa", "ms", "kW"):
        assert unit in SECONDARY_UNITS
    assert not PRIMARY_UNITS & SECONDARY_UNITS


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}/[A-Za-z0-9][A-Za-z0-9._-]{0,10}",
                      fullmatch=True)
numbers = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.one_of(numbers, st.booleans(), st.text(max_size=40),
                   st.dictionaries(st.text(min_size=1, max_size=8).filter(
                       lambda k: len(k.encode("utf-8", "surrogatepass")) > 0
                       and not any(0xD800 <= ord(c) <= 0xDFFF for c in k)),
                       numbers, min_size=1, max_size=4))
units = st.one_of(st.none(), st.sampled_from(sorted(PRIMARY_UNITS | SECONDARY_UNITS)),
                  st.text(min_size=1, max_size=8).filter(lambda u: u.isprintable()
                                                         and not u.isspace()))
readings = st.builds(Reading, names, st.integers(-(1 << 63), (1 << 63) - 1),
                     st.integers(0, (1 << 64) - 1), values, units)
devices = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(devices, readings), max_size=8))
def test_every_record_is_a_resolved_senml_record(pack: list[tuple[str, Reading]]) -> None:
    export = to_senml(pack)
    times = [r["t"] for r in export.records]
    assert times == sorted(times)
    expected = sum(len(r.v) if isinstance(r.v, dict) else 1
                   for _, r in pack if r.t / 1000 >= MIN_ABSOLUTE_S)
    assert len(export.records) == expected
    assert export.skipped == sum(r.t / 1000 < MIN_ABSOLUTE_S for _, r in pack)
    for record in export.records:
        assert set(record) <= {"n", "t", "u", *VALUE_FIELDS}
        assert not any(k.startswith("b") for k in record)  # no base fields
        assert SENML_NAME.fullmatch(record["n"]), record
        assert record["t"] >= MIN_ABSOLUTE_S
        assert sum(k in record for k in VALUE_FIELDS) == 1
        assert "u" not in record or record["u"] in PRIMARY_UNITS | SECONDARY_UNITS
    json.dumps(export.records, allow_nan=False)  # valid JSON


@settings(max_examples=200, deadline=None)
@given(devices, readings)
def test_the_exported_value_is_the_signed_value(device: str, reading: Reading) -> None:
    records = reading_records(device, reading)
    if reading.t / 1000 < MIN_ABSOLUTE_S:
        assert records == []
        return
    if isinstance(reading.v, dict):
        by_key = {r["n"].rsplit("/", 1)[1]: r["v"] for r in records}
        assert by_key == {key_name(k): x for k, x in reading.v.items()}
        return
    (record,) = records
    assert record["n"] == f"{device}/{reading.n}"
    field = "vb" if isinstance(reading.v, bool) else "vs" if isinstance(reading.v, str) else "v"
    assert record[field] == reading.v and type(record[field]) is type(reading.v)
