#!/usr/bin/env bash
# Publisher throughput with a synchronous logical subscriber: pgbench TPS on a
# publisher whose synchronous_standby_names names a logical_ext subscription,
# against the same with a native subscription (CREATE SUBSCRIPTION), and with
# no synchronous standby, same machine, same run. Not part of CI; see
# docs/BENCHMARKS.md. Run as root (or as postgres):
#
#   scripts/bench_syncrep.sh                              # 15 s per run
#   BENCH_SECONDS=5 BENCH_MODES=on scripts/bench_syncrep.sh   # quick check
#
# Two throwaway clusters: a publisher with pgbench's tables, and a subscriber
# (shared_preload_libraries = logical_ext) whose database `native` has the
# native subscription `sr_native` and `le` the logical_ext one `sr_le`, each
# into its own copy of the tables. For every subscription option value
# (BENCH_SUB_SYNC) and every publisher synchronous_commit (BENCH_MODES), each
# kind in turn is the only enabled subscription and the publisher's only
# synchronous standby (by its application_name, the subscription's name)
# while pgbench runs. At the end both subscriptions catch up and their tables
# are compared with the publisher's (count and md5); the run fails if they
# differ.
#
# Environment:
#   BENCH_SECONDS           pgbench duration of each run (default 15)
#   BENCH_CLIENTS           pgbench clients (default 4, 2 threads)
#   BENCH_SCALE             pgbench scale (default 10)
#   BENCH_MODES             publisher synchronous_commit values (default "remote_apply on")
#   BENCH_SUB_SYNC          subscriptions' synchronous_commit option values (default "off on")
#   BENCH_ORDER             order of the kinds in each pair of runs (default "native logical_ext")
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
#   PGBIN                   PostgreSQL programs (default /usr/lib/postgresql/15/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

SECS=${BENCH_SECONDS:-15}
CLIENTS=${BENCH_CLIENTS:-4}
SCALE=${BENCH_SCALE:-10}
MODES=${BENCH_MODES:-remote_apply on}
SUB_SYNC=${BENCH_SUB_SYNC:-off on}
ORDER=${BENCH_ORDER:-native logical_ext}
TABLES="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history"

. scripts/bench_pair.sh
declare -A NAME=([native]=sr_native [logical_ext]=sr_le)

# pgbench_tps MODE: runs pgbench on the publisher with synchronous_commit =
# MODE and prints its TPS.
pgbench_tps() {
  PGOPTIONS="-c synchronous_commit=$1" "$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SECS" \
    -h "${CLUSTER_DIR[pub]}/sock" -p "${CLUSTER_PORT[pub]}" -U postgres postgres 2>&1 |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -n 1
}

# enable KIND / disable KIND
enable() {
  if [ "$1" = native ]; then sub native -c "ALTER SUBSCRIPTION sr_native ENABLE" >/dev/null
  else sub le -c "SELECT logical_ext.enable_subscription('sr_le')" >/dev/null; fi
}
disable() {
  if [ "$1" = native ]; then sub native -c "ALTER SUBSCRIPTION sr_native DISABLE" >/dev/null
  else sub le -c "SELECT logical_ext.disable_subscription('sr_le')" >/dev/null; fi
}

# set_sub_sync KIND VALUE: the subscription's synchronous_commit option.
set_sub_sync() {
  if [ "$1" = native ]; then sub native -c "ALTER SUBSCRIPTION sr_native SET (synchronous_commit = '$2')" >/dev/null
  else sub le -c "SELECT logical_ext.alter_subscription('sr_le', '{\"synchronous_commit\": \"$2\"}')" >/dev/null; fi
}

