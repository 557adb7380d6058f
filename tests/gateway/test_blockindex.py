"""The block index: O(1) lookups, torn entries, and compaction after pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeledger.gateway.blockindex import ENTRY, HEADER, BlockIndex, read_index
from edgeledger.gateway.journal import JournalError, Position


def _filled(path: Path, count: int) -> BlockIndex:
    index = BlockIndex(path)
    for h in range(count):
        index.append(h, Position(h // 10, h * 100))
    index.flush()
    return index


def test_entries_survive_reopening_and_a_torn_last_entry_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "blocks.idx"
    _filled(path, 25).close()
    with open(path, "ab") as f:
        f.write(b"\x00" * (ENTRY.size - 1))
    index = BlockIndex(path)
    assert (index.base, index.count) == (0, 25)
    assert index.get(24) == Position(2, 2400)
    assert path.stat().st_size == HEADER.size + 25 * ENTRY.size


@pytest.mark.parametrize(("count", "release", "rewrites", "base"), [
    (100, 30, False, 0),    # dead prefix shorter than what is kept: not worth a rewrite
    (100, 50, True, 50),    # as long as the live part: rewrite
    (100, 90, True, 90),
    (100, 100, True, 100),  # everything released (the tip's segment is never pruned,
                            # but the index must still behave)
    (100, 0, False, 0),
])
def test_release_below_compacts_only_when_it_pays(tmp_path: Path, count: int, release: int,
                                                  rewrites: bool, base: int) -> None:
    path = tmp_path / "blocks.idx"
    index = _filled(path, count)
    assert index.release_below(release) is rewrites
    assert (index.base, index.count) == (base, count)
    assert path.stat().st_size == HEADER.size + (count - base) * ENTRY.size
    for h in range(base, count):
        assert index.get(h) == Position(h // 10, h * 100)
    if base:
        with pytest.raises(JournalError, match=f"no block {base - 1}"):
            index.get(base - 1)
    index.append(count, Position(99, 1))
    index.close()
    again = BlockIndex(path)
    assert (again.base, again.count) == (base, count + 1)
    assert read_index(path)[0] == base


def test_many_small_releases_keep_the_file_bounded(tmp_path: Path) -> None:
    """Pruning a segment at a time, as the quota does: the file never holds more than
    about twice what is kept, and each entry is rewritten about once."""
    index = _filled(tmp_path / "blocks.idx", 0)
    kept, rewrites = 200, 0
    for h in range(5_000):
        index.append(h, Position(h // 10, h))
        if h % 10 == 9 and h >= kept:
            rewrites += index.release_below(h + 1 - kept)
    index.flush()
    assert index.count - index.base <= 2 * kept + 10
    assert (tmp_path / "blocks.idx").stat().st_size <= HEADER.size + (2 * kept + 10) * ENTRY.size
    assert rewrites <= 5_000 // kept + 1


def test_an_empty_index_takes_the_first_kept_block_as_its_base(tmp_path: Path) -> None:
    """After pruning, a lost index is rebuilt from the journal starting at block 40."""
    index = BlockIndex(tmp_path / "blocks.idx")
    index.append(40, Position(4, 0))
    index.append(41, Position(4, 90))
    with pytest.raises(JournalError, match="out of order, expected 42"):
        index.append(44, Position(4, 200))
    index.close()
    assert read_index(tmp_path / "blocks.idx") == (40, [Position(4, 0), Position(4, 90)], False)


def test_a_file_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "blocks.idx"
    path.write_bytes(b"not an index at all")
    with pytest.raises(JournalError, match="bad magic"):
        BlockIndex(path)
