"""Inputs for the core benchmarks: realistic readings and large Merkle trees."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from edgeledger.core import merkle

T0 = 1_764_000_000_000  # Unix ms, late 2025
SEED = bytes(range(32))

# What a greenhouse gateway sees: a BME280 (three metrics) and a GPS fix, in turn.
_SENSORS: tuple[tuple[str, str | None], ...] = (
    ("bme280-1/temperature", "Cel"),
    ("bme280-1/humidity", "%RH"),
    ("bme280-1/pressure", "Pa"),
    ("gps-1/fix", None),
)


def reading_fields(count: int) -> list[tuple[str, int, int, Any, str | None]]:
    """`count` readings as (n, t, q, v, u), the arguments a source hands to Reading."""
    out = []
    for i in range(count):
        name, unit = _SENSORS[i % len(_SENSORS)]
        t = T0 + 250 * i
        q = 1_000 + i  # per sensor id (before the slash), strictly increasing
        value: Any
        if unit == "Cel":
            value = 21.5 + (i % 17) / 10
        elif unit == "%RH":
            value = 48.25 + (i % 13) / 4
        elif unit == "Pa":
            value = 101_325 + i % 50
        else:
            value = {"lat": 52.0907 + i * 1e-6, "lon": 5.1214 - i * 1e-6, "alt": 12.5}
        out.append((name, t, q, value, unit))
    return out


def reading_maps(fields: Sequence[tuple[str, int, int, Any, str | None]]) -> list[dict[str, Any]]:
    """The same readings as the CBOR maps of DESIGN.md 2.1."""
    maps = []
    for n, t, q, v, u in fields:
        m: dict[str, Any] = {"n": n, "t": t, "q": q, "v": v}
        if u is not None:
            m["u"] = u
        maps.append(m)
    return maps


def leaf_hashes(count: int) -> list[bytes]:
    """`count` distinct RFC 6962 leaf hashes (of the leaves' 8-byte indexes)."""
    sha = hashlib.sha256
    return [sha(b"\x00" + i.to_bytes(8, "big")).digest() for i in range(count)]


def stored_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    """The stored hashes MemoryHashes.append would build for `leaves`, in one pass.

    The fast path for big trees: the same layout (each leaf hash, then the hash of
    every complete subtree it closes, lowest first) without the per-append reads
    and checks. `check_stored` confirms it matches the real code.
    """
    sha = hashlib.sha256
    store: list[bytes] = []
    stack: list[bytes] = []  # roots of the complete subtrees so far, left to right
    for i, leaf in enumerate(leaves):
        store.append(leaf)
        h, closes = leaf, i
        while closes & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            store.append(h)
            closes >>= 1
        stack.append(h)
    return store


def check_stored(store: Sequence[bytes], leaves: Sequence[bytes], prefix: int = 4096) -> None:
    """Raise AssertionError unless `store` is what edgeledger.core.merkle would store.

    Compares the first `prefix` leaves' layout with MemoryHashes.append, the count
    with stored_count, and the root with root_from_leaf_hashes over all leaves.
    """
    mem = merkle.MemoryHashes()
    for leaf in leaves[:prefix]:
        mem.append(leaf)
    if store[:len(mem.hashes)] != mem.hashes:
        raise AssertionError("fast-path store differs from MemoryHashes.append")
    if len(store) != merkle.stored_count(len(leaves)):
        raise AssertionError(f"fast-path store has {len(store)} hashes, "
                             f"stored_count says {merkle.stored_count(len(leaves))}")
    root = merkle.tree_root(len(leaves), lambda ps: [store[p] for p in ps])
    if root != merkle.root_from_leaf_hashes(leaves):
        raise AssertionError("fast-path store's root differs from root_from_leaf_hashes")


def memory_hashes(leaves: Sequence[bytes]) -> merkle.MemoryHashes:
    """A MemoryHashes holding `leaves`, built by the fast path."""
    mem = merkle.MemoryHashes()
    mem.hashes = stored_hashes(leaves)
    mem.size = len(leaves)
    return mem
