"""The modbus source against pymodbus's own RTU server, over real pseudo-terminals.

How the two ends meet. pymodbus opens both ends by path (pyserial's
serial_for_url), and a pty pair has only one path (the slave side). So the test
makes two pty pairs and a small bridge thread that copies bytes between their
masters: pymodbus's ModbusSerialServer opens the first slave path, our source
opens a symlink to the second (as an installer gives it /dev/serial/by-id/...).
Both ends do real termios serial I/O; the bridge is also where faults are
injected (a reply swallowed, a reply with a flipped bit) and where the adapter is
"unplugged" (its pty closed and the symlink removed) and plugged in again.
The meter is pymodbus's server with a SimDevice datastore; expected values are
encoded with pymodbus's own `convert_to_registers`, not with our decoder.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import select
import struct
import threading
import time
import tomllib
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeledger.configtable import ConfigTable, SerialSettings
from edgeledger.core.errors import ConfigError, DecodeError
from edgeledger.sources.base import Sample
from edgeledger.sources.modbus import (
    ModbusConfig,
    ModbusSource,
    Register,
    _mono_ms,
    decode_reply,
    parse_config,
    plan_requests,
)

pymodbus = pytest.importorskip("pymodbus")
from pymodbus import FramerType  # noqa: E402
from pymodbus.client import ModbusSerialClient  # noqa: E402
from pymodbus.server import ModbusSerialServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402

DT = ModbusSerialClient.DATATYPE

# An Eastron SDM120-like meter: float32 measurements in input registers, big-endian
# words; plus a few integer registers and a relay coil as other meters have them.
EASTRON = {"voltage": (0, 230.1, "V"), "current": (6, 4.52, "A"), "power": (12, 1040.5, "W"),
           "frequency": (70, 49.98, "Hz"), "import_energy": (72, 12345.67, "kWh")}
MAP_TOML = """
[[sensors]]
type = "modbus"
id = "sdm120-1"
device = "{device}"
baud = 9600
parity = "none"
slave = {slave}
interval_ms = {interval}
timeout_s = 0.15
max_gap = 10
{eastron}
[[sensors.registers]]
name = "energy_total"
address = 100
function = 3
type = "int32"
word_order = "little"
scale = 0.001
unit = "kWh"

[[sensors.registers]]
name = "temperature"
address = 102
function = 3
type = "int16"
scale = 0.1
unit = "Cel"

