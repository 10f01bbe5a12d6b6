-- logical_ext 0.2.0 -> 0.3.0 (ALTER EXTENSION logical_ext UPDATE).
-- pg_test/tests/upgrade.rs checks that an installation upgraded from each
-- released version (0.1.0, 0.2.0) has exactly the objects, grants and
-- function attributes of a fresh one. One section per issue.

-- == Issue 11 follow-up: error texts may quote row values ==
-- subscription_status.last_error and subscription_tables.last_error are for
-- superusers and logical_ext_operator, like conflict_log's row images.
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

CREATE OR REPLACE FUNCTION logical_ext.subscription_status_rows()
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
    conninfo text,
    publications text[],
    slot_name text,
    origin text
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH w AS (SELECT * FROM logical_ext.worker_status()),
    t AS (
        SELECT s.*, w.pid, w.state AS wstate, w.last_error AS werror,
               NULLIF(w.received_lsn, 0) AS recv, NULLIF(w.latest_end_lsn, 0) AS latest,
               NULLIF(w.last_msg_send_time, 0) AS send_us, NULLIF(w.last_msg_receipt_time, 0) AS recv_us,
               NULLIF(w.last_commit_time, 0) AS commit_us, NULLIF(w.last_error_time, 0) AS error_us,
               w.applied_transactions AS txns, w.applied_changes AS changes, w.conflicts,
               pg_replication_origin_progress('logical_ext_' || s.id, false) AS applied
        FROM logical_ext.subscription s LEFT JOIN w ON w.subid = s.id
    )
    SELECT t.name, t.enabled, t.pid,
           CASE WHEN NOT t.enabled THEN 'disabled'
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
           logical_ext.redact_conninfo(t.conninfo), t.publications, t.slot_name, t.origin
    FROM t ORDER BY t.name
$$;

REVOKE SELECT ON logical_ext.subscription_tables FROM pg_monitor;
GRANT SELECT (subid, relid, state, sync_lsn, rows_copied, bytes_copied, started_at, finished_at, resync)
    ON logical_ext.subscription_tables TO pg_monitor;
GRANT SELECT ON logical_ext.subscription_tables TO logical_ext_operator;
