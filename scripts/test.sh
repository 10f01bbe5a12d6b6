#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root):
#   1. set-up (Debian packages, cargo-pgrx 0.18.1) via scripts/setup.sh;
#   2. unit tests (#[test]) and in-server tests (#[pg_test]) with cargo pgrx,
#      the server running as the `postgres` OS user;
#   3. a release install of the extension, then the real-cluster tests in
#      pg_test/ (publisher/subscriber clusters started by the harness).
set -euo pipefail
cd "$(dirname "$0")/.."

LOGICAL_EXT_SKIP_INSTALL=1 scripts/setup.sh

echo "== unit and in-server tests (cargo pgrx test)"
pgdata_parent=$(mktemp -d /tmp/logical_ext_pgrx.XXXXXX)
chown postgres: "$pgdata_parent"
trap 'rm -rf "$pgdata_parent"' EXIT
# flock: cargo pgrx test always uses port 32215; two checkouts must take turns.
flock /tmp/logical_ext_pgrx_test.lock cargo pgrx test pg15 --runas postgres --pgdata "$pgdata_parent/data"

echo "== installing the release build for the cluster tests"
cargo pgrx install --release --pg-config "${LOGICAL_EXT_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" >/dev/null

echo "== cluster tests (pg_test/)"
cd pg_test
cargo test --release --no-fail-fast -- --test-threads="${PG_TEST_THREADS:-2}"
