"""The DROP record: a device's signed statement that its disk quota dropped blocks.

Pure format code (no I/O), shared by the gateway (which writes the record before
deleting anything, edgeledger/gateway/retention.py) and the aggregator (which lets
the device's chain continue past the dropped heights once it holds the record).

    payload = CBOR {"rec": bytes, "sig": bytes(64)}
    rec     = deterministic CBOR map {
        "v": 1, "dev": device id, "kid": 8-byte key id (as in a block's COSE header),
        "h0": first dropped height, "h1": last dropped height (h0 <= h1),
        "prev": the `prev` of block h0 (hash of block h0-1), "last": hash of block h1,
        "cnt": readings dropped, "t0"/"t1": earliest/latest time in the dropped blocks
        (Unix ms, from their headers), "ts": gateway time of the drop (Unix ms),
        "why": reason text ("quota") }
    sig     = Ed25519(device key, DROP_CONTEXT || rec)

`prev` and `last` bridge the gap: block h1+1 names `last` as its prev. The context
prefix keeps the signature from being mistaken for a block's or a note's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import nacl.exceptions
import nacl.signing

from edgeledger.core import cbor
from edgeledger.core.block import key_id, valid_device_id
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer

DROP_VERSION = 1
DROP_CONTEXT = b"edgeledger drop record\x00"
MAX_DROP = 1024
MAX_WHY = 64
_REC_KEYS = frozenset({"v", "dev", "kid", "h0", "h1", "prev", "last", "cnt",
                       "t0", "t1", "ts", "why"})
_OUTER_KEYS = frozenset({"rec", "sig"})


@dataclass(frozen=True)
class DropRecord:
    """What a drop took away; see the module doc for the wire format."""

    dev: str
    kid: bytes
    h0: int
    h1: int
    prev: bytes
    last: bytes
    cnt: int
    t0: int
    t1: int
    ts: int
    why: str = "quota"
    v: int = DROP_VERSION

    def encode(self) -> bytes:
        """The deterministic CBOR of the record (the signed bytes, without the context)."""
        return cbor.encode(asdict(self))

    def sign(self, signer: Signer) -> bytes:
        """The DROP record payload: the record and the device's signature over it."""
        rec = self.encode()
        return cbor.encode({"rec": rec, "sig": signer.sign(DROP_CONTEXT + rec)})

    @classmethod
    def decode(cls, rec: bytes, what: str = "drop record") -> DropRecord:
        """Strictly parse the record map (not the signature)."""
        m = cbor.expect_map(cbor.decode(rec, what, MAX_DROP), _REC_KEYS, frozenset(), what)
        cbor.field(m, "v", lambda x: cbor.is_int(x) and x == DROP_VERSION,
                   f"version {DROP_VERSION}", what)
        cbor.field(m, "dev", valid_device_id, "a device id", what)
        cbor.field(m, "kid", lambda x: isinstance(x, bytes) and len(x) == 8, "8 bytes", what)
        for key in ("h0", "h1", "cnt"):
            cbor.field(m, key, cbor.is_uint, "an unsigned integer", what)
        for key in ("prev", "last"):
            cbor.field(m, key, cbor.is_hash, "32 bytes", what)
        for key in ("t0", "t1", "ts"):
            cbor.field(m, key, cbor.is_int64, "an integer (Unix ms)", what)
        cbor.field(m, "why", lambda x: isinstance(x, str) and 0 < len(x) <= MAX_WHY,
                   f"text of 1..{MAX_WHY} characters", what)
        if m["h0"] > m["h1"]:
            raise DecodeError(f"{what}: h0 {m['h0']} is after h1 {m['h1']}")
        if m["t0"] > m["t1"]:
            raise DecodeError(f"{what}: t0 {m['t0']} is after t1 {m['t1']}")
        return cls(**m)


def parse_drop(payload: bytes) -> tuple[DropRecord, bytes, bytes]:
    """Strictly parse a DROP record payload: (record, its signed bytes, signature); unverified."""
    what = "drop record"
    outer = cbor.expect_map(cbor.decode(payload, what, MAX_DROP), _OUTER_KEYS, frozenset(), what)
    cbor.field(outer, "rec", lambda x: isinstance(x, bytes), "bytes", what)
    cbor.field(outer, "sig", lambda x: isinstance(x, bytes) and len(x) == 64, "64 bytes", what)
    return DropRecord.decode(outer["rec"], what), outer["rec"], outer["sig"]


def verify_drop(payload: bytes, public_key: bytes) -> DropRecord:
    """Parse a DROP record payload and check it is signed by the device key `public_key`.

    Raises DecodeError for bytes that are not a DROP record, VerificationError("drop
    record signature" or "kid") for one the key did not sign.
    """
    record, rec, sig = parse_drop(payload)
    where = f"drop record {record.dev}/{record.h0}..{record.h1}"
    if record.kid != key_id(public_key):
        raise VerificationError("kid", f"{where} names key {record.kid.hex()}, "
                                       f"not {key_id(public_key).hex()}")
    try:
        nacl.signing.VerifyKey(public_key).verify(DROP_CONTEXT + rec, sig)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise VerificationError("drop record signature",
                                f"{where} is not signed by the device key") from exc
    return record
