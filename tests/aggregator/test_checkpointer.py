"""The checkpointer: when it signs, and that its checkpoints form one consistent chain."""

from __future__ import annotations

from itertools import combinations, pairwise
from pathlib import Path

import pytest

from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint, check_extends, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer

SIGNER = Signer("log.test/checkpointer", bytes(range(32)))


def _open(path: Path, interval_ms: int = 1000, batch_size: int = 10
          ) -> tuple[SqliteStore, Checkpointer]:
    store = SqliteStore(path)
    return store, Checkpointer(CanonicalLog(store, SIGNER), interval_ms, batch_size)


def _grow(cp: Checkpointer, n: int) -> None:
    for _ in range(n):
        cp.log.append(b"entry %d" % cp.log.size)


def _parsed(note: str) -> Checkpoint:
    return open_checkpoint(note, SIGNER.verifier())


def test_the_first_checkpoint_is_signed_at_once_even_over_an_empty_log(tmp_path: Path) -> None:
    store, cp = _open(tmp_path / "a.db")
    note = cp.maybe_sign(5)
    assert note is not None and _parsed(note).size == 0 and _parsed(note).prev == ZERO_HASH
    assert cp.maybe_sign(10_000) is None  # did not grow: no second one for size 0
    store.close()


@pytest.mark.parametrize(("grow", "after_ms", "signs"), [
    (0, 5000, False),   # the interval passed, but nothing new
    (1, 999, False),    # grew a little, the interval has not passed
    (1, 1000, True),    # the interval passed
    (9, 10, False),
    (10, 10, True),     # grew by the batch size
])
def test_it_signs_when_the_interval_passed_or_the_log_grew_by_the_batch_size(
        tmp_path: Path, grow: int, after_ms: int, signs: bool) -> None:
    store, cp = _open(tmp_path / "a.db")
    first = cp.maybe_sign(1000)
    _grow(cp, grow)
    assert cp.due(1000 + after_ms) == signs
    note = cp.maybe_sign(1000 + after_ms)
    assert (note is not None) == signs
    assert cp.note == (note if signs else first)
    store.close()


def test_the_chain_continues_across_restarts_and_every_pair_is_consistent(
        tmp_path: Path) -> None:
    path, notes, now = tmp_path / "a.db", [], 1000
    for _restart in range(3):
        store, cp = _open(path)
        for _ in range(4):
            _grow(cp, 3)
            now += 1000
            note = cp.maybe_sign(now)
            assert note is not None
            notes.append(note)
        store.close()
    store, cp = _open(path)
    cps = [_parsed(n) for n in notes]
    assert [c.height for c in cps] == list(range(len(cps)))
    assert [c.size for c in cps] == [3 * (i + 1) for i in range(len(cps))]
    for old, new in combinations(cps, 2):
        check_extends(old, new, cp.log.consistency_proof(old.size, new.size))
    for old, new in pairwise(cps):
        assert new.prev == old.hash
    store.close()


def test_time_never_goes_back_in_the_chain(tmp_path: Path) -> None:
    store, cp = _open(tmp_path / "a.db", batch_size=1)
    cp.maybe_sign(5000)
    _grow(cp, 1)
    note = cp.maybe_sign(4000)  # the clock stepped back; the batch size is reached
    assert note is not None and _parsed(note).time == 5000
    store.close()


def test_sign_at_shutdown_signs_only_what_is_new(tmp_path: Path) -> None:
    store, cp = _open(tmp_path / "a.db", interval_ms=10**9, batch_size=10**6)
    assert cp.sign(1) is not None
    assert cp.sign(2) is None
    _grow(cp, 1)
    assert not cp.due(3)
    note = cp.sign(3)
    assert note is not None and _parsed(note).size == 1
    store.close()


@pytest.mark.parametrize(("interval", "batch"), [(0, 10), (10, 0), (-1, 1)])
def test_it_refuses_a_zero_or_negative_setting(tmp_path: Path, interval: int, batch: int
                                               ) -> None:
    store = SqliteStore(tmp_path / "a.db")
    with pytest.raises(EdgeLedgerError, match="must be positive"):
        Checkpointer(CanonicalLog(store, SIGNER), interval, batch)
    store.close()
