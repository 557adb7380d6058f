"""One invariant for every decoder of untrusted input: it parses, or it raises an
EdgeLedgerError subclass, never anything else (no ValueError, KeyError, TypeError,
UnicodeError, IndexError, RecursionError...). Inputs are random bytes and text, and
random mutations of valid encodings, so that the fuzzing reaches the deep checks too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeledger.core import cbor
from edgeledger.core.block import Block, BlockHeader, parse_sync_message, sync_message
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer, Verifier, open_note, split_note
from edgeledger.core.reading import Reading

World = Any  # conftest.World
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def survive(decode: Callable[[Any], object], data: Any) -> object | None:
    """Run `decode`; an EdgeLedgerError is a fine answer, anything else fails the test."""
    try:
        return decode(data)
    except EdgeLedgerError:
        return None


def byte_decoders(world: World) -> dict[str, Callable[[bytes], object]]:
    return {
        "cbor.decode": lambda b: cbor.decode(b, "fuzz"),
        "Reading.decode": Reading.decode,
        "BlockHeader.decode": BlockHeader.decode,
        "Block.parse": Block.parse,
        "parse_sync_message": parse_sync_message,
        "ProofBundle.from_json(bytes)": ProofBundle.from_json,
    }


def text_decoders(world: World) -> dict[str, Callable[[str], object]]:
    log, dev = world.log.verifier(), world.device.verifier()
    return {
        "Verifier.parse": Verifier.parse,
        "Signer.parse": Signer.parse,
        "split_note": split_note,
        "open_note": lambda t: open_note(t, log),
        "open_note(other key)": lambda t: open_note(t, dev),
        "Checkpoint.parse": Checkpoint.parse,
        "open_checkpoint": lambda t: open_checkpoint(t, log),
        "ProofBundle.from_json": ProofBundle.from_json,
        "verify_bundle": lambda t: verify_bundle(ProofBundle.from_json(t), log),
    }


def byte_seeds(world: World) -> list[bytes]:
    b = world.block
    return [r.raw for r in world.readings] + [
        b.cose, b.payload, b.protected, *world.log_leaves,
        sync_message(b, list(world.readings)), world.bundle.to_json().encode(),
        cbor.encode({"v": [1.5, -1, {"x": b""}], "t": True})]


def text_seeds(world: World) -> list[str]:
    return [world.note, world.checkpoint.text(), world.log.verifier().text(), world.log.text(),
            world.device.verifier().text(), world.bundle.to_json()]


@st.composite
def mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    """Up to four random edits of `seed`: bit flips, byte sets, inserts, deletes, cuts,
    repeats, and CBOR-ish bytes that trip decoders (big lengths, tags, breaks)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "repeat", "magic"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 32))]
        else:
            data[at:at] = draw(st.sampled_from([
                b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",
                b"\x9f", b"\xbf", b"\xff", b"\xd2", b"\xc2\x49\x01" + bytes(8), b"\xf9\x7e\x00",
                b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\x81" * 40, b"\xd9\xd9\xf7",
                b"\xed\xa0\x80", b"\xc0", b"\n\n", "\u2014 ".encode(), b"+", b"=", b"\\ud800",
                b'"', b"[", b"{", b"1e999", b"-0", b"null", b"0" * 30]))
    return bytes(data)


def as_text(data: bytes) -> str:
    """Bytes as text the way a careless reader would make it: lone surrogates included."""
    return data.decode("utf-8", "surrogateescape")


# --- random input ------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300), st.data())
def test_random_bytes(world: World, data: bytes, draw: st.DataObject) -> None:
    for decode in byte_decoders(world).values():
        survive(decode, data)


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200).map(as_text))
def test_random_text(world: World, text: str) -> None:
    for decode in text_decoders(world).values():
        survive(decode, text)


# --- mutations of valid input ---------------------------------------------------------------


@FUZZ
@given(st.data())
def test_mutated_bytes(world: World, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(byte_seeds(world)))
    mutated = data.draw(mutate(seed))
    for decode in byte_decoders(world).values():
        survive(decode, mutated)
    block = survive(Block.parse, mutated)
    if isinstance(block, Block):  # what parses is exactly what was given
        assert block.cose == mutated
        survive(block.verify, world.device.public_key)


@FUZZ
@given(st.data())
def test_mutated_text(world: World, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(text_seeds(world)))
    text = as_text(data.draw(mutate(seed.encode())))
    for decode in text_decoders(world).values():
        survive(decode, text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10)


@FUZZ
@given(st.data())
def test_bundle_fields(world: World, data: st.DataObject) -> None:
    """Change one to three fields of a valid bundle to random or mutated values."""
    obj: dict[str, Any] = json.loads(world.bundle.to_json())
    for key in data.draw(st.lists(st.sampled_from(sorted(obj)), min_size=1, max_size=3,
                                  unique=True)):
        value = obj[key]
        if isinstance(value, str) and key not in ("device", "checkpoint"):
            raw = data.draw(mutate(base64.b64decode(value)))
            new = data.draw(st.sampled_from([base64.b64encode(raw).decode(), as_text(raw)]))
        elif isinstance(value, str):
            new = as_text(data.draw(mutate(value.encode())))
        elif isinstance(value, list) and value and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(value) - 1))
            raw = data.draw(mutate(base64.b64decode(value[i])))
            new = [*value[:i], base64.b64encode(raw).decode(), *value[i + 1:]]
        elif isinstance(value, int) and data.draw(st.booleans()):
            new = value + data.draw(st.integers(-3, 3))
        else:
            new = data.draw(json_values)
        obj[key] = new
    text = json.dumps(obj)
    survive(lambda t: verify_bundle(ProofBundle.from_json(t), world.log.verifier()), text)
