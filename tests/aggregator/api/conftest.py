"""The API under test: a real uvicorn server on a free loopback port over a real store.

One server per test session (package scope) serves the fleet of apifleet.py through
read-only SqliteStore connections, with device statuses and a Metrics registry, just
as the aggregator process wires it (edgeledger/aggregator/api/serve.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from apifleet import LOG_KEY, T0, Fleet, build_fleet

from edgeledger.aggregator.api.app import create_app
from edgeledger.aggregator.api.metrics import Metrics
from edgeledger.aggregator.api.serve import ApiServer
from edgeledger.aggregator.service import DeviceStatus
from edgeledger.aggregator.store.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).parents[2] / "interop"))  # gosumdb.py

STATUSES = {"gw-1": DeviceStatus(T0 + 123_000, True, 13, 2, "0.1.0"),
            "gw-2": DeviceStatus(T0 + 99_000)}


@dataclass
class Api:
    """The running server, a client for it, and what its store holds."""

    url: str
    client: httpx.Client
    fleet: Fleet
    metrics: Metrics

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.client.get(path, params={k: v for k, v in params.items() if v is not None})


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return build_fleet(tmp_path_factory.mktemp("api") / "agg.db")


@pytest.fixture(scope="package")
def api(fleet: Fleet) -> Iterator[Api]:
    metrics = Metrics()
    app = create_app(lambda: SqliteStore(fleet.path, read_only=True), LOG_KEY.verifier(),
                     lambda: STATUSES, metrics)
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, fleet, metrics)
    server.stop()
