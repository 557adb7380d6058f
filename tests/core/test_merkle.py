"""Properties of edgeledger.core.merkle against a literal transcription of RFC 6962 2.1.

The reference below (MTH, PATH, PROOF/SUBPROOF) works on whole leaf lists and
recomputes everything; the module under test works on stored subtree hashes
through a `read_hashes` callable. They must agree everywhere, the store must be
read in O(log n) positions, and the verifiers must fail closed: any input either
verifies or raises VerificationError, nothing else.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgeledger.core.errors import EdgeLedgerError, VerificationError
from edgeledger.core.merkle import (
    EMPTY_ROOT,
    MAX_PROOF_HASHES,
    MemoryHashes,
    append_hashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    stored_count,
    stored_index,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# --- RFC 6962 section 2.1, transcribed -------------------------------------------------------


def SHA256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def MTH(D: Sequence[bytes]) -> bytes:
    n = len(D)
    if n == 0:
        return SHA256(b"")
    if n == 1:
        return SHA256(b"\x00" + D[0])
    k = _k(n)
    return SHA256(b"\x01" + MTH(D[0:k]) + MTH(D[k:n]))


def PATH(m: int, D: Sequence[bytes]) -> list[bytes]:
    n = len(D)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*PATH(m, D[0:k]), MTH(D[k:n])]
    return [*PATH(m - k, D[k:n]), MTH(D[0:k])]


def PROOF(m: int, D: Sequence[bytes]) -> list[bytes]:
    return SUBPROOF(m, D, True)


def SUBPROOF(m: int, D: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(D)
    if m == n:
        return [] if b else [MTH(D)]
    k = _k(n)
    if m <= k:
        return [*SUBPROOF(m, D[0:k], b), MTH(D[k:n])]
    return [*SUBPROOF(m - k, D[k:n], False), MTH(D[0:k])]


# --- a shared tree of distinct leaves ---------------------------------------------------------

N_LEAVES = 300
LEAVES = [f"leaf {i}".encode() for i in range(N_LEAVES)]


def _build(leaves: Sequence[bytes]) -> MemoryHashes:
    tree = MemoryHashes()
    for data in leaves:
        tree.append(leaf_hash(data))
    return tree


TREE = _build(LEAVES)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, N_LEAVES))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, N_LEAVES))
    return draw(st.integers(1, new)), new


def test_reference_is_rfc6962() -> None:
    # The reference itself against transparency-dev/merkle testonly/constants.go
    # (RootHashes[3] and [8]) so that agreeing with it means something.
    leaves = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243",
                                         "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]
    assert MTH(leaves[:3]).hex().startswith("aeb6bcfe274b70a1")
    assert MTH(leaves).hex().startswith("5dc9da79a70659a9")
    assert MTH([]) == EMPTY_ROOT


# --- agreement with the reference --------------------------------------------------------------


@FAST
@given(st.lists(st.binary(max_size=8), max_size=N_LEAVES))
def test_tree_root_is_mth(leaves: list[bytes]) -> None:
    tree = _build(leaves)
    assert tree_root(len(leaves), tree.read_hashes) == MTH(leaves)
    assert root_from_leaf_hashes([leaf_hash(d) for d in leaves]) == MTH(leaves)


@FAST
@given(st.integers(0, N_LEAVES))
def test_every_past_root_is_mth_of_that_prefix(size: int) -> None:
    assert tree_root(size, TREE.read_hashes) == MTH(LEAVES[:size])
    assert TREE.root(size) == MTH(LEAVES[:size])


@FAST
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=N_LEAVES))
def test_root_from_leaf_hashes_is_tree_root(hashes: list[bytes]) -> None:
    tree = MemoryHashes()
    for hash_ in hashes:
        tree.append(hash_)
    assert root_from_leaf_hashes(hashes) == tree_root(len(hashes), tree.read_hashes)


@FAST
@given(index_and_size())
def test_inclusion_proof_is_path_and_verifies(case: tuple[int, int]) -> None:
    index, size = case
    proof = inclusion_proof(index, size, TREE.read_hashes)
    assert proof == PATH(index, LEAVES[:size])
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, MTH(LEAVES[:size]))


@FAST
@given(two_sizes())
def test_consistency_proof_is_proof_and_verifies(case: tuple[int, int]) -> None:
    old, new = case
    proof = consistency_proof(old, new, TREE.read_hashes)
    assert proof == PROOF(old, LEAVES[:new])
    verify_consistency(old, new, MTH(LEAVES[:old]), MTH(LEAVES[:new]), proof)


def test_small_trees_exhaustively() -> None:
    # Every (index, size) and (old, new) up to 33 leaves: all the edge shapes.
    for new in range(1, 34):
        root = MTH(LEAVES[:new])
        for i in range(new):
            assert inclusion_proof(i, new, TREE.read_hashes) == PATH(i, LEAVES[:new])
        for old in range(1, new + 1):
            proof = consistency_proof(old, new, TREE.read_hashes)
            assert proof == PROOF(old, LEAVES[:new])
            verify_consistency(old, new, MTH(LEAVES[:old]), root, proof)
    assert consistency_proof(0, 5, TREE.read_hashes) == []


# --- every single mutation of a valid proof fails ---------------------------------------------

MUTATIONS = ["flip", "drop", "insert", "duplicate", "replace", "swap", "truncate-hash",
             "extend-hash"]


def _mutate(path: list[bytes], kind: str, at: int, bit: int, junk: bytes) -> list[bytes]:
    """One mutation of a hash list; the caller assumes the result differs."""
    path = list(path)
    i = at % len(path) if path else 0
    if kind == "flip" and path:
        path[i] = path[i][:bit // 8] + bytes([path[i][bit // 8] ^ (1 << bit % 8)]) \
            + path[i][bit // 8 + 1:]
    elif kind == "drop" and path:
        del path[i]
    elif kind == "insert":
        path.insert(at % (len(path) + 1), junk)
    elif kind == "duplicate" and path:
        path.insert(i, path[i])
    elif kind == "replace" and path:
        path[i] = junk
    elif kind == "swap" and len(path) > 1:
        j = (i + 1) % len(path)
        path[i], path[j] = path[j], path[i]
    elif kind == "truncate-hash" and path:
        path[i] = path[i][:-1]
    elif kind == "extend-hash" and path:
        path[i] = path[i] + b"\x00"
    return path


mutation = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 100), st.integers(0, 255),
                     st.binary(min_size=32, max_size=32))


@FAST
@given(index_and_size(), mutation)
def test_any_mutated_inclusion_proof_fails(case: tuple[int, int],
                                           m: tuple[str, int, int, bytes]) -> None:
    index, size = case
    proof = inclusion_proof(index, size, TREE.read_hashes)
    bad = _mutate(proof, *m)
    assume(bad != proof)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(LEAVES[index]), index, size, bad, MTH(LEAVES[:size]))


@FAST
@given(two_sizes(), mutation)
def test_any_mutated_consistency_proof_fails(case: tuple[int, int],
                                             m: tuple[str, int, int, bytes]) -> None:
    old, new = case
    proof = consistency_proof(old, new, TREE.read_hashes)
    bad = _mutate(proof, *m)
    assume(bad != proof)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, MTH(LEAVES[:old]), MTH(LEAVES[:new]), bad)


@FAST
@given(index_and_size(), st.integers(-2, N_LEAVES + 2))
def test_inclusion_proof_binds_the_index(case: tuple[int, int], other: int) -> None:
    index, size = case
    assume(other != index)
    proof = inclusion_proof(index, size, TREE.read_hashes)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(LEAVES[index]), other, size, proof, MTH(LEAVES[:size]))


@FAST
@given(index_and_size(), st.integers(0, N_LEAVES - 1))
def test_inclusion_proof_binds_the_leaf(case: tuple[int, int], other: int) -> None:
    index, size = case
    assume(other != index)
    proof = inclusion_proof(index, size, TREE.read_hashes)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(LEAVES[other]), index, size, proof, MTH(LEAVES[:size]))


@FAST
@given(two_sizes(), st.integers(1, N_LEAVES))
def test_consistency_proof_binds_both_roots(case: tuple[int, int], other: int) -> None:
    old, new = case
    assume(old < new)
    proof = consistency_proof(old, new, TREE.read_hashes)
    if other != old:
        with pytest.raises(VerificationError):
            verify_consistency(old, new, MTH(LEAVES[:other]), MTH(LEAVES[:new]), proof)
    if other != new:
        with pytest.raises(VerificationError):
            verify_consistency(old, new, MTH(LEAVES[:old]), MTH(LEAVES[:other]), proof)


@FAST
@given(index_and_size(), st.binary(min_size=32, max_size=32), st.booleans())
def test_extra_hash_with_a_matching_root_fails(case: tuple[int, int], extra: bytes,
                                               left: bool) -> None:
    # A path one hash too long, with the root re-folded over the extra hash, must
    # still fail: the size fixes the path length (RFC 9162 "if sn is 0, fail").
    index, size = case
    proof = inclusion_proof(index, size, TREE.read_hashes)
    root = MTH(LEAVES[:size])
    forged = node_hash(extra, root) if left else node_hash(root, extra)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(LEAVES[index]), index, size, [*proof, extra], forged)


@FAST
@given(two_sizes(), st.binary(min_size=32, max_size=32))
def test_extra_consistency_hash_with_a_matching_root_fails(case: tuple[int, int],
                                                           extra: bytes) -> None:
    old, new = case
    assume(old < new)
    proof = consistency_proof(old, new, TREE.read_hashes)
    # Past the top of the tree the extra hash would fold into both roots alike.
    old_forged = node_hash(extra, MTH(LEAVES[:old]))
    new_forged = node_hash(extra, MTH(LEAVES[:new]))
    with pytest.raises(VerificationError):
        verify_consistency(old, new, MTH(LEAVES[:old]), new_forged, [*proof, extra])
    with pytest.raises(VerificationError):
        verify_consistency(old, new, old_forged, new_forged, [*proof, extra])


def _fold_leftmost(leaf: bytes, path: list[bytes]) -> bytes:
    """Root over leaf 0 whose audit path has only right siblings."""
    for sibling in path:
        leaf = node_hash(leaf, sibling)
    return leaf


def test_path_length_limit_is_64_even_for_a_proof_that_folds() -> None:
    leaf, sibling = leaf_hash(b"a"), leaf_hash(b"b")
    at_limit = [sibling] * MAX_PROOF_HASHES
    verify_inclusion(leaf, 0, 2**64, at_limit, _fold_leftmost(leaf, at_limit))
    over = [sibling] * (MAX_PROOF_HASHES + 1)
    with pytest.raises(VerificationError, match="more than 64"):
        verify_inclusion(leaf, 0, 2**65, over, _fold_leftmost(leaf, over))
    with pytest.raises(VerificationError, match="more than 64"):
        verify_consistency(2**65, 2**66, leaf, leaf, over)


# --- the store layout: appends ----------------------------------------------------------------


class CountingStore:
    """A list-backed store that records every batch of positions it is asked for."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.batches: list[list[int]] = []

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        self.batches.append(list(positions))
        return [self.hashes[p] for p in positions]