[[sensors.registers]]
name = "relay"
address = 3
function = 1
"""


def _eastron_toml() -> str:
    return "".join(f'\n[[sensors.registers]]\nname = "{name}"\naddress = {addr}\nfunction = 4\n'
                   f'type = "float32"\nunit = "{unit}"\n'
                   for name, (addr, _, unit) in EASTRON.items())


def _meter(slave: int = 1) -> SimDevice:
    inputs = [0] * 80
    for addr, value, _ in EASTRON.values():
        inputs[addr:addr + 2] = ModbusSerialClient.convert_to_registers(value, DT.FLOAT32)
    holding = (ModbusSerialClient.convert_to_registers(98765432, DT.INT32, word_order="little")
               + ModbusSerialClient.convert_to_registers(-125, DT.INT16))
    coils = [False, False, False, True] + [False] * 12
    return SimDevice(slave, simdata=(
        [SimData(0, values=coils, datatype=DataType.BITS)],
        [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
        [SimData(100, values=holding, datatype=DataType.REGISTERS)],
        [SimData(0, values=inputs, datatype=DataType.REGISTERS)]))


EXPECTED = {**{name: (value, unit) for name, (_, value, unit) in EASTRON.items()},
            "energy_total": (98765.432, "kWh"), "temperature": (-12.5, "Cel"),
            "relay": (True, None)}


# --- the wire: two pty pairs and a bridge --------------------------------------------

def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline before pyserial configures it
    return master, slave, os.ttyname(slave)


class Bridge:
    """Copies bytes between two pty masters; can swallow or corrupt replies, or unplug."""

    def __init__(self, link: Path) -> None:
        self.server_master, self._server_slave, self.server_path = _raw_pty()
        self.link = link
        self.lock = threading.Lock()
        self.client_master: int | None = None
        self._client_slave: int | None = None
        self.swallow = 0    # replies to drop whole
        self.corrupt = 0    # replies to deliver with one bit flipped
        self._fault: str | None = None
        self._stop = threading.Event()
        self.plug()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def plug(self) -> None:
        master, slave, path = _raw_pty()
        with self.lock:
            self.client_master, self._client_slave = master, slave
        os.symlink(path, self.link)

    def unplug(self) -> None:
        self.link.unlink()
        with self.lock:
            for fd in (self.client_master, self._client_slave):
                if fd is not None:
                    os.close(fd)
            self.client_master = self._client_slave = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.client_master is not None:
            self.unplug()
        os.close(self.server_master)
        os.close(self._server_slave)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                client = self.client_master
                fds = [self.server_master] + ([client] if client is not None else [])
                ready, _, _ = select.select(fds, [], [], 0.02)
                for fd in ready:
                    data = os.read(fd, 4096)
                    if fd == client:
                        self._fault = self._next_fault()
                        os.write(self.server_master, data)
                    elif client is not None:
                        self._reply(client, data)

    def _next_fault(self) -> str | None:
        if self.swallow:
            self.swallow -= 1
            return "swallow"
        if self.corrupt:
            self.corrupt -= 1
            return "corrupt"
        return None

    def _reply(self, client: int, data: bytes) -> None:
        if self._fault == "swallow":
            return
        if self._fault == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 0x01])
            self._fault = None
        os.write(client, data)


class Meter:
    """pymodbus's ModbusSerialServer on `port`, in a thread with its own event loop."""

    def __init__(self, port: str, device: SimDevice) -> None:
        self.port, self.device = port, device
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "pymodbus server did not start"

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = ModbusSerialServer(self.device, framer=FramerType.RTU, port=self.port,
                                         baudrate=9600)
        await self.server.serve_forever(background=True)
        self._ready.set()
        await self.server.serving

    def stop(self) -> None:
        assert self.loop is not None and self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self._thread.join(5)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    b = Bridge(tmp_path / "usb-FTDI_RS485_meter-if00-port0")
    yield b
    b.close()


@pytest.fixture
def meter(bridge: Bridge) -> Iterator[Meter]:
    m = Meter(bridge.server_path, _meter())
    yield m
    if m._thread.is_alive():
        m.stop()


def _config(tmp_path: Path, device: Path, slave: int = 1, interval: int = 100,
            extra: str = "") -> ModbusConfig:
    text = MAP_TOML.format(device=device, slave=slave, interval=interval,
                           eastron=_eastron_toml()) + extra
    errors: list[ConfigError] = []
    table = ConfigTable(tmp_path / "meter.toml", "", tomllib.loads(text), errors)
    entry = table.tables("sensors")[0]
    entry.text("type")
    config = parse_config(entry)
    entry.done()
    assert errors == [], [str(e) for e in errors]
    return config


def _run_until(source: ModbusSource, cond: Callable[[list[Sample]], bool],
               timeout: float = 5.0) -> list[Sample]:
    got: list[Sample] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += source.poll(0, 0)
        if cond(got):
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out; got {[s.name for s in got]}, stats {source.stats}")


def _cycles(n: int) -> Callable[[list[Sample]], bool]:
    return lambda got: sum(s.metric == "voltage" for s in got) >= n


@pytest.fixture
def source_for(tmp_path: Path) -> Iterator[Callable[..., ModbusSource]]:
    started: list[ModbusSource] = []

    def make(device: Path, **kw: Any) -> ModbusSource:
        source = ModbusSource(_config(tmp_path, device, **kw))
        source.start(0)
        started.append(source)
        return source

    yield make
    for source in started:
        source.stop()


# --- end to end ----------------------------------------------------------------------

def test_eastron_like_map_gives_scaled_values_and_units(bridge: Bridge, meter: Meter,
                                                        source_for: Any) -> None:
    source = source_for(bridge.link)
    got = _run_until(source, lambda g: {s.metric for s in g} >= set(EXPECTED))
    last = {s.metric: s for s in got}
    for metric, (value, unit) in EXPECTED.items():
        assert last[metric].value == value, metric
        assert type(last[metric].value) is type(value), metric
        assert last[metric].unit == unit, metric
        assert last[metric].sensor == "sdm120-1"
    now = time.time_ns() // 1_000_000
    assert all(now - 10_000 < s.t_ms <= now for s in got)
    assert source.stats.bad == 0
    assert len(source.requests) == 4  # input 0-13, input 70-73, holding 100-102, coils 3


