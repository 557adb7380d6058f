"""What the source benchmarks feed the decoders and the pseudo-terminals.

Every stream is what a device on that protocol sends: BME280 READING frames made
with the framed codec's own encoder, GGA+RMC pairs cut from the real receiver
gpsd's real captures (tests/sources/nmea_captures.py), CSV/JSON/kv lines of a four-value sketch,
and Modbus RTU replies built by pymodbus's own RTU framer. Profiles are TOML text
read through `read_agent_config`, as the agent reads them, so the sources and
their range checks are built exactly as on a gateway.
"""

from __future__ import annotations

import json
import random
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from edgeledger.config import AgentConfig, SensorConfig, read_agent_config
from edgeledger.sources import framecodec
from edgeledger.sources.ranges import NO_RANGES, Ranges

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sources"))
from nmea_captures import capture_dir  # noqa: E402 - the real captures, fetched once

CAPTURES = capture_dir()
PAIR_FILES = ("bu353s4.nmea", "bu353-glonass.nmea")  # fix throughout
CHUNK = (64, 256)  # bytes per read handed to a decoder, drawn uniformly
SEED = 20240505

BME280 = (("temperature", "Cel", 21.37, 0.01), ("humidity", "%RH", 48.2, 0.1),
          ("pressure", "Pa", 101325.0, 1.0))
LINE_METRICS = ("temperature", "humidity", "pressure", "illuminance")
METER = (("voltage", "V"), ("current", "A"), ("active_power", "W"), ("apparent_power", "VA"),
         ("reactive_power", "var"), ("power_factor", "/"), ("frequency", "Hz"),
         ("import_energy", "kWh"), ("export_energy", "kWh"), ("neutral_current", "A"))
METER_VALUES = (230.1, 4.52, 1040.5, 1052.0, 150.2, 0.98, 49.98, 12345.67, 3.25, 4.5)

HEAD = """[device]
id = "bench-gw"
data_dir = "{data}"
"""
PROFILES = {
    "framed": """[[sensors]]
type = "framed"
id = "bme280-1"
device = "{device}"
baud = 115200
ranges = {{ temperature = [-40.0, 85.0], humidity = [0.0, 100.0], pressure = [30000.0, 110000.0] }}
""",
    "nmea": """[[sensors]]
type = "nmea"
id = "gps-1"
device = "{device}"
baud = 9600
ranges = {{ fix = {{ lat = [-90.0, 90.0], lon = [-180.0, 180.0], alt = [-500.0, 9000.0] }} }}
""",
    "lines": """[[sensors]]
type = "lines"
id = "uno-1"
device = "{device}"
baud = 115200
format = "{format}"
{columns}units = {{ temperature = "Cel", humidity = "%RH", pressure = "Pa", illuminance = "lx" }}
ranges = {{ temperature = [-40.0, 85.0], humidity = [0.0, 100.0], pressure = [30000.0, 110000.0], \
illuminance = [0.0, 100000.0] }}
""",
    "modbus": """[[sensors]]
type = "modbus"
id = "meter-1"
device = "{device}"
baud = 115200
timeout_s = 0.5
slave = 1
interval_ms = {interval_ms}
ranges = {{ voltage = [0.0, 300.0], frequency = [45.0, 65.0], power_factor = [-1.0, 1.0] }}
{registers}""",
}


def profile_text(kind: str, device: Path, data_dir: Path, fmt: str = "csv",
                 interval_ms: int = 100) -> str:
    """A whole agent profile with one [[sensors]] entry of `kind` on `device`."""
    columns = f"columns = {json.dumps(list(LINE_METRICS))}\n" if fmt == "csv" else ""
    registers = "".join(
        f'\n[[sensors.registers]]\nname = "{name}"\nfunction = 4\naddress = {2 * i}\n'
        f'type = "float32"\nunit = "{unit}"\n' for i, (name, unit) in enumerate(METER))
    body = PROFILES[kind].format(device=device, format=fmt, columns=columns,
                                 interval_ms=interval_ms, registers=registers)
    return HEAD.format(data=data_dir) + body


