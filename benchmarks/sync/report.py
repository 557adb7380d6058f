"""The sync benchmark's results as plain-text tables (benchmarks.sync.bench writes the JSON)."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import human_time, table
from benchmarks.sync.fleet import READINGS


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _throughput_rows(r: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    rates: list[tuple[str, ...]] = []
    costs: list[tuple[str, ...]] = []
    for t in r["throughput"]:
        name, lat, cores = f"{t['gateways']} gateway(s)", t["latency"], t["cores"]
        gens = sum(v for k, v in cores.items() if k.startswith("loadgen"))
        rates.append((name, f"{t['blocks_per_s']:,.0f}", f"{t['stats']['spread']:.0%}",
                      f"{t['readings_per_s']:,.0f}", _ms(lat["publish_to_ack"]["median_s"]),
                      _ms(lat["publish_to_ack"]["p99_s"]),
                      _ms(lat["block_to_checkpoint"]["median_s"]),
                      _ms(lat["block_to_checkpoint"]["p99_s"])))
        costs.append((name, human_time(t["aggregator_cpu_per_block_s"]), f"{t['ratio']:.1f}x",
                      f"{t['aggregator_capacity_per_core']:,.0f}", f"{cores['aggregator']:.2f}",
                      f"{cores.get('broker', 0):.2f}", f"{gens:.2f}",
                      f"{cores['others']:.2f}"))
    return rates, costs


def report(r: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    rates, costs = _throughput_rows(r)
    lat_rows: list[tuple[str, ...]] = []
    for lt in r["latency"]:
        b, rd = lt["block_to_checkpoint"], lt["reading_to_checkpoint"]
        lat_rows.append((f"interval {lt['interval_ms']} ms", f"{lt['offered_blocks_per_s']:,.0f}",
                         _ms(b["median_s"]), _ms(b["p99_s"]), _ms(rd["median_s"]),
                         _ms(rd["p99_s"]), _ms(rd["max_s"])))
    raw = r["raw"]
    raw_rows: list[tuple[str, ...]] = [
        (name.replace("_", " "), human_time(raw[name]["median_s"]), f"{raw[name]['spread']:.1%}")
        for name in ("ed25519_verify", "sha256_reading_leaves", "sha256_inner_nodes",
                     "sha256_block_hash", "sha256_log_append", "total")]
    tr, ra, m, meth = r["targets"]["rate"], r["targets"]["ratio"], r["machine"], r["method"]
    incomplete = [f"{t['gateways']} gateways" for t in r["throughput"] if not t["complete"]]
    incomplete += [f"latency {lt['interval_ms']} ms" for lt in r["latency"] if not lt["complete"]]
    lines = ["QUICK RUN: a few hundred blocks a run, too few for the figures to mean anything; "
             "run without --quick to measure", ""] if r["quick"] else []
    lines += [
        table(f"Ingest: `edgeledger aggregator` (SQLite) via Mosquitto {r['broker']['address']}; "
              f"window {meth['window_per_device']}, {READINGS} readings a block, checkpoint "
              f"every {meth['checkpoint_interval_ms']} ms or {meth['checkpoint_every_blocks']} "
              "blocks", ("", "blocks/s", "spread", "readings/s", "ack p50", "ack p99",
                         "cp p50", "cp p99"), rates),
        "ack = publish -> ack; cp = publish -> arrival of the checkpoint covering the block "
        "(at saturation: queueing included)", "",
        table("Aggregator cost per block (CPU time from /proc) and the cores each process used",
              ("", "agg CPU/block", "vs raw", "blocks/s/core", "aggregator", "broker",
               "loadgens", "others"), costs),
        "blocks/s/core = 1 / CPU per block; others = processes not ours on this machine", "",
        table(f"Reading -> covering checkpoint, paced: {r['latency'][0]['gateways']} gateways, "
              f"each sealing a block every {r['latency'][0]['period_ms']} ms",
              ("", "blocks/s", "block p50", "block p99", "reading p50", "reading p99",
               "reading max"), lat_rows),
        "block = from its seal time; reading = from the reading's own time (it waits up to "
        "0.9 period in its open block)", "",
        table("Raw parts of one block, timed in-process", ("", "median", "spread"), raw_rows),
        f"{tr['gateways']} gateways: {tr['blocks_per_s']:,.0f} blocks/s "
        f"(target >= {tr['target']:,}: {_met(tr['met'])}); aggregator CPU per block / raw = "
        f"{ra['ratio']:.1f}x (target <= {ra['target']}x: {_met(ra['met'])})"]
    if incomplete:
        lines.append(f"INCOMPLETE (some blocks never acked): {', '.join(incomplete)}")
    lines += [f"{m['cpu']} x{m['cores']}, Python {m['python']}, cbor2 {m['cbor2']}, "
              f"pynacl {m['pynacl']}; {meth['repeats']} runs per row, median; "
              f"total {r['total_s']:.0f} s", ""]
    return "\n".join(lines)