def test_timeout_and_corrupt_reply_are_counted_and_next_poll_succeeds(
        bridge: Bridge, meter: Meter, source_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    source = source_for(bridge.link)
    _run_until(source, _cycles(1))
    caplog.set_level(logging.WARNING, logger="edgeledger")
    bridge.swallow, bridge.corrupt = 1, 1
    _run_until(source, _cycles(3))
    assert source.stats.bad == 2, source.stats
    lines = [r.getMessage() for r in caplog.records if "protocol modbus" in r.getMessage()]
    assert len(lines) == 2
    assert all(str(bridge.link) in line and "slave 1" in line and "function" in line
               and "no valid reply" in line for line in lines), lines


def test_exception_response_is_counted_and_other_requests_go_on(
        tmp_path: Path, bridge: Bridge, meter: Meter, source_for: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgeledger")
    extra = '[[sensors.registers]]\nname = "missing"\naddress = 500\nfunction = 4\n'
    source = source_for(bridge.link, extra=extra)
    got = _run_until(source, _cycles(3))
    assert "missing" not in {s.metric for s in got}
    assert source.stats.bad >= 2
    assert any("exception response 2 (illegal data address)" in r.getMessage()
               and "500-500 (missing)" in r.getMessage() for r in caplog.records)


def test_wrong_slave_id_is_counted_not_fatal(bridge: Bridge, meter: Meter,
                                             source_for: Any) -> None:
    wrong = source_for(bridge.link, slave=7)
    deadline = time.monotonic() + 5
    while wrong.stats.bad < 8 and time.monotonic() < deadline:  # two whole cycles
        time.sleep(0.02)
    assert wrong.stats.bad >= 8 and wrong.poll(0, 0) == []
    assert wrong._thread is not None and wrong._thread.is_alive()


def test_server_stopped_and_restarted_mid_run(bridge: Bridge, meter: Meter,
                                              source_for: Any) -> None:
    source = source_for(bridge.link)
    _run_until(source, _cycles(1))
    meter.stop()
    deadline = time.monotonic() + 5
    while source.stats.bad < 4 and time.monotonic() < deadline:  # a whole silent cycle
        time.sleep(0.02)
    assert source.stats.bad >= 4
    source.poll(0, 0)
    again = Meter(bridge.server_path, _meter())
    try:
        got = _run_until(source, _cycles(2))
    finally:
        again.stop()
    assert {s.metric for s in got} >= set(EXPECTED)


def test_adapter_unplugged_and_plugged_back_is_reopened(bridge: Bridge, meter: Meter,
                                                        source_for: Any) -> None:
    source = source_for(bridge.link)
    _run_until(source, _cycles(1))
    bridge.unplug()
    time.sleep(0.6)
    source.poll(0, 0)
    bridge.plug()
    _run_until(source, _cycles(2))
    assert source.stats.reopens == 1, source.stats


def test_stop_is_prompt_and_next_due_follows_the_schedule(bridge: Bridge, meter: Meter,
                                                          tmp_path: Path) -> None:
    source = ModbusSource(_config(tmp_path, bridge.link, interval=1000))
    start = _mono_ms()
    source.start(start)
    try:
        _run_until(source, _cycles(1))
        deadline = time.monotonic() + 10  # the worker finishes the cycle (slowly, if loaded)
        while source.next_due() != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.next_due() == 0  # the rest of the cycle waits: poll now
        assert source.poll(_mono_ms(), 0) != []
        due = source.next_due()
        # the next tick (start + interval) plus the measured cycle time: not a fixed clock
        # bound, since the cycle is slow on a loaded machine
        assert due is not None and start + 1000 < due < start + 4000, (start, due)
    finally:
        began = time.monotonic()
        source.stop()
        assert time.monotonic() - began < 1.0


# --- the register map, pure ------------------------------------------------------------

def _parse(tmp_path: Path, text: str) -> tuple[ModbusConfig | None, list[str], list[str]]:
    errors: list[ConfigError] = []
    notes: list[ConfigError] = []
    root = ConfigTable(tmp_path / "m.toml", "", tomllib.loads(text), errors, notes)
    entries = root.tables("sensors")
    entry = entries[-1]
    entry.text("type")
    config = parse_config(entry)
    entry.done()
    return config, [str(e) for e in errors], [str(n) for n in notes]


HEAD = ('[[sensors]]\ntype = "modbus"\nid = "m"\ndevice = "/dev/null"\n'
        '[[sensors.registers]]\nname = "ok"\naddress = 0\n')


@pytest.mark.parametrize(("register", "key", "reason"), [
    ('name = "v"\naddress = 65535\ntype = "uint32"', "address", "out of range"),
    ('name = "v"\naddress = -1', "address", "out of range"),
    ('name = "v"\naddress = 0\nfunction = 5', "function", "out of range"),
    ('name = "v"\naddress = 0\ntype = "float16"', "type", "is not one of"),
    ('name = "v"\naddress = 0\nfunction = 1\ntype = "uint16"', "type", "does not fit"),
    ('name = "v"\naddress = 0\nfunction = 2\nscale = 2', "scale", "take no scale"),
    ('name = "v"\naddress = 0\nscale = 0', "scale", "other than 0"),
    ('name = "ok"\naddress = 4', "name", "already the name of sensors[1].registers[0]"),
    ('name = "a b"\naddress = 0', "name", "is not a metric name"),
    ('name = "v"\naddress = 0\nunit = "°C"', "unit", "write 'Cel'"),
    ('name = "v"\naddress = 0\nunit = "k W"', "unit", "not a SenML unit"),
    ('name = "v"\naddress = 0\nword_order = "big"', "word_order", "only 32- and 64-bit"),
    ('name = "v"\naddress = 0\nword_order = "middle"', "word_order", "is not one of"),
    ('name = "v"\naddress = 0\nsacle = 0.1', "sacle", "unknown key"),
    ('address = 0', "name", "missing"),
])
def test_register_map_faults_name_file_key_and_reason(tmp_path: Path, register: str, key: str,
                                                      reason: str) -> None:
    text = ('[[sensors]]\ntype = "sim"\n' + HEAD + "[[sensors.registers]]\n" + register + "\n")
    _, errors, _ = _parse(tmp_path, text)
    where = f"{tmp_path / 'm.toml'}: sensors[1].registers[1].{key}: "
    assert any(e.startswith(where) and reason in e for e in errors), errors


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ("slave = 0", "slave", "out of range"),
    ("slave = 248", "slave", "out of range"),
    ('parity = "evn"', "parity", "is not one of"),
    ("interval_ms = 5", "interval_ms", "out of range"),
    ('device = "ttyUSB0"', "device", "absolute path"),
    ("registers = []", "registers", "at least one register"),
])
def test_source_key_faults(tmp_path: Path, entry: str, key: str, reason: str) -> None:
    lines = HEAD.splitlines()
    text = "\n".join(lines[:3] + [line for line in lines[3:4] if not entry.startswith("device")]
                     + [entry] + ([] if entry.startswith("registers") else lines[4:])) + "\n"
    _, errors, _ = _parse(tmp_path, text)
    assert any(f"sensors[0].{key}: " in e and reason in e for e in errors), errors


