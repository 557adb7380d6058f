"""The framed protocol in Python: codec, shared vectors, resync property, source, config.

The C side (the library under sanitizers, C<->Python interop, a real pty) is in
test_framed_c.py.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from edgeledger.configtable import ConfigTable
from edgeledger.core.reading import Reading
from edgeledger.sources import framecodec as codec
from edgeledger.sources import framed
from edgeledger.sources.framecodec import (
    AttestFrame,
    Channel,
    Fault,
    FrameDecoder,
    HelloFrame,
    ReadingFrame,
)
from edgeledger.sources.framed import FramedSource

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "firmware_bridge" / "vectors"
VECTOR_FILES = ("frames.json", "faults.json", "streams.json")


def load_vectors() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in VECTOR_FILES:
        for vector in json.loads((VECTORS / name).read_text(encoding="utf-8"))["vectors"]:
            out.append((f"{name}:{vector['name']}", vector))
    return out


def as_expected(item: codec.Frame | Fault) -> dict[str, Any]:
    """A decoder outcome in the shape of the vectors' `expect` entries."""
    where = {"frame": item.number, "offset": item.offset}
    if isinstance(item, Fault):
        return {**where, "fault": item.reason}
    ok: dict[str, Any] = {"version": item.version, "seq": item.seq}
    if isinstance(item, ReadingFrame):
        raw = (item.value.encode() if isinstance(item.value, str)
               else codec.encode_value(item.vtype, item.value))
        ok.update(type="reading", flags=item.flags, sensor=item.sensor, metric=item.metric,
                  unit=item.unit, vtype=item.vtype, value=item.value, value_hex=raw.hex())
        if item.vtype == "text":
            del ok["value_hex"]
    elif isinstance(item, HelloFrame):
        ok.update(type="hello", firmware=item.firmware, part=item.part, parts=item.parts,
                  channels=[{"sensor": c.sensor, "metric": c.metric, "unit": c.unit,
                             "vtype": c.vtype} for c in item.channels])
    else:
        ok.update(type="attest", alg=item.alg, signed_seq=item.signed_seq,
                  signature=item.signature.hex())
    ok["raw"] = item.raw.hex()
    return {**where, "ok": ok}


