#!/usr/bin/env bash
# Decoding throughput of logical_ext against wal2json (format-version 2, and
# both in format-version 1 with write-in-chunks),
# test_decoding and pgoutput (text and binary), on a throwaway local cluster.
# Not part of CI; see docs/BENCHMARKS.md. Run as root (or as postgres):
#
#   scripts/bench_decode.sh                      # 1M rows, both workloads (~10 minutes on 2 cores)
#   BENCH_ROWS=100000 scripts/bench_decode.sh    # quick check
#
# Environment:
#   BENCH_ROWS      rows per workload (default 1000000)
#   BENCH_TXNS      transactions of the multi-transaction workload (default 10)
#   BENCH_RUNS      timed runs per decoder, the best is reported (default 3, minimum 2)
#   BENCH_DECODERS  subset of: logical_ext wal2json logical_ext_v1 wal2json_v1 test_decoding
#                   pgoutput_text pgoutput_binary floor
#   BENCH_WORKLOADS subset of: multi single (default both)
#   BENCH_ALT_SO    path of another build of logical_ext.so: it is installed
#                   next to the real one as the plugin `logical_ext_alt` and
#                   timed as the decoder `logical_ext_alt` (name it in
#                   BENCH_DECODERS), round-robin with the others: a before/after
#                   comparison under the same load. Removed again on exit.
#
# Besides the elapsed time of each decode, the decoding backend's own CPU
# seconds (user + system, from /proc/self/stat) are printed: on a machine
# shared with other work they move much less than elapsed times.
#   LOGICAL_EXT_SKIP_SETUP=1  do not run scripts/setup.sh first
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

ROWS=${BENCH_ROWS:-1000000}
TXNS=${BENCH_TXNS:-10}
RUNS=${BENCH_RUNS:-3}
DECODERS=${BENCH_DECODERS:-logical_ext wal2json logical_ext_v1 wal2json_v1 test_decoding pgoutput_text pgoutput_binary floor}
WORKLOADS=${BENCH_WORKLOADS:-multi single}
[ "$RUNS" -ge 2 ] || RUNS=2
[ "$ROWS" -ge "$TXNS" ] || { echo "BENCH_ROWS must be >= BENCH_TXNS" >&2; exit 2; }

say() { echo "== $*" >&2; }

# decoder_spec DECODER TABLE: sets PLUGIN, FN (peek function), OPTS (SQL option
# list), and the SQL predicates INS/BEG/COM that recognise an insert, a begin and
# a commit row. 'floor' is pgoutput with a publication on an empty, unrelated
# table: the WAL is read and the transactions reassembled, nothing is output.
decoder_spec() {
  local t=$1 json='data LIKE '\''{"action":"%s"%%'\'''
  case $2 in
    logical_ext|wal2json|logical_ext_alt)
      # format-version 2 named for both (each plugin's default is 1).
      PLUGIN=$2 FN=pg_logical_slot_peek_changes OPTS=", 'format-version', '2'"
      # shellcheck disable=SC2059
      INS=$(printf "$json" I) BEG=$(printf "$json" B) COM=$(printf "$json" C) ;;
    logical_ext_v1|wal2json_v1)
      # format-version 1 with write-in-chunks: a header row, one row per
      # change ('{"kind":…' or ',{"kind":…'), a footer row.
      PLUGIN=${2%_v1} FN=pg_logical_slot_peek_changes OPTS=", 'format-version', '1', 'write-in-chunks', '1'"
      INS="data LIKE '%{\"kind\":\"insert\"%'" BEG="data = '{\"change\":['" COM="data = ']}'" ;;
    test_decoding)
      PLUGIN=test_decoding FN=pg_logical_slot_peek_changes OPTS=""
      INS="data LIKE 'table public.$t: INSERT:%'" BEG="data LIKE 'BEGIN%'" COM="data LIKE 'COMMIT%'" ;;
    pgoutput_text|pgoutput_binary|floor)
      PLUGIN=pgoutput FN=pg_logical_slot_peek_binary_changes
      OPTS=", 'proto_version', '1', 'publication_names', 'pub_$t'"
      if [ "$2" = pgoutput_binary ]; then OPTS="$OPTS, 'binary', 'true'"; fi
      if [ "$2" = floor ]; then OPTS=", 'proto_version', '1', 'publication_names', 'pub_unpublished'"; fi
      INS="get_byte(data, 0) = ascii('I')" BEG="get_byte(data, 0) = ascii('B')" COM="get_byte(data, 0) = ascii('C')" ;;
    *) echo "unknown decoder $2" >&2; exit 2 ;;
  esac
}

psql_pg() { cluster_psql bench "$@"; }

# row expression for generate_series(..) g: 8 columns of mixed types
ROW_SQL="g, (g % 100000)::int, (g % 1000) / 7.0::float8,
  timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
  (g % 100000) * 1.01, md5(g::text), g % 2 = 0,
  jsonb_build_object('id', g, 'tag', 'item-' || g % 10, 'ok', g % 3 = 0)"