def test_appends_land_contiguously_where_stored_index_says() -> None:
    store = CountingStore()
    leaves = [leaf_hash(d) for d in LEAVES[:260]]
    for n, leaf in enumerate(leaves):
        assert len(store.hashes) == stored_count(n)
        store.batches.clear()
        new = append_hashes(n, leaf, store.read_hashes)
        assert len(new) == stored_count(n + 1) - stored_count(n)
        assert len(store.batches) <= 1
        read = [p for batch in store.batches for p in batch]
        assert all(p < stored_count(n) for p in read)
        assert len(read) <= max(1, math.log2(n + 1))
        store.hashes.extend(new)
        for level, hash_ in enumerate(new):  # the subtrees this leaf completed, bottom-up
            first = (((n + 1) >> level) - 1) << level
            assert stored_index(level, ((n + 1) >> level) - 1) == stored_count(n) + level
            assert hash_ == MTH(LEAVES[first:n + 1])


@FAST
@given(st.integers(0, 10**9))
def test_stored_count_grows_by_one_per_completed_subtree(n: int) -> None:
    trailing_ones = (n ^ (n + 1)).bit_length() - 1
    assert stored_count(n + 1) - stored_count(n) == 1 + trailing_ones
    assert stored_index(0, n) == stored_count(n)


