"""Shared fixtures for the core format tests: keys, readings, a sealed block, a small
canonical log of a non-power-of-two size, its signed checkpoint and a proof bundle.

Everything is deterministic (fixed seeds, fixed times) so a failure reproduces.
Fixtures are session-scoped and immutable, so hypothesis tests may use them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest

from edgeledger.core import cbor, merkle
from edgeledger.core.block import Block, key_id, seal
from edgeledger.core.bundle import ProofBundle, build_bundle
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading

DEVICE = "greenhouse-7"
OTHER_DEVICE = "coldroom-2"
LOG_NAME = "edgeledger.example/agg-1"
T = 1_700_000_000_000


def fixed_signer(name: str, tag: int) -> Signer:
    """A signer whose seed is derived from `tag`, so keys are the same every run."""
    return Signer(name, hashlib.sha256(bytes([tag]) * 7).digest())


def sample_readings() -> list[Reading]:
    """Five readings (not a power of two) of every value type, from three sensors."""
    return [
        Reading("bme280-1/temperature", T + 10, 40, 21.5, "Cel"),
        Reading("bme280-1/humidity", T + 11, 41, 48, "%RH"),
        Reading("gps-1/fix", T + 5, 7, {"lat": 52.52, "lon": 13.405, "alt": 34.0}),
        Reading("door-3/open", T + 12, 1, True, a=b"\x01" * 64),
        Reading("meter-1/status", T + 30, 900, "ok"),
    ]


def sign_payload(signer: Signer, payload: bytes, kid: bytes | None = None,
                 protected: dict[Any, Any] | None = None) -> bytes:
    """A COSE_Sign1 over arbitrary payload bytes, built by hand from RFC 9052."""
    prot = cbor.encode(protected if protected is not None
                       else {1: -8, 4: kid if kid is not None else key_id(signer.public_key)})
    signature = signer.sign(cbor.encode(["Signature1", prot, b"", payload]))
    return cbor.encode(cbor2.CBORTag(18, [prot, {}, payload, signature]))


@dataclass(frozen=True)
class World:
    """A device, a log and everything needed to prove one reading."""

    device: Signer
    log: Signer
    readings: tuple[Reading, ...]
    reading_index: int
    block: Block
    log_leaves: tuple[bytes, ...]
    log_index: int
    checkpoint: Checkpoint
    note: str
    bundle: ProofBundle


def build_world() -> World:
    """Seal three blocks of DEVICE interleaved with blocks of another device into a log
    of 7 entries; the block under test (height 2, five readings) is entry 5."""
    device, other, log = fixed_signer(DEVICE, 1), fixed_signer(OTHER_DEVICE, 2), \
        fixed_signer(LOG_NAME, 3)
    readings = sample_readings()
    b0 = seal(device, DEVICE, 0, bytes(32), [], T - 100)
    b1 = seal(device, DEVICE, 1, b0.hash, readings[:1], T + 50)
    b2 = seal(device, DEVICE, 2, b1.hash, readings, T + 60)
    o0 = seal(other, OTHER_DEVICE, 0, bytes(32), [Reading("probe-1/temperature", T, 1, -18.25)],
              T + 1)
    o1 = seal(other, OTHER_DEVICE, 1, o0.hash, [], T + 2)
    o2 = seal(other, OTHER_DEVICE, 2, o1.hash, [], T + 3)
    o3 = seal(other, OTHER_DEVICE, 3, o2.hash, [], T + 4)
    leaves = (b0.cose, o0.cose, o1.cose, b1.cose, o2.cose, b2.cose, o3.cose)
    tree = merkle.MemoryHashes()
    for leaf in leaves:
        tree.append(merkle.leaf_hash(leaf))
    log_index = 5
    log_path = merkle.inclusion_proof(log_index, tree.size, tree.read_hashes)
    checkpoint = Checkpoint(LOG_NAME, tree.size, tree.root(), 4, b"\x33" * 32, T + 99)
    note = checkpoint.sign(log)
    reading_index = 3
    bundle = build_bundle([r.raw for r in readings], reading_index, b2, device.public_key,
                          log_index, log_path, note)
    return World(device, log, tuple(readings), reading_index, b2, leaves, log_index,
                 checkpoint, note, bundle)


@pytest.fixture(scope="session")
def world() -> World:
    """The shared, immutable world of the bundle, block and checkpoint tests."""
    return build_world()


@pytest.fixture(scope="session")
def cose_sign1() -> Callable[..., bytes]:
    """`sign_payload`: a hand-built COSE_Sign1 over any payload bytes."""
    return sign_payload


@pytest.fixture(scope="session")
def make_signer() -> Callable[[str, int], Signer]:
    """`fixed_signer`: a named signer with a seed derived from a small integer."""
    return fixed_signer
