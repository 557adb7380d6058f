"""The API benchmark's results as plain-text tables (benchmarks.api.bench writes the JSON)."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import human_time, table

NAMES = {"sqlite": "SQLite, 1 process", "pg1": "PostgreSQL, 1 process",
         "pg2": "PostgreSQL, 2 processes"}


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _t(seconds: float | None) -> str:
    return "-" if seconds is None else human_time(seconds)


def _proof_tables(api: dict[str, Any]) -> list[str]:
    lat, tp, inproc = api["latency"], api["throughput"], api["in_process"]
    stores = {s["entries"]: s for s in api["stores"]}
    rows: list[tuple[str, ...]] = []
    for size, own in zip(lat["sizes"], inproc["sizes"], strict=True):
        st = stores[size["entries"]]
        built = f"built in {st['build_s']:.0f} s" if not st["cached"] else \
            "cached" if st.get("built_s") is None else f"cached, built in {st['built_s']:.0f} s"
        rows.append((f"{size['entries']:,} entries", _t(size["median_s"]), _t(size["p90_s"]),
                     _t(size["p99_s"]), f"{size['stats']['spread']:.0%}", str(size["errors"]),
                     _t(size["server_cpu_per_proof_s"]), f"{size['others_cores']:.2f}",
                     _t(own["stats"]["median_s"]), f"{own['stats']['spread']:.0%}",
                     f"{st['mib']:,.0f} MiB, {built}"))
    c = tp["cores"]
    tp_rows: list[tuple[str, ...]] = [(
        f"{tp['entries']:,} entries, {tp['clients']} clients", f"{tp['proofs_per_s']:,.0f}",
        f"{tp['stats']['spread']:.0%}", _t(tp["latency"]["median_s"]), _t(tp["latency"]["p99_s"]),
        _t(tp["server_cpu_per_proof_s"]), f"{c['server']:.2f}", f"{c['clients']:.2f}",
        f"{c['others']:.2f}", str(tp["errors"]))]
    return [
        table(f"/v1/proof over HTTP, one keep-alive client, {lat['requests_per_run']:,} "
              f"sequential GETs a run, {lat['repeats']} runs (+1 warm-up), alternating sizes",
              ("store", "median", "p90", "p99", "spread", "errors", "server CPU", "others",
               "no HTTP", "spread", "store file"), rows),
        f"median 10^{len(str(lat['sizes'][-1]['entries'])) - 1} / "
        f"10^{len(str(lat['sizes'][0]['entries'])) - 1}: {lat['ratio']:.2f}x (target <= "
        f"{lat['target']}x: {_met(lat['met'])}); p99 ratio {lat['p99_ratio']:.2f}x; no HTTP "
        f"ratio {inproc['ratio']:.2f}x", "no HTTP = the endpoint's own work in-process "
        "(views.proof_bundle + to_json on a read-only SqliteStore), the rest is HTTP, FastAPI "
        "and uvicorn; server CPU = the aggregator's per proof; others = cores used by "
        f"processes not ours meanwhile; every timed answer 200, "
        f"{sum(api['proofs_verified'].values())} bundles verified offline first", "",
        table(f"Proofs/s: {tp['clients']} client processes flat out for {tp['duration_s']:.0f} s, "
              f"{tp['stats']['repeats']} runs", ("", "proofs/s", "spread", "p50", "p99",
                                                  "server CPU/proof", "server", "clients",
                                                  "others", "errors"), tp_rows),
        "server = the aggregator process (uvicorn thread + idle ingest), cores of CPU from "
        "/proc; clients = the client processes; others = processes not ours", ""]


def _ingest_tables(ing: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, ...]] = []
    cost: list[tuple[str, ...]] = []
    notes = []
    for k in ing["kinds"]:
        name = NAMES[k["kind"]]
        for err in k["errors"]:
            notes.append(f"{name}: FAILED: {err}")
        if "blocks_per_s" not in k:
            continue
        cpu, cores = k["cpu_per_block_s"], k["cores"]
        gens = sum(v for n, v in cores.items() if n.startswith("loadgen"))
        rows.append((name, f"{k['blocks_per_s']:,.0f}", f"{k['stats']['spread']:.0%}",
                     f"{k['readings_per_s']:,.0f}", _t(k["ack_p99_s"]),
                     _t(k["checkpoint_p99_s"]), "yes" if k["complete"] else "NO"))
        per_agg = " + ".join(_t(cpu[n]) for n in sorted(cpu) if n.startswith("aggregator")
                             and n != "aggregators")
        cost.append((name, per_agg, _t(cpu["postgres"]), _t(cpu["postgres_aux"]),
                     _t(cpu["store_total"]), f"{cores['aggregators']:.2f}",
                     f"{cores['postgres'] + cores['postgres_aux']:.2f}",
                     f"{cores.get('broker', 0):.2f}", f"{gens:.2f}", f"{cores['others']:.2f}"))
    ratios = "; ".join(f"{k} {v:.2f}x" for k, v in ing["ratios"].items())
    pg = ing["postgres"]
    setting = pg["unavailable"] or ", ".join(f"{k} {v}" for k, v in pg["settings"].items())
    return [
        table(f"Ingest: {ing['gateways']} gateways x {ing['blocks_per_gateway']} blocks of 10 "
              f"readings via Mosquitto, window {ing['window_per_device']}, "
              f"{ing['repeats']} runs per row", ("", "blocks/s", "spread", "readings/s",
                                                  "ack p99", "cp p99", "all acked"), rows),
        f"ratios of blocks/s: {ratios or '-'}", *notes, "",
        table("CPU per block (from /proc) and cores used", (
            "", "aggregator(s)", "pg backends", "pg aux", "total", "agg cores", "pg cores",
            "broker", "loadgens", "others"), cost),
        "aggregator(s): each process (the first is the sequencer); pg backends: the server "
        "processes of our connections; pg aux: WAL writer, checkpointer, background writer "
        "(shared with any other user of the server)", f"PostgreSQL: {setting}", ""]


def report(r: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    m = r["machine"]
    lines = ["QUICK RUN: small stores and short runs, too small for the figures to mean "
             "anything; run without --quick to measure", ""] if r["quick"] else []
    lines += _proof_tables(r["api"]) + _ingest_tables(r["ingest"])
    lines += [f"{m['cpu']} x{m['cores']}, Python {m['python']}, SQLite {m['sqlite']}, "
              f"FastAPI {m['fastapi']}, uvicorn {m['uvicorn']}, psycopg {m['psycopg']}, "
              f"{r['broker']['version']}; total {r['total_s']:.0f} s", ""]
    return "\n".join(lines)
