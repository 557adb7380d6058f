"""Micro-blocks (DESIGN.md 2.2): COSE_Sign1 (RFC 9052) over a block header, Ed25519.

A block commits to its readings through the RFC 6962 root over their bytes and
to its predecessor through `prev`, the SHA-256 of the previous block's payload.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.exceptions
import nacl.signing

from edgeledger.core import cbor, merkle
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading, check_sequence

FORMAT_VERSION = 1
COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HDR_ALG, HDR_KID = 1, 4
ZERO_HASH = bytes(32)
MAX_BLOCK = 4096
MAX_READINGS = 10_000
MAX_SYNC_MESSAGE = 1 << 20
DEVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

_HEADER_KEYS = frozenset({"v", "dev", "h", "prev", "root", "cnt", "t0", "t1", "ts"})
_SYNC_KEYS = frozenset({"blk", "rd"})


def key_id(public_key: bytes) -> bytes:
    """COSE kid of a device key: the first 8 bytes of SHA-256(public key)."""
    return hashlib.sha256(public_key).digest()[:8]


def valid_device_id(dev: object) -> bool:
    """A device id: `[a-z0-9][a-z0-9-]{0,63}`."""
    return isinstance(dev, str) and DEVICE_RE.fullmatch(dev) is not None


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The signed payload of a micro-block."""

    dev: str
    h: int
    prev: bytes
    root: bytes
    cnt: int
    t0: int
    t1: int
    ts: int
    v: int = FORMAT_VERSION

    def as_map(self) -> dict[str, Any]:
        """The header as the CBOR map of DESIGN.md 2.2."""
        return {"v": self.v, "dev": self.dev, "h": self.h, "prev": self.prev, "root": self.root,
                "cnt": self.cnt, "t0": self.t0, "t1": self.t1, "ts": self.ts}

    def encode(self) -> bytes:
        """Deterministic CBOR of the header (the COSE payload), keys in RFC 8949 order."""
        i, text, raw = cbor.encode_int, cbor.encode_text, cbor.encode_bytes
        return b"".join((b"\xa9\x61h", i(self.h), b"\x61v", i(self.v),
                         b"\x62t0", i(self.t0), b"\x62t1", i(self.t1), b"\x62ts", i(self.ts),
                         b"\x63cnt", i(self.cnt), b"\x63dev", text(self.dev),
                         b"\x64prev", raw(self.prev), b"\x64root", raw(self.root)))

    @classmethod
    def decode(cls, data: bytes, what: str = "block header") -> BlockHeader:
        """Strictly decode and validate a header."""
        obj = cbor.loads(data, what, MAX_BLOCK)
        cbor.reject_non_finite(obj, what)
        m = cbor.expect_map(obj, _HEADER_KEYS, frozenset(), what)
        cbor.field(m, "v", lambda x: cbor.is_int(x) and x == FORMAT_VERSION,
                   f"format version {FORMAT_VERSION}", what)
        cbor.field(m, "dev", valid_device_id, "a device id [a-z0-9][a-z0-9-]{0,63}", what)
        cbor.field(m, "h", cbor.is_uint, "an unsigned integer", what)
        cbor.field(m, "prev", cbor.is_hash, "32 bytes", what)
        cbor.field(m, "root", cbor.is_hash, "32 bytes", what)
        cbor.field(m, "cnt", lambda x: cbor.is_uint(x) and x <= MAX_READINGS,  # type: ignore[operator]
                   f"an unsigned integer up to {MAX_READINGS}", what)
        for key in ("t0", "t1", "ts"):
            cbor.field(m, key, cbor.is_int64, "an integer (Unix ms)", what)
        header = cls(m["dev"], m["h"], m["prev"], m["root"], m["cnt"], m["t0"], m["t1"], m["ts"])
        if header.encode() != data:
            raise DecodeError(f"{what}: {cbor.NOT_DETERMINISTIC}")
        header.check_shape(what)
        return header

    def check_shape(self, what: str) -> None:
        """Rules that tie the header's fields to each other."""
        if self.t0 > self.t1:
            raise DecodeError(f"{what}: t0 {self.t0} is after t1 {self.t1}")
        if self.cnt == 0 and not (self.t0 == self.t1 == self.ts and self.root == merkle.EMPTY_ROOT):
            raise DecodeError(f"{what}: an empty block must have t0 = t1 = ts and the empty root")
        if self.h == 0 and self.prev != ZERO_HASH:
            raise DecodeError(f"{what}: block 0 must have prev = 32 zero bytes")


