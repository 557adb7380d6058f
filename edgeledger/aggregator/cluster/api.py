"""The HTTP API and metrics of a cluster process: the same app, over PostgreSQL readers.

Every process of a cluster may serve the API (edgeledger/aggregator/api/): its
readers are read-only connections to the shared schema, so any process answers the
same as any other, whoever is sequencer. Several processes on one host share one
`[http] listen`: the first one to bind it serves, and a process that finds the
address already in use says so and serves ingest only (the others behind a load
balancer, or one per host, are the usual shapes). Any other failure to listen is a
configuration error, as for the one-process aggregator.

Metrics: each process counts what it answered, the worker its refusals and the
duplicates it could tell, the sequencer (while elected) the blocks it decided and
their latency from the worker's receive to the COMMIT; Prometheus sums the
processes. The scrape-time gauges read the store, so they are the cluster's.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from edgeledger.aggregator.config import AggregatorConfig
from edgeledger.aggregator.pgconfig import open_postgres_store
from edgeledger.core.errors import ConfigError
from edgeledger.core.note import Verifier
from edgeledger.sync.messages import Ack

if TYPE_CHECKING:
    from edgeledger.aggregator.api.metrics import Metrics
    from edgeledger.aggregator.api.serve import ApiServer
    from edgeledger.aggregator.cluster.sequence import Queued
    from edgeledger.aggregator.service import DeviceStatus
    from edgeledger.aggregator.store.postgres import PostgresStore

log = logging.getLogger("edgeledger.aggregator.cluster")

SYNC_HEAD = b"\xa2\x62rd"
"""How a sync message starts (deterministic CBOR puts `rd` first): with a queued block's
readings array after it, api.metrics.readings_count counts them without decoding."""


def new_metrics() -> Metrics | None:
    """This process's metrics, or None without the aggregator extra (prometheus-client)."""
    try:
        from edgeledger.aggregator.api.metrics import Metrics
    except ImportError:
        return None
    return Metrics()


def count_decided(metrics: Metrics | None, rows: Sequence[Queued],
                  acks: Sequence[tuple[str, Ack]], now_ms: int) -> None:
    """Count the sequencer's answers to `rows` (same order) and their ingest latency."""
    if metrics is None:
        return
    messages = [("", SYNC_HEAD + row.block.readings[:9]) for row in rows]
    metrics.count_acks(messages, [ack for _, ack in acks])
    for row in rows:
        metrics.observe_ingest(max(0, now_ms - row.received_ms) / 1000, 1)


def start_cluster_api(config: AggregatorConfig, verifier: Verifier,
                      statuses: Callable[[], Mapping[str, DeviceStatus]],
                      metrics: Metrics | None) -> ApiServer | None:
    """Serve the API on `[http] listen`, or None (address taken here, or no extra)."""
    try:
        from edgeledger.aggregator.api.app import create_app
        from edgeledger.aggregator.api.serve import ApiServer
    except ImportError as exc:
        log.warning("HTTP API not started: %s (pip install 'edgeledger[aggregator]')", exc)
        return None
    host, port = config.http.host, config.http.port
    if _in_use(host, port):
        _taken(host, port)
        return None
    pg, cluster = config.store.postgres, config.cluster
    assert pg is not None

    def reader() -> PostgresStore:
        return open_postgres_store(pg, cluster, "edgeledger-api", read_only=True)
    app = create_app(reader, verifier, statuses, metrics)
    server = ApiServer(app, host, port, str(config.path))
    try:
        server.start()
    except ConfigError:
        if not _in_use(host, port):  # else: another process bound it since our probe
            raise
        _taken(host, port)
        return None
    return server


def _taken(host: str, port: int) -> None:
    log.info("HTTP API not served by this process: %s:%d is taken (by another process of "
             "the cluster, presumably)", host, port)


def _in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port (port 0 never is)."""
    if port == 0:
        return False
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return False  # ApiServer.start names the address and the key
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False