def test_register_number_instead_of_address_is_noted(tmp_path: Path) -> None:
    text = HEAD.replace("address = 0", "address = 30001\nfunction = 4")
    config, errors, notes = _parse(tmp_path, text)
    assert errors == [] and config is not None
    assert any("registers[0].address" in n and "zero-based" in n for n in notes), notes


def test_defaults(tmp_path: Path) -> None:
    config, errors, _ = _parse(tmp_path, HEAD)
    assert errors == [] and config is not None
    assert (config.slave, config.interval_ms, config.max_gap) == (1, 1000, 0)
    assert config.serial == SerialSettings(Path("/dev/null"), 9600, "N", 8, 1, 0.5)
    assert config.registers == (Register("ok", 0, 3, "uint16", "big", 1, None),)


def test_missing_pymodbus_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pymodbus" else real(name, *a))
    _, errors, _ = _parse(tmp_path, HEAD)
    assert any("sensors[0].type: " in e and "pip install edgeledger[modbus]" in e
               for e in errors), errors


def test_plan_groups_contiguous_registers_within_limits() -> None:
    regs = [Register(f"r{i}", i * 2, 4, "float32") for i in range(100)]  # 200 registers
    plan = plan_requests(regs)
    assert [(r.address, r.count) for r in plan] == [(0, 124), (124, 76)]
    sparse = [Register("a", 0, 4, "float32"), Register("b", 6, 4, "float32"),
              Register("c", 1, 3), Register("d", 0, 1, "bool")]
    assert [(r.function, r.address, r.count) for r in plan_requests(sparse)] == [
        (1, 0, 1), (3, 1, 1), (4, 0, 2), (4, 6, 2)]
    assert [(r.address, r.count) for r in plan_requests(sparse, max_gap=4)
            if r.function == 4] == [(0, 8)]


