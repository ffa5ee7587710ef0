#!/usr/bin/env bash
# Starts the machine's PostgreSQL (Debian's cluster, as `make system-deps` installs it)
# and makes the role and database the ledger tests use:
#   postgresql+psycopg://tadpole:tadpole@127.0.0.1:5432/tadpole_test
# Idempotent. Needs root (it acts as the postgres user); without root it says so and
# exits 0 unless CI is set, so that the PostgreSQL tests fail rather than skip there.
set -euo pipefail
fail() {
	echo "postgres: $*" >&2
	if [ -n "${CI:-}" ] && [ "${CI}" != false ]; then exit 1; fi
	echo "postgres: the PostgreSQL ledger tests will be skipped" >&2
	exit 0
}
[ "$(id -u)" = 0 ] || fail "not root: start PostgreSQL and create role/db tadpole yourself"
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$version" ] || fail "no PostgreSQL cluster (apt-get install postgresql)"
if ! pg_ctlcluster "$version" main status >/dev/null 2>&1; then
	pg_ctlcluster "$version" main start || fail "pg_ctlcluster $version main start failed"
fi
sql() { runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
for _ in $(seq 50); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(sql "SELECT 1 FROM pg_roles WHERE rolname = 'tadpole'")" = 1 ] ||
	sql "CREATE ROLE tadpole LOGIN PASSWORD 'tadpole' CREATEDB"
[ "$(sql "SELECT 1 FROM pg_database WHERE datname = 'tadpole_test'")" = 1 ] ||
	sql "CREATE DATABASE tadpole_test OWNER tadpole"
echo "postgres: $version/main up; database tadpole_test for role tadpole"
