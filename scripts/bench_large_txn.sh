#!/usr/bin/env bash
# One large transaction (issue 14): time until a single 2M-row INSERT
# transaction is visible on the subscriber, for a native subscription with
# streaming = off and = on, and a logical_ext subscription without and with
# its `streaming` option (applied while it arrives, `le_on`, or spooled and
# applied at the commit only, `le_spool`: option `streaming_eager` false);
# plus the peak memory (VmHWM) of the publisher's walsender and of the
# subscriber's apply worker, and the apply worker's CPU time. Not part of CI; see
# docs/BENCHMARKS.md ("One large transaction"). Run as root (or postgres):
#
#   scripts/bench_large_txn.sh                          # 2,000,000 rows
#   BENCH_LARGE_ROWS=200000 scripts/bench_large_txn.sh  # quick check
#
# Two throwaway clusters; each configuration runs alone, in turn, with its
# own table, publication and subscription (live, caught up before the
# transaction starts). For each: t_pub = the publisher's transaction from
# BEGIN until its COMMIT returned; t_vis = from the same BEGIN until the
# subscription's origin passed the transaction (its local commit: the rows
# are visible); after_commit = t_vis - t_pub. Ratios: t_vis / t_pub (the
# issue's target is 1.5) and each t_vis against native streaming = off.
# The subscriber's rows are compared with the publisher's (count and md5).
#
# Environment:
#   BENCH_LARGE_ROWS      rows of the transaction (default 2000000)
#   BENCH_CONFIGS         subset/order of: native_off native_on le_off le_on le_spool
#   BENCH_TIMEOUT         seconds one configuration may take (default 1800)
#   PGBIN                 PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

ROWS=${BENCH_LARGE_ROWS:-2000000}
CONFIGS=${BENCH_CONFIGS:-native_off native_on le_off le_on}
TIMEOUT=${BENCH_TIMEOUT:-1800}

say() { echo "== $*" >&2; }
pub() { cluster_psql pub "$@"; }
sub() { local db=$1; shift; PGOPTIONS="-c client_min_messages=warning" cluster_psql sub -d "$db" "$@"; }
now() { date +%s.%N; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo "?"; }
hwm_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

run_setup
say "starting the clusters"
cluster_start pub "" "logical_decoding_work_mem = '64MB'"
cluster_start sub "logical_ext" "max_logical_replication_workers = 8"
sub postgres -c "CREATE EXTENSION logical_ext" >/dev/null
RESULTS=$(mktemp)
DDL="CREATE TABLE IF NOT EXISTS big (id bigint PRIMARY KEY, i int, t text);"

# origin_of CONFIG: the replication origin of the configuration's subscription.
origin_of() {
  case $1 in
    native_*) sub "$1" -Atc "SELECT 'pg_' || oid FROM pg_subscription WHERE subname = 'sub_$1'" ;;
    *) sub postgres -Atc "SELECT 'logical_ext_' || id FROM logical_ext.subscription WHERE name = 'sub_$1'" ;;
  esac
}

worker_pid() {
  case $1 in
    native_*) sub "$1" -Atc "SELECT pid FROM pg_stat_subscription WHERE subname = 'sub_$1' AND relid IS NULL" ;;
    *) sub postgres -Atc "SELECT worker_pid FROM logical_ext.subscription_status WHERE name = 'sub_$1'" ;;
  esac
}

walsender_pid() { pub -Atc "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'sub_$1' AND active"; }

# wait_origin ORIGIN LSN: until the origin's remote_lsn reaches LSN.
wait_origin() {
  sub postgres <<SQL
DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '$TIMEOUT seconds';
BEGIN
  WHILE coalesce((SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = '$1'),
                 '0/0') < '$2'::pg_lsn LOOP
    IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'origin $1 did not reach % in time', '$2'; END IF;
    PERFORM pg_sleep(0.005);
  END LOOP;
END \$\$;
SQL
}

