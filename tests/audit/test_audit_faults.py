"""Every lie an aggregator could tell its auditor, one per row: the audit must exit 1,
name the check that caught it in one `FAILED <check>: ...` line, and leave the state
file as it was.

The answers come from the real API over a real log (conftest.py), passed through a
stdlib proxy (auditproxy.py) that alters exactly one answer per case. The log has
checkpoints 0..3 at sizes 4, 8, 12, 16 (two devices, a checkpoint every two rounds).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from auditfleet import LOG_KEY, ORIGIN, Live, device_key
from auditproxy import Rule, tampered

from edgeledger.audit.state import save_state
from edgeledger.core import b64
from edgeledger.core.block import Block, seal
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.note import SIG_PREFIX, Signer
from edgeledger.core.reading import Reading

OTHER_KEY = Signer(ORIGIN, hashlib.sha256(b"not the log key").digest())
BLOCK = "/v1/devices/gw-1/blocks/2"


def text_of(note: str) -> Checkpoint:
    return Checkpoint.parse(note[:note.rfind("\n\n") + 1])


def resign(change: Callable[[Checkpoint], Checkpoint], signer: Signer = LOG_KEY
           ) -> Callable[[Any], Any]:
    """A rule: the served checkpoint changed by `change`, signed by `signer`, with the
    API's parsed fields made to match (so only the intended check can catch it)."""
    def rule(body: dict[str, Any]) -> dict[str, Any]:
        cp = change(text_of(body["note"]))
        return {**body, "note": cp.sign(signer), "height": cp.height, "size": cp.size,
                "root": b64.encode(cp.root), "prev": b64.encode(cp.prev), "time": cp.time}
    return rule


def flip_signature(body: dict[str, Any]) -> dict[str, Any]:
    text, sig_line = body["note"].rsplit(SIG_PREFIX, 1)
    name, blob = sig_line.strip().split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    return {**body, "note": f"{text}{SIG_PREFIX}{name} {b64.encode(bytes(raw))}\n"}


def flip(data: str) -> str:
    raw = bytearray(base64.b64decode(data))
    raw[-1] ^= 1
    return b64.encode(bytes(raw))


