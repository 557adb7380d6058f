"""Readings (DESIGN.md 2.1): strict decoding, naming the key at fault, and round trips."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core import cbor
from edgeledger.core.errors import DecodeError
from edgeledger.core.reading import MAX_READING, Reading, check_sequence

GOOD_MAP: dict[str, Any] = {"n": "bme280-1/temperature", "t": 1_700_000_000_000, "q": 7,
                            "v": 21.5, "u": "Cel"}
DROP = object()


def reading_bytes(changes: dict[Any, Any] | None = None, **kw: Any) -> bytes:
    """Deterministic CBOR of GOOD_MAP with `changes` (DROP removes a key)."""
    m: dict[Any, Any] = dict(GOOD_MAP)
    for key, value in {**(changes or {}), **kw}.items():
        if value is DROP:
            del m[key]
        else:
            m[key] = value
    return cbor2.dumps(m, canonical=True)


# (id, changes, words the message must hold)
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("missing n", {"n": DROP}, "missing key(s) ['n']"),
    ("missing t", {"t": DROP}, "missing key(s) ['t']"),
    ("missing q", {"q": DROP}, "missing key(s) ['q']"),
    ("missing v", {"v": DROP}, "missing key(s) ['v']"),
    ("unknown key", {"x": 1}, "unknown key(s) ['x']"),
    ("unknown int key", {1: 1}, "unknown key(s) ['1']"),
    ("n not text", {"n": b"bme280-1/temperature"}, "key 'n'"),
    ("n without slash", {"n": "temperature"}, "key 'n'"),
    ("n empty metric", {"n": "bme280-1/"}, "key 'n'"),
    ("n empty sensor", {"n": "/temperature"}, "key 'n'"),
    ("n two slashes", {"n": "a/b/c"}, "key 'n'"),
    ("n with space", {"n": "bme 280/temperature"}, "key 'n'"),
    ("n leading dash", {"n": "-a/b"}, "key 'n'"),
    ("n non-ascii", {"n": "bmé/t"}, "key 'n'"),
    ("n trailing newline", {"n": "a/b\n"}, "key 'n'"),
    ("n sensor 65 chars", {"n": "a" * 65 + "/t"}, "key 'n'"),
    ("n metric 65 chars", {"n": "a/" + "t" * 65}, "key 'n'"),
    ("t bool", {"t": True}, "key 't'"),
    ("t float", {"t": 1.0}, "key 't'"),
    ("t text", {"t": "1"}, "key 't'"),
    ("t beyond int64", {"t": 1 << 63}, "key 't'"),
    ("t below int64", {"t": -(1 << 63) - 1}, "key 't'"),
    ("q negative", {"q": -1}, "key 'q'"),
    ("q bool", {"q": False}, "key 'q'"),
    ("q float", {"q": 7.0}, "key 'q'"),
    ("q beyond uint64", {"q": 1 << 64}, "key 'q'"),
    ("v null", {"v": None}, "key 'v'"),
    ("v bytes", {"v": b"\x01"}, "key 'v'"),
    ("v list", {"v": [1, 2]}, "key 'v'"),
    ("v text too long", {"v": "x" * 257}, "key 'v'"),
    ("v int beyond int64", {"v": 1 << 63}, "key 'v'"),
    ("v empty map", {"v": {}}, "key 'v'"),
    ("v map bool value", {"v": {"lat": True}}, "key 'v'"),
    ("v map text value", {"v": {"lat": "52"}}, "key 'v'"),
    ("v map nested map", {"v": {"pos": {"lat": 1}}}, "key 'v'"),
    ("v map int key", {"v": {1: 1.5}}, "key 'v'"),
    ("v map empty key", {"v": {"": 1.5}}, "key 'v'"),
    ("v map too many fields", {"v": {f"k{i}": i for i in range(17)}}, "key 'v'"),
    ("v NaN", {"v": float("nan")}, "NaN"),
    ("v +inf", {"v": float("inf")}, "NaN and infinities"),
    ("v -inf", {"v": float("-inf")}, "NaN and infinities"),
    ("v map NaN", {"v": {"lat": float("nan"), "lon": 1.0}}, "NaN"),
    ("v map inf", {"v": {"lat": 1.0, "alt": float("-inf")}}, "NaN and infinities"),
    ("u empty", {"u": ""}, "key 'u'"),
    ("u bytes", {"u": b"Cel"}, "key 'u'"),
    ("u null", {"u": None}, "key 'u'"),
    ("u too long", {"u": "C" * 33}, "key 'u'"),
    ("u whitespace", {"u": "   "}, "key 'u'"),
    ("u control char", {"u": "Cel\n"}, "key 'u'"),
    ("a text", {"a": "sig"}, "key 'a'"),
    ("a too long", {"a": b"\x00" * 257}, "key 'a'"),
    ("a null", {"a": None}, "key 'a'"),
]


@pytest.mark.parametrize(("changes", "needle"), [(c, n) for _, c, n in BAD],
                         ids=[i for i, _, _ in BAD])
def test_bad_fields_rejected_naming_the_key(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        Reading.decode(reading_bytes(changes), "reading 4 of block x/2")
    assert str(err.value).startswith("reading 4 of block x/2: ")
    assert needle in str(err.value)


@pytest.mark.parametrize(("name", "data", "needle"), [
    ("not a map", cbor2.dumps([1, 2], canonical=True), "expected a CBOR map"),
    ("text at top", cbor2.dumps("bme280-1/t", canonical=True), "expected a CBOR map"),
    ("trailing byte", reading_bytes() + b"\x00", "not in deterministic CBOR"),
    ("unsorted keys", cbor2.dumps(dict(reversed(GOOD_MAP.items()))), "not in deterministic"),
    ("non-minimal q", reading_bytes(q=0).replace(b"\x61q\x00", b"\x61q\x18\x00"),
     "not in deterministic"),
    ("float wider than needed", reading_bytes(v=0.5).replace(b"\xf9\x38\x00",
                                                             b"\xfa\x3f\x00\x00\x00"),
     "not in deterministic"),
    ("indefinite map", b"\xbf" + reading_bytes()[1:] + b"\xff", "not in deterministic"),
    ("indefinite text in n", reading_bytes(n="a/b").replace(b"\x63a/b", b"\x7f\x63a/b\xff"),
     "not in deterministic"),
    ("duplicate key", b"\xa6" + reading_bytes()[1:] + b"\x61v\xf9\x3e\x00",
     "not in deterministic"),
    ("truncated", reading_bytes()[:-1], "not valid CBOR"),
    ("empty", b"", "not valid CBOR"),
    ("oversize", reading_bytes(v="x" * 200) + b"\x00" * (MAX_READING - 200),
     "more than the limit"),
])
def test_bad_encodings_rejected(name: str, data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=rf"^reading: .*{needle}"):
        Reading.decode(data)


def test_constructor_validates_like_the_decoder() -> None:
    with pytest.raises(DecodeError, match="reading: key 'n'"):
        Reading("no-slash", 1, 1, 1.0)
    with pytest.raises(DecodeError, match="reading: key 'q'"):
        Reading("a/b", 1, -1, 1.0)
    with pytest.raises(DecodeError, match=r"NaN|key 'v'"):
        Reading("a/b", 1, 1, float("nan"))
    with pytest.raises(DecodeError, match="reading: key 't'"):
        Reading("a/b", True, 1, 1.0)


@pytest.mark.parametrize("value", [0, -5, 1 << 62, 0.25, -0.0, True, False, "", "open",
                                   {"lat": 52.52, "lon": 13.4, "alt": 34}, {"kWh": 1}])
def test_every_value_type_round_trips(value: Any) -> None:
    r = Reading("s-1/m", -3, 0, value, "u", b"\x00\x01")
    back = Reading.decode(r.raw)
    assert back == r and back.raw == r.raw
    assert type(back.v) is type(r.v)
    assert cbor.encode(back.as_map()) == r.raw


def test_optional_keys_are_left_out_when_absent() -> None:
    r = Reading("s-1/m", 1, 2, 3)
    assert set(cbor.decode(r.raw, "r")) == {"n", "t", "q", "v"}
    assert Reading.decode(r.raw) == r and r.sensor == "s-1"


# --- sequence per sensor --------------------------------------------------------------------


def R(name: str, q: int) -> Reading:
    return Reading(name, 1, q, 1)


@pytest.mark.parametrize("readings", [
    [],
    [R("a/x", 0)],
    [R("a/x", 1), R("a/x", 2), R("a/y", 3)],
    [R("a/x", 5), R("b/x", 1), R("a/x", 6), R("b/x", 2)],
    [R("a/x", 5), R("b/x", 5), R("c/x", 5)],
])
def test_sequence_accepts_strictly_increasing_per_sensor(readings: list[Reading]) -> None:
    check_sequence(readings, "block d/1")


@pytest.mark.parametrize(("readings", "bad"), [
    ([R("a/x", 1), R("a/x", 1)], 1),
    ([R("a/x", 2), R("a/x", 1)], 1),
    ([R("a/x", 1), R("a/y", 1)], 1),  # q is per sensor, not per metric
    ([R("a/x", 1), R("b/x", 9), R("b/y", 10), R("a/y", 0)], 3),
])
def test_sequence_rejects_repeats_and_steps_back(readings: list[Reading], bad: int) -> None:
    with pytest.raises(DecodeError, match=rf"^block d/1: reading {bad} \("):
        check_sequence(readings, "block d/1")


# --- properties ------------------------------------------------------------------------

_ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
_num = (st.integers(-(1 << 63), (1 << 63) - 1)
        | st.floats(allow_nan=False, allow_infinity=False))
readings = st.builds(
    Reading,
    n=st.builds(lambda a, b: f"{a}/{b}", _ident, _ident),
    t=st.integers(-(1 << 63), (1 << 63) - 1),
    q=st.integers(0, (1 << 64) - 1),
    v=(_num | st.booleans() | st.text(max_size=60)
       | st.dictionaries(st.text(min_size=1, max_size=32), _num, min_size=1, max_size=16)),
    u=st.none() | st.from_regex(r"[!-~]{1,32}", fullmatch=True),
    a=st.none() | st.binary(max_size=256),
)


@settings(max_examples=150, deadline=None)
@given(readings)
def test_reading_round_trip(r: Reading) -> None:
    back = Reading.decode(r.raw)
    assert back == r
    assert back.raw == r.raw == cbor.encode(back.as_map())