def load_profile(path: Path) -> tuple[SensorConfig, Ranges]:
    """The profile's one sensor entry and its range checks, read as the agent reads them."""
    result = read_agent_config(path)
    if result.config is None:
        raise SystemExit(f"{path}: " + "; ".join(str(e) for e in result.errors))
    config: AgentConfig = result.config
    entry = config.sensors[0]
    return entry, config.ranges.get(entry.id, NO_RANGES)


def write_profile(where: Path, kind: str, device: Path, fmt: str = "csv",
                  interval_ms: int = 100) -> tuple[Path, SensorConfig, Ranges]:
    """Write `kind`'s profile under `where` and read it back."""
    path = where / f"{kind}-{fmt}.toml" if kind == "lines" else where / f"{kind}.toml"
    path.write_text(profile_text(kind, device, where / "data", fmt, interval_ms))
    return (path, *load_profile(path))


# --- payloads, one reading (or one line, or one epoch) at a time -----------------------------

def framed_frame(i: int) -> bytes:
    """The i-th BME280 READING on the wire (float32, as an MCU sends it)."""
    metric, unit, base, step = BME280[i % 3]
    value = base + step * (i % 50)
    return framecodec.wire(framecodec.encode_reading(i % 65536, "bme280-1", metric, value, unit,
                                             "float32"))


def text_line(fmt: str, i: int) -> bytes:
    """The i-th line of a four-value sketch in `fmt` (csv, json or kv), CRLF-terminated."""
    values = (round(21.37 + 0.01 * (i % 50), 2), round(48.2 + 0.1 * (i % 20), 1),
              101325 + i % 40, 312 + i % 7)
    if fmt == "csv":
        text = ",".join(str(v) for v in values)
    elif fmt == "json":
        text = json.dumps(dict(zip(LINE_METRICS, values, strict=True)), separators=(",", ":"))
    else:
        text = " ".join(f"{k}={v}" for k, v in zip(LINE_METRICS, values, strict=True))
    return text.encode() + b"\r\n"


def nmea_pairs() -> list[bytes]:
    """Each GGA (fix quality 1-5) with the RMC (status A) of the same epoch, from the real
    captures, line ends as recorded. A pair is one fix."""
    pairs = []
    for name in PAIR_FILES:
        lines = [ln for ln in (CAPTURES / name).read_bytes().splitlines(keepends=True)
                 if ln.startswith(b"$")]
        gga: dict[bytes, bytes] = {}
        for line in lines:
            fields = line.split(b",")
            if fields[0].endswith(b"GGA") and fields[6] in b"12345":
                gga[fields[1]] = line
            elif fields[0].endswith(b"RMC") and fields[2] == b"A" and fields[1] in gga:
                pairs.append(gga.pop(fields[1]) + line)
    return pairs


def nmea_capture() -> tuple[bytes, int]:
    """The bu353s4 capture as sent (GGA, GSA, GSV, RMC), cut after its last RMC so that it
    holds whole epochs, and how many fixes it holds."""
    lines = [ln for ln in (CAPTURES / "bu353s4.nmea").read_bytes().splitlines(keepends=True)
             if ln.startswith(b"$")]
    last = max(i for i, ln in enumerate(lines) if ln.startswith(b"$GPRMC"))
    data = b"".join(lines[:last + 1])
    return data, len(re.findall(rb"\$GPRMC,[0-9.]+,A,", data))


def meter_registers() -> list[int]:
    """The meter's 20 input registers: ten float32 values, high word first."""
    words: list[int] = []
    for value in METER_VALUES:
        words += struct.unpack(">HH", struct.pack(">f", value))
    return words


def modbus_reply(registers: list[int], slave: int = 1) -> bytes:
    """A read-input-registers reply ADU, framed by pymodbus's RTU framer (CRC included)."""
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import ReadInputRegistersResponse

    framer = FramerRTU(DecodePDU(is_server=True))
    return framer.buildFrame(ReadInputRegistersResponse(registers=registers, dev_id=slave))


# --- streams ---------------------------------------------------------------------------------

def chunked(data: bytes, seed: int = SEED) -> list[bytes]:
    """`data` cut into reads of CHUNK bytes (uniform, seeded), as a serial port hands it over."""
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(*CHUNK)
        out.append(data[pos:pos + step])
        pos += step
    return out


def repeat(items: list[bytes], count: int) -> Iterator[bytes]:
    """`count` items, cycling through `items`."""
    for i in range(count):
        yield items[i % len(items)]
