"""Enrollment decisions and key rotation records: pure, no store and no I/O.

Theory of operation. The aggregator accepts blocks only from enrolled device keys
(DESIGN.md 5). An operator enrolls and revokes with `edgeledger enroll` / `revoke`;
what those commands do to a device is decided here, from the device's stored state,
and the command applies the decision to the store in one transaction with its event.

    not enrolled          enroll -> enrolled        revoke -> refused
    enrolled, same key    enroll -> unchanged       revoke -> revoked
    enrolled, other key   enroll -> refused: only a rotation record may change a key
    revoked               enroll -> refused         revoke -> unchanged
                          (its history stays provable; a new key takes a new id)

A rotation record moves an enrolled device from its key to a new one. The OLD key
signs it, so whoever holds the device's current key, and nobody else, can hand the
identity to a new key; the device's chain (height, prev) continues under the new
key. Wire form, deterministic CBOR (RFC 8949 4.2.1), at most MAX_ROTATION bytes:

    {"dev": text, "old": bytes(32), "new": bytes(32), "ts": uint (ms), "sig": bytes(64)}

`sig` is Ed25519 by `old` over ROTATION_CONTEXT || cbor({"dev", "old", "new", "ts"}).
The context prefix keeps a rotation signature from ever being mistaken for a block
(COSE Sig_structure) or a note signature made by the same key, and vice versa.

Replay. A record is applied only while `old` is the enrolled key, and only if `ts`
is later than the moment that key was enrolled: after A -> B -> A, the old A -> B
record is stale and refused. A record whose `new` key is already enrolled (and that
verifies) is "already applied", so resending one is harmless.

Carriage: a file (`edgeledger rotate-key` writes it, `edgeledger enroll --rotation`
applies it) or the device's own MQTT topic `<p>/dev/<id>/rotate` (QoS 1), which the
broker ACL already confines to that device. The aggregator service reading that
topic is later work; the record and its checks here are what it will use.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from edgeledger.core import b64, cbor
from edgeledger.core.block import key_id, valid_device_id
from edgeledger.core.errors import DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer, Verifier

ROTATION_CONTEXT = b"EdgeLedger/v1 key rotation\x00"
"""Domain separation: prefixed to the CBOR body before signing."""
MAX_ROTATION = 512
ROTATE_TOPIC_KIND = "rotate"
"""The last level of the device topic a rotation record travels on: <p>/dev/<id>/rotate."""

_BODY_KEYS = frozenset({"dev", "old", "new", "ts"})
_RECORD_KEYS = _BODY_KEYS | {"sig"}


class EnrollmentError(EdgeLedgerError):
    """An enroll, revoke or rotation the device's current state does not allow."""

    def __init__(self, dev: str, reason: str) -> None:
        super().__init__(f"device {dev}: {reason}")
        self.dev = dev
        self.reason = reason


def kid(public_key: bytes) -> str:
    """How a key is shown to an operator: its COSE kid in hex (as in blocks)."""
    return key_id(public_key).hex()


def rotation_topic(prefix: str, dev: str) -> str:
    """The topic a device publishes its rotation record on."""
    return f"{prefix}/dev/{dev}/{ROTATE_TOPIC_KIND}"


# --- public keys as an operator gives them ---------------------------------------------

def parse_public_key(text: str, what: str) -> tuple[bytes, str | None]:
    """A 32-byte Ed25519 public key and the name it carries, if any.

    `text` is base64 of the 32 bytes, a note verifier key (<name>+<hash>+<key>), or
    a signer key file's text (PRIVATE+KEY+...), of which only the public half is kept.
    """
    text = text.strip()
    if text.startswith("PRIVATE+KEY+"):
        signer = Signer.parse(text)
        return signer.public_key, signer.name
    if len(text) == 44:  # base64 of 32 bytes; a verifier key is at least 55 characters
        return b64.decode(text, what, size=32), None
    try:
        verifier = Verifier.parse(text)
    except DecodeError as exc:
        raise DecodeError(f"{what}: not base64 of a 32-byte Ed25519 key, a verifier key "
                          f"or a key file ({exc})") from exc
    return verifier.public_key, verifier.name


# --- what enroll and revoke do ------------------------------------------------------------

@dataclass(frozen=True)
class DeviceState:
    """What a decision needs to know of a stored device."""

    public_key: bytes
    enrolled_ms: int
    revoked_ms: int | None


class Action(enum.Enum):
    """What the store must do; UNCHANGED is the idempotent "already so"."""

    ENROLL = "enrolled"
    REVOKE = "revoked"
    ROTATE = "rotated"
    UNCHANGED = "unchanged"


def decide_enroll(dev: str, key: bytes, current: DeviceState | None) -> Action:
    """ENROLL a new device, UNCHANGED for its own key again; anything else is refused."""
    if not valid_device_id(dev):
        raise EnrollmentError(dev, "not a device id [a-z0-9][a-z0-9-]{0,63}")
    if len(key) != 32:
        raise EnrollmentError(dev, f"an Ed25519 public key is 32 bytes, not {len(key)}")
    if current is None:
        return Action.ENROLL
    if current.revoked_ms is not None:
        raise EnrollmentError(dev, f"revoked at {current.revoked_ms} ms; a revoked device is "
                                   "not enrolled again (its history stays); enroll the "
                                   "gateway under a new device id")
    if current.public_key == key:
        return Action.UNCHANGED
    raise EnrollmentError(dev, f"already enrolled with key {kid(current.public_key)}, not "
                               f"{kid(key)}; a key changes only by a rotation record signed "
                               "by the enrolled key (edgeledger rotate-key, then "
                               "edgeledger enroll --rotation FILE)")


