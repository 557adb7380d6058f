"""Modbus RTU energy meters: a register map in TOML, polled with pymodbus.

Theory of operation. A `[[sensors]]` entry of type "modbus" names one slave on one
serial line and its register map (`[[sensors.registers]]`: name, address,
function, type, word order, scale, unit). The map is read once into `Register`s
and grouped into as few read requests as the protocol allows (`plan_requests`:
same function, contiguous or within `max_gap` unused registers, at most 125
registers or 2000 bits per request). Decoding a reply is pure (`Register.decode`).

The wire is pymodbus's (ModbusSerialClient, RTU framer): we never frame RTU
ourselves. A worker thread owns the client: every `interval_ms` it sends the
planned requests, stamps the values with the time of reception and queues them;
`poll` only hands the queue over, so the agent loop never waits on a slow meter.
A missing or bad reply (timeout, CRC error, exception response, wrong length, a
NaN) costs that request's values for that cycle, is counted in `stats.bad` and
logged with device, slave, function and registers; the next cycle tries again. A
port that fails (unplugged USB adapter) is closed and reopened with exponential
backoff, each successful reopen counted in `stats.reopens`.

pymodbus is an extra (`pip install edgeledger[modbus]`): it is imported only when
a modbus source starts, so the agent core runs without it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from edgeledger.clock import wall_ms
from edgeledger.configtable import ConfigTable, SerialSettings, serial_settings
from edgeledger.core.errors import ConfigError, DecodeError
from edgeledger.core.reading import MAX_UNIT
from edgeledger.sources.base import Sample, Source

if TYPE_CHECKING:
    from pymodbus.client import ModbusSerialClient

log = logging.getLogger(__name__)

INSTALL_HINT = "the modbus source needs pymodbus: pip install edgeledger[modbus]"
FUNCTIONS = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}
# type -> (16-bit words, struct format of the big-endian value); bits for functions 1 and 2
TYPES: dict[str, tuple[int, str]] = {
    "uint16": (1, ">H"), "int16": (1, ">h"), "uint32": (2, ">I"), "int32": (2, ">i"),
    "float32": (2, ">f"), "uint64": (4, ">Q"), "int64": (4, ">q"), "float64": (4, ">d"),
    "bool": (1, ""),
}
WORD_ORDERS = ("big", "little")
MAX_WORDS = 125   # registers per read request (Modbus application protocol, 6.3/6.4)
MAX_BITS = 2000   # coils or discrete inputs per read request (6.1/6.2)
METRIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
              4: "server device failure", 5: "acknowledge", 6: "server device busy",
              8: "memory parity error", 10: "gateway path unavailable",
              11: "gateway target device failed to respond"}
# Common spellings that are not SenML unit symbols (RFC 8428 12.1, RFC 8798).
UNIT_HINTS = {"°C": "Cel", "degC": "Cel", "C°": "Cel", "kwh": "kWh", "KWh": "kWh",
              "kw": "kW", "KW": "kW", "VAr": "var", "VAR": "var", "kVAr": "kvar",
              "kVArh": "kvarh", "kVAR": "kvar", "hz": "Hz", "HZ": "Hz", "v": "V",
              "a": "A", "w": "W", "PF": "/", "pf": "/"}
MIN_WAKE_MS = 20
LOG_REPEAT_MS = 60_000  # a silent meter is logged once a minute, not once a request
BACKOFF_FIRST_MS = 250
BACKOFF_MAX_MS = 30_000


# --- the register map (pure) ------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    """One value in a slave's register map and how to turn its words into a reading."""

    name: str
    address: int
    function: int = 3
    type: str = "uint16"
    word_order: str = "big"
    scale: int | float = 1
    unit: str | None = None

    @property
    def width(self) -> int:
        """How many registers (or bits) the value occupies."""
        return TYPES[self.type][0]

    @property
    def end(self) -> int:
        """The first address after the value."""
        return self.address + self.width

    def decode(self, words: Sequence[int]) -> int | float | bool:
        """The scaled value of `words` (registers, or bits for coils); DecodeError if unusable."""
        if len(words) != self.width:
            raise DecodeError(f"{self.name}: {len(words)} words, expected {self.width}")
        if self.type == "bool":
            return bool(words[0])
        ordered = words if self.word_order == "big" else list(reversed(words))
        raw: int | float = struct.unpack(TYPES[self.type][1],
                                         b"".join(w.to_bytes(2, "big") for w in ordered))[0]
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise DecodeError(f"{self.name}: {raw} is not a finite number")
            if self.type == "float32":
                raw = _shortest_float32(raw)
            return raw if self.scale == 1 else raw * self.scale
        if isinstance(self.scale, int):
            return raw * self.scale
        # raw * scale has exactly as many decimals as the scale: round away the binary noise
        return round(raw * self.scale, _decimals(self.scale))


