# Shared set-up for scripts/test and scripts/demo: Python, Debian packages, .venv/.
# Sourced, not run. Every step says what to run by hand where it cannot do it itself.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$REPO_ROOT/.venv"

say() { printf 'edgeledger setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# find_python: a python3 of version 3.11 or newer, on PATH.
find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    die "Python 3.11 or newer is needed. On Debian or Raspberry Pi OS: sudo apt-get install -y python3 python3-venv"
}

_apt_updated=""
# apt_install PKG...: install Debian packages as root; otherwise print the command and fail.
apt_install() {
    if ! is_root; then
        die "missing Debian packages; run: sudo apt-get install -y $*  (then run this command again)"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ($*) and no apt-get here: install them with your system's package manager"
    if [ -z "$_apt_updated" ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2 || die "apt-get update failed"
        _apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2 ||
        die "apt-get install $* failed; run it by hand to see why"
}

# need PKG PROBE: install Debian package PKG unless PROBE (a command or a path) exists.
need() {
    local pkg=$1 probe=$2
    if [[ "$probe" == /* ]]; then [ -e "$probe" ] && return 0; else command -v "$probe" >/dev/null 2>&1 && return 0; fi
    apt_install "$pkg"
}

# ensure_venv EXTRAS: create .venv/ if missing and install the package with EXTRAS
# (e.g. "dev"); reinstalls only when pyproject.toml or the extras changed.
ensure_venv() {
    local extras=$1 python stamp want
    python=$(find_python)
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        if ! "$python" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$python" -m venv "$VENV" || die "could not create $VENV with $python -m venv"
        fi
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2 || die "could not upgrade pip in $VENV"
    fi
    stamp="$VENV/.edgeledger-installed"
    want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1) $extras"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing edgeledger${extras:+[$extras]} into $VENV"
        "$VENV/bin/python" -m pip install -q -e "$REPO_ROOT${extras:+[$extras]}" >&2 ||
            die "pip install failed; check the network to PyPI, then run this command again"
        printf '%s' "$want" > "$stamp"
    fi
}

# --- PostgreSQL for tests/aggregator/postgres -----------------------------------------
# ensure_postgres: a database `test` the current user may use without a password, on
# 127.0.0.1:5432 or the local socket. As root it installs the Debian package, creates
# and starts the cluster, the role and the database (peer authentication over the
# socket: pg_hba.conf is not touched); otherwise it prints the commands to run.
# EDGELEDGER_TEST_PG (a libpq connection string) points the tests elsewhere.
PG_TCP="host=127.0.0.1 port=5432 dbname=test"
PG_SOCKET="host=/var/run/postgresql dbname=test"
pg_answers() {
    command -v psql >/dev/null 2>&1 || return 1
    local dsn
    for dsn in "$PG_TCP" "$PG_TCP user=postgres" "$PG_SOCKET"; do
        PGCONNECT_TIMEOUT=3 psql "$dsn" -Atqc 'SELECT 1' >/dev/null 2>&1 </dev/null && return 0
    done
    return 1
}
as_postgres() { runuser -u postgres -- "$@" </dev/null; }
ensure_postgres() {
    [ -n "${EDGELEDGER_TEST_PG:-}" ] && return 0
    pg_answers && return 0
    local me version
    me=$(id -un)
    if ! is_root; then
        die "the PostgreSQL tests need a database 'test' that $me may use without a password; run:
  sudo apt-get install -y postgresql
  sudo -u postgres createuser $me
  sudo -u postgres createdb -O $me test
then run this command again (or set EDGELEDGER_TEST_PG to a libpq connection string)"
    fi
    need postgresql /usr/bin/pg_ctlcluster
    version=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "main" {print $1; exit}')
    if [ -z "$version" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        say "creating the PostgreSQL $version cluster 'main'"
        pg_createcluster "$version" main >&2 || die "pg_createcluster $version main failed"
    fi
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' |
            grep -q online; then
        say "starting PostgreSQL $version main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 ||
            die "could not start PostgreSQL; see: pg_ctlcluster $version main start"
    fi
    as_postgres psql -Atqc "SELECT 1 FROM pg_roles WHERE rolname = '$me'" | grep -q 1 ||
        as_postgres createuser "$me" || die "could not create the PostgreSQL role $me"
    as_postgres psql -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 ||
        as_postgres createdb -O "$me" test || die "could not create the database 'test'"
    pg_answers || die "PostgreSQL runs, but $me cannot use the database 'test' on" \
        "127.0.0.1:5432 or /var/run/postgresql; see /var/log/postgresql/"
}
