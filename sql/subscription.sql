-- Subscriptions of the apply part (src/apply/). Managed only through the
-- logical_ext.*_subscription functions; readable only by superusers because
-- conninfo may hold a password. Everything else reads the redacted view.

CREATE TABLE logical_ext.subscription (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    owner        oid NOT NULL,
    conninfo     text NOT NULL,
    publications text[] NOT NULL CHECK (cardinality(publications) > 0),
    slot_name    text,
    origin       text NOT NULL DEFAULT 'any' CHECK (origin IN ('any', 'none')),
    enabled      boolean NOT NULL,
    options      jsonb NOT NULL DEFAULT '{}',
    skip_lsn     pg_lsn,          -- set by skip_transaction(), cleared when skipped
    slot_pending boolean NOT NULL DEFAULT false,  -- the worker creates the slot (exporting a snapshot for the initial copy)
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- No silent gap (src/apply/slot_fence.rs): what the worker does with a slot
    -- whose confirmed_flush_lsn is past the origin's progress. accept_slot_gap()
    -- sets accept_once; the worker adopts the slot's position once, records it
    -- in slot_gap_accepted and sets refuse again.
    slot_gap     text NOT NULL DEFAULT 'refuse' CHECK (slot_gap IN ('refuse', 'accept_once')),
    slot_gap_accepted text,
    -- Slot ownership and the timeline check (src/apply/slot_owner.rs):
    -- <system identifier>/<timeline> of the node the subscription last ran on
    -- (a worker on another node waits, state 'blocked', for
    -- adopt_subscription()); slot_takeover: send "takeover" to the publisher at
    -- the next start (takeover_slot(), adopt_subscription()); when it last did.
    node_identity text,
    slot_takeover boolean NOT NULL DEFAULT false,
    slot_taken_over_at timestamptz
);
REVOKE ALL ON logical_ext.subscription FROM PUBLIC;
-- Names are not secrets (subscription_status shows them); the conninfo is.
GRANT SELECT (id, name) ON logical_ext.subscription TO pg_monitor;
SELECT pg_catalog.pg_extension_config_dump('logical_ext.subscription', '');

COMMENT ON TABLE logical_ext.subscription IS
    'logical_ext subscriptions; use logical_ext.create_subscription() and friends, read logical_ext.subscription_status';

-- Initial table synchronization (src/apply/sync/): one row per table of a
-- subscription. Tables without a row are applied as they come. State:
-- init -> copying -> catchup -> ready, or error (retried with backoff).
-- sync_lsn: the snapshot the copy was taken at (changes committed before it
-- are in the copy). rows_copied/bytes_copied grow while a copy runs.
-- resync: set by resync_table(); the copy then replaces the table's rows
-- instead of refusing a non-empty table.
CREATE TABLE logical_ext.subscription_tables (
    subid        integer NOT NULL REFERENCES logical_ext.subscription (id) ON DELETE CASCADE,
    relid        regclass NOT NULL,
    state        text NOT NULL DEFAULT 'init'
                 CHECK (state IN ('init', 'copying', 'catchup', 'ready', 'error')),
    sync_lsn     pg_lsn,
    rows_copied  bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    started_at   timestamptz,
    finished_at  timestamptz,
    last_error   text,
    resync       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (subid, relid)
);
REVOKE ALL ON logical_ext.subscription_tables FROM PUBLIC;
-- last_error may quote row values: superusers and logical_ext_operator only
-- (see row_data_for_caller below).
GRANT SELECT (subid, relid, state, sync_lsn, rows_copied, bytes_copied, started_at, finished_at, resync)
    ON logical_ext.subscription_tables TO pg_monitor;
GRANT SELECT ON logical_ext.subscription_tables TO logical_ext_operator;
SELECT pg_catalog.pg_extension_config_dump('logical_ext.subscription_tables', '');

-- Error messages may quote row values (PostgreSQL's own do: "Key (id)=(5)
-- already exists", "invalid input syntax for type integer: \"abc\""). Like the
-- row images of conflict_log, they are for superusers and members of
-- logical_ext_operator; pg_monitor sees that there is an error, not its text.
-- Decided on the session user (what the login could see with SET ROLE): the
-- functions that call this are SECURITY DEFINER, so current_user is theirs.
CREATE FUNCTION logical_ext.row_data_for_caller(message text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN message IS NULL THEN NULL
        WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                      WHERE r.rolname = session_user AND r.rolsuper)
          OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                      WHERE r.rolname = 'logical_ext_operator'
                        AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER'))
        THEN message
        ELSE '(error text hidden: it may quote row values; visible to superusers and members of logical_ext_operator)'
    END
