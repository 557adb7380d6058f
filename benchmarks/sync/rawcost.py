"""The raw cost of the work ingest cannot avoid for one block, timed in this process.

One block of 10 readings needs: one Ed25519 verification (PyNaCl, over the COSE
Sig_structure), SHA-256 of each reading as a Merkle leaf (10), the inner nodes of a
10-leaf RFC 6962 tree (9), the block hash (SHA-256 of the payload, which the next
block's prev must match: 1), and the log's append: the leaf hash of the block's
COSE bytes plus on average one inner node (2). Each is timed as the bare primitive
(hashlib, nacl) on the real bytes of a block the load generators send, so the ratio
of the aggregator's CPU time per block to this sum says what everything else costs:
MQTT, CBOR decoding and validation, SQLite, acks, Python.
"""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.signing

from benchmarks.harness import time_calls
from benchmarks.sync.fleet import BlockTimes, build_chain, device_signer
from edgeledger.core import cbor
from edgeledger.core.block import parse_sync_message

INNER_NODES = 9  # a 10-leaf tree
LOG_HASHES = 2  # leaf + one inner node per append, on average


def measure(repeats: int, min_time: float) -> dict[str, Any]:
    """Time each part and the whole; seconds per block."""
    block, readings = parse_sync_message(build_chain(0, 1, BlockTimes.now(1))[0])
    message = b"".join((b"\x84\x6aSignature1", cbor.encode_bytes(block.protected), b"\x40",
                        cbor.encode_bytes(block.payload)))  # RFC 9052 Sig_structure
    signature, payload, cose = block.signature, block.payload, block.cose
    key, sha = nacl.signing.VerifyKey(device_signer(0).public_key), hashlib.sha256
    key.verify(message, signature)  # the sample is valid
    a, b = sha(b"a").digest(), sha(b"b").digest()

    def verify() -> None:
        key.verify(message, signature)

    def leaves() -> None:
        for r in readings:
            sha(b"\x00" + r).digest()

    def inner() -> None:
        for _ in range(INNER_NODES):
            sha(b"\x01" + a + b).digest()

    def block_hash() -> None:
        sha(payload).digest()

    def log_append() -> None:
        sha(b"\x00" + cose).digest()
        sha(b"\x01" + a + b).digest()

    def whole() -> None:
        verify()
        leaves()
        inner()
        block_hash()
        log_append()

    parts = {"ed25519_verify": verify, "sha256_reading_leaves": leaves,
             "sha256_inner_nodes": inner, "sha256_block_hash": block_hash,
             "sha256_log_append": log_append}
    out: dict[str, Any] = {name: time_calls(fn, repeats, min_time).as_json()
                           for name, fn in parts.items()}
    out["total"] = time_calls(whole, repeats, min_time).as_json()
    out["hashes_per_block"] = len(readings) + INNER_NODES + 1 + LOG_HASHES
    out["readings"] = len(readings)
    out["block_bytes"] = len(cose)
    return out
