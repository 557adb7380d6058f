"""Proof bundles (DESIGN.md 2.4): everything needed to prove one reading, offline.

Verification starts at the trust anchor and works down, so that every byte is
checked by the key that vouches for it before it is used, and a tampered field
is caught by the check meant for it:

1. checkpoint signature: the checkpoint is signed by the log key;
2. kid, block signature, device: the block is signed by `device_key`, for `device`;
3. log inclusion: the block is entry `log_index` of the checkpoint's tree;
4. reading path: the reading is leaf `reading_index` of the block's `root`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from edgeledger.core import b64, merkle
from edgeledger.core.block import Block
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Verifier
from edgeledger.core.reading import Reading

BUNDLE_VERSION = 1
MAX_BUNDLE = 1 << 20
T = TypeVar("T")
_KEYS = frozenset({"version", "reading", "reading_index", "reading_path", "block", "device",
                   "device_key", "log_index", "log_path", "checkpoint"})


@dataclass(frozen=True)
class ProofBundle:
    """A proof that one reading is in a block that is in the canonical log."""

    reading: bytes
    reading_index: int
    reading_path: tuple[bytes, ...]
    block: bytes
    device: str
    device_key: bytes
    log_index: int
    log_path: tuple[bytes, ...]
    checkpoint: str
    version: int = BUNDLE_VERSION

    def to_json(self) -> str:
        """The bundle as JSON text, bytes in standard base64."""
        return json.dumps({
            "version": self.version, "reading": b64.encode(self.reading),
            "reading_index": self.reading_index,
            "reading_path": [b64.encode(h) for h in self.reading_path],
            "block": b64.encode(self.block), "device": self.device,
            "device_key": b64.encode(self.device_key), "log_index": self.log_index,
            "log_path": [b64.encode(h) for h in self.log_path], "checkpoint": self.checkpoint,
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ProofBundle:
        """Strictly parse a bundle; DecodeError names the key at fault."""
        if not isinstance(text, (str, bytes)):
            raise DecodeError(f"bundle: expected JSON text, got {type(text).__name__}")
        size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
        if size > MAX_BUNDLE:
            raise DecodeError(f"bundle: larger than {MAX_BUNDLE} bytes ({size})")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"bundle: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DecodeError("bundle: expected a JSON object")
        if set(obj) != _KEYS:
            missing, unknown = sorted(_KEYS - set(obj)), sorted(set(obj) - _KEYS)
            raise DecodeError(f"bundle: missing keys {missing}, unknown keys {unknown}")
        if obj["version"] != BUNDLE_VERSION or not _is_index(obj["version"]):
            raise DecodeError(f"bundle: key 'version' must be {BUNDLE_VERSION}")
        for key in ("reading_index", "log_index"):
            if not _is_index(obj[key]):
                raise DecodeError(f"bundle: key {key!r} must be a non-negative integer")
        for key in ("device", "checkpoint"):
            if not isinstance(obj[key], str):
                raise DecodeError(f"bundle: key {key!r} must be text")
        return cls(reading=b64.decode(obj["reading"], "bundle: key 'reading'"),
                   reading_index=obj["reading_index"],
                   reading_path=_hashes(obj["reading_path"], "reading_path"),
                   block=b64.decode(obj["block"], "bundle: key 'block'"),
                   device=obj["device"],
                   device_key=b64.decode(obj["device_key"], "bundle: key 'device_key'", 32),
                   log_index=obj["log_index"],
                   log_path=_hashes(obj["log_path"], "log_path"),
                   checkpoint=obj["checkpoint"])


@dataclass(frozen=True)
class Proven:
    """What a verified bundle proves."""

    reading: Reading
    block: Block
    log_index: int
    checkpoint: Checkpoint

    def describe(self) -> str:
        """One line for a person: which reading, in which block, in which log state."""
        r, h, cp = self.reading, self.block.header, self.checkpoint
        unit = f" {r.u}" if r.u else ""
        return (f"reading {r.n} q={r.q} t={r.t} v={r.v!r}{unit} is in block {h.h} of device "
                f"{h.dev}, entry {self.log_index} of log {cp.origin} at size {cp.size} "
                f"(checkpoint height {cp.height}, time {cp.time})")


def build_bundle(readings: Sequence[bytes], reading_index: int, block: Block,
                 device_key: bytes, log_index: int, log_path: Sequence[bytes],
                 checkpoint_note: str) -> ProofBundle:
    """Assemble a bundle for reading `reading_index` of `block`, whose readings are given."""
    tree = merkle.MemoryHashes()
    for raw in readings:
        tree.append(merkle.leaf_hash(raw))
    path = merkle.inclusion_proof(reading_index, tree.size, tree.read_hashes)
    return ProofBundle(reading=readings[reading_index], reading_index=reading_index,
                       reading_path=tuple(path), block=block.cose, device=block.header.dev,
                       device_key=device_key, log_index=log_index, log_path=tuple(log_path),
                       checkpoint=checkpoint_note)


def verify_bundle(bundle: ProofBundle, log_key: Verifier) -> Proven:
    """Run every check of DESIGN.md 2.4; raise VerificationError naming the first that fails."""
    checkpoint = _checked(lambda: open_checkpoint(bundle.checkpoint, log_key),
                          "checkpoint signature")
    block = _checked(lambda: Block.parse(bundle.block), "block signature")
    block.verify(bundle.device_key)
    if block.header.dev != bundle.device:
        raise VerificationError("device", f"block is from device {block.header.dev!r}, "
                                          f"bundle says {bundle.device!r}")
    merkle.verify_inclusion(merkle.leaf_hash(bundle.block), bundle.log_index, checkpoint.size,
                            bundle.log_path, checkpoint.root, check="log inclusion")
    reading = _checked(lambda: Reading.decode(bundle.reading), "reading path")
    merkle.verify_inclusion(merkle.leaf_hash(bundle.reading), bundle.reading_index,
                            block.header.cnt, bundle.reading_path, block.header.root,
                            check="reading path")
    return Proven(reading, block, bundle.log_index, checkpoint)


def _checked(parse: Callable[[], T], check: str) -> T:
    """Run `parse`, turning a DecodeError into the failure of `check`."""
    try:
        return parse()
    except DecodeError as exc:
        raise VerificationError(check, str(exc)) from exc


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _hashes(value: object, key: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > merkle.MAX_PROOF_HASHES:
        raise DecodeError(f"bundle: key {key!r} must be a list of at most "
                          f"{merkle.MAX_PROOF_HASHES} base64 hashes")
    return tuple(b64.decode(h, f"bundle: key {key!r} item {i}", 32) for i, h in enumerate(value))