run_config() {
  local cfg=$1 conninfo origin wpid spid lsn t0 t1 t2 tpub tvis want got status
  conninfo=$(cluster_conninfo pub)
  pub -c "DROP TABLE IF EXISTS big; $DDL DROP PUBLICATION IF EXISTS p; CREATE PUBLICATION p FOR TABLE big;" >/dev/null
  case $cfg in
    native_*)
      sub postgres -c "DROP DATABASE IF EXISTS $cfg" -c "CREATE DATABASE $cfg" >/dev/null
      sub "$cfg" -c "$DDL" >/dev/null
      sub "$cfg" -c "CREATE SUBSCRIPTION sub_$cfg CONNECTION '$conninfo' PUBLICATION p
                     WITH (copy_data = false, slot_name = 'sub_$cfg', streaming = ${cfg#native_})" >/dev/null
      ;;
    *)
      sub postgres -c "DROP TABLE IF EXISTS big; $DDL" >/dev/null
      local opts='"streaming": false'
      [ "$cfg" = le_on ] && opts='"streaming": true'
      [ "$cfg" = le_spool ] && opts='"streaming": true, "streaming_eager": false'
      sub postgres -c "SELECT logical_ext.create_subscription('sub_$cfg', '$conninfo', ARRAY['p'],
                         copy_data => false, options => '{$opts}')" >/dev/null
      ;;
  esac
  # Caught up and live: a first small transaction has arrived.
  lsn=$(pub -Atc "INSERT INTO big VALUES (0, 0, 'warm-up') RETURNING pg_current_wal_insert_lsn()")
  origin=$(origin_of "$cfg")
  wait_origin "$origin" "$lsn"
  wpid=$(worker_pid "$cfg") spid=$(walsender_pid "$cfg")
  local cpu0 cpu1 wcpu0 wcpu1
  cpu0=$(cpu_s "$wpid") wcpu0=$(cpu_s "$spid")
  sync
  say "$cfg: one transaction of $ROWS rows (apply worker $wpid, walsender $spid)"
  t0=$(now)
  # Past the warm-up's commit end (which is where WAL insertion stands now).
  lsn=$(pub -Atc "SELECT pg_current_wal_insert_lsn() + 1")
  wait_origin "$origin" "$lsn" &
  local poller=$!
  pub -c "BEGIN; INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $ROWS) g; COMMIT;" >/dev/null
  t1=$(now)
  wait $poller
  t2=$(now)
  cpu1=$(cpu_s "$wpid") wcpu1=$(cpu_s "$spid")
  local cpu wcpu
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
  wcpu=$(awk -v a="$wcpu0" -v b="$wcpu1" 'BEGIN { printf "%.2f", b - a }')
  tpub=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  tvis=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
  local db=postgres
  case $cfg in native_*) db=$cfg ;; esac
  want=$(pub -Atc "SELECT count(*) || ' ' || md5(string_agg(md5(b::text), '' ORDER BY id)) FROM big b")
  got=$(sub "$db" -Atc "SELECT count(*) || ' ' || md5(string_agg(md5(b::text), '' ORDER BY id)) FROM big b")
  status=ok
  [ "$want" = "$got" ] || { status=FAILED; echo "!! $cfg: publisher $want, subscriber $got" >&2; }
  local whwm shwm
  whwm=$(hwm_mib "$spid") shwm=$(hwm_mib "$wpid")
  local streamed spilled
  read -r streamed spilled < <(pub -Atc "SELECT stream_txns || ' ' || spill_txns FROM pg_stat_replication_slots
                                         WHERE slot_name = 'sub_$cfg'" | tr '|' ' ')
  say "$(printf '%-10s t_pub %8.3f s  t_vis %8.3f s  after commit %8.3f s  walsender %s MiB  apply %s MiB  apply CPU %s s  walsender CPU %s s  stream_txns %s spill_txns %s  %s' \
    "$cfg" "$tpub" "$tvis" "$(awk -v a="$tpub" -v b="$tvis" 'BEGIN { print b - a }')" "$whwm" "$shwm" "$cpu" "$wcpu" "$streamed" "$spilled" "$status")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$tpub" "$tvis" "$whwm" "$shwm" "$streamed" "$spilled" "$status" "$cpu" "$wcpu" >>"$RESULTS"
  case $cfg in
    native_*) sub "$cfg" -c "DROP SUBSCRIPTION sub_$cfg" >/dev/null ;;
    *) sub postgres -c "SELECT logical_ext.drop_subscription('sub_$cfg')" >/dev/null ;;
  esac
}

for cfg in $CONFIGS; do run_config "$cfg"; done

awk -F'\t' -v rows="$ROWS" '
  # By run, not by configuration: a configuration may run more than once.
  { n++; c[n] = $1; tp[n] = $2; tv[n] = $3; w[n] = $4; s[n] = $5; st[n] = $6; sp[n] = $7; ok[n] = $8; cpu[n] = $9; wcpu[n] = $10
    if ($1 == "native_off" && !base) base = $3 }
  END {
    printf "\nOne transaction of %d rows: time to visible on the subscriber\n\n", rows
    print "| configuration | publisher BEGIN→COMMIT (s) | BEGIN→visible on subscriber (s) | after the commit (s) | visible / publisher | vs native off | walsender VmHWM (MiB) | apply worker VmHWM (MiB) | apply worker CPU (s) | walsender CPU (s) | stream_txns / spill_txns | check |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for (k = 1; k <= n; k++) {
      printf "| %s | %.3f | %.3f | %.3f | **%.2f×** | %s | %s | %s | %s | %s | %s / %s | %s |\n", c[k], tp[k], tv[k], tv[k] - tp[k],
        tv[k] / tp[k], base ? sprintf("%.2f×", tv[k] / base) : "-", w[k], s[k], cpu[k], wcpu[k], st[k], sp[k], ok[k]
    }
  }' "$RESULTS"
if grep -q FAILED "$RESULTS"; then exit 1; fi
