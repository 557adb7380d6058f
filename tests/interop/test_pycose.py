"""Interop with pycose 1.1.0, and our core under cbor2 5 (DESIGN.md 2.2: pycose is the
reference check for micro-blocks).

pycose 1.1.0 needs cbor2 < 6 and the main env has cbor2 6, so pycose runs in a
second env (pycose_env.py) as a subprocess (pycose_peer.py). That env also has
edgeledger installed editable, which lets these tests compare what the same code
encodes under cbor2 5 and cbor2 6.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import cbor2_vectors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose_env import ROOT, EnvError, Peer, clean_environ, ensure_env

from edgeledger.core.block import ZERO_HASH, Block, BlockHeader, key_id, seal
from edgeledger.core.errors import DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading

pytestmark = pytest.mark.interop

SIGNER = Signer("device", hashlib.sha256(b"pycose interop device").digest())
OTHER = Signer("other", hashlib.sha256(b"pycose interop other").digest())
T = 1_700_000_000_000
COUNTS = [0, 1, 2, 3, 7, 0, 16, 100]  # 0: heartbeat blocks, first and mid-chain
PEER_SETTINGS = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="session")
def pycose_python() -> Path:
    """The pycose env's python, built on first use (see pycose_env.py)."""
    try:
        return ensure_env()
    except EnvError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def peer(pycose_python: Path) -> Iterator[Peer]:
    """pycose_peer.py, running in the pycose env for the whole session."""
    p = Peer(pycose_python)
    yield p
    p.close()


def make_readings(n: int, start: int = 0) -> list[Reading]:
    """n readings from three sensors, values of several kinds."""
    kinds: list[Any] = [21.25, 1013, True, "ok", {"lat": 52.52, "lon": 13.405, "alt": 34.5}]
    return [Reading(f"sensor-{i % 3}/m", T + i * 250, start + i, kinds[i % 5],
                    "Cel" if i % 5 == 0 else None) for i in range(n)]


def make_chain(signer: Signer = SIGNER) -> list[Block]:
    """A hash-linked chain of blocks with COUNTS readings each."""
    chain, prev, q = [], ZERO_HASH, 0
    for h, n in enumerate(COUNTS):
        block = seal(signer, "greenhouse-7", h, prev, make_readings(n, q), T + 600_000 * (h + 1))
        chain.append(block)
        prev, q = block.hash, q + n
    return chain


def header_fields(h: BlockHeader) -> dict[str, Any]:
    """A header as the JSON the peer's sign command takes."""
    return {"dev": h.dev, "h": h.h, "prev": h.prev.hex(), "root": h.root.hex(), "cnt": h.cnt,
            "t0": h.t0, "t1": h.t1, "ts": h.ts}


def pycose_verdicts(peer: Peer, blocks: list[bytes], key: bytes) -> list[dict[str, Any]]:
    """pycose's verdict on each block, checked with `key`."""
    answer = peer.call("verify", blocks=[{"cose": b.hex(), "key": key.hex()} for b in blocks])
    results: list[dict[str, Any]] = answer["results"]
    assert len(results) == len(blocks)
    return results


def pycose_sign(peer: Peer, headers: list[BlockHeader], order: tuple[str, str] = ("alg", "kid"),
                signer: Signer = SIGNER) -> list[dict[str, Any]]:
    """Blocks signed by pycose over our encoding of `headers`."""
    reqs = [{"seed": signer.seed.hex(), "header": header_fields(h), "order": list(order)}
            for h in headers]
    results: list[dict[str, Any]] = peer.call("sign", blocks=reqs)["results"]
    assert len(results) == len(headers)
    return results


def ours_accepts(cose: bytes, key: bytes) -> bool:
    """Our verdict: parse and verify; False on any EdgeLedgerError."""
    try:
        Block.parse(cose).verify(key)
    except EdgeLedgerError:
        return False
    return True


