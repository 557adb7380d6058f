"""Proof bundles (DESIGN.md 2.4): every field of a valid bundle, tampered, is caught by the
check meant for it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core import merkle
from edgeledger.core.block import Block, seal
from edgeledger.core.bundle import MAX_BUNDLE, ProofBundle, build_bundle, verify_bundle
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer, Verifier
from edgeledger.core.reading import Reading

World = Any  # conftest.World


def fields(world: World) -> dict[str, Any]:
    """The bundle's JSON object, as a fresh dict."""
    out: dict[str, Any] = json.loads(world.bundle.to_json())
    return out


def failed_check(world: World, obj: dict[str, Any], key: Verifier | None = None) -> str:
    """Parse and verify `obj`; return the name of the check that failed."""
    bundle = ProofBundle.from_json(json.dumps(obj))
    with pytest.raises(VerificationError) as err:
        verify_bundle(bundle, key or world.log.verifier())
    assert err.value.detail and str(err.value).startswith(err.value.check + ": ")
    return err.value.check


def flip_bits(b64text: str, step: int = 1) -> Iterator[str]:
    """Every `step`-th single-bit change of the bytes under `b64text`, in base64."""
    raw = base64.b64decode(b64text)
    for bit in range(0, len(raw) * 8, step):
        changed = bytearray(raw)
        changed[bit // 8] ^= 1 << (bit % 8)
        yield base64.b64encode(changed).decode()


# --- the valid bundle ------------------------------------------------------------------


def test_valid_bundle_verifies(world: World) -> None:
    proven = verify_bundle(world.bundle, world.log.verifier())
    assert proven.reading == world.readings[world.reading_index]
    assert proven.block == world.block and proven.log_index == 5
    assert proven.checkpoint == world.checkpoint and proven.checkpoint.size == 7
    line = proven.describe()
    assert "\n" not in line
    assert "door-3/open q=1" in line and "block 2 of device greenhouse-7" in line
    assert "entry 5 of log edgeledger.example/agg-1 at size 7" in line


def test_json_round_trip(world: World) -> None:
    text = world.bundle.to_json()
    assert ProofBundle.from_json(text) == world.bundle
    assert ProofBundle.from_json(text.encode()) == world.bundle
    assert ProofBundle.from_json(text).to_json() == text
    assert set(fields(world)) == {"version", "reading", "reading_index", "reading_path",
                                  "block", "device", "device_key", "log_index", "log_path",
                                  "checkpoint"}


def test_every_reading_of_the_block_is_provable(world: World) -> None:
    raws = [r.raw for r in world.readings]
    for i, r in enumerate(world.readings):
        bundle = build_bundle(raws, i, world.block, world.device.public_key, world.log_index,
                              world.bundle.log_path, world.note)
        assert verify_bundle(bundle, world.log.verifier()).reading == r


# --- tampering, field by field -----------------------------------------------------------


def test_tampered_reading(world: World) -> None:
    for changed in flip_bits(fields(world)["reading"]):
        assert failed_check(world, {**fields(world), "reading": changed}) == "reading path"
    other = world.readings[0].raw  # a real reading of the same block, at the wrong index
    assert failed_check(world, {**fields(world),
                                "reading": base64.b64encode(other).decode()}) == "reading path"
    assert failed_check(world, {**fields(world), "reading": ""}) == "reading path"


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5, 6, (1 << 63) - 1])
def test_tampered_reading_index(world: World, index: int) -> None:
    assert failed_check(world, {**fields(world), "reading_index": index}) == "reading path"


def _path_variants(path: list[str]) -> Iterator[list[str]]:
    zero = base64.b64encode(bytes(32)).decode()
    for i, h in enumerate(path):
        for changed in flip_bits(h, step=5):
            yield [*path[:i], changed, *path[i + 1:]]
        yield path[:i] + path[i + 1:]  # dropped
        yield [*path[:i], zero, *path[i:]]  # added
    yield [*path, zero]
    yield [*path, path[-1]]
    yield path[::-1]
    yield []
    yield [zero] * 64


