"""Key files on disk: Ed25519 signer keys (mode 0600) and verifier keys.

Signer keys use Go's sumdb/note text format, so `edgeledger keygen` output also
works with Go tools; a verifier key is one line of note verifier text.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgeledger.core.errors import ConfigError, DecodeError
from edgeledger.core.note import Signer, Verifier


def write_signer(path: Path, signer: Signer) -> None:
    """Create `path` (it must not exist) holding `signer`, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(str(path), None, "already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot create key file: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(signer.text() + "\n")
        out.flush()
        os.fsync(out.fileno())


def load_signer(path: Path) -> Signer:
    """Read a signer key, refusing a file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read key file: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(path), None, f"key file has mode {stat.S_IMODE(mode):04o}; a "
                                           f"private key must be 0600 (chmod 600 {path})")
    try:
        return Signer.parse(text)
    except DecodeError as exc:
        raise ConfigError(str(path), None, str(exc)) from exc


def load_verifier(spec: str) -> Verifier:
    """A verifier key given as the key text itself or as a file holding it."""
    if "+" in spec and not os.path.exists(spec):
        return Verifier.parse(spec)
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(spec, None, "is neither a verifier key (<name>+<hash>+<key>) nor a "
                                      f"readable file ({exc.strerror})") from exc
    try:
        return Verifier.parse(text)
    except DecodeError as exc:
        raise ConfigError(spec, None, str(exc)) from exc
