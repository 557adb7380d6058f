"""The device key: created 0600 on first start; refused when too open or not ours."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer
from edgeledger.gateway.identity import check_identity, key_path, load_or_create_key
from edgeledger.gateway.state import State
from edgeledger.keyfile import write_signer


def test_first_start_creates_a_0600_key_named_for_the_device(tmp_path: Path) -> None:
    signer, created = load_or_create_key(tmp_path / "data", "gw-1")
    path = key_path(tmp_path / "data")
    assert created and signer.name == "gw-1"
    assert path.stat().st_mode & 0o777 == 0o600
    again, created_again = load_or_create_key(tmp_path / "data", "gw-1")
    assert again == signer and not created_again


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused_with_the_chmod(tmp_path: Path, mode: int) -> None:
    load_or_create_key(tmp_path, "gw-1")
    os.chmod(key_path(tmp_path), mode)
    with pytest.raises(ConfigError) as caught:
        load_or_create_key(tmp_path, "gw-1")
    assert caught.value.path == str(key_path(tmp_path))
    assert f"chmod 600 {key_path(tmp_path)}" in str(caught.value)


def test_a_key_for_another_device_is_refused(tmp_path: Path) -> None:
    write_signer(key_path(tmp_path), Signer.generate("gw-2"))
    with pytest.raises(ConfigError, match=r"named 'gw-2'.*device id is 'gw-1'"):
        load_or_create_key(tmp_path, "gw-1")


def test_state_remembers_the_key_and_refuses_a_swapped_one(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json")
    first = Signer.generate("gw-1")
    record = check_identity(state, first, now_ms=42)
    assert record.device_id == "gw-1" and record.created_ms == 42
    assert check_identity(state, first) == record
    with pytest.raises(ConfigError, match="the device key was replaced"):
        check_identity(state, Signer.generate("gw-1"))
