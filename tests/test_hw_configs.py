"""Every shipped hardware profile parses (its device may be absent on this machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeledger.aggregator.config import is_aggregator_file, read_aggregator_config
from edgeledger.config import read_agent_config

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p for p in (REPO / "hw_configs").glob("*.toml") if not is_aggregator_file(p))


def test_the_profiles_the_issue_names_are_shipped() -> None:
    names = {p.name for p in PROFILES}
    assert {"simulated.toml", "pi4-bme280-framed.toml", "pizero2w-gps-tracker.toml",
            "pi4-modbus-energy-meter.toml", "csv-sketch.toml"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_parses(profile: Path) -> None:
    result = read_agent_config(profile)
    assert result.errors == [], "\n".join(map(str, result.errors))
    assert result.config is not None
    # The only notes allowed are devices that are not plugged in here.
    assert all(n.key is not None and n.key.endswith(".device") for n in result.notes)
    serial = [s for s in result.config.sensors if s.type != "sim"]
    for sensor in serial:
        device = str(vars(sensor).get("serial", vars(sensor).get("settings")).device)
        assert device.startswith(("/dev/serial/by-id/", "/dev/serial0")), device


def test_check_config_on_every_profile_names_missing_devices_as_warnings() -> None:
    done = subprocess.run([sys.executable, "-m", "edgeledger.cli", "check-config",
                           *map(str, PROFILES)], capture_output=True, text=True, timeout=60,
                          check=False)
    errors = [line for line in done.stderr.splitlines()
              if line and not line.startswith("warning: ")]
    assert errors == []
    for line in done.stderr.splitlines():
        if line.startswith("warning: "):
            assert ".device: /dev/serial" in line and "waits for it" in line


def test_the_aggregator_profile_parses() -> None:
    profiles = [p for p in (REPO / "hw_configs").glob("*.toml") if is_aggregator_file(p)]
    assert sorted(p.name for p in profiles) == ["aggregator-postgres.toml", "aggregator.toml"]
    for profile in profiles:
        result = read_aggregator_config(profile)
        assert result.errors == [], "\n".join(map(str, result.errors))
