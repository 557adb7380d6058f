"""The canonical log: an RFC 6962 Merkle log of accepted blocks and its checkpoint chain.

The log never rebuilds a tree: every append stores the new subtree hashes, and
roots and proofs read O(log n) of them through the store's `read_hashes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer


class LogStore(Protocol):
    """Where the log keeps entries, stored hashes and checkpoints."""

    def size(self) -> int:
        """Number of entries."""

    def read_hashes(self, positions: Sequence[int]) -> Sequence[bytes]:
        """Stored hashes at `positions` (see merkle.stored_index)."""

    def append(self, entry: bytes, hashes: Sequence[bytes]) -> int:
        """Add one entry and its new stored hashes atomically; return its index."""

    def entry(self, index: int) -> bytes:
        """The entry at `index`."""

    def last_checkpoint(self) -> str | None:
        """The latest signed checkpoint note, if any."""

    def add_checkpoint(self, note: str) -> None:
        """Record a newly signed checkpoint note."""


class MemoryLogStore:
    """A LogStore in memory: for the one-process demo and tests."""

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._entries: list[bytes] = []
        self._checkpoints: list[str] = []

    def size(self) -> int:
        """Number of entries."""
        return len(self._entries)

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored hashes at `positions`."""
        return [self._hashes[p] for p in positions]

    def append(self, entry: bytes, hashes: Sequence[bytes]) -> int:
        """Add one entry and its new stored hashes."""
        self._hashes.extend(hashes)
        self._entries.append(entry)
        return len(self._entries) - 1

    def entry(self, index: int) -> bytes:
        """The entry at `index`."""
        return self._entries[index]

    def last_checkpoint(self) -> str | None:
        """The latest checkpoint note, if any."""
        return self._checkpoints[-1] if self._checkpoints else None

    def add_checkpoint(self, note: str) -> None:
        """Record a checkpoint note."""
        self._checkpoints.append(note)


class CanonicalLog:
    """Appends entries and signs the chain of checkpoints over them."""

    def __init__(self, store: LogStore, signer: Signer) -> None:
        self.store = store
        self.signer = signer
        note = store.last_checkpoint()
        self.checkpoint: Checkpoint | None = None
        self.checkpoint_note: str | None = note
        if note is not None:
            self.checkpoint = Checkpoint.parse(note[:note.rfind("\n\n") + 1])

    @property
    def size(self) -> int:
        """Number of entries in the log."""
        return self.store.size()

    def append(self, entry: bytes) -> int:
        """Append one entry; return its index."""
        size = self.store.size()
        hashes = merkle.append_hashes(size, merkle.leaf_hash(entry), self.store.read_hashes)
        return self.store.append(entry, hashes)

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first `size` entries (all by default)."""
        return merkle.tree_root(self.size if size is None else size, self.store.read_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path of entry `index` in the tree of `size` entries."""
        return merkle.inclusion_proof(index, size, self.store.read_hashes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof between two tree sizes."""
        return merkle.consistency_proof(old_size, new_size, self.store.read_hashes)

    def sign_checkpoint(self, now_ms: int) -> str:
        """Sign a checkpoint over the whole log if it grew; return the latest note.

        Never signs a tree smaller than the last checkpoint's, nor a second
        checkpoint for the same size: a same-size checkpoint is the last one.
        """
        size, last = self.size, self.checkpoint
        if last is not None and self.checkpoint_note is not None:
            if size < last.size:
                raise EdgeLedgerError(f"log {self.signer.name}: store has {size} entries, fewer "
                                      f"than checkpoint {last.height} covers ({last.size})")
            if size == last.size:
                return self.checkpoint_note
        cp = Checkpoint(origin=self.signer.name, size=size, root=self.root(size),
                        height=0 if last is None else last.height + 1,
                        prev=ZERO_HASH if last is None else last.hash,
                        time=now_ms if last is None else max(now_ms, last.time))
        note = cp.sign(self.signer)
        self.store.add_checkpoint(note)
        self.checkpoint, self.checkpoint_note = cp, note
        return note
