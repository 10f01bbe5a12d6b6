#!/usr/bin/env bash
# A guided tour of logical_ext on a throwaway local cluster. Run as root (or as
# postgres) on a fresh machine: it calls scripts/setup.sh first (skip it with
# LOGICAL_EXT_SKIP_SETUP=1), and stops and removes the cluster when it ends.
#
#   scripts/demo.sh
#
# One function per section; main() at the bottom lists them in order.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
. scripts/cluster.sh

if [ -t 1 ]; then BOLD=$'\e[1m' DIM=$'\e[2m' RESET=$'\e[0m'; else BOLD="" DIM="" RESET=""; fi
section() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$RESET"; }
note() { printf '%s%s%s\n' "$DIM" "$*" "$RESET"; }
pub() { cluster_psql publisher "$@"; }

# format-version 2: one document per change (without it: wal2json's default,
# version 1, one document per transaction).
CHANGES_SQL="SELECT data FROM pg_logical_slot_get_changes('demo', NULL, NULL,
  'format-version', '2', 'include-xids', '1', 'include-lsn', '1', 'include-timestamp', '1')"

# The publisher's metrics endpoint (logical_ext.metrics_listen), scraped at the end.
METRICS_PORT=""

start_publisher() {
  section "1. A throwaway publisher cluster (shared_preload_libraries = 'logical_ext', for DDL capture)"
  METRICS_PORT=$(free_port)
  cluster_start publisher logical_ext "logical_ext.metrics_listen = '127.0.0.1:$METRICS_PORT'"
  note "$("$PGBIN/postgres" --version); $(cluster_conninfo publisher); data in ${CLUSTER_DIR[publisher]}"
  note "output_plugin_libraries = $(pub -Atc 'SHOW output_plugin_libraries')"
}

create_extension_and_slot() {
  section "2. CREATE EXTENSION, sample tables, and a logical_ext slot"
  pub -a <<'SQL'
CREATE EXTENSION logical_ext;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[]);
CREATE TABLE audit_log (at timestamptz, who text, what jsonb);   -- no primary key
ALTER TABLE audit_log REPLICA IDENTITY FULL;                     -- old rows are logged whole
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;         -- large values go out of line, uncompressed
-- 12 kB body, TOASTed; inserted before the slot exists, so it is not in the stream
INSERT INTO docs VALUES (1, 'draft', repeat('lorem ipsum ', 1000));
SELECT slot_name, lsn FROM pg_create_logical_replication_slot('demo', 'logical_ext');
SQL
}

sample_dml() {
  section "3. Sample changes"
  pub -a <<'SQL'
INSERT INTO items VALUES (1, 'apple', 0.50, '{fruit}'), (2, 'bread', 2.20, '{bakery,fresh}');
UPDATE items SET price = 0.55 WHERE id = 1;
UPDATE items SET id = 20 WHERE id = 2;                        -- key change: identity is the old key
DELETE FROM items WHERE id = 1;
INSERT INTO audit_log VALUES ('2026-11-22 10:00:00+00', 'alice', '{"op": "login"}');
UPDATE audit_log SET who = 'bob';                             -- REPLICA IDENTITY FULL: whole old row
DELETE FROM audit_log;
SELECT pg_logical_emit_message(true, 'demo', 'a transactional message') IS NOT NULL AS sent;
SELECT pg_logical_emit_message(false, 'demo', 'a non-transactional message') IS NOT NULL AS sent;
UPDATE docs SET title = 'final' WHERE id = 1;                 -- body not rewritten: unchanged TOAST
TRUNCATE items;
SQL
}

show_changes() {
  section "4. What the slot emits (format-version 2, include-xids, include-lsn, include-timestamp)"
  note "$CHANGES_SQL"
  echo
  # Long documents (the TOASTed text) are shortened for display only.
  pub -At -c "SELECT CASE WHEN length(data) <= 400 THEN data
                     ELSE left(data, 400) || ' ...(' || length(data) || ' characters)' END
              FROM ($CHANGES_SQL) AS changes"
}

option_error() {
  section "5. Bad options are errors with SQLSTATE 22023 (invalid_parameter_value)"
  local sql out
  for sql in "SELECT data FROM pg_logical_slot_peek_changes('demo', NULL, NULL, 'include-xidz', '1')" \
             "SELECT data FROM pg_logical_slot_peek_changes('demo', NULL, NULL, 'include-xids', 'maybe')"; do
    note "$sql"
    if out=$(pub -v VERBOSITY=verbose -c "$sql" 2>&1); then
      echo "unexpected success: $out" >&2; return 1
    fi
    echo "$out" | grep -v '^LOCATION:'
    grep -q '22023' <<<"$out" || { echo "expected SQLSTATE 22023" >&2; return 1; }
  done
}

