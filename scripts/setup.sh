#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine (run as root): Debian packages,
# cargo-pgrx 0.18.1, pgrx's PostgreSQL 15 configuration, and an installed
# release build of logical_ext. Every step is skipped when already done, so the
# demo, test and benchmark commands all start by calling this script.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${LOGICAL_EXT_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
# python3-prometheus-client: the reference parser the metrics() test feeds.
# python3-psycopg2: the replication consumer of pg_test/tests/decoder_consumers.rs
# (both for Debian's /usr/bin/python3, which the tests run).
# postgresql-15-repack/-partman/-cron: the tools pg_test/tests/ddl_tools.rs runs.
# prometheus (with promtool) and prometheus-postgres-exporter: the Prometheus
# tests of pg_test/tests/prometheus*.rs (monitoring/ rules, a real scrape).
# postgresql-15-auto-failover (the pgautofailover extension) and pg-auto-failover-cli
# (pg_autoctl): the HA manager of pg_test/tests/failover_autoctl.rs, whose promotion
# our failover slots must follow (issue 16).
PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo
          postgresql-15-wal2json postgresql-15-pglogical pkg-config libssl-dev
          python3-prometheus-client python3-psycopg2 postgresql-15-repack postgresql-15-partman postgresql-15-cron
          prometheus prometheus-postgres-exporter postgresql-15-auto-failover pg-auto-failover-cli)

log() { echo "== setup: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# PostgreSQL >= 15.19 is needed for output_plugin_libraries; upgrade an older one.
if [ ${#missing[@]} -eq 0 ] && ! "$PG_CONFIG" --version | awk '{split($2,v,"."); exit !(v[1]==15 && v[2]>=19)}'; then
  missing+=(postgresql-15 postgresql-server-dev-15)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
  log "installing cargo-pgrx 0.18.1 (takes 5-11 minutes on 2 cores)"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi

PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if ! grep -q "^pg15 *= *\"$PG_CONFIG\"" "$PGRX_HOME/config.toml" 2>/dev/null; then
  log "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi

if [ "${LOGICAL_EXT_SKIP_INSTALL:-0}" != 1 ]; then
  log "building and installing logical_ext (release)"
  cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
fi
log "done"
