"""Every endpoint through a real uvicorn server: what it answers, compared with the store.

The fleet (apifleet.py) says what went in; these tests read it back over HTTP and
check the proofs the API serves with the core's verifiers (Go's and `edgeledger
verify` are in test_api_proofs.py).
"""

from __future__ import annotations

import base64

from apifleet import DEVICES, LOG_KEY, ORIGIN, T0
from conftest import STATUSES, Api

from edgeledger.core import merkle
from edgeledger.core.block import Block, key_id
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.reading import Reading


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_log_names_origin_key_size_and_height(api: Api) -> None:
    r = api.get("/v1/log")
    assert r.status_code == 200
    assert r.json() == {"origin": ORIGIN, "verifier_key": LOG_KEY.verifier().text(),
                        "size": 36, "height": 2}


def test_checkpoints_are_the_signed_notes_with_their_fields(api: Api) -> None:
    latest = api.get("/v1/checkpoint").json()
    assert latest["note"] == api.fleet.checkpoints[-1]
    for height, note in enumerate(api.fleet.checkpoints):
        body = api.get(f"/v1/checkpoints/{height}").json()
        cp = open_checkpoint(body["note"], LOG_KEY.verifier())
        assert body["note"] == note
        assert (body["origin"], body["size"], body["height"], body["time"]) == \
            (cp.origin, cp.size, cp.height, cp.time)
        assert (unb64(body["root"]), unb64(body["prev"]), body["extra"]) == (cp.root, cp.prev, [])
    assert latest == api.get("/v1/checkpoints/2").json()


def test_consistency_proofs_link_every_pair_of_checkpoints(api: Api) -> None:
    cps = [open_checkpoint(n, LOG_KEY.verifier()) for n in api.fleet.checkpoints]
    for old in cps:
        for new in cps:
            if old.size > new.size:
                continue
            body = api.get("/v1/consistency", **{"from": old.size, "to": new.size}).json()
            assert (body["from"], body["to"]) == (old.size, new.size)
            merkle.verify_consistency(old.size, new.size, old.root, new.root,
                                      [unb64(h) for h in body["proof"]])
    default = api.get("/v1/consistency", **{"from": 1}).json()
    assert default["to"] == cps[-1].size


def test_devices_are_listed_in_pages_with_their_state(api: Api) -> None:
    first = api.get("/v1/devices", limit=2).json()
    assert [d["id"] for d in first["devices"]] == ["gw-1", "gw-2"]
    assert first["next"] == "gw-2"
    rest = api.get("/v1/devices", after=first["next"], limit=2).json()
    assert [d["id"] for d in rest["devices"]] == ["gw-3"] and rest["next"] is None
    gw1 = api.get("/v1/devices/gw-1").json()
    status = STATUSES["gw-1"]
    assert gw1["status"] == {"last_seen_ms": status.last_seen_ms, "online": True, "tip": 13,
                             "backlog": 2, "version": "0.1.0"}
    assert unb64(gw1["public_key"]) == DEVICES["gw-1"].public_key
    assert gw1["kid"] == key_id(DEVICES["gw-1"].public_key).hex()
    assert (gw1["next_height"], gw1["revoked"], gw1["flagged"]) == (14, False, False)
    assert unb64(gw1["tip_hash"]) == api.fleet.blocks["gw-1", 13][0].hash
    gw2 = api.get("/v1/devices/gw-2").json()
    assert gw2["flagged"] and gw2["flagged_ms"] is not None  # the equivocation
    assert gw2["status"]["online"] is None
    assert api.get("/v1/devices/gw-3").json()["status"] is None


def test_a_block_has_its_bytes_readings_and_inclusion_proof(api: Api) -> None:
    for (dev, h), (block, readings, index) in api.fleet.blocks.items():
        body = api.get(f"/v1/devices/{dev}/blocks/{h}").json()
        assert unb64(body["block"]) == block.cose and unb64(body["hash"]) == block.hash
        assert body["log_index"] == index
        assert body["header"]["cnt"] == len(readings) and body["header"]["dev"] == dev
        served = [Reading(r["n"], r["t"], r["q"], r["v"], r["u"]) for r in body["readings"]]
        assert [r.raw for r in served] == [r.raw for r in readings]  # the signed bytes
        inclusion = body["inclusion"]
        if index >= 36:
            assert inclusion is None
            continue
        cp = open_checkpoint(inclusion["checkpoint"], LOG_KEY.verifier())
        assert (inclusion["size"], inclusion["height"]) == (cp.size, cp.height) == (36, 2)
        merkle.verify_inclusion(merkle.leaf_hash(block.cose), index, cp.size,
                                [unb64(p) for p in inclusion["log_path"]], cp.root)


