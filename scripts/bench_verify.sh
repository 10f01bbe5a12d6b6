#!/usr/bin/env bash
# Online reconciliation (docs/RECONCILE.md) against the seed's manual method
# (a postgres_fdw anti-join), same tables, same run. Not part of CI; prints
# figures, never passes or fails on timing. Run as root (or as postgres):
#
#   scripts/bench_verify.sh                                  # 1M rows, pgbench scale 10
#   BENCH_PGBENCH_SCALE=100 BENCH_PGBENCH_SECONDS=120 scripts/bench_verify.sh   # 10M-row pgbench_accounts
#   BENCH_ROWS=200000 BENCH_PGBENCH_SECONDS=10 scripts/bench_verify.sh   # quick check
#
# Steps, on a throwaway publisher and subscriber:
#  1. verify_table of an idle table of BENCH_ROWS rows x 8 mixed-type columns
#     (numeric and jsonb compared as text, the rest in binary), then of the idle
#     pgbench_accounts (all binary): rows/s elapsed, and rows/s hashed per node
#     (each node's read-and-hash time of every chunk, from verify_chunks);
#  2. the postgres_fdw anti-join on the same table (full outer join on the key
#     comparing the rows' text): time;
#  3. while pgbench writes pgbench_accounts: verify_table of pgbench_accounts
#     (false positives must be 0) and the anti-join (its count of "differences"
#     is what a manual comparison under load reports);
#  4. BENCH_DIVERGENCES divergences injected on the subscriber's copy of the
#     idle table (a third each deleted, extra, modified), found by verify_table,
#     repaired by repair_table, verified again; then count + md5 of both sides.
#
# Environment: BENCH_ROWS (1000000), BENCH_PGBENCH_SCALE (10),
# BENCH_PGBENCH_SECONDS (30), BENCH_PGBENCH_CLIENTS (2), BENCH_CHUNK_ROWS
# (10000), BENCH_DIVERGENCES (100), LOGICAL_EXT_SKIP_SETUP=1 to skip setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh
. scripts/bench_pair.sh

ROWS=${BENCH_ROWS:-1000000}
SCALE=${BENCH_PGBENCH_SCALE:-10}
SECONDS_PGB=${BENCH_PGBENCH_SECONDS:-30}
CLIENTS=${BENCH_PGBENCH_CLIENTS:-2}
CHUNK=${BENCH_CHUNK_ROWS:-10000}
DIVERGENCES=${BENCH_DIVERGENCES:-100}