def test_tampered_reading_path(world: World) -> None:
    for path in _path_variants(fields(world)["reading_path"]):
        assert failed_check(world, {**fields(world), "reading_path": path}) == "reading path"


def test_tampered_block(world: World) -> None:
    seen = set()
    for changed in flip_bits(fields(world)["block"]):
        check = failed_check(world, {**fields(world), "block": changed})
        assert check in ("block signature", "kid")
        seen.add(check)
    assert seen == {"block signature", "kid"}  # flips in the kid say so


def test_block_replaced_by_other_valid_blocks(world: World,
                                              make_signer: Callable[[str, int], Signer]) -> None:
    # the device's own blocks, correctly signed, at the bundle's log index: log inclusion
    for leaf in (world.log_leaves[0], world.log_leaves[3]):
        obj = {**fields(world), "block": base64.b64encode(leaf).decode()}
        assert failed_check(world, obj) == "log inclusion"
    # the same readings, sealed again (another seal time): a different block
    resealed = seal(world.device, "greenhouse-7", 2, world.block.header.prev,
                    list(world.readings), world.block.header.ts + 1)
    obj = {**fields(world), "block": base64.b64encode(resealed.cose).decode()}
    assert failed_check(world, obj) == "log inclusion"
    # another device's block, with that device's key: the device check
    other = Block.parse(world.log_leaves[1])
    assert failed_check(world, {**fields(world), "block": base64.b64encode(other.cose).decode(),
                                "device_key": _other_key(make_signer)}) == "device"


def _other_key(make_signer: Callable[[str, int], Signer]) -> str:
    """The public key of conftest's other device (coldroom-2, seed tag 2)."""
    return base64.b64encode(make_signer("coldroom-2", 2).public_key).decode()


def test_tampered_device_key(world: World, make_signer: Callable[[str, int], Signer]) -> None:
    for changed in flip_bits(fields(world)["device_key"]):
        assert failed_check(world, {**fields(world), "device_key": changed}) == "kid"
    stranger = base64.b64encode(make_signer("x", 60).public_key).decode()
    assert failed_check(world, {**fields(world), "device_key": stranger}) == "kid"


@pytest.mark.parametrize("device", ["coldroom-2", "greenhouse-8", "greenhouse-", "",
                                    "GREENHOUSE-7", "greenhouse-7 ", "greenhouse\u20137"])
def test_tampered_device(world: World, device: str) -> None:
    assert failed_check(world, {**fields(world), "device": device}) == "device"


@pytest.mark.parametrize("index", [0, 1, 3, 4, 6, 7, 8, 1 << 40])
def test_tampered_log_index(world: World, index: int) -> None:
    assert failed_check(world, {**fields(world), "log_index": index}) == "log inclusion"


def test_tampered_log_path(world: World) -> None:
    for path in _path_variants(fields(world)["log_path"]):
        assert failed_check(world, {**fields(world), "log_path": path}) == "log inclusion"


def _checkpoint_variants(note: str) -> Iterator[str]:
    text, sig = note.split("\n\n")
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):
        for new in (line + "0", line[:-1], "", line.upper(), line + " "):
            if new != line:
                yield "\n".join([*lines[:i], new, *lines[i + 1:]]) + "\n\n" + sig
        yield "\n".join(lines[:i] + lines[i + 1:]) + "\n\n" + sig  # line dropped
    yield text + "extra line\n\n" + sig
    yield "\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n\n" + sig
    name, blob = sig[2:-1].split(" ")
    for changed in flip_bits(blob, step=3):
        yield f"{text}\n\u2014 {name} {changed}\n"
    yield f"{text}\n\u2014 {name}x {blob}\n"
    yield text + "\n"  # no signature
    yield text  # no blank line
    yield note.replace("\u2014", "-")
    yield ""


def test_tampered_checkpoint(world: World) -> None:
    count = 0
    for note in _checkpoint_variants(world.note):
        assert note != world.note
        assert failed_check(world, {**fields(world), "checkpoint": note}) == \
            "checkpoint signature", note
        count += 1
    assert count > 200


