"""The `sim` source behind the Source interface: schedule, samples, counter numbering."""

from __future__ import annotations

import math
from pathlib import Path

from edgeledger.configtable import ConfigTable
from edgeledger.core.errors import ConfigError
from edgeledger.sources.base import Source
from edgeledger.sources.simulator import SimSensorConfig, SimSource, parse_config


def test_environment_samples_carry_units_and_reception_time() -> None:
    source = SimSensorConfig("env", "environment", 100).build()
    assert isinstance(source, Source)
    source.start(1000)
    samples = source.poll(1000, 1_700_000_000_000)
    assert [(s.name, s.unit) for s in samples] == [
        ("env/temperature", "Cel"), ("env/humidity", "%RH"), ("env/pressure", "Pa")]
    assert {s.t_ms for s in samples} == {1_700_000_000_000}
    assert source.stats.samples == 3


def test_schedule_skips_rather_than_bursts() -> None:
    source = SimSensorConfig("c", "counter", 100).build()
    source.start(0)
    assert source.next_due() == 0
    assert len(source.poll(0, 0)) == 1
    assert source.poll(50, 50) == [] and source.next_due() == 100
    assert len(source.poll(1000, 1000)) == 1  # 9 intervals late: one sample, not ten
    assert source.next_due() == 1100


def test_the_counter_reads_the_agents_numbering() -> None:
    source = SimSensorConfig("c", "counter", 10).build()
    numbering = {"c": 41}
    source.set_sequence(lambda sensor: numbering[sensor])
    source.start(0)
    [sample] = source.poll(0, 0)
    assert (sample.name, sample.value) == ("c/n", 41)


def test_tracker_gives_a_fix() -> None:
    [sample] = SimSensorConfig("g", "tracker").build().poll(0, 0)
    assert sample.metric == "fix" and set(sample.value) == {"lat", "lon", "alt"}  # type: ignore[arg-type]


def test_replay_plays_values_as_given_in_a_loop() -> None:
    source = SimSensorConfig("bad", "replay", 10, metric="temperature", unit="Cel",
                             values=(20.0, math.nan, 1e6)).build()
    assert isinstance(source, SimSource)
    values = [source.poll(t, t)[0].value for t in range(0, 40, 10)]
    assert values[0] == 20.0 and math.isnan(values[1]) and values[2:] == [1e6, 20.0]  # type: ignore[arg-type]


def test_parse_config() -> None:
    errors: list[ConfigError] = []
    t = ConfigTable(Path("p.toml"), "sensors[0]", {"id": "r", "kind": "replay",
                                                   "values": [1, math.inf, "x"], "unit": "Cel"},
                    errors)
    cfg = parse_config(t)
    t.done()
    assert [(e.key, e.reason) for e in errors] == [("sensors[0].values[2]", "must be a number")]
    assert cfg.values == (1, math.inf) and cfg.unit == "Cel" and cfg.metric == "value"
