"""Range checks: impossible values are rejected before they are signed, and said so.

A `[[sensors]]` entry may carry `ranges`, metric -> [low, high] (inclusive), for
the samples its source produces; a map value (a GPS fix) is checked field by
field with a nested table:

    ranges = { temperature = [-40.0, 85.0], humidity = [0, 100],
               fix = { lat = [-90, 90], lon = [-180, 180], alt = [-500, 9000] } }

Whatever the ranges, a number that is NaN or infinite is rejected (DESIGN.md 2.1:
never signed). A metric with a range must be a number; metrics without one pass
unchecked (apart from NaN/inf). The check is pure: the agent logs and counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgeledger.configtable import ConfigTable
from edgeledger.core.reading import Value

Bounds = tuple[float, float]


@dataclass(frozen=True)
class Ranges:
    """The configured ranges of one [[sensors]] entry."""

    metrics: Mapping[str, Bounds] = field(default_factory=dict)
    fields: Mapping[str, Mapping[str, Bounds]] = field(default_factory=dict)

    def check(self, metric: str, value: Value) -> str | None:
        """Why `value` of `metric` must not be signed, or None when it may."""
        if isinstance(value, bool):
            return None if metric not in self.metrics else "is a boolean, not a number"
        if isinstance(value, int | float):
            return _check_number(value, self.metrics.get(metric))
        if isinstance(value, Mapping):
            bounds = self.fields.get(metric, {})
            for name, item in value.items():
                if isinstance(item, bool) or not isinstance(item, int | float):
                    continue  # the Reading format names what is wrong with it
                reason = _check_number(item, bounds.get(name))
                if reason is not None:
                    return f"{name} {reason}"
            return None
        if metric in self.metrics or metric in self.fields:
            return f"is {type(value).__name__}, not a number"
        return None


def _check_number(value: float, bounds: Bounds | None) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        return f"is outside the range [{bounds[0]:g}, {bounds[1]:g}]"
    return None


NO_RANGES = Ranges()


def parse_ranges(t: ConfigTable, key: str = "ranges") -> Ranges:
    """Read `ranges` of a sensor entry: metric -> [low, high], or metric -> {field -> [..]}."""
    table = t.table(key)
    if table is None:
        return NO_RANGES
    metrics: dict[str, Bounds] = {}
    fields: dict[str, dict[str, Bounds]] = {}
    for metric, spec in table.data.items():
        table.seen.add(metric)
        if isinstance(spec, dict):
            sub = table.child(metric, spec)
            fields[metric] = {name: b for name in spec
                              if (b := _bounds(sub, name)) is not None}
        else:
            bounds = _bounds(table, metric)
            if bounds is not None:
                metrics[metric] = bounds
    return Ranges(metrics, fields)


def _bounds(t: ConfigTable, key: str) -> Bounds | None:
    """[low, high]: two finite numbers, low <= high."""
    t.seen.add(key)
    spec = t.data[key]
    what = "[low, high]: two numbers, or a table of them for a map value such as a GPS fix"
    if (not isinstance(spec, list) or len(spec) != 2
            or any(isinstance(x, bool) or not isinstance(x, int | float) for x in spec)):
        t.fail(key, f"must be {what}")
        return None
    low, high = float(spec[0]), float(spec[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        t.fail(key, "bounds must be finite numbers")
        return None
    if low > high:
        t.fail(key, f"low {spec[0]} is above high {spec[1]}")
        return None
    return low, high
