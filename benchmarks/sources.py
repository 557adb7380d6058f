"""Benchmarks of the serial sources: decoding throughput, and the CPU a source takes.

Run from the repository root:

    .venv/bin/python -m benchmarks.sources            # full run, table on stdout
    .venv/bin/python -m benchmarks.sources --json     # the same, JSON on stdout
    .venv/bin/python -m benchmarks.sources --quick    # smoke run: small sizes, 2 repeats
    .venv/bin/python -m benchmarks.sources --profile  # cProfile of the decoders

Two questions from issue 5. How many frames a second one core decodes per
protocol (decoder only, fed in 64-256 byte reads as a serial port hands them
over), next to the agent's own step per reading (range check + Reading). And what
share of one core a source takes at 100 readings a second, a typical gateway:
a child process reads a real pseudo-terminal through pyserial, as the agent does
(benchmarks/sources_cpu.py).
"""

from __future__ import annotations

import cProfile
import datetime
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import sources_cpu
from benchmarks import sources_workload as wl
from benchmarks.harness import Stats, command_line, human_time, machine, table, time_runs
from edgeledger.core.reading import Reading
from edgeledger.sources.base import Sample
from edgeledger.sources.framecodec import FrameDecoder, ReadingFrame
from edgeledger.sources.lines import TextDecoder
from edgeledger.sources.modbus import ModbusConfig, decode_reply
from edgeledger.sources.nmea import NmeaDecoder
from edgeledger.sources.ranges import Ranges

T_MS = 1_714_900_000_000