def replace_part(cose: bytes, part: int, value: bytes) -> bytes:
    """`cose` with part `part` of the COSE_Sign1 array replaced, re-encoded canonically."""
    parts = list(cbor2.loads(cose).value)
    parts[part] = value
    return cbor2.dumps(cbor2.CBORTag(18, parts), canonical=True)


def tampered(block: Block) -> dict[str, bytes]:
    """Variants of `block` that still parse but carry a flipped payload or signature bit.

    The payload flip is the last byte whose flip keeps the header decodable, so our
    verifier gets as far as the signature check rather than stopping at parsing.
    """
    out = {}
    for i in reversed(range(len(block.payload))):
        payload = bytearray(block.payload)
        payload[i] ^= 1
        try:
            BlockHeader.decode(bytes(payload))
        except DecodeError:
            continue
        out[f"payload byte {i}"] = replace_part(block.cose, 2, bytes(payload))
        break
    for i in (0, 31, 63):
        sig = bytearray(block.signature)
        sig[i] ^= 0x80
        out[f"signature byte {i}"] = replace_part(block.cose, 3, bytes(sig))
    assert any(k.startswith("payload") for k in out), "no payload byte flip keeps the header"
    return out


# --- the env itself ----------------------------------------------------------------


def test_pycose_env_runs_pycose_1_1_0_on_cbor2_5(peer: Peer) -> None:
    info = peer.call("info")
    assert info["cbor2"].startswith("5."), f"the pycose env has cbor2 {info['cbor2']}, not 5.x"
    assert info["cbor2_c_extension"], "cbor2 5 runs without its C extension: not what users get"
    assert info["pycose"] == "1.1.0"
    assert Path(info["edgeledger"]).resolve().is_relative_to(ROOT), (
        f"the pycose env imports edgeledger from {info['edgeledger']}, not from {ROOT}")


# --- our blocks, checked by pycose ----------------------------------------------------


def test_our_blocks_verify_with_pycose(peer: Peer) -> None:
    chain = make_chain()
    assert [b.header.cnt for b in chain] == COUNTS
    for block, got in zip(chain, pycose_verdicts(peer, [b.cose for b in chain],
                                                 SIGNER.public_key), strict=True):
        where = f"block {block.header.h} ({block.header.cnt} readings)"
        assert got["error"] is None, f"pycose cannot read {where}: {got['error']}"
        assert got["ok"], f"pycose rejects the signature of {where}"
        assert got["alg"] == -8, f"pycose reads alg {got['alg']} in {where}"
        assert got["kid"] == key_id(SIGNER.public_key).hex()
        assert got["kid"] == hashlib.sha256(SIGNER.public_key).digest()[:8].hex()
        assert got["uhdr"] == 0
        assert got["payload"] == block.payload.hex()


def test_pycose_rejects_our_blocks_under_another_key(peer: Peer) -> None:
    chain = make_chain()
    verdicts = pycose_verdicts(peer, [b.cose for b in chain], OTHER.public_key)
    assert not any(v["ok"] for v in verdicts)


def test_tampered_blocks_fail_pycose_and_ours(peer: Peer) -> None:
    for block in make_chain():
        variants = tampered(block)
        verdicts = pycose_verdicts(peer, list(variants.values()), SIGNER.public_key)
        for (what, cose), got in zip(variants.items(), verdicts, strict=True):
            where = f"block {block.header.h} with {what} flipped"
            assert not got["ok"], f"pycose accepts {where}"
            assert got["error"] is None, f"pycose could not even read {where}: {got['error']}"
            with pytest.raises(VerificationError, match="block signature"):
                Block.parse(cose).verify(SIGNER.public_key)


# --- pycose's blocks, checked by ours ---------------------------------------------------


