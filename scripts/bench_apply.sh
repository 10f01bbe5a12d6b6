#!/usr/bin/env bash
# Apply catch-up throughput of a logical_ext subscription against a native
# PostgreSQL subscription (CREATE SUBSCRIPTION, pgoutput), same machine, same
# run, same WAL. Not part of CI; see docs/BENCHMARKS.md. Run as root (or as
# postgres):
#
#   scripts/bench_apply.sh                                   # 1M rows + pgbench scale 10 for 30 s
#   BENCH_ROWS=100000 BENCH_PGBENCH_SECONDS=10 scripts/bench_apply.sh   # quick check
#
# Two throwaway clusters: a publisher, and a subscriber (shared_preload_libraries
# = logical_ext) whose database `native` holds the native subscription,
# database `le` the logical_ext one and, when pglogical is installed,
# database `pgl` a pglogical 2 subscription, each with its own slot on the
# publisher.
# For each workload both subscriptions exist (slots created) but are disabled
# while the publisher is loaded; then each is enabled in turn, alone, and timed
# until it has applied the publisher's last transaction; then the subscriber's
# tables are compared with the publisher's (count and md5), and the run fails
# if they differ.
#
# Environment:
#   BENCH_ROWS              rows of the bulk workload (default 1000000)
#   BENCH_TXNS              its transactions (default 10)
#   BENCH_PGBENCH_SCALE     pgbench scale (default 10)
#   BENCH_PGBENCH_SECONDS   pgbench duration (default 30)
#   BENCH_PGBENCH_CLIENTS   pgbench clients (default 4, 2 threads)
#   BENCH_WORKLOADS         subset of: bulk pgbench single savepoints (default "bulk pgbench")
#   BENCH_SINGLE_ROWS       rows of the one-transaction workload `single` (default 2000000)
#   BENCH_SAVEPOINTS        subtransactions (one row each) of the workload `savepoints` (default 100000)
#   BENCH_PERF=DIR          record `perf record -g` of each apply worker and its walsender during
#                           each catch-up and write the top symbols to DIR (needs perf, root)
#   BENCH_PERF_ARGS         perf record's sampling options (default "-g"; "-F 1999 --call-graph dwarf"
#                           unwinds PostgreSQL and logical_ext.so, which keep no frame pointers)
#   BENCH_PGLOGICAL         also time a pglogical subscription: auto (default: when pglogical is
#                           installed), on, off
#   BENCH_ORDER             order in which the subscriptions catch up (default "native logical_ext",
#                           then pglogical when it runs)
#   BENCH_TIMEOUT           seconds one catch-up may take before the run fails (default 1800)
#   BENCH_WIRE_CHANGES      row changes sampled for the bytes per row on the wire (default 20000;
#                           decoding stops at a transaction's end, so bulk samples its first one)
#   BENCH_LE_OPTIONS        options (JSON) of the logical_ext subscriptions (default {}; e.g.
#                           '{"group_commit": false}' to time without group commit)
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

ROWS=${BENCH_ROWS:-1000000}
TXNS=${BENCH_TXNS:-10}
SCALE=${BENCH_PGBENCH_SCALE:-10}
SECONDS_PGB=${BENCH_PGBENCH_SECONDS:-30}
CLIENTS=${BENCH_PGBENCH_CLIENTS:-4}
WORKLOADS=${BENCH_WORKLOADS:-bulk pgbench}
SINGLE_ROWS=${BENCH_SINGLE_ROWS:-2000000}
SAVEPOINTS=${BENCH_SAVEPOINTS:-100000}
PERF_DIR=${BENCH_PERF:-}
read -r -a PERF_ARGS <<<"${BENCH_PERF_ARGS:--g}"
TIMEOUT=${BENCH_TIMEOUT:-1800}
WIRE_CHANGES=${BENCH_WIRE_CHANGES:-20000}
LE_OPTIONS=${BENCH_LE_OPTIONS:-\{\}}
[ "$ROWS" -ge "$TXNS" ] || { echo "BENCH_ROWS must be >= BENCH_TXNS" >&2; exit 2; }