class Settings:
    """Sizes and repeats of one run: the full benchmark or the --quick smoke run."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 2 if quick else 7
        self.frames = 500 if quick else 20_000   # frames (lines, epochs, replies) per run
        self.cpu_repeats = 2 if quick else 5
        self.window_s = 0.5 if quick else 5.0    # one CPU-share run


@dataclass
class Case:
    """One decoder figure: a fresh decoder per run, fed `chunks`; `frames` frames in them."""

    name: str
    what: str
    make: Callable[[], Callable[[bytes], list[Any]]]
    chunks: list[bytes]
    frames: int
    readings: int
    ranges: Ranges
    to_samples: Callable[[list[Any]], list[Sample]]


def _samples(items: list[Any]) -> list[Sample]:
    return [item for item in items if isinstance(item, Sample)]


def _frame_samples(items: list[Any]) -> list[Sample]:
    return [Sample(f.sensor, f.metric, f.value, f.unit or None, T_MS) for f in items
            if isinstance(f, ReadingFrame)]


def cases(s: Settings, where: Path) -> list[Case]:
    """Every protocol's stream, decoder and range checks (profiles read as the agent does)."""
    device = where / "not-a-device"
    out = []
    ranges = wl.write_profile(where, "framed", device)[2]
    frames = b"".join(wl.framed_frame(i) for i in range(s.frames))
    out.append(Case("framed", "READING frames (BME280, float32)", lambda: FrameDecoder().feed,
                    wl.chunked(frames), s.frames, s.frames, ranges, _frame_samples))

    entry, ranges = wl.write_profile(where, "nmea", device)[1:]
    pairs = b"".join(wl.repeat(wl.nmea_pairs(), s.frames // 4))

    def nmea() -> Callable[[bytes], list[Any]]:
        decoder = NmeaDecoder(entry.id)
        return lambda data: decoder.feed(data, T_MS)

    out.append(Case("nmea", "GGA+RMC epochs (real captures)", nmea, wl.chunked(pairs),
                    s.frames // 4, s.frames // 4, ranges, _samples))
    capture, fixes = wl.nmea_capture()
    reps = max(1, s.frames // 4 // fixes)
    out.append(Case("nmea_capture", "bu353s4 capture, GSA/GSV too", nmea,
                    wl.chunked(capture * reps), capture.count(b"$") * reps, fixes * reps,
                    ranges, _samples))

    for fmt in ("csv", "json", "kv"):
        entry, ranges = wl.write_profile(where, "lines", device, fmt)[1:]
        lines = b"".join(wl.text_line(fmt, i) for i in range(s.frames + 1))  # 1st is dropped

        def text(config: Any = entry) -> Callable[[bytes], list[Any]]:
            decoder = TextDecoder(config)
            return lambda data: decoder.feed(data, T_MS)

        out.append(Case(f"lines_{fmt}", f"{fmt} lines of 4 values", text, wl.chunked(lines),
                        s.frames, s.frames * 4, ranges, _samples))
    return out


def run_case(case: Case, s: Settings) -> dict[str, Any]:
    """Frames per second of the decoder, then Sample -> Reading per reading."""
    check = case.make()
    items = [item for chunk in case.chunks for item in check(chunk)]
    samples = case.to_samples(items)
    if len(samples) != case.readings or len(items) != len(samples):  # no faults, none lost
        raise AssertionError(f"{case.name}: {len(items)} items, {len(samples)} samples; "
                             f"expected {case.readings} readings")

    def decode(feed: Callable[[bytes], list[Any]]) -> None:
        for chunk in case.chunks:
            feed(chunk)

    stats = time_runs(decode, case.frames, s.repeats, case.make)
    return {"what": case.what, "stats": stats.as_json(), "frames_per_run": case.frames,
            "readings_per_frame": case.readings / case.frames,
            "bytes_per_frame": sum(map(len, case.chunks)) / case.frames,
            "reads_per_run": len(case.chunks), "chunk_bytes": list(wl.CHUNK),
            "to_reading": to_reading(samples, case.ranges, s).as_json()}


def to_reading(samples: list[Sample], ranges: Ranges, s: Settings) -> Stats:
    """The agent's step per sample: range check, q, Reading(...) (validate + CBOR)."""
    def run(_: object) -> None:
        q: dict[str, int] = {}
        for sample in samples:
            if ranges.check(sample.metric, sample.value) is None:
                n = q.get(sample.sensor, 0)
                Reading(sample.name, sample.t_ms, n, sample.value, sample.unit,
                        sample.attestation)
                q[sample.sensor] = n + 1

    return time_runs(run, len(samples), s.repeats)


def run_modbus(s: Settings, where: Path) -> dict[str, Any]:
    """A 10-float32 reply: pymodbus's RTU framer (handleFrame: CRC, PDU decode) + decode_reply."""
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU

    entry, ranges = wl.write_profile(where, "modbus", where / "not-a-device")[1:]
    assert isinstance(entry, ModbusConfig)
    request = entry.requests()[0]
    adus = [wl.modbus_reply(wl.meter_registers())] * s.frames
    framer = FramerRTU(DecodePDU(is_server=False))  # the client's side: it decodes replies

    def registers(adu: bytes) -> Sequence[int]:
        pdu = framer.handleFrame(adu, 1, 0)[1]
        assert pdu is not None
        return pdu.registers

    samples = [Sample(entry.id, reg.name, value, reg.unit, T_MS)
               for reg, value in decode_reply(request, registers(adus[0]))]
    if len(entry.requests()) != 1 or len(samples) != len(wl.METER):
        raise AssertionError(f"modbus: {len(entry.requests())} requests, {len(samples)} values")

    def both(_: object) -> None:
        for adu in adus:
            decode_reply(request, registers(adu))

    def ours(_: object) -> None:
        words = registers(adus[0])
        for _ in adus:
            decode_reply(request, words)

    return {"what": "read-input-registers reply, 10 float32", "frames_per_run": s.frames,
            "readings_per_frame": len(samples), "bytes_per_frame": len(adus[0]),
            "stats": time_runs(both, s.frames, s.repeats).as_json(),
            "decode_reply_only": time_runs(ours, s.frames, s.repeats).as_json(),
            "excluded": "the client's transaction loop and serial reads (in the CPU share)",
            "to_reading": to_reading(samples * s.frames, ranges, s).as_json()}


def run_all(s: Settings, progress: Callable[[str], None], where: Path) -> dict[str, Any]:
    """Every figure, as one JSON-ready dict."""
    started = time.perf_counter()
    decode: dict[str, Any] = {}
    for case in cases(s, where):
        progress(f"decode {case.name}")
        decode[case.name] = run_case(case, s)
    progress("decode modbus")
    decode["modbus"] = run_modbus(s, where)
    cpu: dict[str, Any] = {}
    for kind in ("framed", "nmea", "lines", "modbus"):
        progress(f"CPU share {kind}: {s.cpu_repeats} runs of {s.window_s:g} s")
        runs = [sources_cpu.run_modbus(s.window_s) if kind == "modbus"
                else sources_cpu.run_streamed(kind, s.window_s) for _ in range(s.cpu_repeats)]
        cpu[kind] = sources_cpu.summarize(runs)
    info = machine()
    for dist in ("pyserial", "pymodbus", "pynmeagps"):
        info[dist] = metadata.version(dist)
    return {"machine": info, "quick": s.quick,
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "method": {"repeats": s.repeats, "cpu_repeats": s.cpu_repeats,
                       "window_s": s.window_s, "readings_per_s": sources_cpu.RATE},
            "decode": decode, "cpu_share": cpu, "total_s": time.perf_counter() - started}


# --- report ----------------------------------------------------------------------------

def report(r: dict[str, Any]) -> str:
    """The figures as plain-text tables."""
    rows: list[tuple[str, ...]] = []
    for name, d in r["decode"].items():
        st, per_frame = d["stats"], d["readings_per_frame"]
        rows.append((name, f"{st['per_s']:,.0f}", f"{st['spread']:.1%}",
                     human_time(st["median_s"]), f"{per_frame:.3g}",
                     human_time(st["median_s"] / per_frame),
                     human_time(d["to_reading"]["median_s"]),
                     f"{d['to_reading']['spread']:.1%}"))
    cpu_rows: list[tuple[str, ...]] = []
    for name, c in r["cpu_share"].items():
        got, want = sum(c["received"]), sum(c["expected"])
        cpu_rows.append((name, f"{c['cpu_share']:.2%}", f"{c['spread']:.0%}",
                         f"{c['other_threads_share']:.2%}", human_time(c["cpu_per_reading_s"]),
                         f"{got:,}/{want:,}", "yes" if c["all_received"] else "NO"))
    m, meth = r["machine"], r["method"]
    modbus = r["decode"]["modbus"]["decode_reply_only"]
    return "\n".join([
        table("Decoding, one core (reads of 64-256 bytes; decoder only)",
              ("protocol", "frames/s", "spread", "per frame", "readings/frame",
               "per reading", "Sample->Reading", "spread"), rows),
        f"modbus: pymodbus FramerRTU.handleFrame + decode_reply; decode_reply alone "
        f"{human_time(modbus['median_s'])} a reply. nmea frames are GGA+RMC epochs; "
        f"nmea_capture frames are sentences.", "",
        table(f"CPU share of one source at {meth['readings_per_s']} readings/s "
              f"(child process, pty, poll every 50 ms; {meth['cpu_repeats']} runs of "
              f"{meth['window_s']:g} s)",
              ("source", "% of a core", "spread", "other threads", "CPU/reading",
               "received", "all"), cpu_rows),
        f"{m['cpu']}, Python {m['python']}, pyserial {m['pyserial']}, pymodbus "
        f"{m['pymodbus']}, pynmeagps {m['pynmeagps']}; {meth['repeats']} repeats, "
        f"spread = (max-min)/median; total {r['total_s']:.0f} s", ""])


def profile(s: Settings, where: Path) -> None:
    """cProfile each decoder over its stream, and the Modbus reply path."""
    for case in cases(s, where):
        feed = case.make()
        prof = cProfile.Profile()
        prof.runcall(lambda: [feed(chunk) for chunk in case.chunks])  # noqa: B023
        print(f"\n=== decode {case.name}: {case.frames:,} frames ===", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(14)
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU

    entry = wl.write_profile(where, "modbus", where / "not-a-device")[1]
    assert isinstance(entry, ModbusConfig)
    request = entry.requests()[0]
    adu, framer = wl.modbus_reply(wl.meter_registers()), FramerRTU(DecodePDU(is_server=False))
    prof = cProfile.Profile()

    def replies() -> None:
        for _ in range(s.frames):
            pdu = framer.handleFrame(adu, 1, 0)[1]
            assert pdu is not None
            decode_reply(request, pdu.registers)

    prof.runcall(replies)
    print(f"\n=== decode modbus: {s.frames:,} replies ===", file=sys.stderr)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(14)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with --json) and write the JSON file."""
    def run(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="edgeledger-bench-") as tmp:
            return run_all(Settings(quick), say, Path(tmp))

    def profile_in_tmp(quick: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="edgeledger-bench-") as tmp:
            profile(Settings(quick), Path(tmp))

    return command_line("sources", __doc__, argv, run, report, profile_in_tmp)

if __name__ == "__main__":
    sys.exit(main())