def test_stored_index_is_a_bijection_onto_the_store() -> None:
    size = 1000
    positions = [stored_index(level, k) for level in range(11)
                 for k in range(size >> level)]
    assert sorted(positions) == list(range(stored_count(size)))


# --- a faulty store raises EdgeLedgerError, never IndexError or TypeError ---------------------

FAULTS: dict[str, Callable[[list[bytes]], list[object]]] = {
    "too-few": lambda hs: hs[:-1],
    "none-at-all": lambda hs: [],
    "too-many": lambda hs: [*hs, hs[0]],
    "short-hash": lambda hs: [hs[0][:31], *hs[1:]],
    "long-hash": lambda hs: [*hs[:-1], hs[-1] + b"\x00"],
    "empty-hash": lambda hs: [b"", *hs[1:]],
    "missing-row-none": lambda hs: [None, *hs[1:]],
    "text-not-bytes": lambda hs: ["x" * 32, *hs[1:]],
    "int-not-bytes": lambda hs: [32, *hs[1:]],
}

OPERATIONS: dict[str, Callable[[Callable[[Sequence[int]], Sequence[bytes]]], object]] = {
    "tree_root": lambda read: tree_root(200, read),
    "inclusion_proof": lambda read: inclusion_proof(77, 200, read),
    "consistency_proof": lambda read: consistency_proof(77, 200, read),
    "append_hashes": lambda read: append_hashes(255, leaf_hash(b"x"), read),
}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("fault", FAULTS)
def test_faulty_store_raises_edgeledger_error(operation: str, fault: str) -> None:
    def faulty(positions: Sequence[int]) -> list[object]:
        return FAULTS[fault](TREE.read_hashes(positions))

    OPERATIONS[operation](TREE.read_hashes)  # the same call works on a sound store
    with pytest.raises(EdgeLedgerError):
        OPERATIONS[operation](faulty)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [
    pytest.param(lambda: tree_root(-1, TREE.read_hashes), id="tree_root-negative"),
    pytest.param(lambda: append_hashes(-1, EMPTY_ROOT, TREE.read_hashes),
                 id="append-negative-size"),
    pytest.param(lambda: append_hashes(4, b"raw leaf, not a hash", TREE.read_hashes),
                 id="append-leaf-not-a-hash"),
    pytest.param(lambda: inclusion_proof(5, 5, TREE.read_hashes), id="inclusion-index-eq-size"),
    pytest.param(lambda: inclusion_proof(-1, 5, TREE.read_hashes), id="inclusion-negative"),
    pytest.param(lambda: consistency_proof(6, 5, TREE.read_hashes), id="consistency-shrinks"),
    pytest.param(lambda: consistency_proof(-1, 5, TREE.read_hashes), id="consistency-negative"),
])
def test_bad_arguments_raise_edgeledger_error(call: Callable[[], object]) -> None:
    with pytest.raises(EdgeLedgerError):
        call()


