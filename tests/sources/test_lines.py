"""The lines source: CSV, JSON and key=value lines from sketches, bad lines counted and skipped.

Tables of good and bad lines per format check the decoder on its own; a pty plays the
sketch for the whole source (SerialLink, splitting across reads, the first line after
an open dropped, units from the profile); hypothesis checks that garbage lines never
cost a good line and that random bytes never raise.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.configtable import ConfigTable, SerialSettings
from edgeledger.core.errors import ConfigError, DecodeError
from edgeledger.core.reading import Reading
from edgeledger.sources.base import Sample
from edgeledger.sources.lines import (
    BadLine,
    Decoded,
    Line,
    LineReader,
    LinesConfig,
    TextDecoder,
    parse_config,
    parse_number,
)

PORT = SerialSettings(Path("/dev/serial/by-id/usb-arduino"), 115_200)
CSV = LinesConfig("bme-1", PORT, "csv", ("temperature", "", "humidity"),
                  units=(("temperature", "Cel"), ("humidity", "%RH")))
JSON = LinesConfig("bme-1", PORT, "json", units=(("temperature", "Cel"),))
KV = LinesConfig("bme-1", PORT, "kv", units=(("humidity", "%RH"),))


def decode(config: LinesConfig, text: bytes) -> list[Decoded]:
    decoder = TextDecoder(config)
    decoder.resync = False  # these tests start at a line boundary
    return decoder.feed(text, 42)


def values(out: list[Decoded]) -> list[tuple[str, object, str | None]]:
    assert all(isinstance(s, Sample) for s in out), out
    return [(s.metric, s.value, s.unit) for s in out if isinstance(s, Sample)]


# --- the three formats ---------------------------------------------------------------------

@pytest.mark.parametrize(("config", "line", "want"), [
    (CSV, b"21.5,1234,40\n", [("temperature", 21.5, "Cel"), ("humidity", 40, "%RH")]),
    (CSV, b" -3.25 , x , 1e2 \r\n", [("temperature", -3.25, "Cel"), ("humidity", 100.0, "%RH")]),
    (CSV, b"21.5,,\n", [("temperature", 21.5, "Cel")]),           # an empty field: no value
    (CSV, b"temperature,millis,humidity\n", []),                   # the sketch's header
    (CSV, b"\n", []),
    (JSON, b'{"temperature": 21.5, "door_open": true, "count": 7}\n',
     [("temperature", 21.5, "Cel"), ("door_open", True, None), ("count", 7, None)]),
    (JSON, b"{}\n", []),
    (KV, b"temperature=21.5 humidity=40\n", [("temperature", 21.5, None),
                                             ("humidity", 40, "%RH")]),
    (KV, b"t=1,h=2;p=.5\r\n", [("t", 1, None), ("h", 2, None), ("p", 0.5, None)]),
])
def test_good_lines(config: LinesConfig, line: bytes, want: list[tuple[str, object, str]]) -> None:
    out = decode(config, line)
    assert values(out) == want
    for s in out:
        assert isinstance(s, Sample) and s.sensor == "bme-1" and s.t_ms == 42
        Reading(s.name, s.t_ms, 0, s.value, s.unit)  # signable as is


@pytest.mark.parametrize(("config", "line", "reason"), [
    (CSV, b"21.5,40\n", "2 fields, expected 3 (temperature, -, humidity)"),
    (CSV, b"21.5,1,forty\n", "humidity: 'forty' is not a number"),
    (CSV, b"nan,1,40\n", "temperature: 'nan' is not a number"),
    (CSV, b"1e999,1,40\n", "temperature: 1e999 is not a finite number"),
    (CSV, b"99999999999999999999,1,40\n", "temperature: 99999999999999999999 is outside"),
    (CSV, b"1_000,1,2\n", "temperature: '1_000' is not a number"),
    (CSV, b"\xff\xfe,1,2\n", "not UTF-8 text"),
    (JSON, b'{"temperature": NaN}\n', "NaN is not a finite number"),
    (JSON, b'{"temperature": 1e999}\n', "temperature: inf is not a finite number"),
    (JSON, b'{"temperature": "21.5"}\n', "temperature: str is not a number or boolean"),
    (JSON, b'{"temperature": {"v": 1}}\n', "temperature: dict is not a number or boolean"),
    (JSON, b'{"a": 1, "a": 2}\n', "key 'a' appears twice"),
    (JSON, b'{"bad key": 1}\n', "'bad key' is not a metric name"),
    (JSON, b"[1, 2]\n", "a JSON list, not an object"),
    (JSON, b'{"temperature": 21.\n', "not JSON: "),
    (JSON, b"[" * 900 + b"\n", "not JSON: "),
    (KV, b"temperature=21.5 humidity\n", "'humidity' is not key=value"),
    (KV, b"temperature=21.5 temperature=22\n", "key 'temperature' appears twice"),
    (KV, b"temperature=warm\n", "temperature: 'warm' is not a number"),
    (KV, b"=3\n", "'' is not a metric name"),
    (KV, b"BME280 init failed!\n", "'BME280' is not key=value"),
])
def test_bad_lines_are_whole_and_say_why(config: LinesConfig, line: bytes, reason: str) -> None:
    (bad,) = decode(config, line)
    assert isinstance(bad, BadLine)
    assert bad.reason.startswith(reason), bad.reason
    assert (bad.number, bad.offset) == (1, 0)


def test_numbers() -> None:
    assert parse_number("42") == 42 and isinstance(parse_number("42"), int)
    assert parse_number("-0.5e-3") == -0.0005
    assert parse_number("9223372036854775807") == (1 << 63) - 1
    for text in ("inf", "-Infinity", "NaN", "0x10", "1.2.3", "", "+", "١٢"):
        with pytest.raises(DecodeError):
            parse_number(text)


# --- splitting --------------------------------------------------------------------------------

def test_reader_numbers_lines_and_cuts_long_ones() -> None:
    reader = LineReader(max_line=10)
    data = b"one\r\n" + b"x" * 25 + b"\ntwo\n\nthree"
    out: list[Line | BadLine] = []
    for i in range(len(data)):
        out += reader.feed(data[i:i + 1])
    assert out == [Line(1, 0, b"one"), BadLine(2, 5, "line longer than 10 bytes, cut", b"x" * 11),
                   Line(3, 31, b"two"), Line(4, 35, b"")]
    assert reader.reset() is True  # "three" was partial
    assert reader.feed(b"four\n") == [Line(6, 41, b"four")]


def test_first_line_after_an_open_is_dropped() -> None:
    """It may be the tail of a line sent before the port was open: '1.5' of '21.5'."""
    decoder = TextDecoder(CSV)
    assert decoder.feed(b"5,1,40\n21.5,1,40\n", 7) == [
        Sample("bme-1", "temperature", 21.5, "Cel", 7), Sample("bme-1", "humidity", 40, "%RH", 7)]
    decoder.feed(b"21.5,1,4", 8)
    decoder.reset()  # reopened mid-line: neither half is used
    assert decoder.feed(b"0\n22.0,1,41\n", 9) == [
        Sample("bme-1", "temperature", 22.0, "Cel", 9), Sample("bme-1", "humidity", 41, "%RH", 9)]


# --- properties ---------------------------------------------------------------------------------

GOOD = [f"{t / 10},{i},{h}\n".encode() for i, (t, h) in
        enumerate(zip(range(-50, 350, 13), range(0, 100, 3), strict=False))]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD)), st.binary(max_size=60)), max_size=10),
       st.lists(st.integers(1, 50), max_size=100))
def test_garbage_lines_cost_no_good_line(inserts: list[tuple[int, bytes]],
                                         chunks: list[int]) -> None:
    lines = list(GOOD)
    for index, junk in sorted(inserts, reverse=True):
        lines.insert(index, junk.replace(b"\n", b" ") + b"\n")
    data = b"\n" + b"".join(lines)  # the sync line, dropped
    decoder = TextDecoder(CSV)
    out: list[Decoded] = []
    pos = 0
    for size in [*chunks, len(data)]:
        out += decoder.feed(data[pos:pos + size], 42)
        pos += size
    samples = [s for s in out if isinstance(s, Sample)]
    want = [x for line in GOOD for x in decode(CSV, line)]
    rest = iter(samples)  # garbage may itself parse ("1,2,3"): want is a subsequence
    assert all(any(s == w for s in rest) for w in want)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([CSV, JSON, KV]), st.binary(max_size=3000),
       st.lists(st.integers(1, 500), max_size=20))
def test_random_bytes_never_raise(config: LinesConfig, data: bytes, chunks: list[int]) -> None:
    decoder = TextDecoder(config)
    pos = 0
    for size in [*chunks, len(data)]:
        for item in decoder.feed(data[pos:pos + size], 0):
            if isinstance(item, Sample):
                Reading(item.name, 0, 0, item.value, item.unit)
        pos += size


# --- configuration --------------------------------------------------------------------------------

def table(data: dict[str, object]) -> tuple[ConfigTable, list[ConfigError]]:
    errors: list[ConfigError] = []
    return ConfigTable(Path("sketch.toml"), "sensors[1]", data, errors), errors


def test_parse_config() -> None:
    t, errors = table({"id": "bme-1", "device": "/dev/serial/by-id/usb-arduino", "format": "csv",
                       "columns": ["temperature", "", "humidity"],
                       "units": {"temperature": "Cel", "humidity": "%RH"}})
    config = parse_config(t)
    t.done()
    assert errors == []
    assert config == CSV


@pytest.mark.parametrize(("data", "key", "reason"), [
    ({"format": "xml"}, "format", "'xml' is not one of"),
    ({"format": "csv"}, "columns", "missing"),
    ({"format": "csv", "columns": ["a", "a"]}, "columns", "a metric name appears twice"),
    ({"format": "csv", "columns": ["a b"]}, "columns[0]", "'a b' is not"),
    ({"format": "json", "columns": ["a"]}, "columns", "only for format = \"csv\""),
    ({"format": "kv", "units": {"t": "°C"}}, "units.t", "'°C' is not a SenML unit symbol; "
                                                        "write 'Cel'"),
    ({"format": "csv", "columns": ["t"], "units": {"h": "%RH"}}, "units.h", "is not one of"),
    ({"format": "kv", "baud": 7}, "baud", "7 is out of range"),
])
def test_config_faults_name_the_key(data: dict[str, Any], key: str, reason: str) -> None:
    t, errors = table({"id": "bme-1", "device": "/dev/x", **data})
    parse_config(t)
    t.done()
    assert [e.key for e in errors] == [f"sensors[1].{key}"], errors
    assert errors[0].reason.startswith(reason) or reason in errors[0].reason, errors[0].reason


# --- the whole source, on a real pty -----------------------------------------------------------

SKETCH = {
    "csv": (["temperature", "humidity"], lambda t, h: f"{t},{h}"),
    "json": (None, lambda t, h: json.dumps({"temperature": t, "humidity": h})),
    "kv": (None, lambda t, h: f"temperature={t} humidity={h}"),
}


@pytest.mark.parametrize("fmt", ["csv", "json", "kv"])
def test_sketch_through_a_pty(fmt: str, pty_device: Any, wait_for: Callable[..., None]) -> None:
    columns, render = SKETCH[fmt]
    entry: dict[str, Any] = {"id": "bme-1", "device": str(pty_device.path), "format": fmt,
                             "units": {"temperature": "Cel", "humidity": "%RH"}}
    if columns:
        entry["columns"] = columns
    t, errors = table(entry)
    source = parse_config(t).build()
    assert errors == []
    rng = random.Random(fmt)
    good = [(round(rng.uniform(-20, 40), 2), rng.randint(0, 100)) for _ in range(150)]
    wire = [b"1.5,40\n"]  # the tail of a line sent before the port was opened: dropped
    bad = 0
    for i, (temp, hum) in enumerate(good):
        if i % 15 == 7:
            wire.append(rng.choice([b"\x00\xffboot\r\n", b"ERROR sensor timeout\r\n",
                                    b"#" * 3000 + b"\r\n"]))
            bad += 1
        wire.append(render(temp, hum).encode() + b"\r\n")
    stream = b"".join(wire)
    source.start(0)
    try:
        assert source.link.wait_open(5)
        t0 = int(time.time() * 1000)
        pos = 0
        while pos < len(stream):
            size = rng.randint(1, 120)
            pty_device.write(stream[pos:pos + size])
            pos += size
        got: list[Sample] = []

        def enough() -> bool:
            got.extend(source.poll(0, 0))
            return len(got) >= 2 * len(good)
        wait_for(enough, timeout=10, what="all samples")
    finally:
        source.stop()
    want = [(m, v, u) for temp, hum in good
            for m, v, u in (("temperature", temp, "Cel"), ("humidity", hum, "%RH"))]
    assert [(s.metric, s.value, s.unit) for s in got] == want
    assert all(s.sensor == "bme-1" and t0 <= s.t_ms <= time.time() * 1000 for s in got)
    assert (source.stats.bad, source.stats.samples) == (bad, len(want))