$$;
REVOKE ALL ON FUNCTION logical_ext.row_data_for_caller(text) FROM PUBLIC;

-- Status of every subscription of this database: the record joined with the
-- worker's shared-memory state and the origin's progress. SECURITY DEFINER so
-- that monitoring roles see it without access to the table (and its
-- passwords); conninfo is redacted.
CREATE FUNCTION logical_ext.subscription_status_rows()
RETURNS TABLE (
    name text,
    enabled boolean,
    worker_pid integer,
    state text,
    received_lsn pg_lsn,
    applied_lsn pg_lsn,
    latest_end_lsn pg_lsn,
    last_msg_send_time timestamptz,
    last_msg_receipt_time timestamptz,
    lag_bytes numeric,
    lag_time interval,
    last_error text,
    last_error_time timestamptz,
    applied_transactions bigint,
    applied_changes bigint,
    conflicts_insert_exists bigint,
    conflicts_update_exists bigint,
    conflicts_update_missing bigint,
    conflicts_delete_missing bigint,
    conflicts_update_origin_differs bigint,
    conflicts_delete_origin_differs bigint,
    apply_error_count bigint,
    sync_error_count bigint,
    stats_reset timestamptz,
    conninfo text,
    publications text[],
    slot_name text,
    origin text
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    WITH w AS (SELECT * FROM logical_ext.worker_status()),
    t AS (
        SELECT s.*, w.pid, w.state AS wstate, w.last_error AS werror,
               NULLIF(w.received_lsn, 0) AS recv, NULLIF(w.latest_end_lsn, 0) AS latest,
               NULLIF(w.last_msg_send_time, 0) AS send_us, NULLIF(w.last_msg_receipt_time, 0) AS recv_us,
               NULLIF(w.last_commit_time, 0) AS commit_us, NULLIF(w.last_error_time, 0) AS error_us,
               c.applied_transactions AS txns, c.applied_changes AS changes, c.conflicts,
               c.apply_error_count, c.sync_error_count, c.stats_reset,
               pg_replication_origin_progress('logical_ext_' || s.id, false) AS applied
        FROM logical_ext.subscription s LEFT JOIN w ON w.subid = s.id
        CROSS JOIN LATERAL logical_ext.subscription_counters(s.id, s.created_at) c
    )
    SELECT t.name, t.enabled, t.pid,
           CASE WHEN NOT t.enabled THEN 'disabled'
                WHEN t.wstate = 'blocked' THEN 'blocked'
                WHEN t.werror IS NOT NULL AND t.wstate IS DISTINCT FROM 'streaming' THEN 'error'
                ELSE coalesce(t.wstate, 'starting') END,
           ('0/0'::pg_lsn + t.recv::numeric),
           t.applied,
           ('0/0'::pg_lsn + t.latest::numeric),
           timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => t.send_us / 1e6),
           timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => t.recv_us / 1e6),
           greatest(('0/0'::pg_lsn + t.latest::numeric) - t.applied, 0),
           CASE WHEN t.latest IS NULL OR t.applied IS NULL THEN NULL
                WHEN ('0/0'::pg_lsn + t.latest::numeric) <= t.applied THEN interval '0'
                ELSE now() - (timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => t.commit_us / 1e6)) END,
           logical_ext.row_data_for_caller(
               coalesce(t.werror, (SELECT 'table ' || st.relid::text || ': ' || st.last_error
                                     FROM logical_ext.subscription_tables st
                                    WHERE st.subid = t.id AND st.state = 'error' ORDER BY st.relid::oid LIMIT 1))),
           CASE WHEN t.werror IS NOT NULL THEN timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => t.error_us / 1e6)
                ELSE (SELECT max(st.finished_at) FROM logical_ext.subscription_tables st
                       WHERE st.subid = t.id AND st.state = 'error') END,
           coalesce(t.txns, 0), coalesce(t.changes, 0),
           coalesce(t.conflicts[1], 0), coalesce(t.conflicts[2], 0), coalesce(t.conflicts[3], 0),
           coalesce(t.conflicts[4], 0), coalesce(t.conflicts[5], 0), coalesce(t.conflicts[6], 0),
           t.apply_error_count, t.sync_error_count, t.stats_reset,
           logical_ext.redact_conninfo(t.conninfo), t.publications, t.slot_name, t.origin
    FROM t ORDER BY t.name