# --- O(log n) reads ---------------------------------------------------------------------------

BIG = 10**6


class DummyStore:
    """Deterministic dummy hashes for any position; counts what is read."""

    def __init__(self) -> None:
        self.reads = 0
        self.calls = 0
        self.max_position = -1

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        self.calls += 1
        self.reads += len(positions)
        self.max_position = max(self.max_position, *positions)
        return [hashlib.sha256(p.to_bytes(8, "big")).digest() for p in positions]


def _bound(n: int) -> float:
    return 2 * math.log2(n) + 2


@pytest.mark.parametrize("size", [BIG, BIG - 1, 2**20 - 1, 2**20, 2**20 + 1, 3, 2])
def test_tree_root_reads_log_n_positions_in_one_batch(size: int) -> None:
    store = DummyStore()
    tree_root(size, store.read_hashes)
    assert store.calls == 1
    assert store.reads <= math.log2(size) + 1
    assert store.max_position < stored_count(size)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, BIG), st.integers(0, BIG - 1))
def test_inclusion_proof_reads_log_n_positions(size: int, index: int) -> None:
    index %= size
    store = DummyStore()
    proof = inclusion_proof(index, size, store.read_hashes)
    assert store.calls <= 1
    assert store.reads <= _bound(size)
    assert store.max_position < stored_count(size)
    assert len(proof) <= math.ceil(math.log2(size))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, BIG), st.integers(1, BIG))