recvlogical_stream() {
  section "6. Streaming with pg_recvlogical over the replication protocol"
  pub -a <<'SQL'
INSERT INTO items VALUES (3, 'cheese', 7.50, '{dairy}');
UPDATE items SET price = 8.00 WHERE id = 3;
SQL
  local endpos
  endpos=$(pub -Atc "SELECT pg_current_wal_lsn()")
  note "pg_recvlogical -d '$(cluster_conninfo publisher)' --slot demo --start --endpos $endpos --no-loop -o format-version=2 -o include-xids=1 -f -"
  echo
  timeout 60 "$PGBIN/pg_recvlogical" -d "$(cluster_conninfo publisher)" --slot demo --start \
    --endpos "$endpos" --no-loop -o format-version=2 -o include-xids=1 -f -
}

sub() { cluster_psql subscriber "$@"; }

# wait_for NAME SQL: poll SQL on the subscriber until it prints "t" (60 s at most).
wait_for() {
  local what=$1 sql=$2 _
  for _ in $(seq 1 600); do
    [ "$(sub -Atc "$sql")" = t ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for: $what" >&2
  sub -x -c "SELECT * FROM logical_ext.subscription_status" >&2
  return 1
}

start_subscriber() {
  section "7. A subscriber cluster (shared_preload_libraries = 'logical_ext')"
  cluster_start subscriber logical_ext
  sub -a <<'SQL'
CREATE EXTENSION logical_ext;
-- the subscriber's tables: same names and columns; extra columns take their default
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[],
                    arrived_at timestamptz DEFAULT now());
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
SQL
  pub -a <<'SQL'
CREATE PUBLICATION demo_pub FOR TABLE items, docs;
SQL
}

subscribe() {
  section "8. logical_ext.create_subscription: copy the tables, then stream and apply"
  pub -a <<'SQL'
-- rows that exist before the subscription: the initial copy brings them
INSERT INTO items SELECT g, 'old item ' || g, 1, ARRAY['seed'] FROM generate_series(10001, 10050) g;
SQL
  local conninfo
  conninfo="$(cluster_conninfo publisher) password=demo-secret"
  sub -a -v conninfo="$conninfo" <<'SQL'
SELECT logical_ext.create_subscription('demo_sub', :'conninfo', ARRAY['demo_pub']);   -- copy_data => true
SQL
  wait_for "the initial copy is done" \
    "SELECT bool_and(state = 'ready') FROM logical_ext.subscription_tables"
  sub -c "SELECT relid, state, rows_copied, bytes_copied, finished_at IS NOT NULL AS finished
          FROM logical_ext.subscription_tables ORDER BY relid::text"
  pub -a <<'SQL'
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['bulk'] FROM generate_series(100, 1099) g;
UPDATE items SET price = price * 2 WHERE id % 100 = 0;
DELETE FROM items WHERE id > 1089;
INSERT INTO docs VALUES (2, 'replicated', repeat('x', 20000));
UPDATE docs SET title = 'still replicated' WHERE id = 2;   -- body stays unchanged (TOAST)
SQL
  local target
  target=$(pub -Atc "SELECT pg_current_wal_lsn()")
  wait_for "subscriber caught up to $target" \
    "SELECT applied_lsn >= '$target' FROM logical_ext.subscription_status WHERE name = 'demo_sub'"
  note "publisher and subscriber, same query (copied rows and streamed ones):"
  local q="SELECT count(*) AS items, sum(price) AS total, (SELECT string_agg(title || ' / ' || length(body), ', ' ORDER BY id) FROM docs) AS docs FROM items"
  pub -c "$q"
  sub -c "$q"
  note "the subscription's status (the password is redacted):"
  sub -x -c "SELECT name, state, worker_pid IS NOT NULL AS worker_running, applied_lsn, lag_bytes,
                    applied_transactions, applied_changes, last_error, conninfo
             FROM logical_ext.subscription_status"
}

conflicts() {
  section "9. Conflicts are detected, resolved by policy, and logged"
  sub -a <<'SQL'
-- a row written on the subscriber that the publisher is about to insert too
INSERT INTO items (id, name, price) VALUES (5000, 'local version', 1.00);
SELECT logical_ext.set_conflict_resolution('demo_sub', 'apply_remote', 'insert_exists');
SELECT * FROM logical_ext.conflict_resolutions WHERE relation IS NULL;
SQL
  pub -c "INSERT INTO items VALUES (5000, 'publisher version', 9.99, '{new}')"
  local target
  target=$(pub -Atc "SELECT pg_current_wal_lsn()")
  wait_for "subscriber caught up to $target" \
    "SELECT applied_lsn >= '$target' FROM logical_ext.subscription_status WHERE name = 'demo_sub'"
  sub -c "SELECT id, name, price FROM items WHERE id = 5000"
  sub -x -c "SELECT conflict_type, resolution, local_tuple, remote_tuple, remote_commit_lsn
             FROM logical_ext.conflict_log ORDER BY id DESC LIMIT 1"
}

