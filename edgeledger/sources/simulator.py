"""Simulated sensors that drift around plausible values, for the demo and tests.

Each metric is a bounded random walk, so values look like a real environment
monitor or tracker; per-sensor sequence numbers count every reading made. A
counter reads its own sequence number. Every sensor keeps its next `q` in the
attribute `q`, which the agent sets from its ledger so that numbering survives
restarts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgeledger.core.reading import Reading


@dataclass
class Walk:
    """A bounded random walk for one metric."""

    metric: str
    unit: str
    value: float
    step: float
    low: float
    high: float
    digits: int = 2

    def next(self, rng: random.Random) -> float:
        """Move one step, staying within [low, high]."""
        self.value = min(self.high, max(self.low, self.value + rng.uniform(-self.step, self.step)))
        return round(self.value, self.digits)


class SimulatedEnvironmentSensor:
    """A BME280-like sensor: temperature, relative humidity and pressure."""

    def __init__(self, sensor_id: str, rng: random.Random) -> None:
        self.sensor_id = sensor_id
        self.rng = rng
        self.q = 0
        self.walks = [Walk("temperature", "Cel", rng.uniform(4, 24), 0.05, -30, 60),
                      Walk("humidity", "%RH", rng.uniform(35, 70), 0.2, 0, 100),
                      Walk("pressure", "Pa", rng.uniform(99_000, 102_000), 5, 85_000, 110_000, 0)]

    def poll(self, now_ms: int) -> list[Reading]:
        """One reading per metric, stamped `now_ms`."""
        out = []
        for walk in self.walks:
            out.append(Reading(f"{self.sensor_id}/{walk.metric}", now_ms, self.q,
                               walk.next(self.rng), walk.unit))
            self.q += 1
        return out


class SimulatedTracker:
    """A GPS tracker moving slowly: one fix {"lat", "lon", "alt"} per poll."""

    def __init__(self, sensor_id: str, rng: random.Random) -> None:
        self.sensor_id = sensor_id
        self.rng = rng
        self.q = 0
        self.lat = Walk("lat", "lat", rng.uniform(47.0, 55.0), 0.0005, -90, 90, 6)
        self.lon = Walk("lon", "lon", rng.uniform(5.0, 15.0), 0.0005, -180, 180, 6)
        self.alt = Walk("alt", "m", rng.uniform(20, 400), 0.5, -100, 9000, 1)

    def poll(self, now_ms: int) -> list[Reading]:
        """One fix, stamped `now_ms`."""
        fix = {"lat": self.lat.next(self.rng), "lon": self.lon.next(self.rng),
               "alt": self.alt.next(self.rng)}
        reading = Reading(f"{self.sensor_id}/fix", now_ms, self.q, fix)
        self.q += 1
        return [reading]


class SimulatedCounter:
    """A sensor whose value is its own sequence number: reading q has v = q.

    Crash tests use it: a reading's value tells which reading it was, so lost or
    duplicated readings show up by counting.
    """

    def __init__(self, sensor_id: str, rng: random.Random | None = None) -> None:
        self.sensor_id = sensor_id
        self.q = 0

    def poll(self, now_ms: int) -> list[Reading]:
        """One reading `<id>/n` with value q, stamped `now_ms`."""
        reading = Reading(f"{self.sensor_id}/n", now_ms, self.q, self.q)
        self.q += 1
        return [reading]


SimulatedSensor = SimulatedEnvironmentSensor | SimulatedTracker | SimulatedCounter

KINDS: dict[str, type[SimulatedSensor]] = {
    "environment": SimulatedEnvironmentSensor,
    "tracker": SimulatedTracker,
    "counter": SimulatedCounter,
}


def make_simulated(kind: str, sensor_id: str, rng: random.Random) -> SimulatedSensor:
    """A simulated sensor of `kind` ("environment", "tracker" or "counter")."""
    return KINDS[kind](sensor_id, rng)
