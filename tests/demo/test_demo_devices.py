"""The demo's simulated devices, checked with our own decoders and the agent's own sources.

What the MCU sends must decode as the framed protocol with no fault and no lost
frame; what the GPS sends must be whole NMEA sentences with good checksums that
the agent's decoder turns into one fix per epoch; and both must arrive through a
real pseudo-terminal to the agent's serial sources exactly as sent.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path

import pytest

from edgeledger.configtable import SerialSettings
from edgeledger.demo.devices import (
    MCU_HELLO_EVERY,
    DeviceRunner,
    PtyPort,
    SimulatedGps,
    SimulatedMcu,
    nmea_coordinate,
    nmea_sentence,
)
from edgeledger.sources.base import Sample
from edgeledger.sources.framecodec import Fault, FrameDecoder, HelloFrame, ReadingFrame
from edgeledger.sources.framed import FramedSource
from edgeledger.sources.nmea import NmeaConfig, NmeaDecoder

T0 = 1_790_000_000_000


def test_mcu_frames_decode_in_sequence_without_faults() -> None:
    mcu = SimulatedMcu("bme280-1", random.Random(1))
    data = mcu.boot(T0) + b"".join(mcu.tick(T0 + i * 1000) for i in range(MCU_HELLO_EVERY + 1))
    frames = FrameDecoder().feed(data)
    assert not [f for f in frames if isinstance(f, Fault)]
    assert [f.seq for f in frames] == list(range(len(frames)))  # no frame lost, none repeated
    hellos = [f for f in frames if isinstance(f, HelloFrame)]
    assert len(hellos) == 2 and hellos[0].seq == 0  # at boot, and again after a minute
    assert {(c.metric, c.unit, c.vtype) for c in hellos[0].channels} == {
        ("temperature", "Cel", "float64"), ("humidity", "%RH", "float64"),
        ("pressure", "Pa", "float64")}
    readings = [f for f in frames if isinstance(f, ReadingFrame)]
    assert len(readings) == 3 * (MCU_HELLO_EVERY + 1)
    for frame in readings:
        assert frame.sensor == "bme280-1"
        low, high = {"temperature": (-40, 85), "humidity": (0, 100),
                     "pressure": (30_000, 110_000)}[frame.metric]
        assert isinstance(frame.value, float) and low <= frame.value <= high


def test_mcu_values_drift_and_repeat_with_a_seed() -> None:
    def series(seed: int) -> list[float]:
        mcu = SimulatedMcu("bme280-1", random.Random(seed))
        return [mcu.values(T0 + i * 1000)["temperature"] for i in range(50)]

    assert series(5) == series(5)
    values = series(5)
    assert len(set(values)) > 10                                      # it moves ...
    assert max(abs(a - b) for a, b in itertools.pairwise(values)) < 0.2  # ... slowly


@pytest.mark.parametrize(("degrees", "width", "text"), [
    (53.5, 2, "5330.0000"), (9.9661, 3, "00957.9660"), (-33.8688, 2, "3352.1280"),
    (10.999999999, 3, "01100.0000"),  # minutes never read 60.0000
])
def test_nmea_coordinates(degrees: float, width: int, text: str) -> None:
    assert nmea_coordinate(degrees, width) == text


def test_nmea_checksum_is_the_xor_of_the_body() -> None:
    # The example of the NMEA 0183 GGA sentence found in every receiver manual.
    assert nmea_sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == \
        b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"


def test_gps_epochs_decode_to_one_fix_each_along_a_moving_track() -> None:
    gps = SimulatedGps.near(53.5461, 9.9661, random.Random(2))
    decoder = NmeaDecoder("gps-1")
    data = gps.boot(T0) + b"".join(gps.tick(T0 + i * 1000) for i in range(20))
    out = decoder.feed(data, T0)
    fixes = [s for s in out if isinstance(s, Sample)]
    assert len(fixes) == 20 and len(out) == 20          # no bad sentence at all
    assert decoder.other == 21                         # the banner and one GSA per epoch
    for fix in fixes:
        assert fix.name == "gps-1/fix" and set(fix.value) == {"lat", "lon", "alt"}  # type: ignore[arg-type]
    a, b = fixes[5].value, fixes[6].value
    assert isinstance(a, dict) and isinstance(b, dict)
    metres = math.hypot((b["lat"] - a["lat"]) * 111_320,
                        (b["lon"] - a["lon"]) * 111_320 * math.cos(math.radians(a["lat"])))
    assert 0 < metres < 30                             # road speed, one second apart


def test_pty_port_carries_bytes_to_a_reader_that_opens_it_later(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "serial" / "usb-test-if00")
    try:
        assert port.path.is_symlink() and port.path.resolve() == port.tty_path
        port.write(b"\x00\x01\x02\r\n" * 10)              # raw: no CR/NL translation, no echo
        with open(port.path, "rb", buffering=0) as reader:
            assert reader.read(50) == b"\x00\x01\x02\r\n" * 10
        assert (port.written, port.dropped) == (50, 0)
    finally:
        port.close()
    assert not port.path.exists()


def _poll_until(source: FramedSource | object, want: int, timeout: float = 10.0) -> list[Sample]:
    got: list[Sample] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += source.poll(0, int(time.time() * 1000))  # type: ignore[attr-defined]
        time.sleep(0.05)
    return got


def test_the_agents_serial_sources_read_the_simulated_devices(tmp_path: Path) -> None:
    mcu_port, gps_port = PtyPort(tmp_path / "mcu"), PtyPort(tmp_path / "gps")
    runner = DeviceRunner()
    runner.attach("mcu", SimulatedMcu("bme280-1", random.Random(3)), mcu_port)
    runner.attach("gps", SimulatedGps.near(53.5, 10.0, random.Random(4)), gps_port)
    framed = FramedSource("framed", SerialSettings(mcu_port.path, 115_200))
    nmea = NmeaConfig("gps-1", SerialSettings(gps_port.path, 9600)).build()
    try:
        framed.start(0)
        nmea.start(0)
        runner.start()
        readings = _poll_until(framed, 6)
        fixes = _poll_until(nmea, 2)
    finally:
        framed.stop()
        nmea.stop()
        runner.close()
    assert {s.name for s in readings} >= {"bme280-1/temperature", "bme280-1/humidity",
                                          "bme280-1/pressure"}
    assert [s.name for s in fixes][:2] == ["gps-1/fix", "gps-1/fix"]
    assert (framed.stats.bad, framed.lost, nmea.stats.bad) == (0, 0, 0)
