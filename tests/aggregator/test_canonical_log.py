"""The canonical log: appends, proofs and the checkpoint chain rules."""

from __future__ import annotations

from itertools import pairwise

import pytest

from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, check_extends, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer

SIGNER = Signer("log.test/a", bytes(range(32)))


def _log(entries: int) -> CanonicalLog:
    log = CanonicalLog(MemoryLogStore(), SIGNER)
    for i in range(entries):
        assert log.append(b"entry %d" % i) == i
    return log


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100])
def test_root_and_proofs_match_a_tree_built_from_the_entries(size: int) -> None:
    log = _log(size)
    leaves = [merkle.leaf_hash(b"entry %d" % i) for i in range(size)]
    assert log.root() == merkle.root_from_leaf_hashes(leaves)
    for i in range(size):
        merkle.verify_inclusion(leaves[i], i, size, log.inclusion_proof(i, size), log.root())
    half = size // 2
    merkle.verify_consistency(half, size, log.root(half), log.root(),
                              log.consistency_proof(half, size))


def test_checkpoints_form_a_chain_of_consistent_trees() -> None:
    log = _log(0)
    notes = []
    for step in range(5):
        for i in range(step * 3 + 1):
            log.append(b"%d-%d" % (step, i))
        notes.append(log.sign_checkpoint(1_000 + step))
    cps = [open_checkpoint(n, SIGNER.verifier()) for n in notes]
    assert cps[0].height == 0 and cps[0].prev == ZERO_HASH
    for old, new in pairwise(cps):
        assert new.height == old.height + 1
        check_extends(old, new, log.consistency_proof(old.size, new.size))


def test_no_new_checkpoint_for_the_same_size_and_none_for_a_smaller_tree() -> None:
    log = _log(4)
    first = log.sign_checkpoint(10)
    assert log.sign_checkpoint(20) == first
    shrunk = CanonicalLog(MemoryLogStore(), SIGNER)
    shrunk.store.add_checkpoint(first)
    reopened = CanonicalLog(shrunk.store, SIGNER)
    with pytest.raises(EdgeLedgerError, match="fewer than checkpoint 0 covers"):
        reopened.sign_checkpoint(30)


def test_the_chain_continues_after_reopening_the_store() -> None:
    log = _log(3)
    first = open_checkpoint(log.sign_checkpoint(5), SIGNER.verifier())
    reopened = CanonicalLog(log.store, SIGNER)
    reopened.append(b"more")
    second = open_checkpoint(reopened.sign_checkpoint(4), SIGNER.verifier())
    assert second.height == 1 and second.prev == first.hash
    assert second.time == first.time, "checkpoint time never goes back"
