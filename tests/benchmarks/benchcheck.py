"""Checks the benchmark smoke tests share: every figure present and sane, no timings judged."""

from __future__ import annotations

import math
from typing import Any

STATS = ("median_s", "min_s", "max_s", "spread", "per_s", "repeats", "ops_per_repeat")


def check_stats(stats: dict[str, Any], where: str) -> None:
    """A Stats JSON object: every field there, finite, and consistent."""
    for key in STATS:
        assert key in stats, f"{where}: no {key}"
        assert isinstance(stats[key], (int, float)) and math.isfinite(stats[key]), where
    assert stats["median_s"] > 0 and stats["min_s"] <= stats["median_s"] <= stats["max_s"], where
    assert len(stats["runs_s"]) == stats["repeats"] >= 1, where


def check_ratio(block: dict[str, Any], where: str) -> None:
    """A ratio against a target: positive, and `met` agrees with the numbers."""
    assert block["ratio"] > 0 and block["target"] > 0, where
    assert block["met"] == (block["ratio"] <= block["target"]), where