def test_consistency_proof_reads_log_n_positions(new: int, old: int) -> None:
    old = (old - 1) % new + 1
    store = DummyStore()
    consistency_proof(old, new, store.read_hashes)
    assert store.calls <= 1
    assert store.reads <= _bound(new)
    assert store.max_position < stored_count(new)


@pytest.mark.parametrize("size", [BIG, 2**20 - 1, 2**20, 2**19 + 2**18 - 1])
def test_worst_cases_at_a_million(size: int) -> None:
    worst_inclusion = worst_consistency = 0
    for i in [0, 1, size // 2, size // 2 + 1, size - 2, size - 1, 2**19 - 1, 2**19]:
        if i < size:
            store = DummyStore()
            inclusion_proof(i, size, store.read_hashes)
            worst_inclusion = max(worst_inclusion, store.reads)
        if 0 < i < size:
            store = DummyStore()
            consistency_proof(i, size, store.read_hashes)
            worst_consistency = max(worst_consistency, store.reads)
    assert 0 < worst_inclusion <= _bound(size)
    assert 0 < worst_consistency <= _bound(size)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, BIG))
def test_append_reads_at_most_log_n_hashes(n: int) -> None:
    store = DummyStore()
    new = append_hashes(n, bytes(32), store.read_hashes)
    assert store.calls <= 1
    assert store.reads == len(new) - 1
    assert store.reads <= math.log2(n + 1)  # log2 of the size after the append
    assert store.max_position < stored_count(n)


# --- verifiers fail closed ----------------------------------------------------------------------

GOOD_INDEX, GOOD_SIZE = 77, 200
GOOD_LEAF = leaf_hash(LEAVES[GOOD_INDEX])
GOOD_ROOT = MTH(LEAVES[:GOOD_SIZE])
GOOD_PATH = PATH(GOOD_INDEX, LEAVES[:GOOD_SIZE])
OLD_SIZE = 77
OLD_ROOT = MTH(LEAVES[:OLD_SIZE])
GOOD_CONSISTENCY = PROOF(OLD_SIZE, LEAVES[:GOOD_SIZE])


def test_good_fixtures_verify() -> None:
    verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PATH, GOOD_ROOT)
    verify_consistency(OLD_SIZE, GOOD_SIZE, OLD_ROOT, GOOD_ROOT, GOOD_CONSISTENCY)


NOT_HASHES = {"empty": b"", "31-bytes": b"\x00" * 31, "33-bytes": b"\x00" * 33, "none": None,
              "text": "a" * 32, "int": 32, "bytearray": bytearray(32)}


