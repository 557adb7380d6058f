"""Agent configuration: every fault names the file, the dotted key and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeledger.config import (
    MiB,
    check_config_files,
    load_agent_config,
    parse_agent_config,
)
from edgeledger.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SIMULATED = REPO / "hw_configs" / "simulated.toml"

GOOD = """
[device]
id = "gw-1"
data_dir = "/tmp/x"
{extra_device}
[journal]
fsync_window_ms = 500
{extra_journal}
[sealing]
max_readings = 10
{extra_sealing}
[[sensors]]
type = "sim"
kind = "counter"
id = "c-1"
interval_ms = 100
{extra_sensor}
{tail}
"""


def write(tmp_path: Path, **parts: str) -> Path:
    """A config file: GOOD with pieces added in the named places."""
    fields = {k: parts.get(k, "") for k in ("extra_device", "extra_journal", "extra_sealing",
                                            "extra_sensor", "tail")}
    path = tmp_path / "agent.toml"
    path.write_text(GOOD.format(**fields))
    return path


def test_the_simulated_profile_is_valid() -> None:
    config = load_agent_config(SIMULATED)
    assert config.device.id == "sim-gw-1"
    assert {s.kind for s in config.sensors} == {"environment", "tracker", "counter"}
    assert config.sync is not None and config.sync.prefix == "edgeledger/v1"


def test_defaults_and_values(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path))
    assert config.device.data_dir == Path("/tmp/x")
    assert config.journal.fsync_window_ms == 500
    assert config.journal.segment_bytes == 4 * MiB
    assert config.journal.quota_bytes is None and config.journal.quota_policy == "stop"
    assert config.sealing.max_readings == 10 and config.sealing.max_age_ms == 5000
    assert config.sensors[0].id == "c-1" and config.sensors[0].interval_ms == 100
    assert config.sync is None
    assert config.with_data_dir(Path("/d")).device.data_dir == Path("/d")


# (where in the file, text to add, dotted key, words the reason must contain)
CASES = [
    ("extra_device", 'colour = "red"', "device.colour", "unknown key"),
    ("extra_journal", "fsync_window_ms2 = 3", "journal.fsync_window_ms2", "unknown key"),
    ("extra_journal", "segment_bytes = 10", "journal.segment_bytes", "out of range"),
    ("extra_journal", 'segment_bytes = "4M"', "journal.segment_bytes", "must be an integer"),
    ("extra_journal", "segment_bytes = true", "journal.segment_bytes", "not a boolean"),
    ("extra_journal", "quota_bytes = 5000000", "journal.quota_bytes", "two segments"),
    ("extra_journal", 'quota_policy = "panic"', "journal.quota_policy", "'stop'"),
    ("extra_journal", "memory_bytes = 1.5", "journal.memory_bytes", "not a number"),
    ("extra_sealing", "max_age_ms = 0", "sealing.max_age_ms", "out of range"),
    ("extra_sealing", "heartbeat_ms = -1", "sealing.heartbeat_ms", "out of range"),
    ("extra_sealing", "clock_jump_ms = [1]", "sealing.clock_jump_ms", "not an array"),
    ("extra_sensor", 'colour = "red"', "sensors[0].colour", "unknown key"),
    ("tail", '[[sensors]]\ntype = "sim"\nkind = "lamp"\nid = "l"', "sensors[1].kind",
     "'environment'"),
    ("tail", '[[sensors]]\ntype = "serial"\nid = "s"', "sensors[1].type", "not one of 'sim'"),
    ("tail", '[[sensors]]\ntype = "sim"\nkind = "counter"\nid = "c-1"', "sensors[1].id",
     "unique"),
    ("tail", '[[sensors]]\ntype = "sim"\nkind = "counter"', "sensors[1].id", "missing"),
    ("tail", '[[sensors]]\ntype = "sim"\nkind = "counter"\nid = "a b"', "sensors[1].id",
     "not a sensor id"),
    ("tail", '[[sensors]]\nkind = "counter"\nid = "x"', "sensors[1].type", "missing"),
    ("tail", '[sync]\nbroker = "no-port"', "sync.broker", "HOST:PORT"),
    ("tail", '[sync]\nprefix = "a/#"', "sync.prefix", "wildcards"),
    ("tail", '[sync]\ntls = true', "sync.tls", "unknown key"),
    ("tail", "[mqtt]\nx = 1", "mqtt", "unknown key"),
]


@pytest.mark.parametrize(("where", "text", "key", "reason"), CASES,
                         ids=[f"{c[2]}:{c[3]}" for c in CASES])
def test_faults_name_file_key_and_reason(tmp_path: Path, where: str, text: str, key: str,
                                         reason: str) -> None:
    path = write(tmp_path, **{where: text})
    config, errors = parse_agent_config(path)
    assert config is None
    assert [(e.path, e.key) for e in errors] == [(str(path), key)]
    assert reason in errors[0].reason
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")


WHOLE_FILE_CASES = [
    ("[journal]\nfsync_window_ms = 1\n", "device", "missing"),
    ('[device]\nid = "Gateway_1"\n[[sensors]]\ntype="sim"\nkind="counter"\nid="c"\n',
     "device.id", "not a device id"),
    ('[device]\nid = "gw"\n', "sensors", "missing"),
    ('[device]\nid = "gw"\nsensors = []\n', "device.sensors", "unknown key"),
    ('device = "gw"\n[[sensors]]\ntype="sim"\nkind="counter"\nid="c"\n', "device",
     "must be a table"),
    ('[device]\nid = "gw"\nsensors = 3\n', "device.sensors", "unknown key"),
    ('[device]\nid = "gw"\n[sensors]\nx = 1\n', "sensors", "must be an array"),
    ('[device]\nid = "gw"\nsensors = [1]\n', "device.sensors", "unknown key"),
    ('sensors = [1]\n[device]\nid = "gw"\n', "sensors[0]", "must be a table"),
    ('sensors = []\n[device]\nid = "gw"\n', "sensors", "at least one"),
    ('[device]\nid = "gw"\ndata_dir = ""\n[[sensors]]\ntype="sim"\nkind="counter"\nid="c"\n',
     "device.data_dir", "empty"),
    ("[device\n", None, "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "reason"), WHOLE_FILE_CASES)
def test_whole_file_faults(tmp_path: Path, text: str, key: str | None, reason: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    _, errors = parse_agent_config(path)
    assert errors, "expected a fault"
    assert errors[0].path == str(path)
    assert errors[0].key == key
    assert reason in errors[0].reason


def test_every_fault_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, extra_device="x = 1", extra_journal="y = 2",
                 extra_sealing="max_age_ms = 0")
    _, errors = parse_agent_config(path)
    assert {e.key for e in errors} == {"device.x", "journal.y", "sealing.max_age_ms"}


def test_a_missing_file(tmp_path: Path) -> None:
    _, errors = parse_agent_config(tmp_path / "nope.toml")
    assert "cannot read" in errors[0].reason


def test_check_config_prints_ok_or_faults(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, extra_device="x = 1")
    assert check_config_files([SIMULATED]) == 0
    assert capsys.readouterr().out == f"OK {SIMULATED}\n"
    assert check_config_files([SIMULATED, bad]) == 1
    out = capsys.readouterr()
    assert out.out == f"OK {SIMULATED}\n"
    assert f"{bad}: device.x: unknown key" in out.err


def test_check_config_command() -> None:
    run = subprocess.run([sys.executable, "-m", "edgeledger.cli", "check-config",
                          str(SIMULATED)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"OK {SIMULATED}"


# --- sensor types, serial keys, ranges, notes -------------------------------------------

LINES = """
[[sensors]]
type = "lines"
id = "uno-1"
device = "{device}"
format = "kv"
{extra}
"""


def lines_file(tmp_path: Path, device: str, extra: str = "") -> Path:
    return write(tmp_path, tail=LINES.format(device=device, extra=extra))


def test_ranges_are_kept_per_sensor_entry(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, extra_sensor="ranges = { n = [0, 10] }"))
    assert config.ranges["c-1"].metrics == {"n": (0.0, 10.0)}


def test_a_range_fault_names_the_key(tmp_path: Path) -> None:
    _, errors = parse_agent_config(write(tmp_path, extra_sensor="ranges = { n = [10, 0] }"))
    assert [(e.key, e.reason) for e in errors] == [("sensors[0].ranges.n",
                                                    "low 10 is above high 0")]


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ("baud = 300", "sensors[1].baud", "out of range; must be 1200 to 921600"),
    ("baud = 1000000", "sensors[1].baud", "out of range"),
    ('parity = "N"', "sensors[1].parity", "is not one of 'none', 'even', 'odd'"),
    ("bytesize = 9", "sensors[1].bytesize", "must be 5 to 8"),
    ("stopbits = 3", "sensors[1].stopbits", "must be 1 to 2"),
    ("stopbits = 1.2", "sensors[1].stopbits", "is not 1, 1.5 or 2"),
    ('timeout_s = "1"', "sensors[1].timeout_s", "must be a number"),
    ("baudrate = 9600", "sensors[1].baudrate", "unknown key"),
])
def test_serial_keys_are_checked_for_every_serial_type(tmp_path: Path, extra: str, key: str,
                                                       reason: str) -> None:
    _, errors = parse_agent_config(lines_file(tmp_path, "/dev/null", extra))
    assert [e.key for e in errors] == [key], errors
    assert reason in errors[0].reason


def test_a_missing_device_is_a_note_not_an_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = lines_file(tmp_path, "/dev/serial/by-id/usb-not-here")
    config = load_agent_config(path)  # the agent starts and waits for the device
    assert config.sensors[1].type == "lines"
    assert check_config_files([path]) == 0
    out, err = capsys.readouterr()
    assert out == f"OK {path}\n"
    assert err == (f"warning: {path}: sensors[1].device: /dev/serial/by-id/usb-not-here is "
                   "not present on this machine (not plugged in?); the agent starts anyway "
                   "and waits for it\n")


def test_a_relative_device_path_is_an_error(tmp_path: Path) -> None:
    _, errors = parse_agent_config(lines_file(tmp_path, "ttyUSB0"))
    assert [e.key for e in errors] == ["sensors[1].device"]
    assert "absolute path" in errors[0].reason


def test_a_type_without_its_module_says_so(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeledger import config as config_module
    monkeypatch.setitem(config_module.SENSOR_TYPES, "sim", "edgeledger.sources.not_there")
    _, errors = parse_agent_config(write(tmp_path))
    assert [(e.key, e.reason) for e in errors] == [
        ("sensors[0].type", "sensor type 'sim' is not available in this version of edgeledger")]


def test_a_broker_without_a_log_key_is_a_note(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The agent records offline (it cannot verify checkpoints); check-config says so."""
    path = tmp_path / "agent.toml"
    text = SIMULATED.read_text()
    path.write_text(text.replace('# broker = "127.0.0.1:1883"', 'broker = "127.0.0.1:1883"'))
    assert check_config_files([path]) == 0
    out, err = capsys.readouterr()
    assert out == f"OK {path}\n"
    assert err.startswith(f"warning: {path}: sync.log_key: missing: the agent records offline")
