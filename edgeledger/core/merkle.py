"""RFC 6962 / RFC 9162 Merkle trees over stored subtree hashes.

Theory of operation: every complete subtree (2**level leaves, aligned) has one
hash, written once when its last leaf is appended and never changed. Hashes
live at integer positions given by `stored_index`, the layout Go's sumdb/tlog
uses, so a store is just "hash at position i". Any range of leaves is a
left-to-right run of at most log2(n) complete subtrees, so a root or a proof
element needs O(log n) stored hashes. Each operation works out the positions it
needs (pure), asks `read_hashes` for them in one batch, checks what came back,
then folds. The code never sees a database: only the callable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from edgeledger.core.errors import EdgeLedgerError, VerificationError

ReadHashes = Callable[[Sequence[int]], Sequence[bytes]]
"""Return the stored hashes at the given positions, in the same order."""

HASH_SIZE = 32
MAX_PROOF_HASHES = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


# --- storage layout ------------------------------------------------------------------


def stored_index(level: int, n: int) -> int:
    """Position of the n-th complete subtree hash of height `level` in the store.

    Level L's n-th hash is written right after the leaf (n+1)*2**L - 1 that completes
    it, so with m = that leaf's index the position is sum(m >> i) + L, and
    sum(m >> i) = 2m - popcount(m): O(1) instead of a loop per bit.
    """
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def stored_count(size: int) -> int:
    """How many hashes a tree of `size` leaves has stored."""
    if size == 0:
        return 0
    count = stored_index(0, size - 1) + 1
    last = size - 1
    while last & 1:
        count += 1
        last >>= 1
    return count


# --- building ------------------------------------------------------------------------


def append_hashes(size: int, leaf: bytes, read_hashes: ReadHashes) -> list[bytes]:
    """Hashes to store, in order from position `stored_count(size)`, when `leaf` is
    appended to a tree of `size` leaves: the leaf hash, then one per subtree it completes."""
    if size < 0:
        raise EdgeLedgerError(f"append: tree size {size} is negative")
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise EdgeLedgerError(f"append to tree of size {size}: the leaf must be its 32-byte "
                              f"leaf hash, not {leaf!r:.40}")
    completed = _trailing_ones(size)
    siblings = _read(read_hashes, [stored_index(level, (size >> level) - 1)
                                   for level in range(completed)])
    new = [leaf]
    for sibling in siblings:
        new.append(node_hash(sibling, new[-1]))
    return new


def tree_root(size: int, read_hashes: ReadHashes) -> bytes:
    """Root hash of the first `size` leaves, from at most log2(size)+1 stored hashes."""
    if size < 0:
        raise EdgeLedgerError(f"tree root: size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _fold(_read(read_hashes, _subtree_positions(0, size)))


def inclusion_proof(index: int, size: int, read_hashes: ReadHashes) -> list[bytes]:
    """RFC 9162 audit path for leaf `index` in the tree of `size` leaves, bottom-up."""
    if not 0 <= index < size:
        raise EdgeLedgerError(f"inclusion proof: index {index} is outside a tree of size {size}")
    return _range_hashes(_inclusion_ranges(index, size), read_hashes)


def consistency_proof(old_size: int, new_size: int, read_hashes: ReadHashes) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of `old_size` leaves to `new_size`."""
    if not 0 <= old_size <= new_size:
        raise EdgeLedgerError(
            f"consistency proof: sizes {old_size} -> {new_size} do not grow")
    if old_size in (0, new_size):
        return []
    return _range_hashes(_consistency_ranges(old_size, new_size), read_hashes)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make up PATH(index, D[0:size]), bottom-up."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        split = lo + _largest_power_below(hi - lo)
        if index < split:
            ranges.append((split, hi))
            hi = split
        else:
            ranges.append((lo, split))
            lo = split
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make up RFC 9162 SUBPROOF(old, D[0:new], true)."""
    ranges = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        split = _largest_power_below(hi - lo)
        if m <= split:
            ranges.append((lo + split, hi))
            hi = lo + split
        else:
            ranges.append((lo, lo + split))
            lo, m, complete = lo + split, m - split, False
    if not complete:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _range_hashes(ranges: list[tuple[int, int]], read_hashes: ReadHashes) -> list[bytes]:
    """Root hash of each leaf range, reading all needed positions in one batch."""
    plans = [_subtree_positions(lo, hi) for lo, hi in ranges]
    flat = _read(read_hashes, [p for plan in plans for p in plan])
    out, at = [], 0
    for plan in plans:
        out.append(_fold(flat[at:at + len(plan)]))
        at += len(plan)
    return out


def _subtree_positions(lo: int, hi: int) -> list[int]:
    """Stored positions of the complete subtrees that tile leaves [lo, hi), left to right."""
    positions = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        positions.append(stored_index(level, lo >> level))
        lo += 1 << level
    return positions


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine subtree roots, left to right, into the root of their whole range."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _read(read_hashes: ReadHashes, positions: list[int]) -> list[bytes]:
    """Call `read_hashes` once and check that it returned one 32-byte hash per position."""
    if not positions:
        return []
    hashes = list(read_hashes(positions))
    if len(hashes) != len(positions):
        raise EdgeLedgerError(
            f"hash store returned {len(hashes)} hashes for {len(positions)} positions "
            f"(first asked: {positions[0]}); the store is incomplete or corrupt")
    for position, h in zip(positions, hashes, strict=True):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise EdgeLedgerError(f"hash store returned {type(h).__name__} {h!r:.40} at "
                                  f"position {position}, not a 32-byte hash; the store is "
                                  f"incomplete or corrupt")
    return hashes


def _largest_power_below(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _trailing_ones(n: int) -> int:
    return ((n ^ (n + 1)).bit_length()) - 1


# --- whole trees held in memory (a block's readings) -----------------------------------


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """Root of a small tree given all its leaf hashes, without a store."""
    if not leaves:
        return EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []
    for leaf in leaves:
        level, h = 0, leaf
        while stack and stack[-1][0] == level:
            h = node_hash(stack.pop()[1], h)
            level += 1
        stack.append((level, h))
    result = stack.pop()[1]
    while stack:
        result = node_hash(stack.pop()[1], result)
    return result


class MemoryHashes:
    """A hash store in a Python list: for small trees, tests and the demo."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.size = 0

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Return the hashes at `positions`; raises IndexError past the end."""
        return [self.hashes[p] for p in positions]

    def append(self, leaf: bytes) -> int:
        """Append a leaf hash; return its index."""
        self.hashes.extend(append_hashes(self.size, leaf, self.read_hashes))
        self.size += 1
        return self.size - 1

    def root(self, size: int | None = None) -> bytes:
        """Root of the first `size` leaves (all by default)."""
        return tree_root(self.size if size is None else size, self.read_hashes)


# --- verification ----------------------------------------------------------------------


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes, check: str = "inclusion") -> None:
    """Check an RFC 9162 (2.1.3.2) audit path; raise VerificationError naming `check`."""
    _check_path(path, check)
    _check_hash(leaf, "leaf hash", check)
    _check_hash(root, "root", check)
    if not 0 <= index < size:
        raise VerificationError(check, f"index {index} is outside a tree of size {size}")
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise VerificationError(check, f"path has {len(path)} hashes, too many for "
                                           f"index {index} in size {size}")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(check, f"path has {len(path)} hashes, too few for "
                                       f"index {index} in size {size}")
    if result != root:
        raise VerificationError(check, f"leaf {index} does not lead to the root of the tree "
                                       f"of size {size} (computed {result.hex()[:16]}..., "
                                       f"expected {root.hex()[:16]}...)")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       path: Sequence[bytes], check: str = "consistency") -> None:
    """Check an RFC 9162 (2.1.4.2) consistency proof; raise VerificationError naming `check`."""
    _check_path(path, check)
    _check_hash(old_root, "old root", check)
    _check_hash(new_root, "new root", check)
    if not 0 <= old_size <= new_size:
        raise VerificationError(check, f"tree shrank from size {old_size} to {new_size}")
    if old_size == 0 and old_root != EMPTY_ROOT:
        # The empty tree is a prefix of every tree, but it has only one root.
        raise VerificationError(check, "old root is not the root of the empty tree")
    if old_size in (0, new_size):
        if path:
            raise VerificationError(check,
                                    f"proof from size {old_size} to {new_size} must be empty")
        if old_size == new_size and old_root != new_root:
            raise VerificationError(check, f"two different roots for size {new_size}")
        return
    if not path:
        raise VerificationError(check, f"empty proof from size {old_size} to {new_size}")
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(check, f"proof from size {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(check, f"proof from size {old_size} to {new_size} is too short")
    if fr != old_root or sr != new_root:
        raise VerificationError(check, f"tree of size {new_size} does not extend the tree of "
                                       f"size {old_size}")


def _check_hash(value: bytes, what: str, check: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise VerificationError(check, f"{what} is not 32 bytes")


def _check_path(path: Sequence[bytes], check: str) -> None:
    if len(path) > MAX_PROOF_HASHES:
        raise VerificationError(check,
                                f"proof has {len(path)} hashes, more than {MAX_PROOF_HASHES}")
    for i, h in enumerate(path):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise VerificationError(check, f"proof hash {i} is not 32 bytes")
