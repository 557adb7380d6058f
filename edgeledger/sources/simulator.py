"""Simulated sensors that drift around plausible values, for the demo and tests.

Each metric is a bounded random walk, so values look like a real environment
monitor or tracker; per-sensor sequence numbers count every reading made. A
counter reads its own sequence number. Every sensor keeps its next `q` in the
attribute `q`, which the agent sets from its ledger so that numbering survives
restarts.

`SimSource` puts any of them behind the Source interface (`type = "sim"` in a
profile), polled every `interval_ms`; the agent sets the counter's `q` through
`set_sequence` so that its value is still the q its reading gets. The kind
"replay" plays a configured list of values, NaN and infinities included (TOML
writes them `nan`, `inf`): a sensor that misbehaves on purpose, for range checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeledger.configtable import SENSOR_ID_RE as METRIC_RE
from edgeledger.configtable import ConfigTable
from edgeledger.core.reading import Reading
from edgeledger.sources.base import Sample, Source


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


class SimulatedReplay:
    """A sensor that plays `values` in a loop, as `<id>/<metric>`: faults on demand.

    Values are used as given (NaN too), so it reads what a broken sensor would send;
    it makes Samples, not Readings, because a Reading could not hold a NaN.
    """

    def __init__(self, sensor_id: str, metric: str, unit: str | None,
                 values: tuple[float, ...]) -> None:
        self.sensor_id, self.metric, self.unit, self.values = sensor_id, metric, unit, values
        self.index = 0

    def sample(self, wall_ms: int) -> Sample:
        """The next value, stamped `wall_ms`."""
        value = self.values[self.index % len(self.values)]
        self.index += 1
        return Sample(self.sensor_id, self.metric, value, self.unit, wall_ms)


SimulatedSensor = SimulatedEnvironmentSensor | SimulatedTracker | SimulatedCounter

KINDS: dict[str, type[SimulatedSensor]] = {
    "environment": SimulatedEnvironmentSensor,
    "tracker": SimulatedTracker,
    "counter": SimulatedCounter,
}


def make_simulated(kind: str, sensor_id: str, rng: random.Random) -> SimulatedSensor:
    """A simulated sensor of `kind` ("environment", "tracker" or "counter")."""
    return KINDS[kind](sensor_id, rng)


# --- the "sim" source type -----------------------------------------------------------

SIM_KINDS = (*KINDS, "replay")


@dataclass(frozen=True)
class SimSensorConfig:
    """A [[sensors]] entry of type "sim": a simulated sensor polled every interval.

    `metric`, `unit` and `values` are for kind "replay" only.
    """

    id: str
    kind: str
    interval_ms: int = 1000
    type: str = "sim"
    metric: str = "value"
    unit: str | None = None
    values: tuple[float, ...] = field(default=())

    def build(self) -> SimSource:
        """The simulated sensor behind the Source interface."""
        if self.kind == "replay":
            return SimSource(self, SimulatedReplay(self.id, self.metric, self.unit, self.values))
        return SimSource(self, make_simulated(self.kind, self.id, random.Random()))


def parse_config(t: ConfigTable) -> SimSensorConfig:
    """Read a `type = "sim"` entry: id, kind, interval_ms (and metric, unit, values)."""
    sensor_id = t.sensor_id()
    kind = t.text("kind", choices=SIM_KINDS)
    interval = t.integer("interval_ms", 10, 86_400_000, 1000, " (ms)")
    if kind != "replay":
        return SimSensorConfig(sensor_id, kind, interval)
    metric = t.text("metric", "value", pattern=METRIC_RE, what="a metric name")
    unit = t.optional_text("unit", what="a SenML unit")
    raw = t.value("values", list, "an array of numbers (nan and inf allowed)", required=True)
    values: list[float] = []
    for i, v in enumerate(raw or ()):
        if isinstance(v, bool) or not isinstance(v, int | float):
            t.fail(f"values[{i}]", "must be a number")
        else:
            values.append(float(v) if not isinstance(v, int) else v)
    if raw is not None and not raw:
        t.fail("values", "must not be empty")
    return SimSensorConfig(sensor_id, kind, interval, metric=metric, unit=unit,
                           values=tuple(values))


class SimSource(Source):
    """Simulated sensors behind the Source interface: a sample set every `interval_ms`.

    When the loop falls behind it skips to now rather than bursting.
    """

    def __init__(self, config: SimSensorConfig,
                 sensor: SimulatedSensor | SimulatedReplay) -> None:
        super().__init__(f"sim {config.kind} {config.id}")
        self.config, self.sensor = config, sensor
        self.next_ms: int | None = None
        self.next_q: Callable[[str], int] | None = None

    def set_sequence(self, next_q: Callable[[str], int]) -> None:
        """The counter reads its q from the agent's numbering."""
        self.next_q = next_q

    def start(self, now_ms: int) -> None:
        """The first poll is due now."""
        self.next_ms = now_ms

    def next_due(self) -> int | None:
        """When the next sample set is due."""
        return self.next_ms

    def poll(self, now_ms: int, wall_ms: int) -> list[Sample]:
        """A sample set if one is due, else nothing."""
        if self.next_ms is None:
            self.next_ms = now_ms
        if now_ms < self.next_ms:
            return []
        interval = self.config.interval_ms
        self.next_ms += interval
        if self.next_ms <= now_ms:  # we fell behind: skip, never burst
            self.next_ms = now_ms + interval
        if isinstance(self.sensor, SimulatedReplay):
            samples = [self.sensor.sample(wall_ms)]
        else:
            if self.next_q is not None:
                self.sensor.q = self.next_q(self.sensor.sensor_id)
            samples = [_sample(r) for r in self.sensor.poll(wall_ms)]
        self.stats.add(samples=len(samples))
        return samples


def _sample(reading: Reading) -> Sample:
    sensor, metric = reading.n.split("/", 1)
    return Sample(sensor, metric, reading.v, reading.u, reading.t, reading.a)

