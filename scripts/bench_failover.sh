#!/usr/bin/env bash
# Publisher failover, native PostgreSQL 15 against logical_ext's failover
# slots: rows lost, duplicated or diverging on a logical subscriber when the
# publisher's physical standby is promoted mid-load, and the time from the
# promotion to the subscriber applying the first row written on the new
# primary. Not part of CI; the figures are in docs/FAILOVER.md and
# docs/BENCHMARKS.md. Run as root (or as postgres):
#
#   scripts/bench_failover.sh                          # native (operator delays 0 and 5 s) + logical_ext
#   BENCH_KINDS=native BENCH_OPERATOR_DELAYS=2 scripts/bench_failover.sh
#
# Each scenario uses three fresh clusters: a publisher `pub` (table t, a
# publication), its streaming standby `stby` (pg_basebackup -R through the
# physical slot `stby_slot`, hot_standby_feedback = on) and a subscriber
# `sub`. A writer inserts numbered rows, one transaction per row, through
# `host=127.0.0.1,127.0.0.1 port=PUB,STBY target_session_attrs=read-write`,
# so it follows the promotion by itself (a failed batch is retried with the
# same ids and ON CONFLICT DO NOTHING). After BENCH_BEFORE seconds the
# publisher is stopped (`pg_ctl stop -m immediate`) and the standby promoted
# (`pg_ctl promote`); the writer goes on for BENCH_AFTER seconds, then stops,
# the subscriber catches up (or is seen stalled) and its rows are compared
# with the new primary's.
#
#   native       CREATE SUBSCRIPTION to the publisher. The operator's
#                procedure after the promotion, BENCH_OPERATOR_DELAY seconds
#                later (reaction time; 0 = scripted at once): on the new
#                primary pg_create_logical_replication_slot('s', 'pgoutput'),
#                on the subscriber ALTER SUBSCRIPTION s CONNECTION '<new
#                primary>' and ENABLE. PostgreSQL 15 does not copy logical
#                slots to standbys, so the slot starts at the new primary's
#                current position: what was written before is never sent.
#   logical_ext  logical_ext.create_subscription with the two-host conninfo
#                and the option failover (the worker marks its slot); on the
#                publisher logical_ext.standby_slot_names = 'stby_slot'; on the standby
#                logical_ext.synchronize_slots = on. No manual step after the
#                promotion. Needs a logical_ext build with failover slots
#                (issue 16); without one the run says so and is skipped.
#
# The subscriber's table has no primary key, so a row applied twice is
# counted rather than stopping the apply. Figures per scenario:
#   rows      rows on the new primary at the end
#   lost      ids on the new primary missing on the subscriber
#   dup       rows on the subscriber beyond one per id
#   extra     ids on the subscriber that the new primary does not have (sent
#             by the old primary before its standby had them)
#   differ    ids on both whose row differs
#   first_ms  promotion -> first row written on the new primary applied on
#             the subscriber (includes the operator delay for native)
#
# Environment:
#   BENCH_KINDS             scenarios (default "native logical_ext")
#   BENCH_OPERATOR_DELAYS   native: operator delays in seconds (default "0 5")
#   BENCH_BEFORE            seconds of load before the failover (default 5)
#   BENCH_AFTER             seconds of load after the promotion (default 8)
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
#   PGBIN                   PostgreSQL programs (default /usr/lib/postgresql/15/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

KINDS=${BENCH_KINDS:-native logical_ext}
DELAYS=${BENCH_OPERATOR_DELAYS:-0 5}
BEFORE=${BENCH_BEFORE:-5}
AFTER=${BENCH_AFTER:-8}

say() { echo "== $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# q CLUSTER [psql arguments...]: psql on a cluster, unaligned tuples only.
q() { local c=$1; shift; PGOPTIONS="-c client_min_messages=warning" cluster_psql "$c" -At "$@"; }

# wait_for CLUSTER CONDITION WHAT [SECONDS]: polls a boolean query (default 60 s).
wait_for() {
  local deadline=$(($(date +%s) + ${4:-60}))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ "$(q "$1" -c "SELECT ($2)" 2>/dev/null)" = t ] && return 0
    sleep 0.05
  done
  say "timed out waiting until $3"
  return 1
}