run_workload() {
  local wl=$1 t="bench_$1" ntx d lo hi i
  ntx=$([ "$wl" = multi ] && echo "$TXNS" || echo 1)
  say "workload '$wl': $ROWS rows in $ntx transaction(s), table $t"
  psql_pg -c "CREATE TABLE $t (id bigint PRIMARY KEY, i int, f float8, ts timestamptz,
                n numeric, t text, b bool, j jsonb);
              CREATE PUBLICATION pub_$t FOR TABLE $t;"
  # one slot per decoder, created before the load
  for d in $DECODERS; do
    decoder_spec "$t" "$d"
    psql_pg -c "SELECT pg_create_logical_replication_slot('${d}_$wl', '$PLUGIN')" >/dev/null
  done
  for ((i = 0; i < ntx; i++)); do
    lo=$((i * ROWS / ntx + 1)) hi=$(((i + 1) * ROWS / ntx))
    psql_pg -c "INSERT INTO $t SELECT $ROW_SQL FROM generate_series($lo, $hi) g"
  done
  psql_pg -c "CHECKPOINT"

  local ins beg com total bytes secs n run want_ins want_tx
  local cpu
  local -A SRC=() TOTAL=() BYTES=() STATUS=() BEST=() TIMES=() BESTCPU=()
  # Verification pass (untimed; also warms the caches): classify every row.
  for d in $DECODERS; do
    decoder_spec "$t" "$d"
    SRC[$d]="$FN('${d}_$wl', NULL, NULL$OPTS)"
    want_ins=$ROWS want_tx=$ntx
    if [ "$d" = floor ]; then want_ins=0 want_tx=0; fi
    IFS='|' read -r ins beg com total bytes < <(psql_pg -Atc \
      "SELECT count(*) FILTER (WHERE $INS), count(*) FILTER (WHERE $BEG),
              count(*) FILTER (WHERE $COM), count(*), coalesce(sum(octet_length(data)), 0)
       FROM ${SRC[$d]}")
    TOTAL[$d]=$total BYTES[$d]=$bytes STATUS[$d]=ok
    if [ "$ins" != "$want_ins" ] || [ "$beg" != "$want_tx" ] || [ "$com" != "$want_tx" ]; then
      STATUS[$d]=FAILED
      echo "!! $d/$wl: expected $want_ins inserts and $want_tx begin/commit rows," \
           "got $ins inserts, $beg begins, $com commits ($total rows in all)" >&2
    fi
  done
  # Timed passes, round-robin over the decoders so that outside noise is shared:
  # only the decode (count(*) of the function's rows) is timed, inside one
  # statement, and every pass must return the verified row count.
  for ((run = 1; run <= RUNS; run++)); do
    for d in $DECODERS; do
      IFS='|' read -r secs n cpu < <(psql_pg -Atc "SELECT * FROM bench_time(\$q\$SELECT count(*) FROM ${SRC[$d]}\$q\$)")
      if [ "$n" != "${TOTAL[$d]}" ]; then
        STATUS[$d]=FAILED; echo "!! $d/$wl run $run: $n rows, verification pass had ${TOTAL[$d]}" >&2
      fi
      TIMES[$d]="${TIMES[$d]:-}$(printf ' %.3f/%.2f' "$secs" "$cpu")"
      BEST[$d]=$(awk -v a="$secs" -v b="${BEST[$d]:-}" 'BEGIN { print (b == "" || a < b) ? a : b }')
      BESTCPU[$d]=$(awk -v a="$cpu" -v b="${BESTCPU[$d]:-}" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
  done
  for d in $DECODERS; do
    say "$(printf '%-16s %-6s %9d rows  %-6s runs (elapsed/CPU s):%s' "$d" "$wl" "${TOTAL[$d]}" "${STATUS[$d]}" "${TIMES[$d]}")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$d" "${BEST[$d]}" "${TOTAL[$d]}" "${BYTES[$d]}" \
      "${STATUS[$d]}" "$ntx" "${BESTCPU[$d]}" >>"$RESULTS"
    psql_pg -c "SELECT pg_drop_replication_slot('${d}_$wl')" >/dev/null
  done
  psql_pg -c "DROP TABLE $t" >/dev/null
}

report() {
  awk -F'\t' -v rows="$ROWS" '
    function lbl(d) {
      if (d == "logical_ext") return "**logical_ext**"
      if (d == "wal2json") return "wal2json (format-version 2)"
      if (d == "logical_ext_alt") return "logical_ext (BENCH_ALT_SO)"
      if (d == "logical_ext_v1") return "**logical_ext** (format-version 1, write-in-chunks)"
      if (d == "wal2json_v1") return "wal2json (format-version 1, write-in-chunks)"
      if (d == "pgoutput_text") return "pgoutput text (proto 1)"
      if (d == "pgoutput_binary") return "pgoutput binary"
      if (d == "floor") return "decode floor (nothing published)"
      return d
    }
    { wl[NR] = $1; dec[NR] = $2; secs[NR] = $3; total[NR] = $4; bytes[NR] = $5; st[NR] = $6; ntx[NR] = $7
      cpu[NR] = $8; rate[$1, $2] = rows / $3; crate[$1, $2] = $8 > 0 ? rows / $8 : 0 }
    END {
      for (i = 1; i <= NR; i++) {
        if (wl[i] != cur) {
          cur = wl[i]
          printf "\n%s rows in %d transaction%s:\n\n", rows, ntx[i], ntx[i] == 1 ? "" : "s"
          print "| decoder | rows/s | best time (s) | vs wal2json v2 | vs pgoutput text | best CPU (s) | CPU: vs wal2json v2 / pgoutput text | output rows | bytes/row | check |"
          print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        }
        r = rate[wl[i], dec[i]]
        w = ((wl[i], "wal2json") in rate) ? sprintf("%.2f×", r / rate[wl[i], "wal2json"]) : "-"
        p = ((wl[i], "pgoutput_text") in rate) ? sprintf("%.2f×", r / rate[wl[i], "pgoutput_text"]) : "-"
        b = dec[i] == "floor" ? "-" : sprintf("%.1f", bytes[i] / rows)
        c = crate[wl[i], dec[i]]
        cw = ((wl[i], "wal2json") in crate) && c > 0 ? sprintf("%.2f×", c / crate[wl[i], "wal2json"]) : "-"
        cp = ((wl[i], "pgoutput_text") in crate) && c > 0 ? sprintf("%.2f×", c / crate[wl[i], "pgoutput_text"]) : "-"
        printf "| %s | %.0f | %.3f | %s | %s | %.2f | %s / %s | %d | %s | %s |\n", lbl(dec[i]), r, secs[i], w, p, cpu[i], cw, cp, total[i], b, st[i]
      }
    }' "$RESULTS"
}

run_setup
say "starting a throwaway cluster"
ALT_LINE=""
if [ -n "${BENCH_ALT_SO:-}" ]; then
  ALT_DEST=$("$PGBIN/pg_config" --pkglibdir)/logical_ext_alt.so
  ALT_LINE="output_plugin_libraries = 'pgoutput, test_decoding, wal2json, logical_ext, logical_ext_alt'"
fi
cluster_start bench "" "autovacuum = off" "shared_buffers = '1GB'" "max_wal_size = '8GB'" \
  "checkpoint_timeout = '1h'" "fsync = off" "synchronous_commit = off" "logical_decoding_work_mem = '64MB'" \
  ${ALT_LINE:+"$ALT_LINE"}
if [ -n "${BENCH_ALT_SO:-}" ]; then
  # (cluster_start set the EXIT trap; the copy goes first, then the clusters;
  # without errexit in the trap, or a failed run would leave them running)
  trap 'st=$?; set +e; rm -f "$ALT_DEST"; (exit "$st"); cluster_cleanup' EXIT
  install -m 0755 "$BENCH_ALT_SO" "$ALT_DEST"
fi
RESULTS=$CLUSTER_BASE/results.tsv
CLK_TCK=$(getconf CLK_TCK)
psql_pg <<SQL
CREATE TABLE bench_unpublished (id int);
CREATE PUBLICATION pub_unpublished FOR TABLE bench_unpublished;
-- bench_cpu(): this backend's CPU seconds so far (user + system; fields 14
-- and 15 of /proc/self/stat, after the parenthesised command name)
CREATE FUNCTION bench_cpu() RETURNS float8 LANGUAGE sql AS \$\$
  SELECT (split_part(s, ' ', 12)::bigint + split_part(s, ' ', 13)::bigint) / $CLK_TCK.0
  FROM regexp_replace(pg_read_file('/proc/self/stat'), '^.*\) ', '') s
\$\$;
-- bench_time(query): seconds the query took, its single bigint result, and
-- the CPU seconds this backend spent on it
CREATE FUNCTION bench_time(q text, OUT secs float8, OUT n bigint, OUT cpu float8) LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; c0 float8;
BEGIN
  c0 := bench_cpu();
  t0 := clock_timestamp();
  EXECUTE q INTO n;
  secs := extract(epoch FROM clock_timestamp() - t0);
  cpu := bench_cpu() - c0;
END \$\$;
SQL
for wl in $WORKLOADS; do run_workload "$wl"; done

echo
echo "Decoding throughput, $(date -u +%Y-%m-%d), $(nproc) cores, $("$PGBIN/postgres" --version)," \
     "best of $RUNS runs of pg_logical_slot_peek_*"
report
echo
if grep -qP '\tFAILED\t' "$RESULTS"; then
  echo "!! some decoders did not return the expected rows: see the messages above" >&2
  exit 1
fi