def test_pycose_blocks_verify_with_ours_and_match_ours_byte_for_byte(peer: Peer) -> None:
    chain = make_chain()
    for block, got in zip(chain, pycose_sign(peer, [b.header for b in chain]), strict=True):
        cose, phdr = bytes.fromhex(got["cose"]), bytes.fromhex(got["phdr"])
        where = f"pycose's block {block.header.h} ({block.header.cnt} readings)"
        assert bytes.fromhex(got["key"]) == SIGNER.public_key
        assert bytes.fromhex(got["payload"]) == block.payload, (
            f"BlockHeader.encode() differs between cbor2 5 and 6 for {where}")
        assert phdr == block.protected, (
            f"protected header: pycose encodes {phdr.hex()}, ours {block.protected.hex()}")
        parsed = Block.parse(cose)
        parsed.verify(SIGNER.public_key)
        assert parsed.header == block.header
        assert parsed.kid == key_id(SIGNER.public_key)
        # Ed25519 is deterministic: the same key, header and headers give the same block.
        assert cose == block.cose, f"{where}: pycose {cose.hex()} != ours {block.cose.hex()}"
        with pytest.raises(VerificationError, match="kid"):
            parsed.verify(OTHER.public_key)


def test_tampered_pycose_blocks_fail_ours_and_pycose(peer: Peer) -> None:
    chain = make_chain(OTHER)
    signed = pycose_sign(peer, [b.header for b in chain], signer=OTHER)
    for block, got in zip(chain, signed, strict=True):
        theirs = Block.parse(bytes.fromhex(got["cose"]))
        theirs.verify(OTHER.public_key)
        variants = tampered(theirs)
        verdicts = pycose_verdicts(peer, list(variants.values()), OTHER.public_key)
        for (what, cose), verdict in zip(variants.items(), verdicts, strict=True):
            where = f"pycose's block {block.header.h} with {what} flipped"
            with pytest.raises(VerificationError, match="block signature"):
                Block.parse(cose).verify(OTHER.public_key)
            assert not verdict["ok"], f"pycose accepts {where}"


def test_pycose_protected_header_in_kid_alg_order_is_rejected_by_ours(peer: Peer) -> None:
    """pycose encodes the protected map in insertion order, without sorting keys.

    Built as {KID: kid, Algorithm: EdDSA}, its protected header is a2 04 48 <kid> 01 27,
    which is valid COSE (pycose verifies it) but not deterministic CBOR, so our strict
    parser refuses the block (DESIGN.md 2: signed data is deterministic CBOR). Only the
    {Algorithm, KID} order gives the bytes DESIGN.md 2.2 fixes: a2 01 27 04 48 <kid>.
    """
    header = make_chain()[1].header
    got = pycose_sign(peer, [header], order=("kid", "alg"))[0]
    kid = key_id(SIGNER.public_key)
    assert bytes.fromhex(got["phdr"]) == b"\xa2\x04\x48" + kid + b"\x01\x27"
    cose = bytes.fromhex(got["cose"])
    assert pycose_verdicts(peer, [cose], SIGNER.public_key)[0]["ok"]
    with pytest.raises(DecodeError, match="protected header"):
        Block.parse(cose)


# --- random blocks, both ways -------------------------------------------------------------


@PEER_SETTINGS
@given(n=st.integers(0, 40), h=st.integers(0, 2**32), flip=st.data())
def test_any_bit_flip_in_a_block_fails_pycose_and_ours(peer: Peer, n: int, h: int,
                                                       flip: st.DataObject) -> None:
    prev = ZERO_HASH if h == 0 else hashlib.sha256(h.to_bytes(8, "big")).digest()
    block = seal(SIGNER, "dev-1", h, prev, make_readings(n), T + 10**6)
    index = flip.draw(st.integers(0, len(block.cose) - 1), label="byte")
    bit = flip.draw(st.integers(0, 7), label="bit")
    bad = bytearray(block.cose)
    bad[index] ^= 1 << bit
    good_verdict, bad_verdict = pycose_verdicts(peer, [block.cose, bytes(bad)],
                                                SIGNER.public_key)
    assert good_verdict["ok"], f"pycose rejects {block.cose.hex()}: {good_verdict}"
    assert not bad_verdict["ok"], f"pycose accepts {bytes(bad).hex()}"
    assert ours_accepts(block.cose, SIGNER.public_key)
    assert not ours_accepts(bytes(bad), SIGNER.public_key)


