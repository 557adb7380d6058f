"""The nmea source: real receiver captures through a real pty, faults counted and skipped.

The captures are gpsd's regression logs, fetched by nmea_captures.py (see there):
a GlobalSat BU-353-S4 with a fix (south and east), a BU-353 GLONASS (GN talker, CRLF,
ZDA), and an MTK-3301 from power-up to first fix (proprietary sentences, three
$POLYN lines without a checksum, no-fix GGA with a placeholder position). The
expected fixes are worked out here from the text with plain arithmetic, not with
pynmeagps, so the decoder is checked against an independent reading of the logs.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmea_captures import capture_dir

from edgeledger.configtable import ConfigTable, SerialSettings
from edgeledger.core.errors import ConfigError
from edgeledger.core.reading import Reading
from edgeledger.sources import nmea
from edgeledger.sources.base import Sample
from edgeledger.sources.lines import BadLine, Decoded, LineSource
from edgeledger.sources.nmea import NmeaConfig, NmeaDecoder, parse_config

pytest.importorskip("pynmeagps")

DATA = capture_dir()
CAPTURES = ("bu353s4.nmea", "bu353-glonass.nmea", "mtk3301-coldstart.nmea")


def sentences(name: str) -> list[bytes]:
    """The capture's lines without gpsd's '#' header comments and without line ends."""
    lines = (DATA / name).read_bytes().splitlines()
    return [line.rstrip(b"\r") for line in lines if line and not line.startswith(b"#")]


def checksum(body: str) -> str:
    return f"{reduce(lambda a, c: a ^ ord(c), body, 0):02X}"


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body)}".encode()


def degrees(value: str, hemisphere: str) -> float:
    """(d)ddmm.mmmm and N/S/E/W to signed decimal degrees, by hand."""
    dot = value.index(".")
    deg = int(value[:dot - 2]) + float(value[dot - 2:]) / 60
    return -deg if hemisphere in "SW" else deg


def expected_fixes(lines: list[bytes]) -> list[dict[str, float]]:
    """One fix per epoch whose GGA has quality 1-5 and whose RMC (if any) is not V."""
    gga: dict[str, list[str]] = {}
    void: set[str] = set()
    order: list[str] = []
    for line in lines:
        body, _, _ = line.decode().lstrip("$").partition("*")
        f = body.split(",")
        if f[0].endswith("GGA") and not f[0].startswith("P"):
            gga[f[1]] = f
            order.append(f[1])
        elif f[0].endswith("RMC") and f[2] == "V":
            void.add(f[1])
    out = []
    for t in order:
        f = gga[t]
        if int(f[6]) in (1, 2, 3, 4, 5) and t not in void:
            out.append({"lat": degrees(f[2], f[3]), "lon": degrees(f[4], f[5]),
                        "alt": float(f[9])})
    return out


def decode_all(decoder: NmeaDecoder, data: bytes, chunks: list[int] | None = None) -> list[Decoded]:
    out: list[Decoded] = []
    pos = 0
    for size in chunks or [len(data)]:
        out += decoder.feed(data[pos:pos + size], 1000 + pos)
        pos += size
    out += decoder.feed(data[pos:], 1000 + pos)
    return out + decoder.flush(10**12)


def fixes(out: list[Decoded]) -> list[Sample]:
    return [s for s in out if isinstance(s, Sample)]


def bads(out: list[Decoded]) -> list[BadLine]:
    return [b for b in out if isinstance(b, BadLine)]


def assert_same_fixes(got: list[Sample], want: list[dict[str, float]]) -> None:
    assert [sorted(s.value) for s in got] == [sorted(w) for w in want]  # type: ignore[arg-type]
    for sample, fix in zip(got, want, strict=True):
        assert sample.value == pytest.approx(fix, abs=1e-9)


# --- the decoder on the captures ---------------------------------------------------------

@pytest.mark.parametrize("name", CAPTURES)
def test_capture_gives_one_fix_per_epoch_with_a_fix(name: str) -> None:
    lines = sentences(name)
    out = decode_all(NmeaDecoder("gps-1"), b"\r\n".join(lines) + b"\r\n")
    want = expected_fixes(lines)
    assert want, "every capture reaches a fix"
    assert_same_fixes(fixes(out), want)
    for s in fixes(out):
        assert (s.name, s.unit) == ("gps-1/fix", None)
        Reading(s.name, s.t_ms, 0, s.value, s.unit)  # the agent can sign it as is


def test_hand_computed_fixes() -> None:
    """A few fixes worked out on paper from the capture text."""
    first = {name: fixes(decode_all(NmeaDecoder("g"), (DATA / name).read_bytes()))[0].value
             for name in CAPTURES}
    # $GPGGA,030719.000,3747.0873,S,17518.8938,E,1,08,1.1,59.9,M,...
    assert first["bu353s4.nmea"] == pytest.approx(
        {"lat": -(37 + 47.0873 / 60), "lon": 175 + 18.8938 / 60, "alt": 59.9})
    assert first["bu353s4.nmea"]["lat"] == pytest.approx(-37.784788333, abs=1e-9)
    # $GPGGA,081412.000,5541.1956,N,03737.2877,E,1,5,4.87,66.2,M,... (GN talker for RMC)
    assert first["bu353-glonass.nmea"] == pytest.approx(
        {"lat": 55.686593333, "lon": 37.621461667, "alt": 66.2}, abs=1e-9)
    # MTK: the first GGA with quality 1: 081436.000,5212.982135,N,00653.101394,E,...,102.907,M
    assert first["mtk3301-coldstart.nmea"] == pytest.approx(
        {"lat": 52.216368917, "lon": 6.885023233, "alt": 102.907}, abs=1e-9)


def test_cold_start_no_fix_and_real_faults() -> None:
    """Quality 0 GGA (with its 90N placeholder) and RMC V give nothing; $POLYN lacks a
    checksum: bad, with its line number and byte offset in the file."""
    data = (DATA / "mtk3301-coldstart.nmea").read_bytes()
    decoder = NmeaDecoder("g")
    out = decode_all(decoder, data, [5] * (len(data) // 5))
    bad = [b for b in bads(out) if not b.excerpt.startswith(b"#")]
    assert [(b.number, b.reason) for b in bad] == [(19, "no checksum"), (20, "no checksum"),
                                                   (21, "no checksum")]
    assert data[bad[0].offset:].startswith(b"$POLYN,TIME,RESTART_OCCURRED\n")
    assert all(s.value["lat"] < 53 for s in fixes(out))  # type: ignore[index]
    assert decoder.other > 30  # GSA, GSV, VTG, PMTK: chatter, not faults


def test_faults_are_counted_and_every_whole_sentence_after_them_recovered() -> None:
    lines = sentences("bu353s4.nmea")
    gga = [i for i, line in enumerate(lines) if b"GGA" in line]
    broken = list(lines)
    broken[gga[2]] = broken[gga[2]][:-1] + (b"0" if broken[gga[2]][-1:] != b"0" else b"1")
    broken.insert(gga[5], b"\x00\xff garbage \x13$$$*ZZ")
    broken.insert(gga[7], b"$GPGGA,123519," + b"9" * 600)  # overlong: cut
    broken.insert(gga[9], b"$GPGGA,030799.000,9147.0,S,17518.8938,E,1,08,1.1,59.9,M,,M,,")
    out = decode_all(NmeaDecoder("g"), b"\n".join(broken) + b"\n", [13] * 400)
    reasons = [b.reason for b in bads(out)]
    assert len(reasons) == 4
    assert reasons[0].startswith("checksum")
    assert reasons[1] == "not an NMEA sentence (no '$')"
    assert reasons[2] == "line longer than 512 bytes, cut"
    assert reasons[3] == "no checksum"
    want = expected_fixes(lines)
    del want[2]  # the GGA with the bad checksum: its epoch has only RMC, so no fix
    assert_same_fixes(fixes(out), want)


def test_rmc_void_vetoes_the_epoch_and_rmc_alone_makes_no_fix() -> None:
    gga = sentence("GPGGA,120000.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    rmc_v = sentence("GPRMC,120000.00,V,4807.038,N,01131.000,E,0.0,0.0,230394,,,N")
    rmc_a = sentence("GPRMC,120001.00,A,4807.038,N,01131.000,E,0.0,0.0,230394,,,A")
    out = decode_all(NmeaDecoder("g"), b"\n".join([gga, rmc_v, rmc_a]) + b"\n")
    assert out == []
    out = decode_all(NmeaDecoder("g", fix_from="rmc"), b"\n".join([gga, rmc_v, rmc_a]) + b"\n")
    assert [s.value for s in fixes(out)] == [{"lat": pytest.approx(48.1173),
                                              "lon": pytest.approx(11 + 31 / 60)}]


def test_gga_alone_waits_for_its_epoch_then_is_emitted() -> None:
    decoder = NmeaDecoder("g", hold_ms=1500)
    first = sentence("GPGGA,120000.00,4807.038,N,01131.000,W,2,08,0.9,-5.5,M,46.9,M,,")
    second = sentence("GPGGA,120001.00,4807.038,S,01131.000,E,1,08,0.9,,M,46.9,M,,")
    assert decoder.feed(first + b"\r\n", 5000) == []
    assert decoder.flush(6000) == []
    (fix,) = decoder.feed(second + b"\r\n", 6100)  # a later epoch decides the first
    assert isinstance(fix, Sample) and fix.t_ms == 5000
    assert fix.value == {"lat": pytest.approx(48.1173), "lon": pytest.approx(-11.5166666667),
                         "alt": -5.5}
    assert decoder.flush(7000) == []
    (last,) = decoder.flush(7600)  # nothing else came: held no longer than hold_ms
    assert isinstance(last, Sample) and last.value == {"lat": pytest.approx(-48.1173),
                                                       "lon": pytest.approx(11.5166666667)}


@pytest.mark.parametrize(("body", "reason"), [
    ("GPGGA,120000,4807.038,N,01131.000,E,x,08,0.9,545.4,M,46.9,M,,", "GGA: "),
    ("GPGGA,120000,,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "GGA: a fix without a latitude"),
    ("GPGGA,120000,4807.038,Q,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "GGA: hemisphere"),
    ("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,1e999,M,46.9,M,,", "GGA: altitude inf"),
    ("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,F,46.9,M,,", "GGA: altitude unit"),
    ("GPGGA,120000,4807.038,N,18131.000,E,1,08,0.9,545.4,M,46.9,M,,", "GGA: longitude 181"),
    ("GPRMC,120000,X,4807.038,N,01131.000,E,0.0,0.0,230394,,,A", "RMC: status 'X'"),
])
def test_well_formed_but_impossible_fixes_are_bad(body: str, reason: str) -> None:
    (bad,) = decode_all(NmeaDecoder("g"), sentence(body) + b"\n")
    assert isinstance(bad, BadLine) and bad.reason.startswith(reason) and bad.number == 1


# --- properties ----------------------------------------------------------------------------

GOOD = b"".join(line + b"\r\n" for line in sentences("bu353s4.nmea"))
GOOD_FIXES = expected_fixes(sentences("bu353s4.nmea"))
garbage = st.binary(max_size=80).map(lambda b: b + b"\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 44), garbage), max_size=12),
       st.lists(st.integers(1, 64), max_size=200))
def test_garbage_between_sentences_loses_nothing(
        inserts: list[tuple[int, bytes]], chunks: list[int]) -> None:
    """Valid sentences interleaved with random bytes come out all and in order."""
    lines = [line + b"\r\n" for line in sentences("bu353s4.nmea")]
    for index, junk in sorted(inserts, reverse=True):
        lines.insert(index, junk)
    out = decode_all(NmeaDecoder("g"), b"".join(lines), chunks)
    assert_same_fixes(fixes(out), GOOD_FIXES)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 300), max_size=20))
def test_random_bytes_never_raise(data: bytes, chunks: list[int]) -> None:
    decoder = NmeaDecoder("g")
    out = decode_all(decoder, data, chunks)
    assert all(isinstance(item, BadLine) for item in out)


fields = st.text(alphabet="0123456789.,-+eENSWAVMF x*", max_size=14)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["GPGGA", "GNRMC"]), st.lists(fields, min_size=0, max_size=14))
def test_sentences_with_good_checksums_and_any_fields_never_raise(
        kind: str, parts: list[str]) -> None:
    out = decode_all(NmeaDecoder("g"), sentence(",".join([kind, *parts])) + b"\n")
    for item in fixes(out):
        Reading(item.name, item.t_ms, 0, item.value, item.unit)  # whatever passes is signable


# --- configuration and the optional extra -----------------------------------------------------

def table(data: dict[str, object]) -> tuple[ConfigTable, list[ConfigError]]:
    errors: list[ConfigError] = []
    return ConfigTable(Path("gps.toml"), "sensors[0]", data, errors), errors


def test_parse_config_reads_the_serial_keys() -> None:
    t, errors = table({"id": "gps-1", "device": "/dev/serial/by-id/usb-u-blox", "baud": 4800,
                       "fix_from": "rmc"})
    config = parse_config(t)
    t.done()
    assert errors == []
    assert config == NmeaConfig("gps-1", SerialSettings(Path("/dev/serial/by-id/usb-u-blox"),
                                                        4800), "fix", "rmc")


def test_parse_config_names_the_key_at_fault() -> None:
    t, errors = table({"id": "gps 1", "device": "/dev/x", "fix_from": "gsv", "speed": 1})
    parse_config(t)
    t.done()
    assert {e.key for e in errors} == {"sensors[0].id", "sensors[0].fix_from", "sensors[0].speed"}


def test_without_pynmeagps_config_and_build_say_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynmeagps", None)  # import fails as if not installed
    monkeypatch.setattr(nmea.importlib.util, "find_spec", lambda name: None)
    t, errors = table({"id": "gps-1", "device": "/dev/x"})
    config = parse_config(t)
    assert [(e.key, e.reason) for e in errors] == [("sensors[0].type", nmea.INSTALL_HINT)]
    assert "pip install edgeledger[nmea]" in str(errors[0])
    with pytest.raises(ConfigError, match=r"type: .*pip install edgeledger\[nmea\]"):
        config.build()


# --- the whole source, on a real pty ---------------------------------------------------------

def started(config: NmeaConfig) -> LineSource:
    source = config.build()
    source.start(0)
    assert source.link.wait_open(5)
    return source


def collect(source: LineSource, want: int, wait_for: Callable[..., None]) -> list[Sample]:
    got: list[Sample] = []

    def enough() -> bool:
        got.extend(source.poll(0, int(time.time() * 1000)))
        return len(got) >= want
    wait_for(enough, timeout=10, what=f"{want} fixes")
    return got


def test_replay_through_a_pty(pty_device: Any, wait_for: Callable[..., None]) -> None:
    """The captures, corrupted here and there, written in chunks that split sentences."""
    lines: list[bytes] = []
    for name in CAPTURES:
        lines += sentences(name)
    want = expected_fixes(lines)
    rng = random.Random(5)
    corrupt = set(rng.sample(range(len(lines)), 8))
    wire: list[bytes] = []
    for i, line in enumerate(lines):
        if i in corrupt:
            wire.append(rng.choice([b"\x00\x7f\xfe", b"$GPGGA,*00", b"LOREM IPSUM"]) + b"\r\n")
        wire.append(line + b"\r\n")
    source = started(NmeaConfig("gps-1", SerialSettings(pty_device.path, 9600)))
    try:
        stream = b"".join(wire)
        t0 = int(time.time() * 1000)
        pos = 0
        while pos < len(stream):
            size = rng.randint(1, 90)
            pty_device.write(stream[pos:pos + size])
            pos += size
            if rng.random() < 0.1:
                time.sleep(0.002)
        got = collect(source, len(want), wait_for)
        got += source.poll(0, int(time.time() * 1000) + 10_000)  # nothing is held back
    finally:
        source.stop()
    assert_same_fixes(got, want)
    assert all(t0 <= s.t_ms <= time.time() * 1000 for s in got)  # time of reception
    assert source.stats.bad == 8 + 3  # our corruptions, and the MTK's three $POLYN lines
    assert source.stats.samples == len(want)


def test_unplug_mid_sentence_loses_only_that_sentence(
        pty_device: Any, wait_for: Callable[..., None]) -> None:
    lines = sentences("bu353s4.nmea")
    cut = next(i for i, line in enumerate(lines) if b"GGA" in line and i > len(lines) // 2)
    source = started(NmeaConfig("gps-1", SerialSettings(pty_device.path, 9600)))
    try:
        pty_device.write(b"\r\n".join(lines[:cut]) + b"\r\n" + lines[cut][:30])
        time.sleep(0.3)  # the link reads it all before the unplug
        pty_device.unplug()
        wait_for(lambda: not source.link.is_open, what="the link to notice the unplug")
        pty_device.plug()
        wait_for(lambda: source.link.opens == 2, timeout=10, what="the reopen")
        pty_device.write(lines[cut][30:] + b"\r\n" + b"\r\n".join(lines[cut + 1:]) + b"\r\n")
        want = expected_fixes(lines[:cut] + lines[cut + 1:])
        got = collect(source, len(want), wait_for)
        got += source.poll(0, int(time.time() * 1000) + 10_000)
    finally:
        source.stop()
    # The GGA cut by the unplug is gone (its tail is one bad line), and with it its
    # epoch's fix; the half sentence was not glued to the bytes after the reopen.
    assert_same_fixes(got, want)
    assert len(want) == len(expected_fixes(lines)) - 1
    assert (source.stats.bad, source.stats.reopens) == (1, 1)


def test_a_bad_sentence_is_logged_with_device_protocol_line_offset_and_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    source = NmeaConfig("gps-1", SerialSettings(Path("/dev/serial/by-id/usb-gps"))).build()
    source._on_open()
    first = sentences("bu353s4.nmea")[0] + b"\r\n"
    source._on_data(first + b"$GPGGA,1*00\r\n")  # as the link's thread would
    with caplog.at_level("WARNING"):
        assert len(source.poll(0, 0)) == 0  # the good GGA waits for its epoch's RMC
    assert source.stats.bad == 1
    assert caplog.messages == [f"/dev/serial/by-id/usb-gps: protocol nmea, line 2 at byte "
                               f"{len(first)}: checksum '00', computed 4B: b'$GPGGA,1*00'"]