def test_checkpoint_resigned_by_the_right_key_still_has_to_hold_the_block(world: World) -> None:
    # (size 8 with the size-7 root would pass: an inclusion path cannot tell a log that
    # signs a root under the wrong size; consistency checks between checkpoints do)
    for cp in (replace(world.checkpoint, size=6), replace(world.checkpoint, size=5),
               replace(world.checkpoint, size=16),
               replace(world.checkpoint, root=merkle.EMPTY_ROOT)):
        obj = {**fields(world), "checkpoint": cp.sign(world.log)}
        assert failed_check(world, obj) == "log inclusion"


def test_wrong_log_key(world: World, make_signer: Callable[[str, int], Signer]) -> None:
    for key in (make_signer("edgeledger.example/agg-1", 61).verifier(),
                make_signer("edgeledger.example/agg-2", 62).verifier(),
                world.device.verifier()):
        assert failed_check(world, fields(world), key=key) == "checkpoint signature"


def test_checks_run_from_the_trust_anchor_down(
        world: World, make_signer: Callable[[str, int], Signer]) -> None:
    everything = {**fields(world), "reading_index": 0, "log_index": 0, "device": "x",
                  "device_key": _other_key(make_signer)}
    order = [("checkpoint", "checkpoint signature", world.note.replace("\n7\n", "\n8\n")),
             ("device_key", "kid", None), ("device", "device", None),
             ("log_index", "log inclusion", None), ("reading_index", "reading path", None)]
    obj = {**everything, "checkpoint": order[0][2]}
    for key, check, _ in order:
        assert failed_check(world, obj) == check
        obj[key] = fields(world)[key]
    verify_bundle(ProofBundle.from_json(json.dumps(obj)), world.log.verifier())


# --- malformed JSON ----------------------------------------------------------------------

BAD_JSON: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("version 2", lambda d: {**d, "version": 2}, "key 'version' must be 1"),
    ("version 0", lambda d: {**d, "version": 0}, "key 'version' must be 1"),
    ("version true", lambda d: {**d, "version": True}, "key 'version' must be 1"),
    ("version 1.0", lambda d: {**d, "version": 1.0}, "key 'version' must be 1"),
    ("version text", lambda d: {**d, "version": "1"}, "key 'version' must be 1"),
    ("version null", lambda d: {**d, "version": None}, "key 'version' must be 1"),
    ("missing version", lambda d: {k: v for k, v in d.items() if k != "version"},
     "missing keys ['version']"),
    ("missing log_path", lambda d: {k: v for k, v in d.items() if k != "log_path"},
     "missing keys ['log_path']"),
    ("unknown key", lambda d: {**d, "note": ""}, "unknown keys ['note']"),
    ("reading_index -1", lambda d: {**d, "reading_index": -1}, "key 'reading_index'"),
    ("reading_index true", lambda d: {**d, "reading_index": True}, "key 'reading_index'"),
    ("reading_index 3.0", lambda d: {**d, "reading_index": 3.0}, "key 'reading_index'"),
    ("reading_index text", lambda d: {**d, "reading_index": "3"}, "key 'reading_index'"),
    ("log_index 2**63", lambda d: {**d, "log_index": 1 << 63}, "key 'log_index'"),
    ("log_index false", lambda d: {**d, "log_index": False}, "key 'log_index'"),
    ("device null", lambda d: {**d, "device": None}, "key 'device' must be text"),
    ("checkpoint list", lambda d: {**d, "checkpoint": [d["checkpoint"]]},
     "key 'checkpoint' must be text"),
    ("reading not base64", lambda d: {**d, "reading": "**"}, "key 'reading': not valid base64"),
    ("block URL-safe", lambda d: {**d, "block": d["block"].replace("/", "_")},
     "key 'block': not valid base64"),
    ("reading as list", lambda d: {**d, "reading": [1]}, "key 'reading': expected base64"),
    ("block non-canonical base64", lambda d: {**d, "block": d["block"][:-2] + "J="},
     "key 'block': base64 is not in canonical form"),
    ("device_key 31 bytes",
     lambda d: {**d, "device_key": base64.b64encode(base64.b64decode(d["device_key"])[:31])
                .decode()}, "key 'device_key': 31 bytes where 32"),
    ("log_path not a list", lambda d: {**d, "log_path": d["log_path"][0]}, "key 'log_path'"),
    ("log_path item 31 bytes",
     lambda d: {**d, "log_path": [*d["log_path"][:2], base64.b64encode(bytes(31)).decode()]},
     "key 'log_path' item 2: 31 bytes"),
    ("reading_path item null", lambda d: {**d, "reading_path": [None]},
     "key 'reading_path' item 0"),
    ("reading_path too long",
     lambda d: {**d, "reading_path": [d["reading_path"][0]] * (merkle.MAX_PROOF_HASHES + 1)},
     "key 'reading_path' must be a list of at most"),
    ("an array", lambda d: [d], "expected a JSON object"),
    ("a string", lambda d: "bundle", "expected a JSON object"),
]