# --- our encodings under cbor2 5 and cbor2 6 -----------------------------------------------


def test_fixed_vectors_encode_identically_under_cbor2_5_and_6(peer: Peer) -> None:
    ours = cbor2_vectors.vectors()
    assert any(k.startswith("block/0-cnt0") for k in ours), "no heartbeat block in the vectors"
    answer = peer.call("vectors", theirs=ours)
    made = {k for k in ours if answer["own"].get(k) != ours[k]}
    assert not made, "encoded differently under cbor2 5 than 6: " + "; ".join(
        f"{k}: 5 gives {answer['own'].get(k)}, 6 gives {ours[k]}" for k in sorted(made))
    again = {k for k in ours if answer["reencoded"][k] != ours[k]}
    assert not again, "cbor2 6's bytes do not decode and encode back under cbor2 5: " + "; ".join(
        f"{k}: {answer['reencoded'][k]}" for k in sorted(again))


def test_half_precision_floats_from_32768_to_65504_encode_identically(peer: Peer) -> None:
    """cbor2 5's C encoder writes these floats too wide; our encoder must not depend on it."""
    names = {f"reading/{v}": Reading("meter-1/power", T, 1, v, "W").raw.hex()
             for v in cbor2_vectors.CBOR2_5_HALF_FLOATS}
    assert all(cbor2_vectors.cbor2_5_float_bug(v) for v in cbor2_vectors.CBOR2_5_HALF_FLOATS)
    results = peer.call("reencode", items=list(names.items()))["results"]
    assert dict(zip(names, results, strict=True)) == names


def _floats() -> st.SearchStrategy[float]:
    return st.floats(allow_nan=False, allow_infinity=False)


_numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), _floats())
_values = st.one_of(_numbers, st.booleans(), st.text(max_size=40),
                    st.dictionaries(st.text(min_size=1, max_size=8), _numbers,
                                    min_size=1, max_size=4))
_readings = st.builds(
    Reading,
    n=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}/[A-Za-z0-9][a-z0-9._-]{0,8}", fullmatch=True),
    t=st.integers(-(2**63), 2**63 - 1), q=st.integers(0, 2**64 - 1), v=_values,
    u=st.none() | st.sampled_from(["Cel", "%RH", "Pa", "W", "kWh", "lat", "lon", "m"]),
    a=st.none() | st.binary(max_size=64))


@PEER_SETTINGS
@given(readings=st.lists(_readings, min_size=1, max_size=8))
def test_random_readings_encode_identically_under_cbor2_5(peer: Peer,
                                                          readings: list[Reading]) -> None:
    items = [[f"reading/{i}", r.raw.hex()] for i, r in enumerate(readings)]
    results = peer.call("reencode", items=items)["results"]
    for r, again in zip(readings, results, strict=True):
        assert again == r.raw.hex(), f"{r!r}: cbor2 6 gives {r.raw.hex()}, 5 gives {again}"


# --- our core test suite under cbor2 5 -------------------------------------------------------


def test_core_tests_pass_under_cbor2_5(pycose_python: Path, peer: Peer) -> None:
    assert peer.call("info")["cbor2"].startswith("5.")
    if not list((ROOT / "tests" / "core").glob("test_*.py")):
        pytest.skip("tests/core has no test modules yet; cbor2_vectors covers the formats")
    done = subprocess.run(
        [str(pycose_python), "-m", "pytest", str(ROOT / "tests" / "core"), "-q",
         "-p", "no:cacheprovider", "-x"],
        cwd=ROOT, env=clean_environ(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (
        f"tests/core fail under cbor2 5 (exit {done.returncode}):\n"
        f"{(done.stdout + done.stderr)[-6000:]}")
