"""A sensor reading (DESIGN.md 2.1): one Merkle leaf of a micro-block."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeledger.core import cbor
from edgeledger.core.errors import DecodeError

Value = int | float | bool | str | dict[str, int | float]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TEXT = 256
MAX_UNIT = 32
MAX_ATTESTATION = 256
MAX_FIX_FIELDS = 16
MAX_READING = 2048

_REQUIRED = frozenset({"n", "t", "q", "v"})
_OPTIONAL = frozenset({"u", "a"})
_KEYS = _REQUIRED | _OPTIONAL


@dataclass(frozen=True, slots=True)
class Reading:
    """One value from one sensor, validated and encoded once when made.

    `raw` is the reading's deterministic CBOR: the bytes that are journaled,
    hashed into the block's Merkle tree and proven later.
    """

    n: str
    t: int
    q: int
    v: Value
    u: str | None = None
    a: bytes | None = None
    raw: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _valid(self):
            _check(self.as_map(), "reading")  # raises, naming the key at fault
        object.__setattr__(self, "raw", _encode(self))

    @property
    def sensor(self) -> str:
        """The sensor id: the part of the name before the slash."""
        return self.n.split("/", 1)[0]

    def as_map(self) -> dict[str, Any]:
        """The reading as the CBOR map of DESIGN.md 2.1."""
        out: dict[str, Any] = {"n": self.n, "t": self.t, "q": self.q, "v": self.v}
        if self.u is not None:
            out["u"] = self.u
        if self.a is not None:
            out["a"] = self.a
        return out

    @classmethod
    def decode(cls, data: bytes, what: str = "reading") -> Reading:
        """Strictly decode a reading's CBOR bytes; DecodeError names `what` and the fault.

        The fast path (ingest decodes every reading of every block) checks the fields
        once and encodes once: the round trip is the strictness check and gives `raw`.
        """
        obj = cbor.loads(data, what, MAX_READING)
        if type(obj) is not dict or not _REQUIRED <= obj.keys() <= _KEYS:
            _explain(obj, what)
        reading = object.__new__(cls)
        for key in ("n", "t", "q", "v"):
            object.__setattr__(reading, key, obj[key])
        object.__setattr__(reading, "u", obj.get("u"))
        object.__setattr__(reading, "a", obj.get("a"))
        if not _valid(reading):
            _explain(obj, what)
        raw = _encode(reading)
        if raw != data:
            _explain(obj, what)
        object.__setattr__(reading, "raw", raw)
        return reading


def _explain(obj: object, what: str) -> None:
    """Raise the DecodeError that says what is wrong with a decoded reading."""
    cbor.reject_non_finite(obj, what)
    _check(obj, what)
    raise DecodeError(f"{what}: {cbor.NOT_DETERMINISTIC}")


def _valid(r: Reading) -> bool:
    """The fast check for the common case; `_check` explains a failure."""
    return (type(r.n) is str and (r.n in _KNOWN_NAMES or _learn_name(r.n))
            and type(r.t) is int and cbor.INT64_MIN <= r.t <= cbor.INT64_MAX
            and type(r.q) is int and 0 <= r.q <= cbor.UINT64_MAX
            and _is_value(r.v)
            and (r.u is None or _is_unit(r.u))
            and (r.a is None or _is_attestation(r.a)))


# A gateway's sensors repeat a handful of names and units: remember their checks and
# encodings (bounded, so a stream of odd names cannot grow memory).
_CACHE_LIMIT = 4096
_KNOWN_NAMES: set[str] = set()
_TEXT: dict[str, bytes] = {}


def _learn_name(name: str) -> bool:
    if NAME_RE.fullmatch(name) is None:
        return False
    if len(_KNOWN_NAMES) >= _CACHE_LIMIT:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES.add(name)
    return True


def _text(text: str) -> bytes:
    raw = _TEXT.get(text)
    if raw is None:
        raw = cbor.encode_text(text)
        if len(_TEXT) >= _CACHE_LIMIT:
            _TEXT.clear()
        _TEXT[text] = raw
    return raw


def _encode(r: Reading) -> bytes:
    """Deterministic CBOR of a reading, keys in RFC 8949 order: a, n, q, t, u, v."""
    parts = [cbor.head(cbor.MAJOR_MAP, 4 + (r.u is not None) + (r.a is not None))]
    if r.a is not None:
        parts += (b"\x61a", cbor.encode_bytes(r.a))
    parts += (b"\x61n", _text(r.n), b"\x61q", cbor.head(cbor.MAJOR_UINT, r.q),
              b"\x61t", cbor.encode_int(r.t))
    if r.u is not None:
        parts += (b"\x61u", _text(r.u))
    v = r.v
    parts += (b"\x61v", cbor.encode_float(v) if type(v) is float else cbor.encode(v))
    return b"".join(parts)


def _check(obj: object, what: str) -> dict[str, Any]:
    """Validate a reading map against DESIGN.md 2.1, naming the key at fault."""
    m = cbor.expect_map(obj, _REQUIRED, _OPTIONAL, what)
    cbor.field(m, "n", _is_name, "text '<sensor id>/<metric>' ([A-Za-z0-9._-], "
                                 "up to 64 characters each side)", what)
    cbor.field(m, "t", cbor.is_int64, "an integer (Unix epoch ms)", what)
    cbor.field(m, "q", cbor.is_uint, "an unsigned integer", what)
    cbor.field(m, "v", _is_value, "an int, a finite float, a bool, text of at most "
                                  f"{MAX_TEXT} bytes, or a map of text to numbers", what)
    if "u" in m:
        cbor.field(m, "u", _is_unit, f"text of 1 to {MAX_UNIT} printable characters", what)
    if "a" in m:
        cbor.field(m, "a", _is_attestation, f"bytes, at most {MAX_ATTESTATION}", what)
    return dict(m)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return cbor.is_int64(value)


def _is_value(value: object) -> bool:
    if isinstance(value, bool) or _is_number(value):
        return True
    if isinstance(value, str):
        return _utf8_length(value) <= MAX_TEXT
    if isinstance(value, Mapping):
        return (0 < len(value) <= MAX_FIX_FIELDS
                and all(isinstance(k, str) and 0 < len(k) <= MAX_UNIT and _utf8_length(k) > 0
                        and _is_number(x) for k, x in value.items()))
    return False


def _utf8_length(text: str) -> int:
    """Length in UTF-8, or a huge number for text that has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return 1 << 62


def _is_unit(value: object) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= MAX_UNIT
            and value.isprintable() and not value.isspace())


def _is_attestation(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_ATTESTATION


def check_sequence(readings: list[Reading], what: str) -> None:
    """Raise DecodeError unless each sensor's `q` strictly increases along `readings`."""
    last: dict[str, int] = {}
    for i, r in enumerate(readings):
        if r.sensor in last and r.q <= last[r.sensor]:
            raise DecodeError(f"{what}: reading {i} ({r.n}) has q={r.q}, not above "
                              f"{last[r.sensor]} from an earlier reading of sensor {r.sensor}")
        last[r.sensor] = r.q
