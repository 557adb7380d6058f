"""Deterministic CBOR: what the strict decoder accepts, and every rejection it promises."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core import cbor
from edgeledger.core.errors import DecodeError

# --- round trips ---------------------------------------------------------------------

GOOD = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (-1, "20"),
    (cbor.UINT64_MAX, "1bffffffffffffffff"),
    (b"", "40"),
    ("", "60"),
    ([], "80"),
    ({}, "a0"),
    (True, "f5"),
    (None, "f6"),
    (1.5, "f93e00"),  # the shortest float that holds the value
    (100000.0, "fa47c35000"),
    (1.1, "fb3ff199999999999a"),
    ({"b": 1, "a": 2, "aa": 3}, "a361610261620162616103"),  # bytewise key order
]


@pytest.mark.parametrize(("value", "hexed"), GOOD)
def test_known_encodings_round_trip(value: object, hexed: str) -> None:
    assert cbor.encode(value).hex() == hexed
    assert cbor.decode(bytes.fromhex(hexed), "item") == value


# --- rejections ------------------------------------------------------------------------

NOT_DETERMINISTIC = "not in deterministic CBOR"

BAD = [
    ("trailing byte", "0000", NOT_DETERMINISTIC),
    ("two items", "a0a0", NOT_DETERMINISTIC),
    ("non-minimal int 1 byte", "1801", NOT_DETERMINISTIC),
    ("non-minimal int 2 bytes", "190017", NOT_DETERMINISTIC),
    ("non-minimal int 4 bytes", "1a000000ff", NOT_DETERMINISTIC),
    ("non-minimal int 8 bytes", "1b00000000ffffffff", NOT_DETERMINISTIC),
    ("non-minimal negative int", "3800", NOT_DETERMINISTIC),
    ("non-minimal length", "5800", NOT_DETERMINISTIC),
    ("float wider than needed", "fa3fc00000", NOT_DETERMINISTIC),
    ("double wider than needed", "fb3ff8000000000000", NOT_DETERMINISTIC),
    ("indefinite array", "9f01ff", NOT_DETERMINISTIC),
    ("indefinite map", "bf616101ff", NOT_DETERMINISTIC),
    ("indefinite bytes", "5f4101ff", NOT_DETERMINISTIC),
    ("indefinite text", "7f6161ff", NOT_DETERMINISTIC),
    ("unsorted keys", "a2616201616102", NOT_DETERMINISTIC),
    ("length-first order violated", "a262616101616102", NOT_DETERMINISTIC),
    ("duplicate keys", "a2616101616102", NOT_DETERMINISTIC),
    ("bignum that fits", "c24101", NOT_DETERMINISTIC),
    ("NaN half", "f97e00", "NaN"),
    ("NaN single", "fa7fc00000", "NaN"),
    ("NaN double", "fb7ff8000000000000", "NaN"),
    ("+inf", "f97c00", "NaN and infinities"),
    ("-inf", "f9fc00", "NaN and infinities"),
    ("NaN in array", "8201f97e00", "NaN"),
    ("inf in map value", "a16161f97c00", "NaN and infinities"),
    ("NaN deep", "818181a16178f97e00", "NaN"),
    ("NaN as map key", "a1f97e0001", "NaN"),
    ("inf as map key", "a1f9fc0001", "NaN and infinities"),
    ("NaN under a tag", "d863f97e00", "NaN"),
    ("NaN in a tagged COSE-like array", "d28440a040f97e00", "NaN"),
    ("empty input", "", "not valid CBOR"),
    ("truncated int", "19", "not valid CBOR"),
    ("truncated bytes", "4401", "not valid CBOR"),
    ("huge claimed length", "5b7fffffffffffffff", "not valid CBOR"),
    ("lone break", "ff", "not valid CBOR|not plain CBOR"),  # cbor2 6 | cbor2 5
    ("reserved additional info", "1c", "not valid CBOR"),
    ("invalid UTF-8 text", "61ff", "not valid CBOR"),
]


@pytest.mark.parametrize(("hexed", "needle"), [(h, n) for _, h, n in BAD],
                         ids=[name for name, _, _ in BAD])
def test_rejections_name_what_and_why(hexed: str, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        cbor.decode(bytes.fromhex(hexed), "widget 9")
    assert str(err.value).startswith("widget 9: ")
    assert any(n in str(err.value) for n in needle.split("|"))


def test_rejects_oversize_input_before_decoding() -> None:
    data = cbor.encode(b"x" * 100)
    assert cbor.decode(data, "blob", max_size=len(data)) == b"x" * 100
    with pytest.raises(DecodeError, match=r"blob: 102 bytes is more than the limit of 101"):
        cbor.decode(data, "blob", max_size=len(data) - 1)
    with pytest.raises(DecodeError, match="more than the limit"):
        cbor.decode(bytes(cbor.MAX_DOCUMENT + 1), "blob")


@pytest.mark.parametrize("data", ["a0", None, 5, memoryview(b"\xa0")])
def test_rejects_non_bytes(data: object) -> None:
    with pytest.raises(DecodeError, match="thing: expected bytes"):
        cbor.decode(data, "thing")  # type: ignore[arg-type]


def test_accepts_bytearray() -> None:
    assert cbor.decode(bytearray(b"\x81\x01"), "x") == [1]


def test_deep_nesting_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        cbor.decode(b"\x81" * 100_000 + b"\x00", "deep")


# --- field helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "is_int", "is_uint", "is_int64"), [
    (0, True, True, True),
    (True, False, False, False),
    (False, False, False, False),
    (1.0, False, False, False),
    ("1", False, False, False),
    (-1, True, False, True),
    (cbor.INT64_MAX, True, True, True),
    (cbor.INT64_MAX + 1, True, True, False),
    (cbor.INT64_MIN, True, False, True),
    (cbor.INT64_MIN - 1, True, False, False),
    (cbor.UINT64_MAX, True, True, False),
    (cbor.UINT64_MAX + 1, True, False, False),
])
def test_integer_predicates(value: object, is_int: bool, is_uint: bool, is_int64: bool) -> None:
    assert (cbor.is_int(value), cbor.is_uint(value), cbor.is_int64(value)) == \
        (is_int, is_uint, is_int64)


@pytest.mark.parametrize(("value", "ok"), [
    (bytes(32), True), (bytes(31), False), (bytes(33), False), (bytearray(32), False),
    ("x" * 32, False)])
def test_is_hash(value: object, ok: bool) -> None:
    assert cbor.is_hash(value) is ok


def test_expect_map_names_missing_and_unknown_keys() -> None:
    req, opt = frozenset({"a", "b"}), frozenset({"c"})
    assert cbor.expect_map({"a": 1, "b": 2, "c": 3}, req, opt, "m") == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(DecodeError, match=r"m: missing key\(s\) \['b'\]"):
        cbor.expect_map({"a": 1}, req, opt, "m")
    with pytest.raises(DecodeError, match=r"m: unknown key\(s\) \['1', 'z'\]"):
        cbor.expect_map({"a": 1, "b": 2, "z": 0, 1: 0}, req, opt, "m")
    with pytest.raises(DecodeError, match="m: expected a CBOR map, got list"):
        cbor.expect_map([], req, opt, "m")


def test_field_names_the_key_and_shortens_the_value() -> None:
    assert cbor.field({"k": 5}, "k", cbor.is_uint, "a uint", "m") == 5
    with pytest.raises(DecodeError, match=r"m: key 'k' must be a uint, got True"):
        cbor.field({"k": True}, "k", cbor.is_uint, "a uint", "m")
    with pytest.raises(DecodeError) as err:
        cbor.field({"k": "z" * 500}, "k", cbor.is_uint, "a uint", "m")
    assert len(str(err.value)) < 120 and str(err.value).endswith("...")


# --- properties ------------------------------------------------------------------------

scalars = (st.integers(min_value=-(1 << 64), max_value=cbor.UINT64_MAX)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.binary(max_size=40) | st.text(max_size=40) | st.booleans() | st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(values)
def test_encode_decode_round_trip(value: object) -> None:
    data = cbor.encode(value)
    back = cbor.decode(data, "value")
    assert cbor.encode(back) == data
    assert _same(back, value)


@settings(max_examples=100, deadline=None)
@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_always_rejected(value: object, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        cbor.decode(cbor.encode(value) + tail, "value")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=5),
       st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 5))
def test_non_finite_anywhere_rejected(floats: list[float], bad: float, at: int) -> None:
    floats.insert(at, bad)
    with pytest.raises(DecodeError, match="NaN and infinities"):
        cbor.decode(cbor2.dumps({"v": [{"x": floats}]}, canonical=True), "value")


def _same(a: object, b: object) -> bool:
    """Equality that tells 1 from 1.0 and True from 1, and lists from tuples."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b  # type: ignore[arg-type]
    return a == b