sq() { sub postgres -Atc "$1"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# CPU seconds (user + system) of a process so far.
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
worker_pid() { sq "SELECT worker_pid FROM logical_ext.subscription_status WHERE name = 'bench'"; }
per_node() { # RUN -> "publisher rows/s, subscriber rows/s" (read + hash time per node)
  sq "SELECT round(sum(pub_rows) / greatest(sum(pub_ms), 0.001) * 1000) || ' ' || round(sum(sub_rows) / greatest(sum(sub_ms), 0.001) * 1000)
      FROM logical_ext.verify_chunks WHERE run_id = $1 AND NOT per_key"
}
verify() { # TABLE -> "run chunks rows mismatched missing extra different errors"
  sq "SELECT concat_ws(' ', run_id, chunks, rows, mismatched_chunks, missing, extra, different, errors)
      FROM logical_ext.verify_table('bench', '$1', chunk_rows => $CHUNK, timeout_ms => 3600000)"
}
antijoin() { # TABLE -> rows that differ (either side only, or different text)
  sq "SELECT count(*) FROM $1 l FULL JOIN fdw.$1 r ON l.${2} = r.${2}
      WHERE l.${2} IS NULL OR r.${2} IS NULL OR l::text <> r::text"
}
digest() {
  local sql="SELECT count(*) || ' ' || md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) FROM $2 t"
  if [ "$1" = pub ]; then pub -Atc "$sql"; else sq "$sql"; fi
}

run_setup
say "starting a publisher and a subscriber"
CONF=("autovacuum = off" "shared_buffers = '512MB'" "max_wal_size = '8GB'" "synchronous_commit = off")
cluster_start pub logical_ext "${CONF[@]}"
cluster_start sub logical_ext "${CONF[@]}"
pub -c "CREATE EXTENSION logical_ext" >/dev/null
sub postgres -c "CREATE EXTENSION logical_ext" -c "CREATE EXTENSION postgres_fdw" >/dev/null

say "publisher: $ROWS rows x 8 columns, pgbench scale $SCALE"
DDL="CREATE TABLE bench (id bigint PRIMARY KEY, i int, f float8, ts timestamptz, n numeric, t text, b bool, j jsonb)"
pub -c "$DDL" -c "INSERT INTO bench SELECT $ROW_SQL FROM generate_series(1, $ROWS) g" >/dev/null
as_pg "$PGBIN/pgbench" -q -i -s "$SCALE" -h "${CLUSTER_DIR[pub]}/sock" -p "${CLUSTER_PORT[pub]}" -U postgres postgres >/dev/null 2>&1
pub -c "CREATE PUBLICATION bench_pub FOR TABLE bench, pgbench_accounts" -c "VACUUM ANALYZE" >/dev/null
sub postgres -c "$DDL" \
  -c "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))" >/dev/null
conninfo=$(cluster_conninfo pub)
sub postgres -c "SELECT logical_ext.create_subscription('bench', '$conninfo', ARRAY['bench_pub'], copy_data => true)" >/dev/null
until [ "$(sq "SELECT count(*) FROM logical_ext.subscription_tables WHERE state = 'ready'")" = 2 ]; do sleep 0.2; done
sub postgres -c "VACUUM ANALYZE" >/dev/null
port=${CLUSTER_PORT[pub]}
sub postgres -c "CREATE SERVER pubsrv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '$port', dbname 'postgres', fetch_size '10000')" \
  -c "CREATE USER MAPPING FOR postgres SERVER pubsrv OPTIONS (user 'postgres')" \
  -c "CREATE SCHEMA fdw" -c "IMPORT FOREIGN SCHEMA public LIMIT TO (bench, pgbench_accounts) FROM SERVER pubsrv INTO fdw" >/dev/null

say "1. verify_table, idle tables (each twice: the first read sets hint bits and warms the caches)"
for table in bench bench pgbench_accounts pgbench_accounts; do
  w=$(worker_pid); c0=$(cpu "$w"); t0=$(now)
  r=$(verify "$table"); t1=$(now); c1=$(cpu "$w")
  read -r run chunks rows mism miss extra diff errs <<<"$r"
  read -r pub_rate sub_rate <<<"$(per_node "$run")"
  el=$(secs "$t0" "$t1")
  [ "$table" = bench ] && el_bench=$el
  printf '   %s: %s rows, %s chunks in %s s = %.0f rows/s elapsed; hashed per node: publisher %s rows/s, subscriber %s rows/s; apply worker CPU %.2f s; differences %s/%s/%s, mismatched chunks %s, errors %s\n' \
    "$table" "$rows" "$chunks" "$el" "$(awk -v r="$rows" -v e="$el" 'BEGIN{print r/e}')" "$pub_rate" "$sub_rate" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" "$miss" "$extra" "$diff" "$mism" "$errs" >&2
done
el=$el_bench

say "2. postgres_fdw anti-join, idle table"
t0=$(now); n=$(antijoin bench id); t1=$(now)
el2=$(secs "$t0" "$t1")
printf '   anti-join: %s differing rows in %s s = %.0f rows/s; ratio verify/anti-join time %.2f\n' "$n" "$el2" \
  "$(awk -v r="$ROWS" -v e="$el2" 'BEGIN{print r/e}')" "$(awk -v a="$el" -v b="$el2" 'BEGIN{print a/b}')" >&2

say "3. under pgbench ($CLIENTS clients, $SECONDS_PGB s) on pgbench_accounts"
as_pg "$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SECONDS_PGB" -h "${CLUSTER_DIR[pub]}/sock" -p "${CLUSTER_PORT[pub]}" -U postgres postgres >"${CLUSTER_BASE}/pgbench.log" 2>&1 &
pgb=$!
sleep 2
t0=$(now); r=$(verify pgbench_accounts); t1=$(now)
read -r run chunks rows mism miss extra diff errs <<<"$r"
read -r pub_rate sub_rate <<<"$(per_node "$run")"
printf '   verify_table under load: %s rows in %s s (hashed per node: publisher %s rows/s, subscriber %s rows/s); false positives: missing %s extra %s different %s (mismatched chunks %s, errors %s)\n' \
  "$rows" "$(secs "$t0" "$t1")" "$pub_rate" "$sub_rate" "$miss" "$extra" "$diff" "$mism" "$errs" >&2
t0=$(now); n=$(antijoin pgbench_accounts aid); t1=$(now)
printf '   anti-join under load: %s "differences" in %s s (rows in flight, not divergences)\n' "$n" "$(secs "$t0" "$t1")" >&2
wait "$pgb" || true
grep -E "^tps" "${CLUSTER_BASE}/pgbench.log" | sed 's/^/   pgbench: /' >&2 || true

say "4. $DIVERGENCES divergences injected on the subscriber, found, repaired"
third=$((DIVERGENCES / 3))
sub postgres -c "BEGIN; SET LOCAL session_replication_role = replica;
  DELETE FROM bench WHERE id IN (SELECT g * 7919 % $ROWS + 1 FROM generate_series(1, $third) g);
  INSERT INTO bench SELECT $ROW_SQL FROM generate_series($ROWS + 1, $ROWS + $third) g;
  UPDATE bench SET t = 'changed' WHERE id IN (SELECT g * 104729 % $ROWS + 1 FROM generate_series(1, $((DIVERGENCES - 2 * third))) g);
  COMMIT" >/dev/null
t0=$(now); r=$(verify bench); t1=$(now)
read -r _ chunks rows mism miss extra diff errs <<<"$r"
printf '   found in %s s: missing %s, extra %s, different %s (of %s injected; mismatched chunks %s)\n' \
  "$(secs "$t0" "$t1")" "$miss" "$extra" "$diff" "$DIVERGENCES" "$mism" >&2
t0=$(now); rep=$(sq "SELECT repaired || ' ' || failed FROM logical_ext.repair_table('bench', 'bench')"); t1=$(now)
printf '   repaired (repaired failed): %s in %s s\n' "$rep" "$(secs "$t0" "$t1")" >&2
r=$(verify bench); read -r _ chunks rows mism miss extra diff errs <<<"$r"
printf '   verified again: missing %s extra %s different %s\n' "$miss" "$extra" "$diff" >&2
want=$(digest pub bench) got=$(digest sub bench)
if [ "$want" = "$got" ]; then say "count + md5 identical: $got"; else say "!! DIFFER: publisher $want, subscriber $got"; fi
