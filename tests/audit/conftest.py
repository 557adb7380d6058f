"""Fixtures: a live log behind the real API (shared, read-only), and fresh ones to grow.

The test modules import their helpers from auditfleet.py and auditproxy.py, never from
here: several test directories have a conftest module, so `import conftest` is ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from auditfleet import Live, LiveLog, serve

ROUNDS, EVERY = 8, 2
"""The shared log: 8 blocks per device, a checkpoint every 2 (heights 0..3), then 1
more round that no checkpoint covers yet."""


@pytest.fixture(scope="package")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("audit-shared")
    log = LiveLog(tmp / "agg.db")
    log.grow(ROUNDS, EVERY)
    log.grow(1, checkpoint_every=99)
    with serve(log.path) as url:
        yield Live(log, url, tmp)
    log.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Live]:
    log = LiveLog(tmp_path / "agg.db")
    with serve(log.path) as url:
        yield Live(log, url, tmp_path)
    log.close()
