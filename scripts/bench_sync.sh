#!/usr/bin/env bash
# Initial table synchronization throughput of a logical_ext subscription
# (copy_data => true) against a native PostgreSQL subscription
# (CREATE SUBSCRIPTION ... WITH (copy_data = true)), same machine, same run,
# same tables. Not part of CI; see docs/BENCHMARKS.md. Run as root (or as
# postgres):
#
#   scripts/bench_sync.sh                          # 1M rows in 4 tables
#   BENCH_ROWS=200000 scripts/bench_sync.sh        # quick check
#
# Two throwaway clusters: a publisher holding the tables, and a subscriber
# (shared_preload_libraries = logical_ext) whose database `native` gets the
# native subscription and `le` the logical_ext one, each into empty copies of
# the tables. Each subscription in turn, alone, is created and timed until
# every table is copied (native: srsubstate 's' or 'r'; logical_ext: state
# 'catchup' or 'ready'); then its tables are compared with the publisher's
# (count and md5) and the run fails if they differ.
#
# Environment:
#   BENCH_ROWS              rows in all (default 1000000)
#   BENCH_TABLES            tables they are spread over (default 4)
#   BENCH_SYNC_WORKERS      parallel copies per subscription, both kinds (default 2)
#   BENCH_ORDER             order of the runs (default "native logical_ext")
#   BENCH_TIMEOUT           seconds one initial sync may take (default 1800)
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
#   PGBIN                   PostgreSQL programs (default /usr/lib/postgresql/15/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

ROWS=${BENCH_ROWS:-1000000}
TABLES=${BENCH_TABLES:-4}
WORKERS=${BENCH_SYNC_WORKERS:-2}
ORDER=${BENCH_ORDER:-native logical_ext}
TIMEOUT=${BENCH_TIMEOUT:-1800}
[ "$ROWS" -ge "$TABLES" ] || { echo "BENCH_ROWS must be >= BENCH_TABLES" >&2; exit 2; }

. scripts/bench_pair.sh
ddl() {
  local i
  for ((i = 1; i <= TABLES; i++)); do
    echo "CREATE TABLE sync_$i (id bigint PRIMARY KEY, i int, f float8, ts timestamptz, n numeric, t text, b bool, j jsonb);"
  done
}

# copied KIND: how many tables are copied so far.
copied() {
  if [ "$1" = native ]; then
    sub native -Atc "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                     WHERE s.subname = 'bench_native' AND r.srsubstate IN ('s', 'r')"
  else
    sub le -Atc "SELECT count(*) FROM logical_ext.subscription_tables t JOIN logical_ext.subscription s ON s.id = t.subid
                 WHERE s.name = 'bench_le' AND t.state IN ('catchup', 'ready')"
  fi
}

# initial_sync KIND: creates the subscription and prints the seconds until
# every table is copied.
initial_sync() {
  local kind=$1 conninfo t0 t1 deadline
  conninfo=$(cluster_conninfo pub)
  t0=$(date +%s.%N)
  if [ "$kind" = native ]; then
    sub native -c "CREATE SUBSCRIPTION bench_native CONNECTION '$conninfo' PUBLICATION bench_pub
                   WITH (copy_data = true, slot_name = 'bench_native')" >/dev/null
  else
    sub le -c "SELECT logical_ext.create_subscription('bench_le', '$conninfo', ARRAY['bench_pub'], copy_data => true)" >/dev/null
  fi
  deadline=$(($(date +%s) + TIMEOUT))
  until [ "$(copied "$kind")" -eq "$TABLES" ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "!! $kind: initial sync did not finish within $TIMEOUT s" >&2; return 1
    fi
    sleep 0.05
  done
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

digest() {
  local sql="SELECT count(*) || ' ' || md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) FROM $2 t"
  if [ "$1" = pub ]; then pub -Atc "$sql"; else sub "$1" -Atc "$sql"; fi
}

run_setup
say "starting a publisher and a subscriber"
CONF=("autovacuum = off" "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '1h'"
      "fsync = off" "synchronous_commit = off")
cluster_start pub "" "${CONF[@]}"
cluster_start sub logical_ext "${CONF[@]}" "max_sync_workers_per_subscription = $WORKERS" \
  "logical_ext.max_sync_workers_per_subscription = $WORKERS"
cluster_psql sub -c "CREATE DATABASE native" -c "CREATE DATABASE le" >/dev/null
sub le -c "CREATE EXTENSION logical_ext" >/dev/null

say "publisher: $ROWS rows x 8 columns in $TABLES tables"
pub -c "$(ddl)" >/dev/null
per=$((ROWS / TABLES))
for ((i = 1; i <= TABLES; i++)); do
  lo=$(((i - 1) * per + 1)) hi=$((i == TABLES ? ROWS : i * per))
  pub -c "INSERT INTO sync_$i SELECT $ROW_SQL FROM generate_series($lo, $hi) g" >/dev/null
done
pub -c "CREATE PUBLICATION bench_pub FOR ALL TABLES" -c "VACUUM ANALYZE" -c CHECKPOINT >/dev/null
for kind in native logical_ext; do sub "${DB[$kind]}" -c "$(ddl)" >/dev/null; done

declare -A SECS=() CHECK=()
for kind in $ORDER; do
  sub "${DB[$kind]}" -c CHECKPOINT >/dev/null
  SECS[$kind]=$(initial_sync "$kind")
  CHECK[$kind]=ok
  for ((i = 1; i <= TABLES; i++)); do
    want=$(digest pub "sync_$i") got=$(digest "${DB[$kind]}" "sync_$i")
    if [ "$want" != "$got" ]; then
      echo "!! $kind: sync_$i differs: publisher $want, subscriber $got" >&2; CHECK[$kind]=FAILED
    fi
  done
  say "$(printf '%-12s %8.3f s  %10.0f rows/s  %s' "$kind" "${SECS[$kind]}" \
         "$(awk -v a="$ROWS" -v b="${SECS[$kind]}" 'BEGIN { print a / b }')" "${CHECK[$kind]}")"
done
sub native -c "DROP SUBSCRIPTION bench_native" >/dev/null
sub le -c "SELECT logical_ext.drop_subscription('bench_le')" >/dev/null

echo
echo "Initial sync, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PGBIN/postgres" --version); $ROWS rows in" \
     "$TABLES tables, $WORKERS parallel copies each; order: $ORDER"
echo
echo "| rows | tables | native (s) | native rows/s | logical_ext (s) | logical_ext rows/s | logical_ext / native | check |"
echo "|---:|---:|---:|---:|---:|---:|---:|---|"
awk -v r="$ROWS" -v t="$TABLES" -v a="${SECS[native]}" -v b="${SECS[logical_ext]}" \
    -v c="$([ "${CHECK[native]}${CHECK[logical_ext]}" = okok ] && echo ok || echo FAILED)" \
    'BEGIN { printf "| %d | %d | %.3f | %.0f | %.3f | %.0f | **%.2f×** | %s |\n", r, t, a, r / a, b, r / b, a / b, c }'
[ "${CHECK[native]}${CHECK[logical_ext]}" = okok ] || exit 1