@pytest.mark.parametrize(("change", "needle"), [(c, n) for _, c, n in BAD_JSON],
                         ids=[i for i, _, _ in BAD_JSON])
def test_malformed_bundles(world: World, change: Callable[[dict[str, Any]], Any],
                           needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        ProofBundle.from_json(json.dumps(change(fields(world))))
    assert str(err.value).startswith("bundle")
    assert needle in str(err.value)


@pytest.mark.parametrize(("text", "needle"), [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("{'version': 1}", "not valid JSON"),
    ("[" * 100_000, "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    ("9" * 5000, "not valid JSON"),
    ("NaN", "expected a JSON object"),
    (" " * (MAX_BUNDLE + 1), f"larger than {MAX_BUNDLE} bytes"),
])
def test_not_json(text: str | bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=f"^bundle: {needle}"):
        ProofBundle.from_json(text)


def test_surrogates_in_text_fields_are_errors_of_the_named_check(world: World) -> None:
    # JSON may carry lone surrogates ("\ud800"), which are not text
    obj = {**fields(world), "checkpoint": world.note.replace("height", "h\ud800ight")}
    assert failed_check(world, obj) == "checkpoint signature"
    assert failed_check(world, {**fields(world), "device": "\udc80"}) == "device"


# --- properties ------------------------------------------------------------------------

_hash = st.binary(min_size=32, max_size=32)
bundles = st.builds(
    ProofBundle, reading=st.binary(max_size=200), reading_index=st.integers(0, (1 << 63) - 1),
    reading_path=st.lists(_hash, max_size=64).map(tuple), block=st.binary(max_size=300),
    device=st.text(max_size=70), device_key=_hash, log_index=st.integers(0, (1 << 63) - 1),
    log_path=st.lists(_hash, max_size=64).map(tuple), checkpoint=st.text(max_size=300))


@settings(max_examples=100, deadline=None)
@given(bundles)
def test_bundle_json_round_trip(bundle: ProofBundle) -> None:
    text = bundle.to_json()
    assert ProofBundle.from_json(text) == bundle
    assert ProofBundle.from_json(text).to_json() == text


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.floats(-100, 100)), min_size=1, max_size=9),
       st.data())
def test_built_bundles_verify(world: World, spec: list[tuple[int, float]],
                              data: st.DataObject) -> None:
    rs = [Reading(f"s-{i % 2}/x", t, i, v) for i, (t, v) in enumerate(spec)]
    block = seal(world.device, "greenhouse-7", 9, b"\x05" * 32, rs, 2000)
    leaves = [*world.log_leaves, block.cose]
    extra = data.draw(st.integers(0, 5))
    leaves += list(world.log_leaves[:extra])
    tree = merkle.MemoryHashes()
    for leaf in leaves:
        tree.append(merkle.leaf_hash(leaf))
    index = len(world.log_leaves)
    cp = replace(world.checkpoint, size=tree.size, root=tree.root())
    i = data.draw(st.integers(0, len(rs) - 1))
    bundle = build_bundle([r.raw for r in rs], i, block, world.device.public_key, index,
                          merkle.inclusion_proof(index, tree.size, tree.read_hashes),
                          cp.sign(world.log))
    again = ProofBundle.from_json(bundle.to_json())
    assert verify_bundle(again, world.log.verifier()).reading == rs[i]
