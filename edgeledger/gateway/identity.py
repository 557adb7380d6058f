"""The device's identity: its Ed25519 key at DATA/device.key, made on first start.

The key file is the identity; state.json only remembers its public key so that a
swapped key file is noticed instead of silently starting a second identity under
the same device id (the aggregator would reject every block as not enrolled).
"""

from __future__ import annotations

from pathlib import Path

from edgeledger.clock import wall_ms
from edgeledger.core import b64
from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Signer
from edgeledger.gateway.state import IdentityRecord, State
from edgeledger.keyfile import load_signer, write_signer

KEY_FILE = "device.key"


def key_path(data_dir: Path) -> Path:
    """Where the device key lives in a data directory."""
    return data_dir / KEY_FILE


def load_or_create_key(data_dir: Path, device_id: str) -> tuple[Signer, bool]:
    """The device key, created (mode 0600) if missing; True when it was just created.

    A key that group or others can read is refused (with the chmod to run), and so
    is a key made for another device id.
    """
    path = key_path(data_dir)
    if not path.exists():
        signer = Signer.generate(device_id)
        write_signer(path, signer)
        return signer, True
    signer = load_signer(path)
    if signer.name != device_id:
        raise ConfigError(str(path), None, f"key is named {signer.name!r} but the configured "
                                           f"device id is {device_id!r}; use the matching "
                                           "configuration or data directory")
    return signer, False


def check_identity(state: State, signer: Signer, now_ms: int | None = None) -> IdentityRecord:
    """Record the identity on first start; refuse a key that differs from the recorded one."""
    public = b64.encode(signer.public_key)
    known = state.identity
    if known is None:
        record = IdentityRecord(signer.name, public,
                                now_ms if now_ms is not None else wall_ms())
        state.set_identity(record)
        return record
    if known.device_id != signer.name or known.public_key != public:
        raise ConfigError(str(state.path), "identity",
                          f"this data directory belongs to device {known.device_id!r} with "
                          f"public key {known.public_key}, but the key file holds "
                          f"{signer.name!r} with {public}; the device key was replaced")
    return known