. scripts/bench_pair.sh
PGLOGICAL=${BENCH_PGLOGICAL:-auto}
if [ "$PGLOGICAL" = auto ]; then
  if [ -f "$("$PGBIN/pg_config" --pkglibdir)/pglogical.so" ]; then PGLOGICAL=on; else PGLOGICAL=off; fi
fi
if [ "$PGLOGICAL" = on ]; then
  ORDER=${BENCH_ORDER:-native logical_ext pglogical}
  KINDS="native logical_ext pglogical"
  DB[pglogical]=pgl
else
  ORDER=${BENCH_ORDER:-native logical_ext}
  KINDS="native logical_ext"
fi
BULK_DDL="CREATE TABLE bench (id bigint PRIMARY KEY, i int, f float8, ts timestamptz,
                              n numeric, t text, b bool, j jsonb);"

# create_subscriptions NAME PUBLICATION: every kind, disabled, slots created now.
# pglogical replicates the tables of its replication sets (the caller adds
# the publication's tables with pgl_add_tables); its slot is created by its
# first start, so it is started, waited for and disabled again.
create_subscriptions() {
  local name=$1 publication=$2 conninfo
  conninfo=$(cluster_conninfo pub)
  sub native -c "CREATE SUBSCRIPTION ${name}_native CONNECTION '$conninfo' PUBLICATION $publication
                 WITH (enabled = false, copy_data = false, slot_name = '${name}_native')" >/dev/null
  sub le -c "SELECT logical_ext.create_subscription('${name}_le', '$conninfo', ARRAY['$publication'],
                 enabled => false, copy_data => false, options => '$LE_OPTIONS')" >/dev/null
  if [ "$PGLOGICAL" = on ]; then
    sub pgl -c "SELECT pglogical.create_subscription('${name}_pgl', '$conninfo dbname=postgres',
                  ARRAY['default', 'default_insert_only'], synchronize_structure => false,
                  synchronize_data => false)" >/dev/null
    sub pgl <<SQL
DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '120 seconds';
BEGIN
  WHILE (SELECT status FROM pglogical.show_subscription_status('${name}_pgl')) <> 'replicating' LOOP
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'pglogical subscription ${name}_pgl is not replicating after 120 s';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END \$\$;
SQL
    sub pgl -c "SELECT pglogical.alter_subscription_disable('${name}_pgl', true)" >/dev/null
    wait_no_walsender "$(pgl_slot "$name")"
  fi
}

# pgl_slot NAME: the slot (and replication origin) of pglogical subscription NAME_pgl.
pgl_slot() {
  sub pgl -Atc "SELECT slot_name FROM pglogical.show_subscription_status('${1}_pgl')"
}

# pgl_add_tables TABLE...: adds tables to pglogical's replication sets on the
# publisher (tables without a primary key to the insert-only set).
pgl_add_tables() {
  local t set
  [ "$PGLOGICAL" = on ] || return 0
  for t in "$@"; do
    set=default
    if [ -z "$(pub -Atc "SELECT 1 FROM pg_index WHERE indrelid = '$t'::regclass AND indisprimary")" ]; then
      set=default_insert_only
    fi
    pub -c "SELECT pglogical.replication_set_add_table('$set', '$t')" >/dev/null
  done
}

