"""The aggregator API's JSON answers, parsed strictly into plain values (no I/O).

The shapes are those of edgeledger/aggregator/api/models.py. The auditor trusts none
of it: every field it uses is type-checked here, and a malformed answer is the log
operator's fault, reported as the check "api response" naming the path and the key.
Fields the audit does not use are ignored, so the API can grow.

Readings: the API serves each reading's decoded fields and its bytes (`raw`,
models.ReadingOut). The bytes are hashed as the Merkle leaf, and the fields must
encode to exactly them (deterministic CBOR, DESIGN.md 2.1), so what a person reads
is what was proven. Without `raw` (an older API) the bytes are rebuilt from the
fields; a field the JSON changed then shows up as a root mismatch, never a false pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeledger.core import b64
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.reading import Reading

API_RESPONSE = "api response"
MAX_INT = (1 << 63) - 1
T = TypeVar("T")


class Body:
    """A JSON object from `path`, with typed getters that fail as "api response"."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, Mapping):
            raise VerificationError(API_RESPONSE, f"{path}: expected a JSON object")
        self.obj: Mapping[str, Any] = obj
        self.path = path

    def fail(self, key: str, want: str) -> VerificationError:
        """The fault of key `key` not being `want`."""
        return VerificationError(API_RESPONSE, f"{self.path}: key {key!r} must be {want}")

    def get(self, key: str, ok: Callable[[object], bool], want: str) -> Any:
        """The value at `key` if `ok` accepts it."""
        if key not in self.obj or not ok(self.obj[key]):
            raise self.fail(key, want)
        return self.obj[key]

    def uint(self, key: str) -> int:
        """A JSON integer in 0..2**63-1 (never a bool or a float)."""
        value: int = self.get(key, _is_uint, "an integer from 0 to 2**63-1")
        return value

    def text(self, key: str) -> str:
        """A JSON string."""
        value: str = self.get(key, lambda v: isinstance(v, str), "text")
        return value

    def flag(self, key: str) -> bool:
        """A JSON boolean."""
        value: bool = self.get(key, lambda v: isinstance(v, bool), "true or false")
        return value

    def raw(self, key: str, size: int | None = None) -> bytes:
        """Standard base64 bytes (of exactly `size` bytes if given)."""
        try:
            return b64.decode(self.text(key), f"{self.path}: key {key!r}", size)
        except DecodeError as exc:
            raise VerificationError(API_RESPONSE, str(exc)) from exc

    def child(self, key: str) -> Body:
        """The JSON object at `key`."""
        return Body(self.get(key, lambda v: isinstance(v, Mapping), "an object"),
                    f"{self.path} {key}")

    def hashes(self, key: str) -> tuple[bytes, ...]:
        """A list of base64 32-byte hashes (a Merkle proof)."""
        items = self.get(key, lambda v: isinstance(v, list), "a list of base64 hashes")
        try:
            return tuple(b64.decode(h, f"{self.path}: key {key!r} item {i}", 32)
                         for i, h in enumerate(items))
        except DecodeError as exc:
            raise VerificationError(API_RESPONSE, str(exc)) from exc


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


@dataclass(frozen=True)
class LogInfo:
    """/v1/log: the log's origin, its verifier key (text) and its latest size and height."""

    origin: str
    verifier_key: str
    size: int
    height: int | None


def log_info(obj: object) -> LogInfo:
    """Parse /v1/log."""
    b = Body(obj, "/v1/log")
    height = None if b.obj.get("height", 0) is None else b.uint("height")
    return LogInfo(b.text("origin"), b.text("verifier_key"), b.uint("size"), height)


@dataclass(frozen=True)
class CheckpointFields:
    """/v1/checkpoint(s): the signed note and the fields the API parsed from it."""

    note: str
    height: int
    size: int
    root: bytes


def checkpoint(obj: object, path: str) -> CheckpointFields:
    """Parse /v1/checkpoint or /v1/checkpoints/{height}."""
    b = Body(obj, path)
    return CheckpointFields(b.text("note"), b.uint("height"), b.uint("size"), b.raw("root", 32))


def consistency(obj: object, path: str, old: int, new: int) -> tuple[bytes, ...]:
    """Parse /v1/consistency, checking it answers the sizes that were asked for."""
    b = Body(obj, path)
    if (b.uint("from"), b.uint("to")) != (old, new):
        raise VerificationError(API_RESPONSE, f"{path}: answers sizes {b.obj['from']} -> "
                                              f"{b.obj['to']}, not {old} -> {new}")
    return b.hashes("proof")