# standby_start NAME PRIMARY EXTRA_CONF_LINE...: a streaming standby of PRIMARY
# through the physical slot stby_slot, registered like cluster_start's.
standby_start() {
  local name=$1 primary=$2 dir port line
  shift 2
  dir=$CLUSTER_BASE/$name
  as_pg mkdir -p "$dir/sock"
  as_pg "$PGBIN/pg_basebackup" -D "$dir/data" -h "${CLUSTER_DIR[$primary]}/sock" -p "${CLUSTER_PORT[$primary]}" \
    -U postgres -R -C -S stby_slot -X stream -c fast --no-sync >"$dir/basebackup.log" 2>&1 ||
    { cat "$dir/basebackup.log" >&2; return 1; }
  port=$(free_port)
  {
    echo "# standby, added by scripts/bench_failover.sh"
    echo "port = $port"
    echo "unix_socket_directories = '$dir/sock'"
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  CLUSTER_DIR[$name]=$dir
  CLUSTER_PORT[$name]=$port
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
  as_pg "$PGBIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -m "${2:-fast}" -w -t 60 stop >/dev/null 2>&1 || true
}

# writer CONNINFO IDFILE STOPFILE: inserts numbered rows, 20 transactions per
# psql run, until STOPFILE exists; the last id written goes to IDFILE.
writer() {
  local conninfo=$1 idfile=$2 stopfile=$3 next=1 i args
  while [ ! -e "$stopfile" ]; do
    args=()
    for ((i = next; i < next + 20; i++)); do
      args+=(-c "INSERT INTO t (id) VALUES ($i) ON CONFLICT DO NOTHING")
    done
    if "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$conninfo" "${args[@]}" >/dev/null 2>&1; then
      next=$((next + 20))
      echo $((next - 1)) >"$idfile"
    else
      sleep 0.05 # the failover: the same ids again once a read-write node answers
    fi
  done
}

# scenario KIND DELAY: appends one result line (tab separated) to $RESULTS.
scenario() {
  local kind=$1 delay=$2 preload="" tag pubc stbyc subc conninfo both slot_sql t0 t1 first_ms
  local work writer_pid
  tag="${kind:0:2}$delay"
  pubc="pub$tag" stbyc="stby$tag" subc="sub$tag"
  [ "$kind" = logical_ext ] && preload=logical_ext
  local conf=("hot_standby_feedback = on" "wal_receiver_status_interval = '1s'" "wal_retrieve_retry_interval = '1s'")
  cluster_start "$pubc" "$preload" "${conf[@]}"
  q "$pubc" -c "CREATE TABLE t (id bigint PRIMARY KEY,
                  node int NOT NULL DEFAULT current_setting('port')::int,
                  at timestamptz NOT NULL DEFAULT clock_timestamp())" \
            -c "CREATE PUBLICATION p FOR TABLE t" >/dev/null
  if [ "$kind" = logical_ext ]; then
    q "$pubc" -c "CREATE EXTENSION logical_ext" >/dev/null
    if [ "$(q "$pubc" -c "SELECT to_regprocedure('logical_ext.set_slot_failover(name, boolean)') IS NOT NULL")" != t ]; then
      say "logical_ext: this build has no failover slots (logical_ext.set_slot_failover): skipped"
      cluster_stop "$pubc" immediate
      return 0
    fi
    standby_start "$stbyc" "$pubc" "logical_ext.synchronize_slots = on" "logical_ext.slot_sync_database = 'postgres'"
    # After the base backup: the standby, once promoted, has no standby of
    # its own to wait for.
    q "$pubc" -c "ALTER SYSTEM SET logical_ext.standby_slot_names = 'stby_slot'" -c "SELECT pg_reload_conf()" >/dev/null
  else
    standby_start "$stbyc" "$pubc"
  fi
  cluster_start "$subc" "$preload" "${conf[@]}"
  q "$subc" -c "CREATE TABLE t (id bigint, node int, at timestamptz)" \
            -c "CREATE TABLE np_rows (id bigint, node int, at timestamptz)" >/dev/null
  conninfo=$(cluster_conninfo "$pubc")
  both="host=127.0.0.1,127.0.0.1 port=${CLUSTER_PORT[$pubc]},${CLUSTER_PORT[$stbyc]} user=postgres dbname=postgres target_session_attrs=read-write"
  if [ "$kind" = native ]; then
    q "$subc" -c "CREATE SUBSCRIPTION s CONNECTION '$conninfo' PUBLICATION p" >/dev/null
  else
    q "$subc" -c "CREATE EXTENSION logical_ext" \
              -c "SELECT logical_ext.create_subscription('s', '$both', ARRAY['p'], options => '{\"failover\": true}')" >/dev/null
    wait_for "$pubc" "EXISTS (SELECT FROM logical_ext.failover_slot WHERE slot_name = 's')" "the worker marks its slot s for failover"
  fi
  wait_for "$pubc" "EXISTS (SELECT FROM pg_stat_replication WHERE application_name = 's' AND state = 'streaming')" \
    "the subscription streams"

  work=$CLUSTER_BASE/writer$tag
  as_pg mkdir -p "$work"
  writer "$both" "$work/last" "$work/stop" &
  writer_pid=$!
  sleep "$BEFORE" # load before the failover (a duration, not a wait for a condition)
  if [ "$kind" = logical_ext ]; then
    wait_for "$stbyc" "(SELECT bool_and(safe) FROM logical_ext.failover_readiness() WHERE slot_name = 's')" \
      "the standby's copy of s is safe" || true
  fi

  cluster_stop "$pubc" immediate
  t0=$(now_ms)
  as_pg "$PGBIN/pg_ctl" -D "${CLUSTER_DIR[$stbyc]}/data" -w -t 60 promote >/dev/null
  if [ "$kind" = native ]; then
    sleep "$delay" # the operator's reaction time
    q "$stbyc" -c "SELECT pg_create_logical_replication_slot('s', 'pgoutput')" >/dev/null
    q "$subc" -c "ALTER SUBSCRIPTION s CONNECTION '$(cluster_conninfo "$stbyc")'" -c "ALTER SUBSCRIPTION s ENABLE" >/dev/null
  fi
  first_ms=-
  if wait_for "$subc" "EXISTS (SELECT FROM t WHERE node = ${CLUSTER_PORT[$stbyc]})" \
    "the subscriber applies a row of the new primary" $((AFTER + delay + 30)); then
    t1=$(now_ms)
    first_ms=$((t1 - t0))
  fi
  local left=$((AFTER - ($(now_ms) - t0) / 1000))
  [ "$left" -gt 0 ] && sleep "$left" # the rest of the load after the promotion
  touch "$work/stop"
  wait "$writer_pid" || true

  local status=caught_up lsn
  lsn=$(q "$stbyc" -c "SELECT pg_current_wal_lsn()")
  wait_for "$stbyc" "COALESCE((SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 's'), false)" \
    "the subscriber confirms $lsn on the new primary" 60 || status=stalled
  if [ "$status" = stalled ]; then
    if [ "$kind" = logical_ext ]; then
      say "subscription: $(q "$subc" -c "SELECT format('state=%s error=%s', state, last_error) FROM logical_ext.subscription_status")"
    fi
    say "--- subscriber log"; tail -n 15 "${CLUSTER_DIR[$subc]}/server.log" >&2
    say "--- new primary log"; tail -n 15 "${CLUSTER_DIR[$stbyc]}/server.log" >&2
  fi
  q "$stbyc" -c "COPY t TO STDOUT" | q "$subc" -c "COPY np_rows FROM STDIN" >/dev/null
  local figures
  figures=$(q "$subc" -F $'\t' -c "
    SELECT (SELECT count(*) FROM np_rows),
           (SELECT count(*) FROM np_rows n WHERE NOT EXISTS (SELECT FROM t WHERE t.id = n.id)),
           (SELECT count(*) - count(DISTINCT id) FROM t),
           (SELECT count(DISTINCT id) FROM t WHERE NOT EXISTS (SELECT FROM np_rows n WHERE n.id = t.id)),
           (SELECT count(DISTINCT t.id) FROM t JOIN np_rows n USING (id) WHERE (t.node, t.at) IS DISTINCT FROM (n.node, n.at)),
           coalesce((SELECT min(id) FROM np_rows n WHERE NOT EXISTS (SELECT FROM t WHERE t.id = n.id))::text, '-'),
           coalesce((SELECT max(id) FROM np_rows n WHERE NOT EXISTS (SELECT FROM t WHERE t.id = n.id))::text, '-')")
  local label=$kind
  [ "$kind" = native ] && label="native (operator ${delay}s)"
  printf '%s\t%s\t%s\t%s\n' "$label" "$figures" "$first_ms" "$status" >>"$RESULTS"
  cluster_stop "$subc"
  cluster_stop "$stbyc"
}

run_setup
RESULTS=$(mktemp /tmp/bench_failover.XXXXXX)
for kind in $KINDS; do
  if [ "$kind" = native ]; then
    for d in $DELAYS; do
      say "native PostgreSQL 15, operator delay ${d}s"
      scenario native "$d"
    done
  else
    say "logical_ext failover slots"
    scenario logical_ext 0
  fi
done

echo
printf '%-26s %8s %8s %6s %6s %7s %16s %10s %s\n' scenario rows lost dup extra differ "lost ids" first_ms end
while IFS=$'\t' read -r label rows lost dup extra differ lo hi first status; do
  range=-
  [ "$lo" != - ] && range="$lo..$hi"
  printf '%-26s %8s %8s %6s %6s %7s %16s %10s %s\n' "$label" "$rows" "$lost" "$dup" "$extra" "$differ" "$range" "$first" "$status"
done <"$RESULTS"
rm -f "$RESULTS"