def block_rule(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    def rule(body: dict[str, Any]) -> dict[str, Any]:
        change(body)
        return body
    return rule


def forged_block(dev: str = "gw-1", h: int = 2, prev: bytes | None = bytes([9]) * 32
                 ) -> Callable[[Any], Any]:
    """Block gw-1/2 re-signed by the device's own key, with `dev`, `h` or `prev` wrong."""
    def change(body: dict[str, Any]) -> None:
        block = Block.parse(base64.b64decode(body["block"]))
        rds = [Reading(r["n"], r["t"], r["q"], r["v"], r["u"],
                       None if r["a"] is None else base64.b64decode(r["a"]))
               for r in body["readings"]]
        twin = seal(device_key("gw-1"), dev, h, prev or block.header.prev, rds,
                    block.header.ts)
        body.update(block=b64.encode(twin.cose), hash=b64.encode(twin.hash))
        body["header"].update(dev=dev, h=h, prev=b64.encode(twin.header.prev))
    return block_rule(change)


def wrong_index(body: dict[str, Any]) -> None:
    body["log_index"] += 1
    for r in body["readings"]:
        r["log_index"] += 1


CASES: dict[str, tuple[dict[str, Rule], str, tuple[str, ...]]] = {
    # name: (rules, the check named, devices audited)
    "wrong verifier key on /v1/log": (
        {"/v1/log": lambda b: {**b, "verifier_key": OTHER_KEY.verifier().text()}},
        "log key", ()),
    "origin on /v1/log is not the key's": (
        {"/v1/log": lambda b: {**b, "origin": "elsewhere/agg"}}, "log key", ()),
    "forged checkpoint signature (another key, same name)": (
        {"/v1/checkpoints/1": resign(lambda c: c, OTHER_KEY)}, "checkpoint signature", ()),
    "checkpoint signature bit flipped": (
        {"/v1/checkpoints/1": flip_signature}, "checkpoint signature", ()),
    "latest checkpoint forged": (
        {"/v1/checkpoint": resign(lambda c: c, OTHER_KEY)}, "checkpoint signature", ()),
    "fork: a signed checkpoint whose tree does not extend the last": (
        {"/v1/checkpoints/2": resign(lambda c: dataclasses.replace(c, root=bytes(32)))},
        "consistency", ()),
    "fork: a consistency proof that does not hold": (
        {"/v1/consistency?from=8&to=12": lambda b: {**b, "proof": [flip(h) for h in
                                                                    b["proof"]]}},
        "consistency", ()),
    "broken prev chain": (
        {"/v1/checkpoints/2": resign(lambda c: dataclasses.replace(c, prev=bytes(32)))},
        "checkpoint chain", ()),
    "time goes back": (
        {"/v1/checkpoints/2": resign(lambda c: dataclasses.replace(c, time=c.time - 10**6))},
        "checkpoint time", ()),
    "a checkpoint below the latest is missing": (
        {"/v1/checkpoints/2": (404, {"error": "not-found", "parameter": "height",
                                     "reason": "gone"})}, "checkpoint height", ()),
    "parsed fields disagree with the signed note": (
        {"/v1/checkpoints/1": lambda b: {**b, "size": b["size"] + 1}},
        "checkpoint fields", ()),
    "malformed answer": (
        {"/v1/checkpoints/1": lambda b: {**b, "note": 5}}, "api response", ()),
    "block with a bad signature": (
        {BLOCK: block_rule(lambda b: b.update(block=flip(b["block"])))},
        "block signature", ("gw-1",)),
    "block whose readings do not hash to its root": (
        {BLOCK: block_rule(lambda b: b["readings"][0].update(v=b["readings"][0]["v"] + 1))},
        "readings", ("gw-1",)),
    "block whose readings are withheld": (
        {BLOCK: block_rule(lambda b: b.update(readings=[]))}, "readings", ("gw-1",)),
    "block not included at its index (path altered)": (
        {BLOCK: block_rule(lambda b: b["inclusion"].update(
            log_path=[flip(h) for h in b["inclusion"]["log_path"]]))},
        "log inclusion", ("gw-1",)),
    "block not included at its index (index altered)": (
        {BLOCK: block_rule(wrong_index)}, "log inclusion", ("gw-1",)),
    "covered block served without an inclusion proof": (
        {BLOCK: block_rule(lambda b: b.update(inclusion=None))}, "log inclusion", ("gw-1",)),
    "block signed by the device but linked to the wrong block": (
        {BLOCK: forged_block()}, "block chain", ("gw-1",)),
    "block signed by the device for another device id": (
        {BLOCK: forged_block(dev="gw-7", prev=None)}, "device", ("gw-1",)),
    "block signed by the device for another height": (
        {BLOCK: forged_block(h=5, prev=None)}, "block height", ("gw-1",)),
    "block out of order in the log": (
        {BLOCK: block_rule(lambda b: b.update(log_index=0))}, "log order", ("gw-1",)),
    "block hash field is not the block's": (
        {BLOCK: block_rule(lambda b: b.update(hash=flip(b["hash"])))},
        "block fields", ("gw-1",)),
    "device record's tip is not where its chain ends": (
        {"/v1/devices/gw-1": lambda b: {**b, "tip_hash": flip(b["tip_hash"])}},
        "device tip", ("gw-1",)),
    "device kid is not its key's": (
        {"/v1/devices/gw-1": lambda b: {**b, "kid": "00" * 8}}, "device key", ("gw-1",)),
    "block listed but missing": (
        {BLOCK: (404, {"error": "not-found", "parameter": "height", "reason": "gone"})},
        "device blocks", ("gw-1",)),
}


def test_device_pages_that_do_not_advance(shared: Live, tmp_path: Path) -> None:
    loop = {"devices": [{"id": "gw-1"}], "next": ""}
    with tampered(shared.url, {"/v1/devices?after=&limit=1000": (200, loop)}) as proxy:
        status, out = shared.audit(url=proxy.url, state=tmp_path / "s.json",
                                   all_devices=True)
    assert status == 1 and out.startswith("FAILED api response: /v1/devices: the page"), out


def test_an_inclusion_proof_against_an_older_checkpoint(shared: Live, tmp_path: Path) -> None:
    note = shared.log.notes[1]
    cp = text_of(note)

    def older(body: dict[str, Any]) -> dict[str, Any]:
        body["inclusion"].update(checkpoint=note, height=cp.height, size=cp.size,
                                 root=b64.encode(cp.root))
        return body

    with tampered(shared.url, {BLOCK: older}) as proxy:
        status, out = shared.audit("gw-1", url=proxy.url, state=tmp_path / "s.json")
    assert status == 1, out
    assert out.startswith("FAILED log inclusion: the inclusion proof is against checkpoint 1, "
                          "older than the verified checkpoint 3"), out


def _serve_one_below(live: Live) -> Rule:
    note = live.log.notes[1]
    cp = text_of(note)
    return lambda b: {**b, "note": note, "height": cp.height, "size": cp.size,
                      "root": b64.encode(cp.root)}


@pytest.mark.parametrize("name", list(CASES))
def test_each_lie_is_caught_by_its_check(shared: Live, tmp_path: Path, name: str) -> None:
    rules, check, devices = CASES[name]
    state = tmp_path / "state.json"
    with tampered(shared.url, rules) as proxy:
        status, out = shared.audit(*devices, url=proxy.url, state=state)
    assert status == 1, out
    assert out.count("\n") == 1 and out.startswith(f"FAILED {check}: "), out
    assert not state.exists()


def test_without_a_lie_the_proxy_changes_nothing(shared: Live, tmp_path: Path) -> None:
    with tampered(shared.url) as proxy:
        status, out = shared.audit("gw-1", "gw-2", url=proxy.url, state=tmp_path / "s.json")
    assert status == 0, out


def test_another_height_served_than_asked_for(shared: Live, tmp_path: Path) -> None:
    with tampered(shared.url, {"/v1/checkpoints/2": _serve_one_below(shared)}) as proxy:
        status, out = shared.audit(url=proxy.url, state=tmp_path / "s.json")
    assert status == 1, out
    assert out == "FAILED checkpoint height: asked for checkpoint 2, the API served " \
                  "checkpoint 1\n"


def _saved(live: Live, tmp_path: Path, cp: Checkpoint, note: str) -> Path:
    path = tmp_path / "state.json"
    save_state(path, LOG_KEY.verifier(), note, cp, 0)
    return path


def test_rollback_behind_the_saved_checkpoint(shared: Live, tmp_path: Path) -> None:
    state = _saved(shared, tmp_path, text_of(shared.log.notes[3]), shared.log.notes[3])
    before = state.read_bytes()
    with tampered(shared.url, {"/v1/checkpoint": _serve_one_below(shared)}) as proxy:
        status, out = shared.audit(url=proxy.url, state=state)
    assert status == 1 and out.startswith("FAILED rollback: "), out
    assert "latest checkpoint is 1 (size 8), behind checkpoint 3 (size 16)" in out
    assert state.read_bytes() == before


def test_rollback_to_no_checkpoint(shared: Live, tmp_path: Path) -> None:
    state = _saved(shared, tmp_path, text_of(shared.log.notes[3]), shared.log.notes[3])
    gone = (404, {"error": "not-found", "parameter": None, "reason": "none yet"})
    with tampered(shared.url, {"/v1/checkpoint": gone}) as proxy:
        status, out = shared.audit(url=proxy.url, state=state)
    assert status == 1 and out.startswith("FAILED rollback: "), out


def test_fork_between_runs(shared: Live, tmp_path: Path) -> None:
    """The auditor was shown another checkpoint 2 last time (a split view): now caught."""
    other = dataclasses.replace(text_of(shared.log.notes[2]), root=bytes([7]) * 32)
    state = _saved(shared, tmp_path, other, other.sign(LOG_KEY))
    before = state.read_bytes()
    status, out = shared.audit(state=state)
    assert status == 1 and out.startswith("FAILED fork: checkpoint 2 served now"), out
    assert state.read_bytes() == before


def test_a_server_error_is_not_a_fault_but_an_error(shared: Live, tmp_path: Path) -> None:
    rules: dict[str, Rule] = {"/v1/checkpoints/1": (500, {"reason": "disk on fire"})}
    with tampered(shared.url, rules) as proxy:
        status, out = shared.audit(url=proxy.url, state=tmp_path / "s.json")
        assert status == 3, out
        assert out.startswith(f"ERROR api: the API at {proxy.url}/v1/checkpoints/1 answered "
                              "HTTP 500"), out
        assert "disk on fire" in out
    assert not (tmp_path / "s.json").exists()


def test_a_body_that_is_not_json(shared: Live, tmp_path: Path) -> None:
    with tampered(shared.url, {"/v1/log": (200, b"<html>")}) as proxy:
        status, out = shared.audit(url=proxy.url, state=tmp_path / "s.json")
    assert status == 1 and out.startswith("FAILED api response: "), out