@dataclass(frozen=True)
class DeviceInfo:
    """/v1/devices/{id}: the enrolled key, and where the device's chain ends."""

    id: str
    public_key: bytes
    kid: str
    next_height: int
    tip_hash: bytes
    revoked: bool
    flagged: bool
    keys: tuple[tuple[int, bytes], ...] = ()
    """(from_height, public key) of every key it has had, oldest first."""

    def key_at(self, height: int) -> bytes:
        """The key that signs block `height`: the last one enrolled from at or below it."""
        found = [key for start, key in self.keys if start <= height]
        return found[-1] if found else self.public_key


def device(obj: object, path: str) -> DeviceInfo:
    """Parse /v1/devices/{id}; its key history must start at height 0, rise, and end
    with the current key (an API without `keys` is taken as one key from height 0)."""
    b = Body(obj, path)
    key = b.raw("public_key", 32)
    keys: list[tuple[int, bytes]] = [(0, key)]
    if b.obj.get("keys") is not None:
        items = b.get("keys", lambda v: isinstance(v, list) and len(v) > 0,
                      "a non-empty list of keys")
        keys = [(k.uint("from_height"), k.raw("public_key", 32))
                for k in (Body(x, f"{path} keys[{i}]") for i, x in enumerate(items))]
        starts = [start for start, _ in keys]
        if starts[0] != 0 or starts != sorted(set(starts)) or keys[-1][1] != key:
            raise b.fail("keys", "a key history from height 0, rising, ending with the "
                                 "current key")
    return DeviceInfo(b.text("id"), key, b.text("kid"), b.uint("next_height"),
                      b.raw("tip_hash", 32), b.flag("revoked"), b.flag("flagged"),
                      tuple(keys))


def device_page(obj: object, path: str) -> tuple[list[str], str | None]:
    """Parse a /v1/devices page: the ids, and the `after` of the next page (or None)."""
    b = Body(obj, path)
    items = b.get("devices", lambda v: isinstance(v, list), "a list of devices")
    ids = [Body(d, f"{path} devices[{i}]").text("id") for i, d in enumerate(items)]
    nxt = b.obj.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise b.fail("next", "text or null")
    return ids, nxt


@dataclass(frozen=True)
class Inclusion:
    """A block's audit path to the root of a checkpoint, as the API claims it."""

    checkpoint: str
    height: int
    size: int
    root: bytes
    log_path: tuple[bytes, ...]


@dataclass(frozen=True)
class PlacedReading:
    """A reading's bytes, and the block and position the API says it has."""

    device: str
    height: int
    index: int
    log_index: int
    raw: bytes


@dataclass(frozen=True)
class BlockAnswer:
    """/v1/devices/{id}/blocks/{h}: the block, its readings and its inclusion."""

    path: str
    device: str
    height: int
    hash: bytes
    log_index: int
    cose: bytes
    header: Mapping[str, Any]
    readings: tuple[PlacedReading, ...]
    inclusion: Inclusion | None


def block(obj: object, path: str) -> BlockAnswer:
    """Parse a block answer; a reading whose fields make no valid reading is "readings"."""
    b = Body(obj, path)
    items = b.get("readings", lambda v: isinstance(v, list), "a list of readings")
    inc = None if b.obj.get("inclusion", 0) is None else b.child("inclusion")
    return BlockAnswer(
        path, b.text("device"), b.uint("height"), b.raw("hash", 32), b.uint("log_index"),
        b.raw("block"), b.child("header").obj,
        tuple(_reading(Body(r, f"{path} readings[{i}]")) for i, r in enumerate(items)),
        None if inc is None else Inclusion(inc.text("checkpoint"), inc.uint("height"),
                                           inc.uint("size"), inc.raw("root", 32),
                                           inc.hashes("log_path")))


def _reading(b: Body) -> PlacedReading:
    """A ReadingOut as its bytes: the deterministic CBOR of its n, t, q, v, u, a."""
    u = b.obj.get("u")
    a = b.obj.get("a")
    if u is not None and not isinstance(u, str):
        raise b.fail("u", "text or null")
    for key in ("n", "t", "q", "v"):
        if key not in b.obj:
            raise b.fail(key, "present")
    try:
        reading = Reading(b.obj["n"], b.obj["t"], b.obj["q"], b.obj["v"], u,
                          None if a is None else b.raw("a"))
    except (DecodeError, TypeError, ValueError) as exc:
        raise VerificationError("readings", f"{b.path}: not a valid reading ({exc})") from exc
    raw = reading.raw
    if "raw" in b.obj:  # the leaf bytes themselves: hash those, and hold the fields to them
        raw = b.raw("raw")
        if raw != reading.raw:
            raise VerificationError("readings", f"{b.path}: the reading's fields do not "
                                                "encode to its raw bytes")
    return PlacedReading(b.text("device"), b.uint("height"), b.uint("index"),
                         b.uint("log_index"), raw)