@pytest.mark.parametrize("call", [
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, GOOD_SIZE, GOOD_SIZE, GOOD_PATH,
                                          GOOD_ROOT), id="index-eq-size"),
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, GOOD_SIZE + 5, GOOD_SIZE, GOOD_PATH,
                                          GOOD_ROOT), id="index-gt-size"),
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, -1, GOOD_SIZE, GOOD_PATH, GOOD_ROOT),
                 id="negative-index"),
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, 0, -1, [], GOOD_ROOT),
                 id="negative-size"),
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, 0, 0, [], EMPTY_ROOT), id="size-zero"),
    pytest.param(lambda: verify_inclusion(GOOD_LEAF, GOOD_INDEX, 2**70, [GOOD_ROOT] * 65,
                                          GOOD_ROOT), id="path-of-65"),
    pytest.param(lambda: verify_consistency(-1, GOOD_SIZE, OLD_ROOT, GOOD_ROOT,
                                            GOOD_CONSISTENCY), id="consistency-negative-old"),
    pytest.param(lambda: verify_consistency(-2, -1, OLD_ROOT, GOOD_ROOT, []),
                 id="consistency-negative-both"),
    pytest.param(lambda: verify_consistency(GOOD_SIZE, OLD_SIZE, GOOD_ROOT, OLD_ROOT,
                                            GOOD_CONSISTENCY), id="consistency-shrinks"),
    pytest.param(lambda: verify_consistency(OLD_SIZE, 2**70, OLD_ROOT, GOOD_ROOT,
                                            [GOOD_ROOT] * 65), id="consistency-path-of-65"),
    *[pytest.param(lambda bad=bad: verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE,
                                                    [*GOOD_PATH[:-1], bad], GOOD_ROOT),
                   id=f"path-hash-{name}") for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_inclusion(bad, GOOD_INDEX, GOOD_SIZE, GOOD_PATH,
                                                    GOOD_ROOT), id=f"leaf-{name}")
      for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE,
                                                    GOOD_PATH, bad), id=f"root-{name}")
      for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_inclusion(bad, 0, 1, [], bad),
                   id=f"single-leaf-equal-to-root-{name}") for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_consistency(OLD_SIZE, GOOD_SIZE, OLD_ROOT, GOOD_ROOT,
                                                      [bad, *GOOD_CONSISTENCY[1:]]),
                   id=f"consistency-path-hash-{name}") for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_consistency(64, GOOD_SIZE, bad, GOOD_ROOT,
                                                      PROOF(64, LEAVES[:GOOD_SIZE])),
                   id=f"consistency-old-root-{name}") for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_consistency(OLD_SIZE, GOOD_SIZE, OLD_ROOT, bad,
                                                      GOOD_CONSISTENCY),
                   id=f"consistency-new-root-{name}") for name, bad in NOT_HASHES.items()],
    *[pytest.param(lambda bad=bad: verify_consistency(5, 5, bad, bad, []),
                   id=f"consistency-equal-sizes-{name}") for name, bad in NOT_HASHES.items()],
])
def test_verifiers_reject_malformed_input_with_verification_error(
        call: Callable[[], None]) -> None:
    with pytest.raises(VerificationError):
        call()


hash_like = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40),
                      st.sampled_from([GOOD_LEAF, GOOD_ROOT, OLD_ROOT, EMPTY_ROOT]))
sizes = st.one_of(st.integers(-3, 300), st.integers(-(2**70), 2**70))


@settings(max_examples=300, deadline=None)
@given(hash_like, sizes, sizes, st.lists(hash_like, max_size=MAX_PROOF_HASHES + 3), hash_like)
def test_verify_inclusion_fails_closed(leaf: bytes, index: int, size: int,
                                       path: list[bytes], root: bytes) -> None:
    try:
        verify_inclusion(leaf, index, size, path, root)
    except VerificationError:
        return
    # Random data can only pass the trivial case: a one-leaf tree is its leaf hash.
    assert (index, size, path) == (0, 1, [])
    assert leaf == root and len(root) == 32


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, hash_like, hash_like, st.lists(hash_like, max_size=MAX_PROOF_HASHES + 3))
def test_verify_consistency_fails_closed(old: int, new: int, old_root: bytes,
                                         new_root: bytes, path: list[bytes]) -> None:
    try:
        verify_consistency(old, new, old_root, new_root, path)
    except VerificationError:
        return
    # Random data can only pass the trivial cases.
    assert path == []
    assert (old == new and old_root == new_root) or (old == 0 and old_root == EMPTY_ROOT)
    assert 0 <= old <= new
    assert len(old_root) == len(new_root) == 32