ddl_replication() {
  section "10. DDL travels in the stream and is replayed before the rows that use it"
  pub -a <<'SQL'
ALTER TABLE items ADD COLUMN origin_country text DEFAULT 'NL';
INSERT INTO items VALUES (6000, 'cheese', 4.50, '{dairy}', 'FR');   -- uses the new column at once
BEGIN; ALTER TABLE items ADD COLUMN never int; ROLLBACK;              -- rolled back: nothing travels
CREATE TABLE items_copy AS SELECT * FROM items;                      -- not published: not captured
ALTER TABLE items RENAME COLUMN tags TO labels;
UPDATE items SET labels = '{dairy,aged}' WHERE id = 6000;
SQL
  local target
  target=$(pub -Atc "SELECT pg_current_wal_lsn()")
  wait_for "subscriber caught up to $target" \
    "SELECT applied_lsn >= '$target' FROM logical_ext.subscription_status WHERE name = 'demo_sub'"
  note "the DDL events as the output plugin prints them (slot 'demo'):"
  pub -At -c "SELECT data FROM pg_logical_slot_get_changes('demo', NULL, NULL, 'format-version', '2',
              'include-lsn', '1') WHERE data::jsonb->>'action' = 'DDL'"
  note "the subscriber has the new schema and the rows that need it:"
  sub -c "SELECT id, name, labels, origin_country FROM items WHERE id = 6000"
  sub -c "SELECT source, subscription, lsn, command FROM logical_ext.ddl_log ORDER BY id"
  pub -c "SELECT source, command_tag, object_identity, publications, replicated FROM logical_ext.ddl_log ORDER BY id"
}

slot_health() {
  section "11. Slot monitoring on the publisher: which slot will fill the disk"
  pub -c "SELECT slot_name, plugin, active, pg_size_pretty(lag_bytes) AS lag, status, reason
          FROM logical_ext.slot_health() ORDER BY slot_name"
}

metrics_scrape() {
  section "12. The same figures over HTTP, as Prometheus scrapes them (logical_ext.metrics_listen)"
  note "GET http://127.0.0.1:$METRICS_PORT/metrics (slot and WAL families; the full text has HELP/TYPE for each; alert rules and a Grafana dashboard: monitoring/, runbooks: docs/MONITORING.md):"
  python3 - "$METRICS_PORT" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=30) as r:
    print("HTTP", r.status, r.headers["Content-Type"])
    shown = ("logical_ext_slot_status", "logical_ext_slot_lag_bytes", "logical_ext_slot_catalog_xmin_age",
             "logical_ext_wal_")
    for line in r.read().decode().splitlines():
        # One status line per slot: the one that is 1.
        if line.startswith(shown) and not (line.startswith("logical_ext_slot_status") and line.endswith(" 0")):
            print(line)
PY
}

reconcile() {
  section "13. Online reconciliation: prove a table equal, find each differing row, repair it"
  note "three hand edits on the subscriber (a deleted, an extra and a modified row), then verify:"
  sub -c "DELETE FROM items WHERE id = 150; INSERT INTO items VALUES (99999, 'only here', 1, '{}');
          UPDATE items SET price = 0 WHERE id = 160"
  sub -c "SELECT run_id, chunks, rows, missing, extra, different
          FROM logical_ext.verify_table('demo_sub', 'items', chunk_rows => 200)"
  sub -c "SELECT kind, key FROM logical_ext.verify_differences ORDER BY kind, key"
  note "repaired in stream order, each row logged; verified again:"
  sub -c "SELECT * FROM logical_ext.repair_table('demo_sub', 'items')"
  sub -c "SELECT action, key, local_row, repaired_row FROM logical_ext.repair_log ORDER BY id"
  sub -c "SELECT missing, extra, different FROM logical_ext.verify_table('demo_sub', 'items')"
}

main() {
  run_setup
  start_publisher
  create_extension_and_slot
  sample_dml
  show_changes
  option_error
  recvlogical_stream
  start_subscriber
  subscribe
  conflicts
  ddl_replication
  slot_health
  metrics_scrape
  reconcile
  section "Done: the cluster is stopped and removed on exit"
}

main "$@"
