"""The postgres backend's configuration and the process's start-up: file, key, reason, exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from edgeledger.aggregator.config import load_aggregator_config, read_aggregator_config
from edgeledger.aggregator.server import take_batch
from edgeledger.sync.mqtt import Received

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "hw_configs" / "aggregator-postgres.toml"

FILE = """
[aggregator]
origin = "example.com/log"
key_file = "{dir}/log.key"
[store]
{store}
[broker]
address = "127.0.0.1:{port}"
{tail}
"""


def write(tmp_path: Path, store: str = 'backend = "postgres"', tail: str = "",
          port: int = 1883) -> Path:
    path = tmp_path / "agg.toml"
    path.write_text(FILE.format(dir=tmp_path, store=store, tail=tail, port=port))
    return path


def test_the_example_is_valid() -> None:
    result = read_aggregator_config(EXAMPLE)
    assert result.errors == [], result.errors
    assert result.config is not None and result.config.store.postgres is not None
    assert result.config.store.postgres.schema == "edgeledger"
    assert result.config.cluster.group == "edgeledger"


def test_defaults_and_the_connection_string(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    secret.chmod(0o600)
    config = load_aggregator_config(write(tmp_path, f"""backend = "postgres"
host = "/run/postgresql"
port = 6432
dbname = "ledger"
user = "agg"
password_file = "{secret}"
schema = "site_a"
""", tail="[cluster]\nfailover_ms = 9000\nhold_ms = 0"))
    pg = config.store.postgres
    assert pg is not None and pg.schema == "site_a"
    params = conninfo_to_dict(pg.conninfo("edgeledger-test", 9000))
    assert params == {"host": "/run/postgresql", "port": "6432", "dbname": "ledger",
                      "user": "agg", "password": "s3cret", "connect_timeout": "5",
                      "application_name": "edgeledger-test", "keepalives": "1",
                      "keepalives_idle": "3", "keepalives_interval": "3",
                      "keepalives_count": "3", "tcp_user_timeout": "9000"}
    assert "s3cret" not in pg.where()
    assert (config.cluster.failover_ms, config.cluster.poll_ms, config.cluster.hold_ms,
            config.cluster.max_batch) == (9000, 500, 0, 2000)


FAULTS = [
    ('backend = "postgres"\ndsn = "host=x"\nhost = "y"', "", "store.dsn", "not both"),
    ('backend = "postgres"\ndsn = "postgresql://u:pw@db/x"', "", "store.dsn",
     "holds a password"),
    ('backend = "postgres"\ndsn = "host=x port"', "", "store.dsn", "not a libpq"),
    ('backend = "postgres"\nschema = "Site-A"', "", "store.schema", "is not a schema name"),
    ('backend = "postgres"\npath = "/x.db"', "", "store.path", "only for backend 'sqlite'"),
    ('backend = "postgres"\nport = 0', "", "store.port", "out of range"),
    ('path = "/x.db"\ndsn = "host=x"', "", "store.dsn", "only for backend 'postgres'"),
    ('backend = "postgres"', "[cluster]\npoll_ms = 6000", "cluster.poll_ms", "below failover"),
    ('backend = "postgres"', "[cluster]\ngroup = \"a/b\"", "cluster.group", "is not"),
    ('backend = "postgres"', "[cluster]\nmax_batch = 0", "cluster.max_batch", "out of range"),
    ('backend = "postgres"', "[cluster]\nleader = 1", "cluster.leader", "unknown key"),
]


@pytest.mark.parametrize(("store", "tail", "key", "reason"), FAULTS, ids=[f[2] for f in FAULTS])
def test_faults_name_file_key_and_reason(tmp_path: Path, store: str, tail: str, key: str,
                                         reason: str) -> None:
    path = write(tmp_path, store, tail)
    result = read_aggregator_config(path)
    assert result.config is None
    assert [(e.path, e.key) for e in result.errors] == [(str(path), key)], result.errors
    assert reason in result.errors[0].reason


def test_a_cluster_table_on_sqlite_is_a_note(tmp_path: Path) -> None:
    result = read_aggregator_config(write(tmp_path, f'path = "{tmp_path}/a.db"',
                                          "[cluster]\ngroup = \"g\""))
    assert result.errors == [] and [n.key for n in result.notes] == ["cluster"]


def test_a_batch_takes_what_is_queued_and_loses_nothing_at_the_limit() -> None:
    queued = [Received(f"t/{i}", b"", 1, False) for i in range(7)]
    waits: list[float] = []

    def get(timeout: float) -> Received | None:
        waits.append(timeout)
        return queued.pop(0) if queued else None
    batches = [take_batch(get, 0.5, 3) for _ in range(4)]
    assert [[e.topic for e in b] for b in batches] == [["t/0", "t/1", "t/2"],
                                                       ["t/3", "t/4", "t/5"], ["t/6"], []]
    assert waits.count(0.5) == 4  # only the first get of a turn waits


def _run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edgeledger", "aggregator", "--config",
                             str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_schema_that_is_not_ours_exits_78_naming_it(tmp_path: Path, pg_dsn: str,
                                                       pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.other (x int)")
    proc = _run(write(tmp_path, f'backend = "postgres"\ndsn = "{pg_dsn}"\n'
                                f'schema = "{pg_schema}"'))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 78, err
    assert f"store.schema: schema '{pg_schema}' is not an EdgeLedger store" in err


def test_an_unreachable_database_is_waited_for_and_sigterm_exits_0(tmp_path: Path) -> None:
    proc = _run(write(tmp_path, 'backend = "postgres"\ndsn = "host=127.0.0.1 port=1 '
                                'dbname=x connect_timeout=2"'))
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    seen = ""
    while "retrying in" not in seen:
        assert proc.poll() is None and time.monotonic() < deadline, seen
        seen += proc.stderr.readline()
    assert "cannot reach PostgreSQL" in seen
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