def test_proof_bundles_verify_for_every_provable_reading(api: Api) -> None:
    verifier = LOG_KEY.verifier()
    checked = 0
    for (dev, h), (block, readings, index) in api.fleet.blocks.items():
        for i, reading in enumerate(readings):
            r = api.get("/v1/proof", device=dev, height=h, index=i)
            if index >= 36:  # not yet covered by a checkpoint
                assert r.status_code == 409, r.text
                assert r.json()["error"] == "not-yet-provable"
                continue
            assert r.status_code == 200, r.text
            proven = verify_bundle(ProofBundle.from_json(r.text), verifier)
            assert proven.reading == reading and proven.log_index == index
            assert proven.block.cose == block.cose
            checked += 1
    assert checked > 100


def test_readings_page_through_everything_in_order(api: Api) -> None:
    everything = {(dev, h, i): r for (dev, h), (_, rs, _) in api.fleet.blocks.items()
                  for i, r in enumerate(rs)}
    seen, cursor, pages = [], None, 0
    while True:
        body = api.get("/v1/readings", limit=37, cursor=cursor).json()
        seen += body["readings"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages > 3
    got = {(r["device"], r["height"], r["index"]): Reading(r["n"], r["t"], r["q"], r["v"], r["u"])
           for r in seen}
    assert len(got) == len(seen) == len(everything)
    assert got == everything
    keys = [(api.fleet.blocks[r["device"], r["height"]][0].header.t0, r["log_index"], r["index"])
            for r in seen]
    assert keys == sorted(keys)


def test_readings_filter_by_device_name_sensor_and_time(api: Api) -> None:
    since, until = T0 + 3 * 10_000 + 2, T0 + 7 * 10_000 + 4
    cases = [({"device": "gw-2"}, lambda d, r: d == "gw-2"),
             ({"name": "bme-1/humidity"}, lambda d, r: r.n == "bme-1/humidity"),
             ({"name": "gps-1"}, lambda d, r: r.sensor == "gps-1"),
             ({"since": since, "until": until}, lambda d, r: since <= r.t <= until),
             ({"device": "gw-1", "name": "door-1/open", "until": T0 + 50_000},
              lambda d, r: d == "gw-1" and r.n == "door-1/open" and r.t <= T0 + 50_000),
             ({"until": 10_000}, lambda d, r: r.t <= 10_000)]
    for params, keep in cases:
        want = sorted((d, h, i) for (d, h), (_, rs, _) in api.fleet.blocks.items()
                      for i, r in enumerate(rs) if keep(d, r))
        got, cursor = [], None
        while True:
            body = api.get("/v1/readings", cursor=cursor, limit=50, **params).json()
            got += [(r["device"], r["height"], r["index"]) for r in body["readings"]]
            if (cursor := body["next"]) is None:
                break
        assert sorted(got) == want, params
        assert want, params


def test_readings_as_senml_by_accept_header_or_format(api: Api) -> None:
    params = {"device": "gw-1", "since": T0 + 30_000, "until": T0 + 30_006, "limit": 100}
    by_format = api.get("/v1/readings", format="senml", **params)
    by_accept = api.client.get("/v1/readings", params=params,
                               headers={"Accept": "application/senml+json"})
    for r in (by_format, by_accept):
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/senml+json"
    pack = by_format.json()
    assert pack == by_accept.json()
    t = (T0 + 30_000) / 1000
    assert pack == [
        {"n": "gw-1/bme-1/temperature", "t": t, "u": "Cel", "v": 20.8},
        {"n": "gw-1/bme-1/humidity", "t": t + 0.001, "u": "%RH", "v": 43},
        {"n": "gw-1/meter-1/energy", "t": t + 0.002, "u": "kWh", "v": 1003},
        {"n": "gw-1/door-1/open", "t": t + 0.003, "vb": False},
        {"n": "gw-1/gps-1/fix/alt", "t": t + 0.004, "u": "m", "v": 34.0},
        {"n": "gw-1/gps-1/fix/lat", "t": t + 0.004, "u": "lat", "v": 52.503},
        {"n": "gw-1/gps-1/fix/lon", "t": t + 0.004, "u": "lon", "v": 13.4},
        {"n": "gw-1/note-1/status", "t": t + 0.005, "vs": "ok 3"},
        {"n": "gw-1/odd-1/length", "t": t + 0.006, "v": 3.25}]
    assert by_format.headers["EdgeLedger-SenML-Skipped"] == "0"
    json_too = api.client.get("/v1/readings", params=params, headers={
        "Accept": "application/senml+json;q=0, application/json"})
    assert json_too.headers["content-type"] == "application/json"


def test_senml_pages_link_to_the_next_and_skip_pre_1978_times(api: Api) -> None:
    r = api.get("/v1/readings", device="gw-2", until=T0, format="senml", limit=1)
    assert r.json() == [] and r.headers["EdgeLedger-SenML-Skipped"] == "1"  # t = 1004 ms
    pack, pages = [], 1
    while "Link" in r.headers:
        link = r.headers["Link"]
        assert link.endswith('>; rel="next"') and "cursor=" in link
        r = api.client.get(link[1:link.index(">")])
        assert r.status_code == 200
        pack += r.json()
        pages += 1
    assert pack == [{"n": "gw-2/bme-1/temperature", "t": T0 / 1000, "u": "Cel", "v": 20.5}]
    assert pages == 3  # the 1970 reading, the one at T0, then an empty last page


def test_events_filter_and_resume_after_an_id(api: Api) -> None:
    everything = api.get("/v1/events", limit=1000).json()["events"]
    kinds = {e["kind"] for e in everything}
    assert {"enrolled", "unknown-key", "gap", "equivocation"} <= kinds
    first = api.get("/v1/events", limit=2).json()
    assert first["events"] == everything[:2] and first["next"] == everything[1]["id"]
    rest = api.get("/v1/events", after=first["next"], limit=1000).json()
    assert rest["events"] == everything[2:]
    gaps = api.get("/v1/events", kind="gap").json()["events"]
    assert [e["device"] for e in gaps] == ["gw-1"]
    gw2 = api.get("/v1/events", device="gw-2", kind="equivocation").json()["events"]
    assert len(gw2) == 1 and gw2[0]["height"] == 1
    empty = api.get("/v1/events", after=everything[-1]["id"]).json()
    assert empty == {"events": [], "next": everything[-1]["id"]}


def test_metrics_are_prometheus_text_with_store_and_device_gauges(api: Api) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for line in ("edgeledger_log_entries 42.0", "edgeledger_checkpoint_height 2.0",
                 "edgeledger_checkpoint_log_entries 36.0",
                 'edgeledger_device_last_seen_timestamp_seconds{device="gw-1"} 1.700000123e+09',
                 'edgeledger_device_backlog_blocks{device="gw-1"} 2.0',
                 'edgeledger_device_online{device="gw-1"} 1.0',
                 "# TYPE edgeledger_blocks_rejected_total counter",
                 "# TYPE edgeledger_ingest_latency_seconds histogram"):
        assert line in text, line
    age = next(x for x in text.splitlines() if x.startswith("edgeledger_checkpoint_age_seconds"))
    assert float(age.split()[1]) > 0
    assert "_created" not in text


def test_openapi_documents_every_endpoint_and_the_error_shape(api: Api) -> None:
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    assert paths == {"/v1/log", "/v1/checkpoint", "/v1/checkpoints/{height}", "/v1/consistency",
                     "/v1/devices", "/v1/devices/{id}", "/v1/devices/{id}/blocks/{height}",
                     "/v1/readings", "/v1/proof", "/v1/events", "/metrics"}
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorBody" in schemas
    for path, ops in doc["paths"].items():
        responses = ops["get"]["responses"]
        assert "422" not in responses, path
        if ops["get"].get("parameters"):
            assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorBody"), path
    for page in ("/docs", "/redoc"):
        assert api.get(page).status_code == 200


def test_the_block_endpoint_reads_what_the_core_wrote(api: Api) -> None:
    block, _, _ = api.fleet.blocks["gw-2", 4]
    body = api.get("/v1/devices/gw-2/blocks/4").json()
    assert Block.parse(unb64(body["block"])).header.t0 == body["header"]["t0"] == 1004
    assert Checkpoint.parse(body["inclusion"]["checkpoint"].split("\n\n")[0] + "\n").size == 36
    assert block.header.t1 == body["header"]["t1"]