# wait_no_walsender SLOT: the slot's walsender has exited (a disabled
# subscription's backlog then accumulates untouched).
wait_no_walsender() {
  local i
  for ((i = 0; i < 1200; i++)); do
    [ -z "$(pub -Atc "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1'")" ] && return 0
    sleep 0.05
  done
  echo "!! slot $1 is still in use 60 s after its subscription was disabled" >&2
  return 1
}

drop_subscriptions() {
  local name=$1
  sub native -c "DROP SUBSCRIPTION ${name}_native" >/dev/null
  sub le -c "SELECT logical_ext.drop_subscription('${name}_le')" >/dev/null
  if [ "$PGLOGICAL" = on ]; then sub pgl -c "SELECT pglogical.drop_subscription('${name}_pgl')" >/dev/null; fi
}

# A last transaction on the publisher that changes one published row; prints
# an LSN taken inside it, before its commit: a subscription has applied
# everything up to and including this transaction once its origin's
# remote_lsn (the end of the last applied commit) is at least that LSN.
marker() {
  pub -At <<SQL | tail -n 1
BEGIN;
$1;
SELECT pg_current_wal_insert_lsn();
COMMIT;
SQL
}

# catch_up KIND NAME TARGET_LSN: enables the subscription and prints the
# seconds until its origin reached TARGET_LSN. The origin is polled every
# 10 ms from the `postgres` database: a session in the subscription's own
# database that stays in one statement would hold back the xmin horizon there
# and stop HOT pruning of the tables being applied to (pgbench's 10 branch
# rows then grow chains of dead versions and the apply slows down
# quadratically, for native and logical_ext alike).
catch_up() {
  local kind=$1 name=$2 target=$3 db origin enable t0 t1 worker slot wpid spid
  db=${DB[$kind]}
  if [ "$kind" = native ]; then
    origin=$(sub "$db" -Atc "SELECT 'pg_' || oid FROM pg_subscription WHERE subname = '${name}_native'")
    enable="ALTER SUBSCRIPTION ${name}_native ENABLE"
    worker="SELECT pid FROM pg_stat_subscription WHERE subname = '${name}_native' AND relid IS NULL"
    slot=${name}_native
  elif [ "$kind" = pglogical ]; then
    slot=$(pgl_slot "$name")
    origin=$slot
    enable="SELECT pglogical.alter_subscription_enable('${name}_pgl', true)"
    worker="SELECT pid FROM pg_stat_activity WHERE datname = 'pgl'
              AND application_name LIKE 'pglogical apply %' ORDER BY backend_start DESC LIMIT 1"
  else
    origin=$(sub "$db" -Atc "SELECT 'logical_ext_' || id FROM logical_ext.subscription WHERE name = '${name}_le'")
    enable="SELECT logical_ext.enable_subscription('${name}_le')"
    worker="SELECT worker_pid FROM logical_ext.subscription_status WHERE name = '${name}_le'"
    slot=${name}_le
  fi
  t0=$(date +%s.%N)
  sub "$db" -c "$enable" >/dev/null
  if [ -n "$PERF_DIR" ]; then perf_start "$kind" "$name" "$db" "$worker" "$slot"; fi
  sub postgres <<SQL
DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '$TIMEOUT seconds';
BEGIN
  WHILE coalesce((SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = '$origin'),
                 '0/0') < '$target'::pg_lsn LOOP
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION '$kind subscription $name did not reach % within $TIMEOUT s', '$target';
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
END \$\$;
SQL
  t1=$(date +%s.%N)
  if [ -n "$PERF_DIR" ]; then perf_stop; fi
  # CPU seconds the apply worker and its walsender used since they started
  # (both start at the ENABLE): less sensitive to other load on the machine
  # than the elapsed time; and their peak resident sizes (VmHWM, shared
  # buffers they touched included).
  wpid=$(sub "$db" -Atc "$worker")
  spid=$(pub -Atc "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'")
  printf '%s\t%s\t%s\t%s\n' "$(cpu_seconds "$wpid")" "$(cpu_seconds "$spid")" \
    "$(peak_mib "$wpid")" "$(peak_mib "$spid")" >"$CLUSTER_BASE/cpu.tsv"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# cpu_seconds PID: user + system CPU time of a process (0 if unknown).
cpu_seconds() {
  local ticks
  ticks=$(getconf CLK_TCK)
  if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
    sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$ticks" '{ printf "%.2f\n", ($12 + $13) / hz }'
  else
    echo 0
  fi
}

# peak_mib PID: peak resident size (VmHWM) of a process in MiB (0 if unknown).
peak_mib() {
  if [ -n "$1" ] && [ -r "/proc/$1/status" ]; then
    awk '/^VmHWM:/ { printf "%.0f\n", $2 / 1024; found = 1 } END { if (!found) print 0 }' "/proc/$1/status"
  else
    echo 0
  fi
}

# perf_start KIND NAME DB WORKER_PID_SQL SLOT: once the apply worker and its
# walsender run, record both (call graphs) until perf_stop. Profiling slows
# both sides: figures of a profiled run are not comparable with others.
PERF_PIDS=()
perf_start() {
  local kind=$1 name=$2 db=$3 sql=$4 slot=$5 wpid="" spid="" i
  for ((i = 0; i < 500; i++)); do
    wpid=$(sub "$db" -Atc "$sql" 2>/dev/null || true)
    spid=$(pub -Atc "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'" 2>/dev/null || true)
    if [ -n "$wpid" ] && [ -n "$spid" ]; then break; fi
    sleep 0.01
  done
  PERF_PIDS=()
  if [ -n "$wpid" ]; then
    perf record -q "${PERF_ARGS[@]}" -p "$wpid" -o "$PERF_DIR/$name.$kind.worker.data" >/dev/null 2>&1 &
    PERF_PIDS+=($!)
  fi
  if [ -n "$spid" ]; then
    perf record -q "${PERF_ARGS[@]}" -p "$spid" -o "$PERF_DIR/$name.$kind.walsender.data" >/dev/null 2>&1 &
    PERF_PIDS+=($!)
  fi
}

perf_stop() {
  local p
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PERF_PIDS=()
}

# perf_summaries: the top symbols (self time) of every recorded profile.
perf_summaries() {
  local f
  for f in "$PERF_DIR"/*.data; do
    [ -f "$f" ] || continue
    perf report -i "$f" --stdio --no-children --sort symbol,dso 2>/dev/null |
      grep -E '^ +[0-9]+\.[0-9]+%' | head -n 40 >"${f%.data}.txt" || true
  done
  say "profiles: $PERF_DIR/*.txt"
}

# digest DB QUERY ORDER: "count md5" of the rows of QUERY (run on the
# publisher when DB is "pub").
digest() {
  local sql="SELECT count(*) || ' ' || md5(coalesce(string_agg(md5(t::text), '' ORDER BY $3), ''))
             FROM ($2) t"
  if [ "$1" = pub ]; then pub -Atc "$sql"; else sub "$1" -Atc "$sql"; fi
}

# verify KIND QUERY ORDER...: the subscriber's rows equal the publisher's.
verify() {
  local kind=$1 want got; shift
  while [ $# -ge 2 ]; do
    want=$(digest pub "$1" "$2")
    got=$(digest "${DB[$kind]}" "$1" "$2")
    if [ "$want" != "$got" ]; then
      echo "!! $kind: '$1' differs: publisher $want, subscriber $got" >&2
      STATUS=FAILED
    fi
    shift 2
  done
}

# wire_bytes NAME PUBLICATION: bytes per row change on the wire for the start
# of the backlog (up to BENCH_WIRE_CHANGES changes; both slots are peeked, not
# consumed): pgoutput's, and logical_ext's full and compact documents (all
# messages, BEGIN/COMMIT and relation messages included, divided by the row
# changes among them; without the 25-byte XLogData header every message has).
wire_bytes() {
  local name=$1 publication=$2 le_slot opts native full compact
  le_slot=$(sub le -Atc "SELECT slot_name FROM logical_ext.subscription WHERE name = '${name}_le'")
  opts="'format-version', '2', 'include-lsn', 'on', 'include-timestamp', 'on', 'include-types', 'off',
        'include-schemas', 'on', 'publication_names', '$publication', 'origin', 'any'"
  native=$(pub -Atc "SELECT round(sum(length(data))::numeric
                       / nullif(count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68)), 0))
                     FROM pg_logical_slot_peek_binary_changes('${name}_native', NULL, $WIRE_CHANGES,
                       'proto_version', '1', 'publication_names', '$publication')")
  full=$(pub -Atc "SELECT round(sum(octet_length(data))::numeric
                     / nullif(count(*) FILTER (WHERE data ~ '^\{\"action\":\"[IUD]\"'), 0))
                   FROM pg_logical_slot_peek_changes('$le_slot', NULL, $WIRE_CHANGES, $opts)")
  compact=$(pub -Atc "SELECT round(sum(octet_length(data))::numeric
                        / nullif(count(*) FILTER (WHERE data ~ '^\{\"action\":\"[IUD]\"'), 0))
                      FROM pg_logical_slot_peek_changes('$le_slot', NULL, $WIRE_CHANGES, $opts,
                        'compact', 'on')" 2>/dev/null || echo "n/a")
  say "$name: bytes per row change on the wire: pgoutput $native, logical_ext full JSON $full, compact $compact"
  printf '%s\t%s\t%s\t%s\n' "$name" "$native" "$full" "$compact" >>"$CLUSTER_BASE/wire.tsv"
}

run_bulk() {
  local i lo hi target kind secs
  say "bulk: $ROWS rows x 8 columns in $TXNS transactions"
  pub -c "$BULK_DDL CREATE PUBLICATION bulk_pub FOR TABLE bench;" >/dev/null
  for kind in $KINDS; do sub "${DB[$kind]}" -c "$BULK_DDL" >/dev/null; done
  pgl_add_tables bench
  create_subscriptions bulk bulk_pub
  for ((i = 0; i < TXNS; i++)); do
    lo=$((i * ROWS / TXNS + 1)) hi=$(((i + 1) * ROWS / TXNS))
    pub -c "INSERT INTO bench SELECT $ROW_SQL FROM generate_series($lo, $hi) g" >/dev/null
  done
  target=$(marker "UPDATE bench SET i = i WHERE id = 1")
  wire_bytes bulk bulk_pub
  pub -c CHECKPOINT >/dev/null
  for kind in $ORDER; do
    sub "${DB[$kind]}" -c CHECKPOINT >/dev/null
    secs=$(catch_up "$kind" bulk "$target")
    STATUS=ok
    verify "$kind" "SELECT * FROM bench" id
    say "$(printf 'bulk    %-12s %8.3f s  %10.0f rows/s  %s' "$kind" "$secs" "$(awk -v a="$ROWS" -v b="$secs" 'BEGIN { print a / b }')" "$STATUS")"
    printf 'bulk\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$secs" "$ROWS" "$STATUS" "$(cat "$CLUSTER_BASE/cpu.tsv")" >>"$RESULTS"
  done
  drop_subscriptions bulk
}

run_pgbench() {
  local target kind secs out txns
  say "pgbench: tpcb-like, scale $SCALE, $CLIENTS clients, $SECONDS_PGB s"
  "$PGBIN/pgbench" -i -q -s "$SCALE" -h "${CLUSTER_DIR[pub]}/sock" -p "${CLUSTER_PORT[pub]}" -U postgres postgres \
    >/dev/null 2>&1
  pub -c "CREATE PUBLICATION pgb_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers,
                                               pgbench_history" >/dev/null
  # pgbench -i writes the same rows every time: the subscribers start equal.
  for kind in $KINDS; do
    "$PGBIN/pgbench" -i -q -s "$SCALE" -h "${CLUSTER_DIR[sub]}/sock" -p "${CLUSTER_PORT[sub]}" -U postgres \
      "${DB[$kind]}" >/dev/null 2>&1
  done
  pgl_add_tables pgbench_accounts pgbench_branches pgbench_tellers pgbench_history
  create_subscriptions pgb pgb_pub
  out=$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SECONDS_PGB" -h "${CLUSTER_DIR[pub]}/sock" \
          -p "${CLUSTER_PORT[pub]}" -U postgres postgres 2>&1)
  txns=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  say "pgbench: $txns transactions ($(echo "$out" | grep -E '^tps' | head -n 1))"
  target=$(marker "UPDATE pgbench_branches SET filler = filler WHERE bid = 1")
  wire_bytes pgb pgb_pub
  pub -c CHECKPOINT >/dev/null
  for kind in $ORDER; do
    sub "${DB[$kind]}" -c CHECKPOINT >/dev/null
    secs=$(catch_up "$kind" pgb "$target")
    STATUS=ok
    verify "$kind" "SELECT * FROM pgbench_accounts" aid "SELECT * FROM pgbench_branches" bid \
      "SELECT * FROM pgbench_tellers" tid "SELECT * FROM pgbench_history" "t::text"
    say "$(printf 'pgbench %-12s %8.3f s  %10.0f tx/s    %s' "$kind" "$secs" "$(awk -v a="$txns" -v b="$secs" 'BEGIN { print a / b }')" "$STATUS")"
    printf 'pgbench\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$secs" "$txns" "$STATUS" "$(cat "$CLUSTER_BASE/cpu.tsv")" >>"$RESULTS"
  done
  drop_subscriptions pgb
}

# single: SINGLE_ROWS rows of the bulk table in one transaction (the
# publisher spills it to disk; nothing is applied before its commit arrives).
run_single() {
  local target kind secs
  say "single: $SINGLE_ROWS rows x 8 columns in one transaction"
  pub -c "${BULK_DDL/bench/bench1} CREATE PUBLICATION single_pub FOR TABLE bench1;" >/dev/null
  for kind in $KINDS; do sub "${DB[$kind]}" -c "${BULK_DDL/bench/bench1}" >/dev/null; done
  pgl_add_tables bench1
  create_subscriptions single single_pub
  pub -c "INSERT INTO bench1 SELECT $ROW_SQL FROM generate_series(1, $SINGLE_ROWS) g" >/dev/null
  target=$(marker "UPDATE bench1 SET i = i WHERE id = 1")
  pub -c CHECKPOINT >/dev/null
  for kind in $ORDER; do
    sub "${DB[$kind]}" -c CHECKPOINT >/dev/null
    secs=$(catch_up "$kind" single "$target")
    STATUS=ok
    verify "$kind" "SELECT * FROM bench1" id
    say "$(printf 'single  %-12s %8.3f s  %10.0f rows/s  %s' "$kind" "$secs" "$(awk -v a="$SINGLE_ROWS" -v b="$secs" 'BEGIN { print a / b }')" "$STATUS")"
    printf 'single\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$secs" "$SINGLE_ROWS" "$STATUS" "$(cat "$CLUSTER_BASE/cpu.tsv")" >>"$RESULTS"
  done
  drop_subscriptions single
}

# savepoints: one transaction of SAVEPOINTS subtransactions (a PL/pgSQL
# exception block each), one INSERT in each.
run_savepoints() {
  local target kind secs
  say "savepoints: one transaction, $SAVEPOINTS subtransactions of one row"
  pub -c "CREATE TABLE sp (id int PRIMARY KEY, v text); CREATE PUBLICATION sp_pub FOR TABLE sp;" >/dev/null
  for kind in $KINDS; do sub "${DB[$kind]}" -c "CREATE TABLE sp (id int PRIMARY KEY, v text)" >/dev/null; done
  pgl_add_tables sp
  create_subscriptions sp sp_pub
  pub -c "DO \$\$ BEGIN FOR i IN 1..$SAVEPOINTS LOOP
            BEGIN INSERT INTO sp VALUES (i, md5(i::text)); EXCEPTION WHEN unique_violation THEN NULL; END;
          END LOOP; END \$\$" >/dev/null
  target=$(marker "UPDATE sp SET v = v WHERE id = 1")
  pub -c CHECKPOINT >/dev/null
  for kind in $ORDER; do
    sub "${DB[$kind]}" -c CHECKPOINT >/dev/null
    secs=$(catch_up "$kind" sp "$target")
    STATUS=ok
    verify "$kind" "SELECT * FROM sp" id
    say "$(printf 'savepoints %-9s %8.3f s  %10.0f rows/s  %s' "$kind" "$secs" "$(awk -v a="$SAVEPOINTS" -v b="$secs" 'BEGIN { print a / b }')" "$STATUS")"
    printf 'savepoints\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$secs" "$SAVEPOINTS" "$STATUS" "$(cat "$CLUSTER_BASE/cpu.tsv")" >>"$RESULTS"
  done
  drop_subscriptions sp
}

# report: one line per workload; ratios are native / logical_ext and
# pglogical / logical_ext catch-up times (> 1: logical_ext faster).
report() {
  awk -F'\t' -v pgl="$PGLOGICAL" '
    { secs[$1, $2] = $3; n[$1] = $4; st[$1, $2] = $5; wcpu[$1, $2] = $6; scpu[$1, $2] = $7
      wmem[$1, $2] = $8; smem[$1, $2] = $9
      if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    function f(v, fmt) { return v ? sprintf(fmt, v) : "–" }
    function ratio(a, b) { return (a && b) ? sprintf("%.2f×", a / b) : "–" }
    function both(arr, w) {
      return arr[w, "native"] " / " arr[w, "logical_ext"] (pgl == "on" ? " / " arr[w, "pglogical"] : "")
    }
    END {
      kinds = (pgl == "on") ? "native / logical_ext / pglogical" : "native / logical_ext"
      printf "| workload | applied | native: catch-up (s) | native: per s | logical_ext: catch-up (s) | logical_ext: per s | native / logical_ext |"
      if (pgl == "on") printf " pglogical: catch-up (s) | pglogical / logical_ext |"
      printf " worker CPU s: %s | walsender CPU s: %s | worker VmHWM MiB: %s | walsender VmHWM MiB: %s | check |\n", kinds, kinds, kinds, kinds
      printf "|---|---:|---:|---:|---:|---:|---:|%s---:|---:|---:|---:|---|\n", (pgl == "on") ? "---:|---:|" : ""
      for (i = 1; i <= k; i++) {
        w = order[i]; unit = (w == "pgbench") ? "transactions" : "rows"
        a = secs[w, "native"]; b = secs[w, "logical_ext"]; c = secs[w, "pglogical"]
        failed = 0
        for (kk in st) { split(kk, parts, SUBSEP); if (parts[1] == w && st[kk] != "ok") failed = 1 }
        # (BENCH_ORDER may time some kinds only: their figures alone.)
        printf "| %s | %d %s | %s | %s | %s | %s | **%s** |", w, n[w], unit,
          f(a, "%.3f"), a ? sprintf("%.0f", n[w] / a) : "–", f(b, "%.3f"), b ? sprintf("%.0f", n[w] / b) : "–", ratio(a, b)
        if (pgl == "on") printf " %s | **%s** |", f(c, "%.3f"), ratio(c, b)
        printf " %s | %s | %s | %s | %s |\n", both(wcpu, w), both(scpu, w), both(wmem, w), both(smem, w),
          failed ? "FAILED" : "ok"
      }
    }' "$RESULTS"
}

run_setup
say "starting a publisher and a subscriber"
CONF=("autovacuum = off" "shared_buffers = '1GB'" "wal_retrieve_retry_interval = '100ms'" "max_wal_size = '8GB'" "checkpoint_timeout = '1h'"
      "fsync = off" "synchronous_commit = off")
if [ "$PGLOGICAL" = on ]; then
  # pglogical's output plugin must be allowed (PostgreSQL >= 15.19), its
  # library preloaded on both sides.
  CONF+=("output_plugin_libraries = 'pgoutput, test_decoding, wal2json, logical_ext, pglogical_output'")
  cluster_start pub pglogical "${CONF[@]}"
  cluster_start sub "logical_ext, pglogical" "${CONF[@]}"
else
  cluster_start pub "" "${CONF[@]}"
  cluster_start sub logical_ext "${CONF[@]}"
fi
RESULTS=$CLUSTER_BASE/results.tsv
: >"$RESULTS"
cluster_psql sub -c "CREATE DATABASE native" -c "CREATE DATABASE le" >/dev/null
sub le -c "CREATE EXTENSION logical_ext" >/dev/null
if [ "$PGLOGICAL" = on ]; then
  cluster_psql sub -c "CREATE DATABASE pgl" >/dev/null
  pub -c "CREATE EXTENSION pglogical" \
      -c "SELECT pglogical.create_node('provider', '$(cluster_conninfo pub) dbname=postgres')" >/dev/null
  sub pgl -c "CREATE EXTENSION pglogical" \
      -c "SELECT pglogical.create_node('subscriber', '$(cluster_conninfo sub) dbname=pgl')" >/dev/null
fi
if [ -n "$PERF_DIR" ]; then mkdir -p "$PERF_DIR"; fi
for wl in $WORKLOADS; do "run_$wl"; done
if [ -n "$PERF_DIR" ]; then perf_summaries; fi

echo
echo "Apply catch-up, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PGBIN/postgres" --version);" \
     "native = CREATE SUBSCRIPTION (pgoutput, text, streaming off);" \
     "$([ "$PGLOGICAL" = on ] && echo "pglogical $(pub -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pglogical'");")" \
     "order: $ORDER"
echo
report
if [ -s "$CLUSTER_BASE/wire.tsv" ]; then
  echo
  echo "| workload | bytes per row change: pgoutput | logical_ext full JSON | logical_ext compact |"
  echo "|---|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$CLUSTER_BASE/wire.tsv"
fi
if grep -qP '\tFAILED\t' "$RESULTS"; then
  echo "!! a subscriber's tables differ from the publisher's: see the messages above" >&2
  exit 1
fi
