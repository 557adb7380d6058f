"""Deterministic CBOR (RFC 8949 section 4.2.1) encoding and strict decoding.

Decoding is strict by round trip: a value is accepted only if encoding it again
gives back the exact input bytes. That one rule rejects indefinite lengths,
non-minimal integers, floats wider than needed, unsorted or duplicate map keys
and trailing bytes, in both cbor2 5 and 6 (whose decoder options differ).
For text keys shorter than 24 bytes, cbor2's length-first canonical order is
the same as RFC 8949's bytewise order, and all our keys are that short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from edgeledger.core.errors import DecodeError

MAX_DOCUMENT = 1 << 20
"""Largest CBOR document we decode: a block with its readings is far smaller."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


def encode(obj: object) -> bytes:
    """Encode `obj` in RFC 8949 core deterministic encoding."""
    return cbor2.dumps(obj, canonical=True)


def decode(data: bytes, what: str, max_size: int = MAX_DOCUMENT) -> Any:
    """Decode one deterministic CBOR item from `data`, naming `what` in errors."""
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"{what}: {len(data)} bytes is more than the limit of {max_size}")
    try:
        obj = cbor2.loads(bytes(data))
    # cbor2 raises many types (CBORDecodeError, ValueError, TypeError, RecursionError,
    # OverflowError, MemoryError on absurd lengths); every one means "not our CBOR".
    except Exception as exc:
        raise DecodeError(f"{what}: not valid CBOR ({type(exc).__name__}: {exc})") from exc
    _reject_non_finite(obj, what)
    try:
        again = encode(obj)
    except Exception as exc:
        raise DecodeError(f"{what}: holds a value that is not plain CBOR ({exc})") from exc
    if again != data:
        raise DecodeError(f"{what}: not in deterministic CBOR encoding (RFC 8949 4.2.1): "
                          "indefinite length, non-minimal number, unsorted or duplicate "
                          "keys, or trailing bytes")
    return obj


def _reject_non_finite(obj: object, what: str) -> None:
    """Raise if any float anywhere in `obj` (map keys and tag contents too) is NaN or infinite."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise DecodeError(f"{what}: holds {item!r}; NaN and infinities are not allowed")
        if isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, cbor2.CBORTag):
            stack.append(item.value)


# --- field checks shared by the formats built on CBOR -----------------------------


def is_int(value: object) -> bool:
    """True for a CBOR integer (bool is not an integer here, though Python says so)."""
    return isinstance(value, int) and not isinstance(value, bool)


def expect_map(obj: object, required: frozenset[str], optional: frozenset[str],
               what: str) -> Mapping[str, Any]:
    """Check that `obj` is a map with exactly the required keys and some optional ones."""
    if not isinstance(obj, Mapping):
        raise DecodeError(f"{what}: expected a CBOR map, got {type(obj).__name__}")
    keys = set(obj)
    missing = required - keys
    if missing:
        raise DecodeError(f"{what}: missing key(s) {sorted(missing)}")
    unknown = keys - required - optional
    if unknown:
        raise DecodeError(f"{what}: unknown key(s) {sorted(map(str, unknown))}")
    return obj


def field(obj: Mapping[str, Any], key: str, check: Callable[[object], bool],
          expected: str, what: str) -> Any:
    """Return `obj[key]` if `check` accepts it, else raise naming the key."""
    value = obj[key]
    if not check(value):
        raise DecodeError(f"{what}: key {key!r} must be {expected}, got {_show(value)}")
    return value


def is_uint(value: object) -> bool:
    """An unsigned 64-bit integer."""
    return is_int(value) and 0 <= value <= UINT64_MAX  # type: ignore[operator]


def is_int64(value: object) -> bool:
    """A signed 64-bit integer."""
    return is_int(value) and INT64_MIN <= value <= INT64_MAX  # type: ignore[operator]


def is_hash(value: object) -> bool:
    """A 32-byte SHA-256 value."""
    return isinstance(value, bytes) and len(value) == 32


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
