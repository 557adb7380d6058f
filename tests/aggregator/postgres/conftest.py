"""PostgreSQL for the postgres-backend tests: a reachable server, one schema per test.

The server is found at EDGELEDGER_TEST_PG (a libpq connection string), by default
at `host=127.0.0.1 port=5432 dbname=test` as the current user, then as `postgres`,
then over the Unix socket (`/var/run/postgresql`, Debian's peer authentication: the
role named after the current user, which is how `./scripts/test`, run as root,
installs and starts one). Every test gets a
fresh schema `t_<random>`, dropped afterwards with everything in it, so tests
never see each other's tables and can run against a shared database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

ENV = "EDGELEDGER_TEST_PG"
DEFAULT = "host=127.0.0.1 port=5432 dbname=test"
SOCKET = "host=/var/run/postgresql dbname=test"
HINT = ("start PostgreSQL on 127.0.0.1:5432 with a database `test` your user (or `postgres`) "
        "may use without a password (./scripts/test does it as root), or set "
        f"{ENV} to a libpq connection string")


def _reachable(dsn: str) -> str | None:
    """The reason `dsn` does not answer `SELECT 1`, or None when it does."""
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A libpq connection string of a PostgreSQL this user may create schemas in."""
    candidates = [os.environ[ENV]] if ENV in os.environ else [DEFAULT, f"{DEFAULT} user=postgres",
                                                              SOCKET]
    reasons = []
    for dsn in candidates:
        reason = _reachable(dsn)
        if reason is None:
            return dsn
        reasons.append(f"{dsn!r}: {reason}")
    pytest.fail(f"no PostgreSQL for the tests ({'; '.join(reasons)}); {HINT}", pytrace=False)


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name for this test only; the schema is dropped (cascading) afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