def _shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32: 230.1, not 230.10000610351562."""
    packed = struct.pack(">f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack(">f", short) == packed:
            return short
    return value


def _decimals(scale: float) -> int:
    exponent = Decimal(repr(scale)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


@dataclass(frozen=True)
class Request:
    """One read request: `count` registers (or bits) of `function` from `address`."""

    function: int
    address: int
    count: int
    registers: tuple[Register, ...]

    def describe(self) -> str:
        """For logs: `input registers 0-11 (voltage, current)`."""
        names = ", ".join(r.name for r in self.registers)
        return (f"function {self.function} ({FUNCTIONS[self.function]}) "
                f"{self.address}-{self.address + self.count - 1} ({names})")


def plan_requests(registers: Sequence[Register], max_gap: int = 0) -> tuple[Request, ...]:
    """Group the map into few requests: same function, gaps of at most `max_gap` unread
    registers, within the protocol's per-request limit. Overlapping values share words."""
    out: list[Request] = []
    for function in sorted({r.function for r in registers}):
        limit = MAX_BITS if function in (1, 2) else MAX_WORDS
        group: list[Register] = []
        start = end = 0
        for reg in sorted((r for r in registers if r.function == function),
                          key=lambda r: (r.address, r.end)):
            if group and reg.address - end <= max_gap and max(end, reg.end) - start <= limit:
                group.append(reg)
                end = max(end, reg.end)
                continue
            if group:
                out.append(Request(function, start, end - start, tuple(group)))
            group, start, end = [reg], reg.address, reg.end
        if group:
            out.append(Request(function, start, end - start, tuple(group)))
    return tuple(out)


def decode_reply(request: Request, words: Sequence[int]) -> list[tuple[Register, Any]]:
    """Each register of `request` with its value, or with the DecodeError that spoils it."""
    if len(words) < request.count:
        raise DecodeError(f"reply has {len(words)} values, expected {request.count}")
    out: list[tuple[Register, Any]] = []
    for reg in request.registers:
        offset = reg.address - request.address
        try:
            out.append((reg, reg.decode(words[offset:offset + reg.width])))
        except DecodeError as exc:
            out.append((reg, exc))
    return out


# --- configuration ----------------------------------------------------------------------

@dataclass(frozen=True)
class ModbusConfig:
    """A [[sensors]] entry of type "modbus": one slave on one serial line."""

    id: str
    serial: SerialSettings
    slave: int
    registers: tuple[Register, ...]
    interval_ms: int = 1000
    max_gap: int = 0
    type: str = "modbus"

    def requests(self) -> tuple[Request, ...]:
        """The read requests of one polling cycle."""
        return plan_requests(self.registers, self.max_gap)

    def build(self) -> ModbusSource:
        """A new, not yet started source for this entry."""
        return ModbusSource(self)


def parse_config(t: ConfigTable) -> ModbusConfig:
    """Read a [[sensors]] entry of type "modbus" (the caller has read `type` and calls done())."""
    if importlib.util.find_spec("pymodbus") is None:
        t.fail("type", INSTALL_HINT)
    sensor_id = t.sensor_id()
    settings = serial_settings(t, baud=9600, parity="none", stopbits=1, timeout_s=0.5)
    slave = t.integer("slave", 1, 247, 1)
    interval = t.integer("interval_ms", 100, 86_400_000, 1000, " (ms)")
    max_gap = t.integer("max_gap", 0, MAX_WORDS - 2, 0, " (registers)")
    registers = parse_register_map(t)
    return ModbusConfig(sensor_id, settings, slave, registers, interval, max_gap)


def parse_register_map(t: ConfigTable, key: str = "registers") -> tuple[Register, ...]:
    """Read `[[<table>.registers]]`; faults name their key: sensors[2].registers[4].type."""
    tables = t.tables(key, required=True)
    if t.has(key) and not tables and isinstance(t.data.get(key), list):
        t.fail(key, "at least one register is required")
    out: list[Register] = []
    names: dict[str, str] = {}
    for rt in tables:
        reg = _register(rt)
        rt.done()
        if reg is None:
            continue
        if reg.name in names:
            rt.fail("name", f"{reg.name!r} is already the name of {names[reg.name]}; "
                            "names must be unique within a sensor")
        names.setdefault(reg.name, rt.key)
        out.append(reg)
    return tuple(out)


