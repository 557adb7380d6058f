"""Deterministic CBOR (RFC 8949 section 4.2.1) encoding and strict decoding.

Encoding is ours: cbor2's canonical mode is 3.5x slower than its plain mode, and
cbor2 5's C encoder writes floats with 2**15 <= |x| < 2**16 that fit in half
precision as singles, so two gateways on different cbor2 versions would disagree
on a reading's bytes. The encoder below writes RFC 8949's preferred (shortest)
floats, minimal heads and bytewise-sorted map keys, the same on every version.
Decoding uses cbor2 and is strict by round trip: a value is accepted only if
encoding it again gives back the exact input bytes. That one rule rejects
indefinite lengths, non-minimal numbers, unsorted or duplicate map keys and
trailing bytes, whatever options the installed cbor2 has.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from edgeledger.core.errors import DecodeError

MAX_DOCUMENT = 1 << 20
"""Largest CBOR document we decode: a block with its readings is far smaller."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

MAJOR_UINT, MAJOR_NINT, MAJOR_BYTES, MAJOR_TEXT = 0, 1, 2, 3
MAJOR_ARRAY, MAJOR_MAP, MAJOR_TAG = 4, 5, 6
_HALF, _SINGLE, _DOUBLE = struct.Struct(">e"), struct.Struct(">f"), struct.Struct(">d")
_SIMPLE = {False: b"\xf4", True: b"\xf5", None: b"\xf6"}


def head(major: int, n: int) -> bytes:
    """The shortest head of major type `major` with argument `n` (0 <= n < 2**64)."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    if n <= UINT64_MAX:
        return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")
    raise ValueError(f"CBOR: {n} does not fit in 64 bits")


def encode_int(n: int) -> bytes:
    """A CBOR integer in its shortest form."""
    return head(MAJOR_UINT, n) if n >= 0 else head(MAJOR_NINT, -1 - n)


def encode_text(text: str) -> bytes:
    """A CBOR text string."""
    raw = text.encode()
    return head(MAJOR_TEXT, len(raw)) + raw


def encode_bytes(raw: bytes) -> bytes:
    """A CBOR byte string."""
    return head(MAJOR_BYTES, len(raw)) + raw


def encode_float(x: float) -> bytes:
    """The shortest of half, single or double precision that holds `x` exactly."""
    if not math.isfinite(x):
        raise ValueError(f"CBOR: {x!r} is not allowed in EdgeLedger data")
    try:
        half = _HALF.pack(x)
        if _HALF.unpack(half)[0] == x:
            return b"\xf9" + half
    except OverflowError:
        pass
    single = _SINGLE.pack(x) if abs(x) <= 3.4028234663852886e38 else b""
    if single and _SINGLE.unpack(single)[0] == x:
        return b"\xfa" + single
    return b"\xfb" + _DOUBLE.pack(x)


def encode(obj: object) -> bytes:
    """Encode `obj` in RFC 8949 core deterministic encoding.

    Handles what our formats use: int (64-bit), float, bool, None, str, bytes,
    lists and tuples, maps (keys sorted by their encoded bytes) and tags.
    """
    kind = type(obj)
    if kind is int:
        return encode_int(obj)  # type: ignore[arg-type]
    if kind is str:
        return encode_text(obj)  # type: ignore[arg-type]
    if kind is bytes:
        return encode_bytes(obj)  # type: ignore[arg-type]
    if kind is float:
        return encode_float(obj)  # type: ignore[arg-type]
    if obj is None or kind is bool:
        return _SIMPLE[obj]  # type: ignore[index]
    if isinstance(obj, (list, tuple)):
        return head(MAJOR_ARRAY, len(obj)) + b"".join(map(encode, obj))
    if isinstance(obj, Mapping):
        items = sorted((encode(k), encode(v)) for k, v in obj.items())
        return head(MAJOR_MAP, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(obj, cbor2.CBORTag):
        return head(MAJOR_TAG, obj.tag) + encode(obj.value)
    if isinstance(obj, (bytearray, memoryview)):
        return encode_bytes(bytes(obj))
    raise TypeError(f"CBOR: cannot encode a {kind.__name__} in EdgeLedger data")


def loads(data: bytes, what: str, max_size: int = MAX_DOCUMENT) -> Any:
    """Parse one CBOR item with cbor2, turning every failure into DecodeError.

    Not strict on its own: callers compare a re-encoding with `data` (see decode).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"{what}: {len(data)} bytes is more than the limit of {max_size}")
    try:
        return cbor2.loads(bytes(data))
    # cbor2 raises many types (CBORDecodeError, ValueError, TypeError, RecursionError,
    # OverflowError, MemoryError on absurd lengths); every one means "not our CBOR".
    except Exception as exc:
        raise DecodeError(f"{what}: not valid CBOR ({type(exc).__name__}: {exc})") from exc


NOT_DETERMINISTIC = ("not in deterministic CBOR encoding (RFC 8949 4.2.1): indefinite "
                     "length, non-minimal number, unsorted or duplicate keys, or trailing bytes")


def decode(data: bytes, what: str, max_size: int = MAX_DOCUMENT) -> Any:
    """Decode one deterministic CBOR item from `data`, naming `what` in errors."""
    obj = loads(data, what, max_size)
    reject_non_finite(obj, what)
    try:
        again = encode(obj)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{what}: not valid CBOR for EdgeLedger ({exc})") from exc
    if again != data:
        raise DecodeError(f"{what}: {NOT_DETERMINISTIC}")
    return obj


def reject_non_finite(obj: object, what: str) -> None:
    """Raise if any float anywhere in `obj` (map keys and tag contents too) is NaN or infinite."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                raise DecodeError(f"{what}: holds {item!r}; NaN and infinities are not allowed")
        elif kind in _SCALARS:
            continue
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, cbor2.CBORTag):
            stack.append(item.value)
        elif isinstance(item, float) and not math.isfinite(item):
            raise DecodeError(f"{what}: holds {item!r}; NaN and infinities are not allowed")


_SCALARS = frozenset({int, str, bytes, bool, type(None)})


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