$$;

CREATE VIEW logical_ext.subscription_status AS
    SELECT * FROM logical_ext.subscription_status_rows();

REVOKE ALL ON FUNCTION logical_ext.subscription_status_rows() FROM PUBLIC;
GRANT USAGE ON SCHEMA logical_ext TO PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.subscription_status_rows() TO pg_monitor;
GRANT SELECT ON logical_ext.subscription_status TO pg_monitor;

-- Managing subscriptions is for superusers (the functions check it too).
REVOKE ALL ON FUNCTION logical_ext.create_subscription(text, text, text[], text, boolean, boolean, boolean, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.drop_subscription(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.enable_subscription(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.disable_subscription(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.alter_subscription(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.resync_table(text, regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.refresh_subscription(text, boolean) FROM PUBLIC;
-- Statistics that survive restarts (src/apply/stats.rs): read through
-- subscription_status; reset by superusers and logical_ext_operator (native
-- pg_stat_reset_subscription_stats is superuser-only by default; resetting
-- counters is an operator's routine and exposes nothing).
REVOKE ALL ON FUNCTION logical_ext.subscription_counters(integer, timestamptz) FROM PUBLIC;
-- One row per call (the default estimate of 1000 made the view's plan
-- expensive enough for JIT: a second of compilation per query).
ALTER FUNCTION logical_ext.subscription_counters(integer, timestamptz) ROWS 1;
REVOKE ALL ON FUNCTION logical_ext.reset_subscription_stats(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.reset_subscription_stats(text) TO logical_ext_operator;

-- Conflict resolution rules (src/apply/conflict.rs decides with them).
-- relation / conflict_type NULL = every relation / type; the most specific
-- rule wins. Managed with logical_ext.set_conflict_resolution().
CREATE TABLE logical_ext.conflict_resolution (
    subscription  text NOT NULL REFERENCES logical_ext.subscription (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relation      regclass,
    conflict_type text CHECK (conflict_type IN ('insert_exists', 'update_exists', 'update_missing',
                                                'delete_missing', 'update_origin_differs', 'delete_origin_differs')),
    resolution    text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (subscription, relation, conflict_type)
);
REVOKE ALL ON logical_ext.conflict_resolution FROM PUBLIC;
GRANT SELECT ON logical_ext.conflict_resolution TO pg_monitor;
SELECT pg_catalog.pg_extension_config_dump('logical_ext.conflict_resolution', '');

-- Every detected conflict. Rows are written in the transaction that applies
-- the change; for resolution 'error' after its rollback. Old rows are pruned
-- after logical_ext.conflict_log_retention.
CREATE TABLE logical_ext.conflict_log (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detected_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    subscription      text NOT NULL,
    relation          text NOT NULL,
    conflict_type     text NOT NULL,
    resolution        text NOT NULL,
    local_tuple       jsonb,
    remote_tuple      jsonb,
    remote_origin     text,
    remote_commit_lsn pg_lsn,
    remote_commit_ts  timestamptz,
    local_commit_ts   timestamptz,
    local_origin      text
);
CREATE INDEX ON logical_ext.conflict_log (detected_at);
REVOKE ALL ON logical_ext.conflict_log FROM PUBLIC;
-- Row images (local_tuple, remote_tuple) are table data: superusers and
-- logical_ext_operator only. pg_monitor sees what happened, not the rows.
GRANT SELECT (id, detected_at, subscription, relation, conflict_type, resolution, remote_origin,
              remote_commit_lsn, remote_commit_ts, local_commit_ts, local_origin)
    ON logical_ext.conflict_log TO pg_monitor;
GRANT SELECT ON logical_ext.conflict_log TO logical_ext_operator;

-- The effective policy: per subscription and conflict type, for all tables
-- and for each table with its own rules.
CREATE VIEW logical_ext.conflict_resolutions AS
    SELECT * FROM logical_ext.effective_conflict_resolutions();
GRANT SELECT ON logical_ext.conflict_resolutions TO pg_monitor;

REVOKE ALL ON FUNCTION logical_ext.set_conflict_resolution(text, text, text, regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.skip_transaction(text, pg_lsn) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.accept_slot_gap(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.takeover_slot(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.adopt_subscription(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.effective_conflict_resolutions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.effective_conflict_resolutions() TO pg_monitor;