def _register(t: ConfigTable) -> Register | None:
    errors = len(t.errors)
    name = t.text("name", pattern=METRIC_RE, what="a metric name [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    function = t.integer("function", 1, 4, 3)
    if function not in FUNCTIONS:
        function = 3
    bits = function in (1, 2)
    kind = t.text("type", "bool" if bits else "uint16", choices=tuple(TYPES))
    if kind in TYPES and bits != (kind == "bool"):
        t.fail("type", f"{kind!r} does not fit function {function} ({FUNCTIONS[function]}): "
                       + ("coils and discrete inputs are 'bool'" if bits
                          else "'bool' is for functions 1 and 2"))
    width = TYPES.get(kind, (1, ""))[0]
    address = t.integer("address", 0, 65536 - width, unit=f" (a zero-based address; a {kind} "
                                                          f"takes {width} register(s))")
    if function in (3, 4) and t.has("address") and _looks_like_number(address, function):
        t.note("address", f"{address} looks like a register number; the address on the wire "
                          f"is zero-based ({function}0001 is address 0)")
    word_order = t.text("word_order", "big", choices=WORD_ORDERS)
    if t.has("word_order") and width == 1:
        t.fail("word_order", "only 32- and 64-bit types have a word order")
    scale = _scale(t, bits)
    unit = _unit(t)
    if len(t.errors) > errors:
        return None
    return Register(name, address, function, kind, word_order, scale, unit)


def _looks_like_number(address: int, function: int) -> bool:
    base = {3: 40001, 4: 30001}[function]
    return base <= address < base + 10_000


def _scale(t: ConfigTable, bits: bool) -> int | float:
    value = t.value("scale", (int, float), "a number (the multiplier of the raw value)", False)
    if value is None:
        return 1
    if bits:
        t.fail("scale", "coils and discrete inputs are booleans; they take no scale")
    elif not math.isfinite(value) or value == 0:
        t.fail("scale", f"{value} must be a finite number other than 0")
    return int(value) if isinstance(value, int) else float(value)


def _unit(t: ConfigTable) -> str | None:
    unit = t.optional_text("unit", what="a SenML unit symbol")
    if unit is None:
        return None
    if unit in UNIT_HINTS:
        t.fail("unit", f"{unit!r} is not a SenML unit symbol; write {UNIT_HINTS[unit]!r}")
    elif not (0 < len(unit) <= MAX_UNIT and unit.isprintable() and not any(
            c.isspace() for c in unit)):
        t.fail("unit", f"{unit!r} is not a SenML unit symbol: 1 to {MAX_UNIT} printable "
                       "characters without spaces (W, V, A, Hz, kWh, Cel, ...)")
    return unit


# --- the source -------------------------------------------------------------------------

def _mono_ms() -> int:
    """The agent's monotonic clock (CLOCK_BOOTTIME where there is one), in ms."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    ns = time.clock_gettime_ns(boot) if boot is not None else time.monotonic_ns()
    return ns // 1_000_000


class ModbusSource(Source):
    """Polls one Modbus RTU slave from a worker thread; `poll` hands over what was read."""

    def __init__(self, config: ModbusConfig) -> None:
        super().__init__(f"modbus {config.serial.device} slave {config.slave}")
        self.config = config
        self.requests = config.requests()
        self._queue: deque[Sample] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ModbusSerialClient | None = None
        self._next_tick = 0
        self._cycle_ms = 0
        self._polled_at = 0
        self._failing: dict[Request, tuple[int, int]] = {}  # failures in a row, last logged
        self._open = False
        self._lost = False
        self._retry_at = 0
        self._backoff = BACKOFF_FIRST_MS

    def start(self, now_ms: int) -> None:
        """Create the pymodbus client and start polling at `now_ms`."""
        try:
            from pymodbus import FramerType
            from pymodbus.client import ModbusSerialClient
        except ImportError:
            raise ConfigError(self.name, "type", INSTALL_HINT) from None
        pymodbus_log = logging.getLogger("pymodbus")
        if pymodbus_log.level == logging.NOTSET:
            # Our own line names the device, slave and registers; pymodbus's repeats it bare.
            pymodbus_log.setLevel(logging.CRITICAL)
        s = self.config.serial
        self._client = ModbusSerialClient(
            str(s.device), framer=FramerType.RTU, baudrate=s.baud, bytesize=s.bytesize,
            parity=s.parity,
            stopbits=s.stopbits,  # type: ignore[arg-type]  # pyserial takes 1.5 too
            timeout=s.timeout_s, retries=0,
            name=self.name)
        self._next_tick = now_ms
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def poll(self, now_ms: int, wall_ms: int) -> list[Sample]:
        """What the worker has read since the last call."""
        self._polled_at = now_ms
        out: list[Sample] = []
        while self._queue:
            out.append(self._queue.popleft())
        return out

    def next_due(self) -> int | None:
        """Now if samples wait; else when the running or next cycle should end (but not
        sooner than `MIN_WAKE_MS` after the last poll, so a slow reply costs no busy loop)."""
        if self._queue:
            return 0
        return max(self._next_tick + self._cycle_ms + 1, self._polled_at + MIN_WAKE_MS)

    def stop(self) -> None:
        """Stop polling (within one reply timeout) and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.serial.timeout_s * len(self.requests) + 2)
        _close(self._client)

    # --- the worker thread ---------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.interval_ms
        while not self._stop.is_set():
            wait_ms = self._next_tick - _mono_ms()
            if wait_ms > 0 and self._stop.wait(wait_ms / 1000):
                break
            began = _mono_ms()
            try:
                if self._ensure_open(began):
                    self._cycle()
            except Exception:  # the worker must outlive any surprise
                log.exception("%s: unexpected failure; reopening the port", self.name)
                self.stats.add(bad=1)
                self._drop_port()
            now = _mono_ms()
            self._cycle_ms = now - began
            self._next_tick += interval
            if self._next_tick <= now:  # fell behind (a long outage): skip the missed cycles
                self._next_tick = now + interval

    def _ensure_open(self, now: int) -> bool:
        client = self._client
        assert client is not None
        if self._open and client.connected:
            return True
        if now < self._retry_at:
            return False
        if client.connect():
            if self._lost:
                self.stats.add(reopens=1)
                log.info("%s: reopened", self.name)
            self._open, self._lost, self._backoff = True, False, BACKOFF_FIRST_MS
            return True
        device = self.config.serial.device
        reason = "no such device" if not device.exists() else "cannot open"
        if self._backoff == BACKOFF_FIRST_MS:  # the first failure of a run
            log.warning("%s: %s; retrying with backoff up to %d s", self.name, reason,
                        BACKOFF_MAX_MS // 1000)
        self._lost = True
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_MS)
        return False

    def _cycle(self) -> None:
        from pymodbus.exceptions import ConnectionException, ModbusException
        for request in self.requests:
            if self._stop.is_set():
                return
            try:
                words = self._read(request)
            except ConnectionException as exc:
                self._bad(request, f"port failed ({exc}); reopening")
                self._drop_port()
                return
            except ModbusException as exc:
                self._bad(request, _reason(exc))
                if not self.config.serial.device.exists():  # unplugged, by-id link gone
                    self._drop_port()
                    return
                continue
            except (OSError, ValueError) as exc:  # pyserial's own faults from deep inside
                self._bad(request, f"port failed ({exc}); reopening")
                self._drop_port()
                return
            if isinstance(words, str):
                self._bad(request, words)
                continue
            self._queue_values(request, words)
            if request in self._failing:
                count = self._failing.pop(request)[0]
                log.info("%s: slave %d, %s: replies again after %d failure(s)",
                         self.config.serial.device, self.config.slave, request.describe(),
                         count)

    def _read(self, request: Request) -> list[int] | str:
        """The words (or bits) of `request`, or the reason the reply is unusable."""
        client = self._client
        assert client is not None
        read = {1: client.read_coils, 2: client.read_discrete_inputs,
                3: client.read_holding_registers, 4: client.read_input_registers}
        reply = read[request.function](request.address, count=request.count,
                                       device_id=self.config.slave)
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            return f"exception response {code} ({EXCEPTIONS.get(code, 'unknown code')})"
        values = [int(b) for b in reply.bits] if request.function in (1, 2) else reply.registers
        if len(values) < request.count:
            return f"wrong length: {len(values)} values, expected {request.count}"
        return list(values)

    def _queue_values(self, request: Request, words: list[int]) -> None:
        wall = wall_ms()
        good = 0
        for reg, value in decode_reply(request, words):
            if isinstance(value, DecodeError):
                self._bad(request, f"register {reg.address} ({reg.name}): {value}")
                continue
            self._queue.append(Sample(self.config.id, reg.name, value, reg.unit, wall))
            good += 1
        self.stats.add(samples=good)

    def _bad(self, request: Request, reason: str) -> None:
        """Count a bad reply; log the first of a run, then at most once a minute."""
        self.stats.add(bad=1)
        count, logged = self._failing.get(request, (0, 0))
        now = _mono_ms()
        if count == 0 or now - logged >= LOG_REPEAT_MS:
            again = f" ({count + 1} failures in a row)" if count else ""
            log.warning("%s: protocol modbus, slave %d, %s: %s%s", self.config.serial.device,
                        self.config.slave, request.describe(), reason, again)
            logged = now
        self._failing[request] = (count + 1, logged)

    def _drop_port(self) -> None:
        _close(self._client)
        self._open, self._lost = False, True
        self._retry_at = _mono_ms() + self._backoff


def _close(client: Any) -> None:
    """Close the pymodbus client (its close() is untyped)."""
    if client is not None:
        client.close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "No response received" in text:
        return ("no valid reply within the timeout (silent slave, wrong slave id, "
                "or a reply that failed its CRC)")
    return text

