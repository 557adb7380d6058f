"""Every endpoint's bad parameters: a 4xx whose JSON body names the parameter and why.

And unknown devices, heights, indexes and checkpoints are 404s in the same shape;
no input gives a 5xx (schemathesis hunts for more in test_api_schemathesis.py).
"""

from __future__ import annotations

import pytest
from conftest import Api

BIG = str(1 << 63)
BAD = [
    # path, params, status, parameter
    ("/v1/checkpoints/-1", {}, 400, "height"),
    ("/v1/checkpoints/x", {}, 400, "height"),
    (f"/v1/checkpoints/{BIG}", {}, 400, "height"),
    ("/v1/checkpoints/3", {}, 404, "height"),
    ("/v1/consistency", {}, 400, "from"),
    ("/v1/consistency", {"from": "a"}, 400, "from"),
    ("/v1/consistency", {"from": -1}, 400, "from"),
    ("/v1/consistency", {"from": 1, "to": 37}, 400, "to"),
    ("/v1/consistency", {"from": 1, "to": BIG}, 400, "to"),
    ("/v1/consistency", {"from": 20, "to": 10}, 400, "from"),
    ("/v1/devices", {"limit": 0}, 400, "limit"),
    ("/v1/devices", {"limit": 1001}, 400, "limit"),
    ("/v1/devices", {"after": "UPPER"}, 400, "after"),
    ("/v1/devices/GW-1", {}, 400, "id"),
    ("/v1/devices/-gw", {}, 400, "id"),
    ("/v1/devices/" + "a" * 65, {}, 400, "id"),
    ("/v1/devices/gw-9", {}, 404, "id"),
    ("/v1/devices/gw-9/blocks/0", {}, 404, "id"),
    ("/v1/devices/gw-1/blocks/14", {}, 404, "height"),
    ("/v1/devices/gw-1/blocks/-1", {}, 400, "height"),
    ("/v1/devices/gw-1/blocks/1.5", {}, 400, "height"),
    ("/v1/devices/gw_1/blocks/0", {}, 400, "id"),
    ("/v1/readings", {"device": "GW"}, 400, "device"),
    ("/v1/readings", {"device": "gw-9"}, 404, "device"),
    ("/v1/readings", {"name": "no spaces/x y"}, 400, "name"),
    ("/v1/readings", {"name": "a/b/c"}, 400, "name"),
    ("/v1/readings", {"since": "yesterday"}, 400, "since"),
    ("/v1/readings", {"since": BIG}, 400, "since"),
    ("/v1/readings", {"until": "-" + str((1 << 63) + 1)}, 400, "until"),
    ("/v1/readings", {"since": 10, "until": 9}, 400, "until"),
    ("/v1/readings", {"limit": 0}, 400, "limit"),
    ("/v1/readings", {"limit": "many"}, 400, "limit"),
    ("/v1/readings", {"cursor": "abc"}, 400, "cursor"),
    ("/v1/readings", {"cursor": f"{BIG}_1_1"}, 400, "cursor"),
    ("/v1/readings", {"cursor": "1_99999999999999999999_0"}, 400, "cursor"),
    ("/v1/readings", {"format": "xml"}, 400, "format"),
    ("/v1/proof", {}, 400, "device"),
    ("/v1/proof", {"device": "gw-1"}, 400, "height"),
    ("/v1/proof", {"device": "gw-1", "height": 0}, 400, "index"),
    ("/v1/proof", {"device": "gw-1", "height": 0, "index": -1}, 400, "index"),
    ("/v1/proof", {"device": "gw-1", "height": BIG, "index": 0}, 400, "height"),
    ("/v1/proof", {"device": "gw-9", "height": 0, "index": 0}, 404, "device"),
    ("/v1/proof", {"device": "gw-1", "height": 14, "index": 0}, 404, "height"),
    ("/v1/proof", {"device": "gw-1", "height": 0, "index": 7}, 404, "index"),
    ("/v1/proof", {"device": "gw-1", "height": 6, "index": 0}, 404, "index"),  # heartbeat
    ("/v1/events", {"after": -1}, 400, "after"),
    ("/v1/events", {"after": BIG}, 400, "after"),
    ("/v1/events", {"limit": 100000}, 400, "limit"),
    ("/v1/events", {"kind": "Bad Kind"}, 400, "kind"),
    ("/v1/events", {"device": "gw 1"}, 400, "device"),
]


@pytest.mark.parametrize(("path", "params", "status", "parameter"), BAD,
                         ids=[f"{p}?{q}" for p, q, _, _ in BAD])
def test_bad_or_unknown_parameters_are_named(api: Api, path: str, params: dict[str, object],
                                             status: int, parameter: str) -> None:
    r = api.client.get(path, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "parameter", "reason"}
    assert body["parameter"] == parameter, body
    assert body["error"] == ("bad-parameter" if status == 400 else "not-found")
    assert body["reason"]


def test_unknown_paths_and_methods_answer_in_the_same_shape(api: Api) -> None:
    r = api.client.get("/v2/log")
    assert r.status_code == 404
    assert r.json() == {"error": "not-found", "parameter": None, "reason": "Not Found"}
    r = api.client.post("/v1/log")
    assert r.status_code == 405 and r.json()["error"] == "method-not-allowed"
    assert "GET" in r.headers["allow"]


def test_blocks_not_covered_by_a_checkpoint_are_not_yet_provable(api: Api) -> None:
    r = api.get("/v1/proof", device="gw-1", height=13, index=0)
    assert r.status_code == 409
    assert "does not cover it yet" in r.json()["reason"]
