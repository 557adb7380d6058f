"""Aggregator configuration: every fault names the file, the dotted key and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeledger.aggregator.config import (
    is_aggregator_file,
    load_aggregator_config,
    load_or_create_log_signer,
    read_aggregator_config,
)
from edgeledger.config import check_config_files
from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer
from edgeledger.keyfile import load_signer, write_signer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "hw_configs" / "aggregator.toml"

MINIMAL = """
[aggregator]
origin = "example.com/log"
key_file = "{dir}/log.key"
{aggregator}
[store]
path = "{dir}/agg.db"
{store}
[checkpoint]
{checkpoint}
[broker]
address = "mqtt.example:8883"
{broker}
{tail}
"""


def write(tmp_path: Path, **parts: str) -> Path:
    fields = {k: parts.get(k, "") for k in ("aggregator", "store", "checkpoint", "broker",
                                              "tail")}
    path = tmp_path / "agg.toml"
    path.write_text(MINIMAL.format(dir=tmp_path, **fields))
    return path


def test_the_example_is_valid_and_has_the_documented_defaults() -> None:
    config = load_aggregator_config(EXAMPLE)
    assert config.origin == "edgeledger.example/log"
    assert (config.broker.host, config.broker.port) == ("localhost", 1883)
    assert config.store.backend == "sqlite"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert is_aggregator_file(EXAMPLE)


def test_a_minimal_file_takes_defaults(tmp_path: Path) -> None:
    config = load_aggregator_config(write(tmp_path))
    assert config.checkpoint.interval_ms == 1000 and config.checkpoint.every_blocks == 1000
    assert config.max_skew_ms == 300_000
    assert config.broker.prefix == "edgeledger/v1" and config.broker.tls is None
    assert config.broker.mqtt_version == "3.1.1" and config.broker.password() is None


def test_everything_set(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    config = load_aggregator_config(write(
        tmp_path, aggregator="max_skew_ms = 1000",
        checkpoint="interval_ms = 250\nevery_blocks = 64",
        broker=f'prefix = "site/a"\nclient_id = "agg-1"\nusername = "aggregator"\n'
               f'password_file = "{secret}"\nmqtt_version = "3.1.1"\nkeepalive_s = 10\n'
               f'[broker.tls]\nca_file = "{secret}"\ncert_file = "{secret}"\n'
               f'key_file = "{secret}"',
        tail='[http]\nlisten = "[::1]:9000"'))
    assert config.broker.password() == "s3cret"
    assert config.broker.tls is not None and config.broker.tls.ca_file == secret
    assert (config.http.host, config.http.port) == ("::1", 9000)
    assert (config.checkpoint.interval_ms, config.checkpoint.every_blocks) == (250, 64)
    assert config.broker.prefix == "site/a" and config.broker.mqtt_version == "3.1.1"


FAULTS = [
    # (parts, dotted key, words in the reason)
    ({"aggregator": 'colour = "red"'}, "aggregator.colour", "unknown key"),
    ({"aggregator": "max_skew_ms = -1"}, "aggregator.max_skew_ms", "out of range"),
    ({"aggregator": 'max_skew_ms = "5s"'}, "aggregator.max_skew_ms", "must be an integer"),
    ({"store": 'backend = "postgres"'}, "store.path", "only for backend 'sqlite'"),
    ({"store": 'backend = "mysql"'}, "store.backend", "not one of"),
    ({"store": "vacuum = true"}, "store.vacuum", "unknown key"),
    ({"checkpoint": "interval_ms = 0"}, "checkpoint.interval_ms", "out of range"),
    ({"checkpoint": "every_blocks = 1.5"}, "checkpoint.every_blocks", "must be an integer"),
    ({"broker": 'prefix = "a/#"'}, "broker.prefix", "not an MQTT topic prefix"),
    ({"broker": 'client_id = "has space"'}, "broker.client_id", "is not"),
    ({"broker": 'mqtt_version = "3"'}, "broker.mqtt_version", "not one of"),
    ({"broker": "keepalive_s = 1"}, "broker.keepalive_s", "out of range"),
    ({"broker": 'password_file = "/nonexistent/pw"'}, "broker.password_file",
     "needs a user name"),
    ({"broker": "[broker.tls]"}, "broker.tls.ca_file", "missing"),
    ({"broker": '[broker.tls]\nca_file = "/x"\ncert_file = "/y"'}, "broker.tls.key_file",
     "go together"),
    ({"tail": '[http]\nlisten = "8080"'}, "http.listen", "is not HOST:PORT"),
    ({"tail": '[http]\nlisten = "h:99999"'}, "http.listen", "port 99999 is out of range"),
    ({"tail": "[mqtt]\nx = 1"}, "mqtt", "unknown key"),
]


@pytest.mark.parametrize(("parts", "key", "reason"), FAULTS, ids=[f[1] for f in FAULTS])
def test_faults_name_file_key_and_reason(tmp_path: Path, parts: dict[str, str], key: str,
                                         reason: str) -> None:
    path = write(tmp_path, **parts)
    result = read_aggregator_config(path)
    assert result.config is None
    assert [(e.path, e.key) for e in result.errors] == [(str(path), key)], result.errors
    assert reason in result.errors[0].reason


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[aggregator]\norigin = "a b"\nkey_file = "k"\n[broker]\naddress = "h:1"',
     "aggregator.origin", "not a log origin"),
    ('[aggregator]\nkey_file = "k"\n[broker]\naddress = "h:1"', "aggregator.origin", "missing"),
    ('[aggregator]\norigin = "o"\n[broker]\naddress = "h:1"', "aggregator.key_file", "missing"),
    ('[aggregator]\norigin = "o"\nkey_file = "k"', "broker", "missing"),
    ('[aggregator]\norigin = "o"\nkey_file = "k"\n[broker]\nport = 1', "broker.address",
     "missing"),
])
def test_required_keys(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(text)
    errors = read_aggregator_config(path).errors
    assert any(e.key == key and reason in e.reason for e in errors), errors


def test_all_faults_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, aggregator="max_skew_ms = -1", checkpoint="interval_ms = 0",
                 broker='mqtt_version = "4"')
    keys = {e.key for e in read_aggregator_config(path).errors}
    assert keys == {"aggregator.max_skew_ms", "checkpoint.interval_ms", "broker.mqtt_version"}


def test_the_log_key_must_be_private_and_named_after_the_origin(tmp_path: Path) -> None:
    write_signer(tmp_path / "log.key", Signer.generate("other.example/log"))
    errors = read_aggregator_config(write(tmp_path)).errors
    assert [(e.key, "must be the origin" in e.reason) for e in errors] == [
        ("aggregator.key_file", True)]
    (tmp_path / "log.key").chmod(0o644)
    errors = read_aggregator_config(write(tmp_path)).errors
    assert errors[0].key == "aggregator.key_file" and "0600" in errors[0].reason


def test_a_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    secret.chmod(0o644)
    path = write(tmp_path, broker=f'username = "aggregator"\npassword_file = "{secret}"')
    errors = read_aggregator_config(path).errors
    assert [e.key for e in errors] == ["broker.password_file"] and "chmod 600" in str(errors[0])


def test_absent_secret_files_are_notes_not_errors(tmp_path: Path) -> None:
    path = write(tmp_path, broker='username = "aggregator"\npassword_file = "/nowhere/pw"')
    result = read_aggregator_config(path)
    assert result.config is not None
    assert [n.key for n in result.notes] == ["broker.password_file"]
    with pytest.raises(ConfigError, match="/nowhere/pw"):
        result.config.broker.password()


def test_the_log_key_is_created_on_first_start(tmp_path: Path) -> None:
    config = load_aggregator_config(write(tmp_path))
    signer = load_or_create_log_signer(config)
    assert signer.name == "example.com/log"
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_log_signer(config).public_key == signer.public_key
    assert load_signer(tmp_path / "log.key").name == "example.com/log"


def test_check_config_dispatches_agent_and_aggregator_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, checkpoint="every_blocks = 0")
    agent = REPO / "hw_configs" / "simulated.toml"
    assert check_config_files([EXAMPLE, agent]) == 0
    assert check_config_files([EXAMPLE, bad]) == 1
    out = capsys.readouterr()
    assert f"OK {EXAMPLE}" in out.out and f"OK {agent}" in out.out
    assert f"{bad}: checkpoint.every_blocks: 0 is out of range" in out.err


def test_check_config_command_exits_1_naming_the_key(tmp_path: Path) -> None:
    bad = write(tmp_path, broker='prefix = ""')
    done = subprocess.run([sys.executable, "-m", "edgeledger.cli", "check-config", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"{bad}: broker.prefix:" in done.stderr