@dataclass(frozen=True, slots=True)
class Block:
    """A parsed COSE_Sign1 micro-block. Parsing checks structure, not the signature."""

    cose: bytes
    protected: bytes
    payload: bytes
    signature: bytes
    kid: bytes
    header: BlockHeader

    @property
    def hash(self) -> bytes:
        """The block hash: SHA-256 of the payload, which the next block's `prev` holds."""
        return hashlib.sha256(self.payload).digest()

    @classmethod
    def parse(cls, cose: bytes, what: str = "block") -> Block:
        """Strictly decode a COSE_Sign1 micro-block; DecodeError names the part at fault."""
        obj = cbor.loads(cose, what, MAX_BLOCK)
        if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
            raise DecodeError(f"{what}: not a tagged COSE_Sign1 (tag 18)")
        parts = obj.value  # a list in cbor2 5, a tuple in cbor2 6
        if not (isinstance(parts, (list, tuple)) and len(parts) == 4
                and all(isinstance(parts[i], bytes) for i in (0, 2, 3))):
            raise DecodeError(f"{what}: COSE_Sign1 must be [protected, unprotected, payload, "
                              "signature] with byte strings")
        protected, unprotected, payload, signature = parts
        if not isinstance(unprotected, Mapping) or len(unprotected) != 0:
            raise DecodeError(f"{what}: the unprotected header must be empty")
        if len(signature) != 64:
            raise DecodeError(f"{what}: an Ed25519 signature is 64 bytes, not {len(signature)}")
        if _cose_bytes(protected, payload, signature) != cose:
            raise DecodeError(f"{what}: {cbor.NOT_DETERMINISTIC}")
        kid = _parse_protected(protected, what)
        header = BlockHeader.decode(payload, f"{what} header")
        return cls(bytes(cose), protected, payload, signature, kid, header)

    def verify(self, public_key: bytes, check: str = "block signature") -> None:
        """Check the kid and the Ed25519 signature against the device's public key."""
        if self.kid != key_id(public_key):
            raise VerificationError("kid", f"block {self.header.dev}/{self.header.h} names key "
                                           f"{self.kid.hex()}, not {key_id(public_key).hex()}")
        message = _sig_structure(self.protected, self.payload)
        try:
            nacl.signing.VerifyKey(public_key).verify(message, self.signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise VerificationError(check, f"block {self.header.dev}/{self.header.h} is not "
                                           "signed by the device key") from exc


def _cose_bytes(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """Deterministic COSE_Sign1: tag 18, [protected, {}, payload, signature]."""
    return b"".join((b"\xd2\x84", cbor.encode_bytes(protected), b"\xa0",
                     cbor.encode_bytes(payload), cbor.encode_bytes(signature)))


_PROTECTED_HEAD = bytes([0xA2, 0x01, 0x27, 0x04, 0x48])
"""{1: -8, 4: h'<8 bytes>'} up to the kid: the one protected header a block may have."""


def _parse_protected(protected: bytes, what: str) -> bytes:
    if len(protected) == 13 and protected.startswith(_PROTECTED_HEAD):
        return protected[5:]
    m = cbor.decode(protected, f"{what} protected header", 64)
    # cbor.is_int: True == 1 and -8.0 == -8 in Python, but not in a COSE header.
    if (not isinstance(m, Mapping) or not all(cbor.is_int(k) for k in m)
            or set(m) != {HDR_ALG, HDR_KID} or not cbor.is_int(m[HDR_ALG])
            or m[HDR_ALG] != ALG_EDDSA
            or not isinstance(m[HDR_KID], bytes) or len(m[HDR_KID]) != 8):
        raise DecodeError(f"{what}: protected header must be {{1: -8 (EdDSA), 4: 8-byte kid}}")
    kid: bytes = m[HDR_KID]
    return kid


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 Sig_structure ["Signature1", protected, h'', payload] for COSE_Sign1."""
    return b"".join((b"\x84\x6aSignature1", cbor.encode_bytes(protected), b"\x40",
                     cbor.encode_bytes(payload)))


@functools.lru_cache(maxsize=64)
def _protected_header(public_key: bytes) -> tuple[bytes, bytes]:
    """The kid and the encoded protected header {1: -8, 4: kid} for a device key."""
    kid = key_id(public_key)
    return kid, cbor.encode({HDR_ALG: ALG_EDDSA, HDR_KID: kid})


def seal(signer: Signer, dev: str, h: int, prev: bytes, readings: Sequence[Reading],
         ts: int) -> Block:
    """Sign `readings` into block `h` of device `dev`, linked to the block hash `prev`."""
    if readings:
        sha = hashlib.sha256
        root = merkle.root_from_leaf_hashes([sha(b"\x00" + r.raw).digest() for r in readings])
        times = [r.t for r in readings]
        t0, t1 = min(times), max(times)
    else:
        root, t0, t1 = merkle.EMPTY_ROOT, ts, ts
    if not valid_device_id(dev):
        raise DecodeError(f"device id {dev!r}: must match [a-z0-9][a-z0-9-]{{0,63}}")
    header = BlockHeader(dev, h, prev, root, len(readings), t0, t1, ts)
    header.check_shape(f"block {dev}/{h}")
    kid, protected = _protected_header(signer.public_key)
    payload = header.encode()
    signature = signer.sign(_sig_structure(protected, payload))
    cose = _cose_bytes(protected, payload, signature)
    return Block(cose, protected, payload, signature, kid, header)


def verify_readings(block: Block, encoded: Sequence[bytes]) -> list[Reading]:
    """Decode a block's readings and check them against its header.

    Checks the count, the Merkle root, t0/t1 and strictly increasing `q` per sensor;
    the caller checks the signature. Raises VerificationError("readings", ...).
    """
    hdr, where = block.header, f"block {block.header.dev}/{block.header.h}"
    if len(encoded) != hdr.cnt:
        raise VerificationError("readings",
                                f"{where} says cnt={hdr.cnt}, message has {len(encoded)}")
    try:
        readings = [Reading.decode(raw, f"{where} reading {i}") for i, raw in enumerate(encoded)]
    except DecodeError as exc:
        raise VerificationError("readings", str(exc)) from exc
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(raw) for raw in encoded])
    if root != hdr.root:
        raise VerificationError("readings", f"{where}: readings do not hash to the header's root")
    if readings and (min(r.t for r in readings), max(r.t for r in readings)) != (hdr.t0, hdr.t1):
        raise VerificationError("readings", f"{where}: t0/t1 do not match the readings' times")
    try:
        check_sequence(readings, where)
    except DecodeError as exc:
        raise VerificationError("readings", str(exc)) from exc
    return readings


def sync_message(block: Block, readings: Sequence[Reading]) -> bytes:
    """The device-to-aggregator message {"blk": COSE_Sign1, "rd": [reading bytes]}."""
    return _sync_bytes(block.cose, [r.raw for r in readings])


def readings_array(raws: Sequence[bytes]) -> bytes:
    """Deterministic CBOR of a list of readings' bytes (the sync message's "rd")."""
    return cbor.head(cbor.MAJOR_ARRAY, len(raws)) + b"".join(map(cbor.encode_bytes, raws))


def _sync_bytes(cose: bytes, raws: Sequence[bytes]) -> bytes:
    # Deterministic key order (RFC 8949 4.2.1): "rd" (0x62...) before "blk" (0x63...).
    return b"".join((b"\xa2\x62rd", readings_array(raws), b"\x63blk", cbor.encode_bytes(cose)))


def parse_sync_message(data: bytes, what: str = "sync message") -> tuple[Block, list[bytes]]:
    """Decode a sync message into the parsed block and its readings' bytes (unchecked)."""
    m = cbor.expect_map(cbor.loads(data, what, MAX_SYNC_MESSAGE), _SYNC_KEYS, frozenset(), what)
    cbor.field(m, "blk", lambda x: isinstance(x, bytes), "bytes (a COSE_Sign1)", what)
    cbor.field(m, "rd", lambda x: isinstance(x, list) and len(x) <= MAX_READINGS
               and all(isinstance(r, bytes) for r in x), "a list of byte strings", what)
    if _sync_bytes(m["blk"], m["rd"]) != data:
        raise DecodeError(f"{what}: {cbor.NOT_DETERMINISTIC}")
    return Block.parse(m["blk"], f"{what} block"), list(m["rd"])