def normalise(expect: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in expect:
        e = json.loads(json.dumps(item))
        if "ok" in e and e["ok"].get("vtype") == "text":
            e["ok"].pop("value_hex", None)
        out.append(e)
    return out


# --- the codec -------------------------------------------------------------------------------

def test_crc32c_check_value_and_residue() -> None:
    assert codec.crc32c(b"123456789") == 0xE3069283
    assert codec.crc32c(b"56789", codec.crc32c(b"1234")) == 0xE3069283
    frame = b"123456789" + struct.pack("<I", 0xE3069283)
    assert codec.crc32c(frame) ^ 0xFFFFFFFF == 0xB798B438


@given(st.binary(max_size=1200))
def test_cobs_matches_an_independent_implementation(data: bytes) -> None:
    encoded = codec.cobs_encode(data)
    assert encoded == cobs.encode(data)
    assert b"\x00" not in encoded
    assert codec.cobs_decode(encoded) == data


@pytest.mark.parametrize(("name", "vector"), load_vectors(), ids=[n for n, _ in load_vectors()])
def test_shared_vectors_whole_and_byte_by_byte(name: str, vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["wire"])
    expected = normalise(vector["expect"])
    whole = FrameDecoder().feed(stream)
    assert [as_expected(x) for x in whole] == expected
    decoder = FrameDecoder()
    one_by_one = [x for i in range(len(stream)) for x in decoder.feed(stream[i:i + 1])]
    assert one_by_one == whole


def test_vectors_cover_every_type_value_type_and_fault() -> None:
    outcomes = [e for _, v in load_vectors() for e in v["expect"]]
    types = {e["ok"]["type"] for e in outcomes if "ok" in e}
    vtypes = {e["ok"]["vtype"] for e in outcomes if "ok" in e and "vtype" in e["ok"]}
    faults = {e["fault"] for e in outcomes if "fault" in e}
    assert types == {"reading", "hello", "attest"}
    assert vtypes == set(codec.VTYPES.values())
    assert faults == {"overlong", "cobs", "short", "crc", "version", "type", "body"}


def test_vectors_are_reproducible(tmp_path: Path) -> None:
    """make_vectors.py rewrites the committed files byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path  # type: ignore[attr-defined]
    module.main()
    for name in VECTOR_FILES:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


# --- properties -------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
units = st.from_regex(r"[!-~]{0,8}", fullmatch=True)
values = st.one_of(
    st.tuples(st.just("int32"), st.integers(-(1 << 31), (1 << 31) - 1)),
    st.tuples(st.just("int64"), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.tuples(st.just("float32"), st.floats(allow_nan=False, allow_infinity=False, width=32)),
    st.tuples(st.just("float64"), st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("text"), st.text(max_size=16)),
)


@st.composite
def reading_frames(draw: st.DrawFn) -> bytes:
    vtype, value = draw(values)
    return codec.encode_reading(draw(st.integers(0, 65535)), draw(ids), draw(ids), value,
                                 draw(units), vtype)


@st.composite
def any_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["reading", "reading", "hello", "attest"]))
    if kind == "reading":
        return draw(reading_frames())
    seq = draw(st.integers(0, 65535))
    if kind == "attest":
        return codec.encode_attest(seq, draw(st.integers(0, 65535)), draw(st.binary(
            min_size=64, max_size=64)))
    channels = draw(st.lists(st.builds(Channel, ids, ids, units,
                                       st.sampled_from(list(codec.VTYPES.values()))),
                             max_size=2))
    return codec.encode_hello(seq, draw(st.from_regex(r"[!-~]{1,12}", fullmatch=True)),
                               channels)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(any_frames(), st.binary(max_size=40)), min_size=1, max_size=8),
       st.binary(max_size=20), st.data())
def test_resync_every_frame_comes_out_in_order(pairs: list[tuple[bytes, bytes]], prefix: bytes,
                                               data: st.DataObject) -> None:
    """Valid frames interleaved with random bytes all come out, in order, however split."""
    stream = prefix + b"".join(codec.wire(f) + garbage for f, garbage in pairs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[a:b])
    frames = [x.raw for x in got if not isinstance(x, Fault)]
    assert frames == [f for f, _ in pairs]
    assert got == FrameDecoder().feed(stream)


@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_give_frames_or_faults(data: bytes) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(data)
    assert all(isinstance(x, Fault | ReadingFrame | HelloFrame | AttestFrame) for x in out)
    assert [x.number for x in out] == list(range(len(out)))
    byte_wise = FrameDecoder()
    assert [x for i in range(len(data)) for x in byte_wise.feed(data[i:i + 1])] == out
    assert len(decoder._buf) <= codec.CHUNK_MAX  # never holds more than one chunk's worth


@given(st.binary(min_size=1, max_size=300), st.integers(0, 2000))
def test_a_flipped_byte_never_passes_as_another_frame(garbage: bytes, where: int) -> None:
    frame = codec.encode_reading(1, "bme280-1", "temperature", 21.5, "Cel", "float32")
    data = bytearray(codec.wire(frame))
    i = 1 + where % (len(data) - 2)
    data[i] ^= garbage[0] or 1
    out = FrameDecoder().feed(bytes(data))
    assert all(isinstance(x, Fault) or x.raw == frame for x in out)


@given(reading_frames())
def test_reading_round_trip(frame: bytes) -> None:
    (out,) = FrameDecoder().feed(codec.wire(frame))
    assert isinstance(out, ReadingFrame)
    again = codec.encode_reading(out.seq, out.sensor, out.metric, out.value, out.unit,
                                  out.vtype, out.flags)
    assert again == frame


def test_encoders_refuse_what_the_protocol_cannot_carry() -> None:
    with pytest.raises(ValueError, match="does not fit int32"):
        codec.encode_reading(0, "a", "b", 1 << 31, "", "int32")
    with pytest.raises(ValueError, match="not a bool"):
        codec.encode_reading(0, "a", "b", 1, "", "bool")
    with pytest.raises(ValueError, match="at most 254"):
        codec.encode_hello(0, "fw", [Channel("s" * 60, "m" * 60, "u" * 30, "int32")] * 2)


# --- the source ---------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000_000

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> FramedSource:
    return FramedSource("framed test", device="/dev/serial/by-id/usb-test", clock=clock)


def test_readings_become_samples_with_their_reception_time(source: FramedSource,
                                                           clock: Clock) -> None:
    w = codec.wire(codec.encode_reading(0, "bme280-1", "temperature", 21.5, "Cel", "float32"))
    source.feed(w[:10])
    clock.t += 5
    source.feed(w[10:] + codec.wire(codec.encode_reading(1, "door", "open", True)))
    samples = source.poll(0, clock.t + 100)
    assert [(s.name, s.value, s.unit, s.t_ms) for s in samples] == [
        ("bme280-1/temperature", 21.5, "Cel", clock.t), ("door/open", True, None, clock.t)]
    assert source.stats.samples == 2 and source.stats.bad == 0


def test_faults_are_counted_and_logged_and_never_stop_the_source(
        source: FramedSource, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    good = [codec.wire(codec.encode_reading(i, "mcu-1", "n", i)) for i in range(3)]
    broken = bytearray(good[1])
    broken[12] ^= 0x40
    source.feed(b"\x13\x37" + good[0] + bytes(broken) + b"\xff" * 300 + good[2])
    with caplog.at_level(logging.WARNING, "edgeledger.sources.framed"):
        samples = source.poll(0, clock.t)
    assert [s.value for s in samples] == [0, 2]
    assert source.stats.bad == 3
    assert source.lost == 1
    text = caplog.text
    assert "/dev/serial/by-id/usb-test: protocol framed, frame 0 at byte 0: cobs" in text
    assert f"frame 2 at byte {2 + len(good[0]) + 1}: crc" in text
    assert "overlong" in text and "1 frames lost" in text


def test_attested_reading_carries_a_verifiable_signature(source: FramedSource,
                                                         clock: Clock) -> None:
    key = SigningKey(bytes(range(32)))
    frame = codec.encode_reading(7, "bme280-1", "temperature", 21.5, "Cel", "float32",
                                  flags=codec.FLAG_ATTEST)
    signature = key.sign(frame).signature
    source.feed(codec.wire(frame))
    assert source.poll(0, clock.t) == []  # held for its ATTEST
    source.feed(codec.wire(codec.encode_attest(8, 7, signature)))
    (sample,) = source.poll(0, clock.t)
    assert sample.attestation is not None and len(sample.attestation) == 70
    reading = Reading(sample.name, sample.t_ms, 0, sample.value, sample.unit, sample.attestation)
    assert Reading.decode(reading.raw).a == sample.attestation
    rebuilt, sig = codec.attested_frame(reading.n, reading.v, reading.u, reading.a or b"")
    assert rebuilt == frame and sig == signature
    public = bytes(key.verify_key)
    assert codec.verify_attestation(reading.n, reading.v, reading.u, sample.attestation, public)
    assert not codec.verify_attestation(reading.n, 21.75, reading.u, sample.attestation, public)


def test_missing_attest_releases_the_reading_without_it(source: FramedSource,
                                                        clock: Clock) -> None:
    flagged = codec.encode_reading(3, "s", "m", 1, flags=codec.FLAG_ATTEST)
    source.feed(codec.wire(flagged))
    assert source.poll(0, clock.t + 999) == []
    (late,) = source.poll(0, clock.t + 1000)
    assert late.attestation is None and source.stats.bad == 1
    source.feed(codec.wire(flagged) + codec.wire(codec.encode_reading(4, "s", "m", 2)))
    assert [(s.value, s.attestation) for s in source.poll(0, clock.t)] == [(1, None), (2, None)]
    source.feed(codec.wire(codec.encode_attest(5, 99, bytes(64))))
    assert source.poll(0, clock.t) == [] and source.stats.bad == 3


def test_hello_is_logged_and_restarts_the_loss_count(
        source: FramedSource, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    hello = codec.encode_hello(0, "bme280-bridge/1.0.0",
                                [Channel("bme280-1", "temperature", "Cel", "float32")])
    with caplog.at_level(logging.INFO, "edgeledger.sources.framed"):
        source.feed(codec.wire(codec.encode_reading(41, "s", "m", 1)) + codec.wire(hello)
                    + codec.wire(codec.encode_reading(1, "s", "m", 2)))
        source.poll(0, clock.t)
    assert source.lost == 0 and source.hello is not None
    assert "HELLO from firmware bme280-bridge/1.0.0, protocol 1" in caplog.text
    assert "bme280-1/temperature float32 Cel" in caplog.text


def test_non_finite_values_are_faults_not_samples(source: FramedSource, clock: Clock) -> None:
    for vtype in ("float32", "float64"):
        frame = codec._seal(codec.READING, 0, b"\x00\x01a\x01b\x00" + bytes(
            [codec.VTYPE_CODES[vtype]]) + codec._PACK[vtype].pack(math.nan))
        source.feed(codec.wire(frame))
    assert source.poll(0, clock.t) == [] and source.stats.bad == 2


# --- configuration --------------------------------------------------------------------------------

def read_entry(entry: dict[str, Any]) -> tuple[Any, list[str]]:
    errors: list[Any] = []
    t = ConfigTable(Path("gw.toml"), "sensors[0]", entry, errors)
    config = framed.parse_config(t)
    t.seen.add("type")
    t.done()
    return config, [str(e) for e in errors]


def test_parse_config_reads_a_framed_entry(tmp_path: Path) -> None:
    device = tmp_path / "usb-Arduino-if00"
    device.touch()
    config, errors = read_entry({"type": "framed", "id": "bme280-1", "device": str(device),
                                 "attest_wait_ms": 250})
    assert errors == []
    assert config.serial.baud == 115_200 and config.attest_wait_ms == 250
    source = config.build()
    assert isinstance(source, FramedSource) and source.name == f"framed {device}"
    assert source.attest_wait_ms == 250


def test_parse_config_names_key_and_reason() -> None:
    _, errors = read_entry({"type": "framed", "id": "bme280-1", "device": "/dev/x",
                            "baud": "fast", "attest_wait_ms": 0, "colour": 1})
    assert "gw.toml: sensors[0].baud: must be an integer (bit/s), not text" in errors
    assert any(e.startswith("gw.toml: sensors[0].attest_wait_ms: 0 is out of range")
               for e in errors)
    assert "gw.toml: sensors[0].colour: unknown key" in errors


# --- the MicroPython module ------------------------------------------------------------------

def load_micropython_module() -> Any:
    import importlib.util

    path = ROOT / "firmware_bridge" / "micropython" / "edgeledger_frame.py"
    spec = importlib.util.spec_from_file_location("mp_edgeledger_frame", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MP = load_micropython_module()


@given(st.binary(max_size=700))
def test_micropython_cobs_and_crc_match(data: bytes) -> None:
    assert MP.cobs_encode(data) == cobs.encode(data)
    assert MP.crc32c(data) == codec.crc32c(data)


@given(values, ids, ids, units, st.integers(0, 65535))
def test_micropython_frames_are_the_gateways_frames(value: tuple[str, Any], sensor: str,
                                                     metric: str, unit: str, seq: int) -> None:
    vtype, v = value
    frame = MP.reading_frame(seq, sensor, metric, v, unit, vtype)
    assert frame == codec.encode_reading(seq, sensor, metric, v, unit, vtype)
    assert MP.wire(frame) == codec.wire(frame)


def test_micropython_writer_sends_hello_then_attested_readings() -> None:
    import io

    key = SigningKey(bytes(32))
    stream = io.BytesIO()
    writer = MP.FrameWriter(stream, sign=lambda raw: key.sign(raw).signature)
    writer.hello("pico/1.0", [("bme280-1", "temperature", "Cel", "float32")])
    writer.reading("bme280-1", "temperature", 21.5, "Cel", "float32")
    source = FramedSource("framed mp", device="mp")
    source.feed(stream.getvalue())
    (sample,) = source.poll(0, 0)
    assert source.stats.bad == 0 and sample.attestation is not None
    assert codec.verify_attestation(sample.name, sample.value, sample.unit, sample.attestation,
                                     bytes(key.verify_key))


@pytest.mark.parametrize("bad", [dict(sensor="bme 280"), dict(metric=""), dict(unit="m s"),
                                 dict(value="x" * 65), dict(flags=2)])
def test_encoder_never_emits_what_a_decoder_rejects(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"sensor": "a", "metric": "b", "unit": "", "value": 1, "flags": 0}
    fields.update(bad)
    with pytest.raises(ValueError):
        codec.encode_reading(0, fields["sensor"], fields["metric"], fields["value"],
                              fields["unit"], None, fields["flags"])