def decide_revoke(dev: str, current: DeviceState | None) -> Action:
    """REVOKE an enrolled device, UNCHANGED if it already is; unknown ids are refused."""
    if current is None:
        raise EnrollmentError(dev, "not enrolled; nothing to revoke")
    return Action.UNCHANGED if current.revoked_ms is not None else Action.REVOKE


# --- rotation records ------------------------------------------------------------------------

@dataclass(frozen=True)
class Rotation:
    """A key rotation record: `old` hands device `dev` to `new` at time `ts` (ms)."""

    dev: str
    old: bytes
    new: bytes
    ts: int
    sig: bytes

    def signed_bytes(self) -> bytes:
        """What `sig` signs: the context prefix, then the CBOR body."""
        return signed_bytes(self.dev, self.old, self.new, self.ts)

    def encode(self) -> bytes:
        """The record in deterministic CBOR (the file and MQTT payload)."""
        return cbor.encode({"dev": self.dev, "old": self.old, "new": self.new, "ts": self.ts,
                            "sig": self.sig})

    def describe(self) -> str:
        """One line for an operator."""
        return f"rotation of {self.dev} from key {kid(self.old)} to {kid(self.new)} (ts {self.ts})"


def signed_bytes(dev: str, old: bytes, new: bytes, ts: int) -> bytes:
    """ROTATION_CONTEXT || deterministic CBOR of {"dev", "old", "new", "ts"}."""
    return ROTATION_CONTEXT + cbor.encode({"dev": dev, "old": old, "new": new, "ts": ts})


def make_rotation(old: Signer, dev: str, new: bytes, ts: int) -> Rotation:
    """Sign a rotation of `dev` from `old`'s key to public key `new`."""
    if not valid_device_id(dev):
        raise EnrollmentError(dev, "not a device id [a-z0-9][a-z0-9-]{0,63}")
    if len(new) != 32:
        raise EnrollmentError(dev, f"the new key is {len(new)} bytes, not 32")
    if new == old.public_key:
        raise EnrollmentError(dev, "the new key is the old key")
    if not cbor.is_uint(ts):
        raise EnrollmentError(dev, f"rotation time {ts} is not a non-negative integer")
    return Rotation(dev, old.public_key, new, ts, old.sign(signed_bytes(dev, old.public_key,
                                                                         new, ts)))


def parse_rotation(data: bytes) -> Rotation:
    """Decode a rotation record strictly; DecodeError names the fault. Not verified."""
    what = "rotation record"
    obj = cbor.expect_map(cbor.decode(data, what, MAX_ROTATION), _RECORD_KEYS, frozenset(),
                          what)
    dev = cbor.field(obj, "dev", valid_device_id, "a device id", what)
    old = cbor.field(obj, "old", _bytes(32), "32 bytes (Ed25519 public key)", what)
    new = cbor.field(obj, "new", _bytes(32), "32 bytes (Ed25519 public key)", what)
    ts = cbor.field(obj, "ts", cbor.is_uint, "a non-negative integer (ms)", what)
    sig = cbor.field(obj, "sig", _bytes(64), "64 bytes (Ed25519 signature)", what)
    return Rotation(dev, old, new, ts, sig)


def _bytes(size: int) -> Callable[[object], bool]:
    return lambda value: isinstance(value, bytes) and len(value) == size


def verify_signature(rotation: Rotation) -> None:
    """Check that `old` signed the record; VerificationError otherwise."""
    try:
        nacl.signing.VerifyKey(rotation.old).verify(rotation.signed_bytes(), rotation.sig)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise VerificationError("rotation signature", f"{rotation.describe()} is not signed "
                                                      "by its old key") from exc


def decide_rotation(rotation: Rotation, current: DeviceState | None) -> Action:
    """ROTATE if `rotation` may replace the enrolled key now, UNCHANGED if already applied.

    Raises VerificationError (forged, stale, for another key) or EnrollmentError
    (device unknown or revoked).
    """
    dev = rotation.dev
    if current is None:
        raise EnrollmentError(dev, "not enrolled; a rotation applies only to an enrolled key")
    if current.revoked_ms is not None:
        raise EnrollmentError(dev, f"revoked at {current.revoked_ms} ms; a rotation cannot "
                                   "reinstate it")
    if rotation.old == rotation.new:
        raise VerificationError("rotation record", f"{rotation.describe()}: old and new are "
                                                   "the same key")
    verify_signature(rotation)
    if current.public_key == rotation.new:
        return Action.UNCHANGED
    if current.public_key != rotation.old:
        raise VerificationError("rotation key", f"{rotation.describe()} is signed by key "
                                                f"{kid(rotation.old)}, but the enrolled key "
                                                f"is {kid(current.public_key)}")
    if rotation.ts <= current.enrolled_ms:
        raise VerificationError("rotation time", f"{rotation.describe()} is not later than "
                                                 f"the enrollment of the current key "
                                                 f"({current.enrolled_ms} ms): a stale record")
    return Action.ROTATE
