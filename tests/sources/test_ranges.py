"""Range checks: what may be signed, and how `ranges` is read from a profile."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeledger.configtable import ConfigTable
from edgeledger.core.errors import ConfigError
from edgeledger.sources.ranges import NO_RANGES, Ranges, parse_ranges

R = Ranges({"temperature": (-40.0, 85.0)}, {"fix": {"lat": (-90.0, 90.0)}})


@pytest.mark.parametrize(("metric", "value", "why"), [
    ("temperature", 21.5, None),
    ("temperature", -40, None),
    ("temperature", 85.0, None),
    ("temperature", 85.01, "is outside the range [-40, 85]"),
    ("temperature", -273, "is outside the range [-40, 85]"),
    ("temperature", math.nan, "is not a finite number"),
    ("temperature", math.inf, "is not a finite number"),
    ("temperature", "hot", "is str, not a number"),
    ("temperature", True, "is a boolean, not a number"),
    ("humidity", 1e300, None),                      # no range: anything finite
    ("humidity", -math.inf, "is not a finite number"),
    ("door", True, None),
    ("fix", {"lat": 47.1, "lon": 8.5}, None),
    ("fix", {"lat": 91.0, "lon": 8.5}, "lat is outside the range [-90, 90]"),
    ("fix", {"lat": 47.0, "lon": math.nan}, "lon is not a finite number"),
])
def test_check(metric: str, value: object, why: str | None) -> None:
    assert R.check(metric, value) == why  # type: ignore[arg-type]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_value_passes_exactly_when_finite_and_within(value: float) -> None:
    ok = R.check("temperature", value) is None
    assert ok == (math.isfinite(value) and -40.0 <= value <= 85.0)
    assert (NO_RANGES.check("x", value) is None) == math.isfinite(value)


def read(data: dict[str, object]) -> tuple[Ranges, list[ConfigError]]:
    errors: list[ConfigError] = []
    t = ConfigTable(Path("p.toml"), "sensors[0]", data, errors)
    ranges = parse_ranges(t)
    t.done()
    return ranges, errors


def test_parse() -> None:
    ranges, errors = read({"ranges": {"temperature": [-40, 85.5],
                                      "fix": {"alt": [-500, 9000]}}})
    assert errors == []
    assert ranges == Ranges({"temperature": (-40.0, 85.5)}, {"fix": {"alt": (-500.0, 9000.0)}})
    assert read({})[0] is NO_RANGES


@pytest.mark.parametrize(("ranges", "key", "reason"), [
    ({"t": [85, -40]}, "sensors[0].ranges.t", "low 85 is above high -40"),
    ({"t": [1]}, "sensors[0].ranges.t", "must be [low, high]"),
    ({"t": [1, "x"]}, "sensors[0].ranges.t", "must be [low, high]"),
    ({"t": [True, 2]}, "sensors[0].ranges.t", "must be [low, high]"),
    ({"t": [0, math.inf]}, "sensors[0].ranges.t", "bounds must be finite"),
    ({"fix": {"lat": 3}}, "sensors[0].ranges.fix.lat", "must be [low, high]"),
])
def test_parse_faults_name_the_key(ranges: dict[str, object], key: str, reason: str) -> None:
    _, errors = read({"ranges": ranges})
    assert [e.key for e in errors] == [key]
    assert reason in errors[0].reason and errors[0].path == "p.toml"


def test_ranges_must_be_a_table() -> None:
    _, errors = read({"ranges": [1, 2]})
    assert [(e.key, e.reason) for e in errors] == [
        ("sensors[0].ranges", "must be a table ([section]), not an array")]
