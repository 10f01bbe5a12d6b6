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

CHANGES_SQL="SELECT data FROM pg_logical_slot_get_changes('demo', NULL, NULL,
  'include-xids', '1', 'include-lsn', '1', 'include-timestamp', '1')"

start_publisher() {
  section "1. A throwaway publisher cluster"
  cluster_start publisher
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
  section "4. What the slot emits (include-xids, include-lsn, include-timestamp)"
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
  note "pg_recvlogical -d '$(cluster_conninfo publisher)' --slot demo --start --endpos $endpos --no-loop -o include-xids=1 -f -"
  echo
  timeout 60 "$PGBIN/pg_recvlogical" -d "$(cluster_conninfo publisher)" --slot demo --start \
    --endpos "$endpos" --no-loop -o include-xids=1 -f -
}

main() {
  run_setup
  start_publisher
  create_extension_and_slot
  sample_dml
  show_changes
  option_error
  recvlogical_stream
  section "Done: the cluster is stopped and removed on exit"
}

main "$@"