words16 = st.integers(0, 0xFFFF)


@given(st.lists(words16, min_size=4, max_size=4),
       st.sampled_from(["uint16", "int16", "uint32", "int32", "float32", "uint64", "int64",
                        "float64"]),
       st.sampled_from(["big", "little"]))
def test_decode_agrees_with_pymodbus(words: list[int], kind: str, order: str) -> None:
    """Our decoder against pymodbus's convert_from_registers, for any words."""
    reg = Register("x", 0, 3, kind, order)
    words = words[:reg.width]
    theirs = ModbusSerialClient.convert_from_registers(words, getattr(DT, kind.upper()),
                                                       word_order=order)  # type: ignore[arg-type]
    try:
        ours = reg.decode(words)
    except DecodeError:
        assert isinstance(theirs, float) and not math.isfinite(theirs)
        return
    if kind == "float32":
        assert struct.pack(">f", ours) == struct.pack(">f", theirs)
    else:
        assert ours == theirs


@given(st.lists(words16, max_size=10), st.integers(1, 8))
def test_any_reply_decodes_or_raises_decode_error(words: list[int], count: int) -> None:
    regs = plan_requests([Register("a", 0, 4, "float32"), Register("b", 2, 4, "int16",
                                                                   scale=0.1)])
    try:
        out = decode_reply(regs[0], words[:count])
    except DecodeError:
        return
    for _, value in out:
        assert isinstance(value, DecodeError) or math.isfinite(value)


def test_scale_rounds_to_the_scale_s_decimals() -> None:
    assert Register("v", 0, 3, "uint16", scale=0.1).decode([2301]) == 230.1
    assert Register("v", 0, 3, "int16", scale=0.01).decode([0xFFFF]) == -0.01
    assert Register("v", 0, 3, "uint16", scale=10).decode([7]) == 70
    with pytest.raises(DecodeError, match="not a finite number"):
        Register("v", 0, 4, "float32").decode([0x7FC0, 0])  # a NaN is never signed


def test_documented_eastron_example_parses(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "docs" / "modbus-eastron-sdm120.toml"
    config, errors, _ = _parse(tmp_path, example.read_text())
    assert errors == [] and config is not None
    assert [(r.function, r.address, r.count) for r in config.requests()] == [
        (4, 0, 32), (4, 70, 6), (4, 342, 2)]
    assert {r.unit for r in config.registers} == {"V", "A", "W", "VA", "var", "/", "Hz", "kWh"}


def test_agent_profile_with_a_modbus_sensor(tmp_path: Path, bridge: Bridge, meter: Meter) -> None:
    """Through the agent's config reader (type dispatch, ranges, unknown keys) to build()."""
    from edgeledger.config import read_agent_config
    text = MAP_TOML.format(device=bridge.link, slave=1, interval=100, eastron=_eastron_toml())
    profile = tmp_path / "pi4-meter.toml"
    profile.write_text('[device]\nid = "meter-gw"\n' + text)
    result = read_agent_config(profile)
    assert result.errors == [] and result.config is not None, [str(e) for e in result.errors]
    source = result.config.sensors[0].build()
    assert isinstance(source, ModbusSource)
    source.start(_mono_ms())
    try:
        got = _run_until(source, lambda g: {s.metric for s in g} >= set(EXPECTED))
    finally:
        source.stop()
    assert {s.name for s in got} >= {f"sdm120-1/{m}" for m in EXPECTED}
