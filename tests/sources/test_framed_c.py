"""The framed protocol across languages: the C library's own tests, C <-> Python, a real pty.

The C build is part of the run: a session fixture runs `make -C firmware_bridge test
tools` once (the C tests under the address and undefined-behaviour sanitizers, then
frame_writer and frame_reader, built with them too). Without gcc/cc and make the
fixture fails and says so: these tests are not skipped quietly.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeledger import clock
from edgeledger.configtable import SerialSettings
from edgeledger.sources import framecodec as codec
from edgeledger.sources.framecodec import Channel, Fault, FrameDecoder
from edgeledger.sources.framed import FramedSource

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "firmware_bridge"
BUILD = BRIDGE / "build"
sys.path.insert(0, str(BRIDGE / "c" / "tests"))
from gen_vectors import summary  # noqa: E402 - the one renderer both decoders are compared by
from test_framed import as_expected  # noqa: E402


@pytest.fixture(scope="session")
def c_tools() -> dict[str, Path]:
    """Build and run the C tests once; the paths of frame_writer and frame_reader."""
    missing = [tool for tool in ("make",) if shutil.which(tool) is None]
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        missing.append("a C compiler (cc or gcc)")
    if missing:
        pytest.fail(f"the firmware bridge tests need {' and '.join(missing)} on PATH "
                    "(Debian: apt-get install build-essential)")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["make", "-C", str(BRIDGE), "test", "tools"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"make -C firmware_bridge test tools failed:\n{done.stdout}\n{done.stderr}")
    assert " 0 failures" in done.stdout, done.stdout
    return {"writer": BUILD / "frame_writer", "reader": BUILD / "frame_reader"}


def test_c_library_passes_its_tests_under_sanitizers(c_tools: dict[str, Path]) -> None:
    done = subprocess.run([str(BUILD / "test_frame")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert " 0 failures, 63 vectors" in done.stdout


# --- Python -> C and C -> Python ------------------------------------------------------------

def random_reading(rng: random.Random, seq: int) -> tuple[str, Any, bytes]:
    """(script line for frame_writer, value, the frame Python encodes for it)."""
    sensor = rng.choice(["bme280-1", "meter.7", "door_1", "x"])
    metric = rng.choice(["temperature", "energy", "open", "n"])
    unit = rng.choice(["", "Cel", "%RH", "kWh", "m/s"])
    vtype = rng.choice(list(codec.VTYPES.values()))
    value: Any
    if vtype == "int32":
        value = rng.randrange(-(1 << 31), 1 << 31)
        text = str(value)
    elif vtype == "int64":
        value = rng.randrange(-(1 << 63), 1 << 63)
        text = str(value)
    elif vtype == "float32":
        bits = struct.unpack("<I", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]
        value = struct.unpack("<f", struct.pack("<I", bits))[0]
        text = f"0x{bits:08x}"
    elif vtype == "float64":
        value = rng.choice([rng.uniform(-1e300, 1e300), rng.random(), -0.0, 5e-324])
        text = f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016x}"
    elif vtype == "bool":
        value = rng.random() < 0.5
        text = str(int(value))
    else:
        value = "".join(rng.choice("aé✓ Z0\x00") for _ in range(rng.randrange(0, 12)))
        text = value.encode().hex() or "-"
    flags = rng.choice([0, 0, 1])
    line = f"reading {seq} {flags} {sensor} {metric} {unit or '-'} " \
           f"{codec.VTYPE_CODES[vtype]} {text}"
    return line, value, codec.encode_reading(seq, sensor, metric, value, unit, vtype, flags)


def test_c_encoded_frames_decode_in_python(c_tools: dict[str, Path]) -> None:
    rng = random.Random(7)
    lines, frames = [], []
    for seq in range(300):
        line, _, frame = random_reading(rng, seq)
        lines.append(line)
        frames.append(frame)
    channels = [Channel("bme280-1", "temperature", "Cel", "float32"),
                Channel("door_1", "open", "", "bool")]
    lines.append("hello 300 fw/1.2 0 1 bme280-1/temperature:Cel:3 door_1/open::5")
    frames.append(codec.encode_hello(300, "fw/1.2", channels))
    lines.append(f"attest 301 1 299 {bytes(range(64)).hex()}")
    frames.append(codec.encode_attest(301, 299, bytes(range(64))))
    done = subprocess.run([str(c_tools["writer"]), "--script", "-"], input="\n".join(lines)
                          .encode(), capture_output=True, timeout=30, check=True)
    out = FrameDecoder().feed(done.stdout)
    assert [x.raw for x in out if not isinstance(x, Fault)] == frames
    assert done.stdout == b"".join(codec.wire(f) for f in frames)  # byte for byte
    assert b"frames=302" in done.stderr


def test_python_encoded_stream_decodes_the_same_in_c(c_tools: dict[str, Path]) -> None:
    """One stream (frames, garbage, corrupted and overlong chunks): both decoders agree."""
    rng = random.Random(11)
    stream = bytearray()
    for seq in range(400):
        _, _, frame = random_reading(rng, seq)
        w = bytearray(codec.wire(frame))
        if rng.random() < 0.1:
            i = rng.randrange(1, len(w) - 1)
            w[i] = (w[i] ^ rng.randrange(1, 256)) or 1
        stream += w
        if rng.random() < 0.2:
            stream += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        if rng.random() < 0.02:
            stream += bytes(rng.randrange(1, 256) for _ in range(300))
    done = subprocess.run([str(c_tools["reader"])], input=bytes(stream), capture_output=True,
                          timeout=30, check=True)
    c_lines = done.stdout.decode().splitlines()
    py_lines = [summary(as_expected(x)) for x in FrameDecoder().feed(bytes(stream))]
    assert len(py_lines) > 400
    assert c_lines == py_lines


# --- a real pseudo-terminal ---------------------------------------------------------------------

def start_source(path: Path) -> FramedSource:
    source = FramedSource(f"framed {path}", SerialSettings(path, baud=115_200),
                          backoff=(0.05, 0.2))
    source.start(0)
    assert source.link is not None and source.link.wait_open(5.0)
    return source


def collect(source: FramedSource, want: int, wait_for: Callable[..., None]) -> list[Any]:
    got: list[Any] = []

    def enough() -> bool:
        got.extend(source.poll(0, clock.wall_ms()))
        return len(got) >= want

    wait_for(enough, timeout=15.0, what=f"{want} samples")
    return got


def test_pty_every_whole_frame_after_a_fault_is_recovered(
        c_tools: dict[str, Path], pty_device: Any, wait_for: Callable[..., None],
        caplog: pytest.LogCaptureFixture) -> None:
    """frame_writer (the C library) writes frames, garbage and CRC errors into a pty;
    FramedSource reads it through pyserial and gets every frame that was sent whole."""
    source = start_source(pty_device.path)
    count, corrupt_every = 400, 11
    try:
        with caplog.at_level(logging.WARNING, "edgeledger.sources.framed"):
            done = subprocess.run(
                [str(c_tools["writer"]), "--fd", str(pty_device.master), "--count", str(count),
                 "--hello", "bridge/test", "--garbage-every", "7", "--corrupt-every",
                 str(corrupt_every), "--seed", "5", "--chunk", "61"],
                pass_fds=(pty_device.master,), capture_output=True, timeout=30, check=True)
            whole = [i for i in range(count) if (i + 1) % corrupt_every != 0]
            samples = collect(source, len(whole), wait_for)
    finally:
        source.stop()
    assert f"corrupted={count // corrupt_every}".encode() in done.stderr
    assert [s.value for s in samples] == whole
    assert {s.name for s in samples} == {"mcu-1/n"}
    assert source.hello is not None and source.hello.firmware == "bridge/test"
    assert source.stats.bad >= count // corrupt_every
    assert source.lost == count // corrupt_every  # the MCU's counter shows each lost frame
    assert f"{pty_device.path}: protocol framed, frame " in caplog.text
    assert ": crc (" in caplog.text or ": cobs (" in caplog.text


def test_pty_closed_and_reopened_mid_frame(
        c_tools: dict[str, Path], pty_device: Any, wait_for: Callable[..., None]) -> None:
    """The device goes away in the middle of a frame and comes back (a new pty behind
    the same by-id path): the link reopens, the cut frame is dropped, and every frame
    sent after the reopen is read."""
    source = start_source(pty_device.path)
    writer = c_tools["writer"]

    def write(n: int) -> None:
        subprocess.run([str(writer), "--fd", str(pty_device.master), "--count", str(n),
                        "--hello", "bridge/test"], pass_fds=(pty_device.master,),
                       capture_output=True, timeout=30, check=True)

    try:
        write(30)
        first = collect(source, 30, wait_for)
        cut = codec.wire(codec.encode_reading(31, "mcu-1", "n", 999))
        pty_device.write(cut[: len(cut) // 2])
        wait_for(lambda: source.decoder._buf or source._chunks, what="the half frame")
        pty_device.unplug()
        pty_device.plug()
        wait_for(lambda: source.stats.reopens == 1, what="the reopen")
        write(30)
        second = collect(source, 30, wait_for)
    finally:
        source.stop()
    assert [s.value for s in first] == list(range(30))
    assert [s.value for s in second] == list(range(30))
    assert isinstance(source.hello, codec.HelloFrame)