# standby NAME: the publisher's synchronous_standby_names (empty: none).
standby() {
  pub -c "ALTER SYSTEM SET synchronous_standby_names = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}

# wait_pub CONDITION WHAT: polls a boolean query on the publisher (60 s).
wait_pub() {
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(pub -Atc "SELECT ($1)")" = t ] && return 0
    sleep 0.1
  done
  echo "!! timed out waiting until $2" >&2
  return 1
}

# caught_up KIND: the subscription's slot confirmed the publisher's WAL.
caught_up() {
  local lsn
  lsn=$(pub -Atc "SELECT pg_current_wal_lsn()")
  wait_pub "(SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '${NAME[$1]}')" \
    "${NAME[$1]} confirmed $lsn"
}

digest() {
  local sql="SELECT count(*) || ' ' || md5(coalesce(string_agg(md5(t::text), '' ORDER BY t::text), '')) FROM $2 t"
  if [ "$1" = pub ]; then pub -Atc "$sql"; else sub "$1" -Atc "$sql"; fi
}

run_setup
say "starting a publisher and a subscriber"
# fsync stays on (a synchronous standby's cost is its flushes); no checkpoint
# or autovacuum lands in one run and not in another.
CONF=("autovacuum = off" "shared_buffers = '256MB'" "max_wal_size = '8GB'" "checkpoint_timeout = '1h'")
cluster_start pub "" "${CONF[@]}"
cluster_start sub logical_ext "${CONF[@]}"
RESULTS=$CLUSTER_BASE/results.tsv
: >"$RESULTS"
cluster_psql sub -c "CREATE DATABASE native" -c "CREATE DATABASE le" >/dev/null
sub le -c "CREATE EXTENSION logical_ext" >/dev/null
for target in pub native le; do
  if [ "$target" = pub ]; then c=pub db=postgres; else c=sub db=$target; fi
  "$PGBIN/pgbench" -i -q -s "$SCALE" -h "${CLUSTER_DIR[$c]}/sock" -p "${CLUSTER_PORT[$c]}" -U postgres "$db" \
    >/dev/null 2>&1
done
pub -c "CREATE PUBLICATION sr_pub FOR TABLE ${TABLES// /, }" >/dev/null
conninfo=$(cluster_conninfo pub)
sub native -c "CREATE SUBSCRIPTION sr_native CONNECTION '$conninfo' PUBLICATION sr_pub
               WITH (enabled = false, copy_data = false)" >/dev/null
sub le -c "SELECT logical_ext.create_subscription('sr_le', '$conninfo', ARRAY['sr_pub'],
               enabled => false, copy_data => false)" >/dev/null

say "no synchronous standby (subscriptions disabled)"
for mode in $MODES; do
  tps=$(pgbench_tps "$mode")
  say "$(printf '%-12s %-6s %-12s %10s tps' none - "$mode" "$tps")"
  printf 'none\t-\t%s\t%s\n' "$mode" "$tps" >>"$RESULTS"
done

for subsync in $SUB_SYNC; do
  for kind in $ORDER; do set_sub_sync "$kind" "$subsync"; done
  for mode in $MODES; do
    for kind in $ORDER; do
      enable "$kind"
      caught_up "$kind"
      standby "${NAME[$kind]}"
      wait_pub "EXISTS (SELECT FROM pg_stat_replication WHERE application_name = '${NAME[$kind]}'
                        AND sync_state = 'sync' AND state = 'streaming')" "${NAME[$kind]} is the synchronous standby"
      tps=$(pgbench_tps "$mode")
      say "$(printf '%-12s %-6s %-12s %10s tps' "$kind" "$subsync" "$mode" "$tps")"
      printf '%s\t%s\t%s\t%s\n' "$kind" "$subsync" "$mode" "$tps" >>"$RESULTS"
      caught_up "$kind"
      standby ""
      disable "$kind"
    done
  done
done

say "both subscriptions catch up; comparing tables"
STATUS=ok
for kind in native logical_ext; do enable "$kind"; done
for kind in native logical_ext; do caught_up "$kind"; done
for t in $TABLES; do
  want=$(digest pub "$t")
  for kind in native logical_ext; do
    got=$(digest "${DB[$kind]}" "$t")
    if [ "$want" != "$got" ]; then
      echo "!! $kind: $t differs: publisher $want, subscriber $got" >&2
      STATUS=FAILED
    fi
  done
done

echo
echo "Publisher TPS with a synchronous logical standby, $(date -u +%Y-%m-%d), $(nproc) cores," \
     "$("$PGBIN/postgres" --version); pgbench tpcb-like scale $SCALE, $CLIENTS clients, $SECS s per run"
echo
awk -F'\t' '
  $1 == "none" { none[$3] = $4; next }
  { tps[$1, $2, $3] = $4; if (!(($2, $3) in seen)) { seen[$2, $3] = 1; key[++k] = $2 SUBSEP $3 } }
  END {
    print "| subscription synchronous_commit | publisher synchronous_commit | no standby (tps) | native (tps) | logical_ext (tps) | logical_ext / native |"
    print "|---|---|---:|---:|---:|---:|"
    for (i = 1; i <= k; i++) {
      split(key[i], p, SUBSEP); a = tps["native", p[1], p[2]]; b = tps["logical_ext", p[1], p[2]]
      printf "| %s | %s | %.0f | %.0f | %.0f | **%.2f×** |\n", p[1], p[2], none[p[2]], a, b, (a > 0) ? b / a : 0
    }
  }' "$RESULTS"
echo
echo "tables equal on both subscribers: $STATUS"
[ "$STATUS" = ok ]
