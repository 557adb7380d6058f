"""Key files: created 0600, never overwritten, refused when others can read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer
from edgeledger.keyfile import load_signer, load_verifier, write_signer


def test_a_written_key_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    signer = Signer.generate("gw-7")
    path = tmp_path / "keys" / "gw-7.key"
    write_signer(path, signer)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signer(path) == signer


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_signer(path, Signer.generate("a"))
    before = path.read_text()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_signer(path, Signer.generate("a"))
    assert path.read_text() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o666])
def test_a_key_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.key"
    write_signer(path, Signer.generate("a"))
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        load_signer(path)


def test_garbage_in_a_key_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("PRIVATE+KEY+nope\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=str(path)):
        load_signer(path)


def test_a_verifier_key_is_read_from_text_or_from_a_file(tmp_path: Path) -> None:
    verifier = Signer.generate("log.example/x").verifier()
    path = tmp_path / "log.vkey"
    path.write_text(verifier.text() + "\n")
    assert load_verifier(verifier.text()) == verifier
    assert load_verifier(str(path)) == verifier
    with pytest.raises(ConfigError, match="neither a verifier key"):
        load_verifier(str(tmp_path / "missing"))
