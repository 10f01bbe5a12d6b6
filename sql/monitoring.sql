-- Slot monitoring: the SQL-shaped objects (docs/MONITORING.md).
-- The Rust functions slot_health(), metrics(), sampler_status() and
-- drop_stale_slots() are created before this file runs.

-- Every slot dropped by logical_ext.drop_stale_slots(), with its last positions.
CREATE TABLE logical_ext.slot_drop_audit (
    id                  bigserial PRIMARY KEY,
    dropped_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    dropped_by          name NOT NULL,
    slot_name           name NOT NULL,
    slot_type           text NOT NULL,
    plugin              name,
    database            name,
    inactive_since      timestamptz,
    inactive_for        interval NOT NULL,
    restart_lsn         pg_catalog.pg_lsn,
    confirmed_flush_lsn pg_catalog.pg_lsn,
    wal_lsn             pg_catalog.pg_lsn NOT NULL,
    lag_bytes           bigint,
    retained_wal_bytes  bigint,
    wal_status          text
);
COMMENT ON TABLE logical_ext.slot_drop_audit IS
    'Replication slots dropped by logical_ext.drop_stale_slots(), with their last positions';
COMMENT ON COLUMN logical_ext.slot_drop_audit.dropped_by IS 'role that called drop_stale_slots()';
COMMENT ON COLUMN logical_ext.slot_drop_audit.inactive_for IS 'the inactive_for bound of the call';
COMMENT ON COLUMN logical_ext.slot_drop_audit.wal_lsn IS 'the server''s WAL position when the slot was dropped';
-- pg_dump keeps the audit trail.
SELECT pg_catalog.pg_extension_config_dump('logical_ext.slot_drop_audit', '');
SELECT pg_catalog.pg_extension_config_dump('logical_ext.slot_drop_audit_id_seq', '');

-- Each walsender joined with its slot: who is connected, how far it got,
-- and how far behind it is in bytes and time. No connection strings.
CREATE FUNCTION logical_ext.replication_status()
RETURNS TABLE (
    pid              integer,
    application_name text,
    client_addr      inet,
    client_port      integer,
    backend_start    timestamptz,
    state            text,
    sync_state       text,
    slot_name        name,
    slot_type        text,
    plugin           name,
    database         name,
    sent_lsn         pg_catalog.pg_lsn,
    write_lsn        pg_catalog.pg_lsn,
    flush_lsn        pg_catalog.pg_lsn,
    replay_lsn       pg_catalog.pg_lsn,
    sent_lag_bytes   bigint,
    write_lag_bytes  bigint,
    flush_lag_bytes  bigint,
    replay_lag_bytes bigint,
    write_lag        interval,
    flush_lag        interval,
    replay_lag       interval,
    reply_time       timestamptz
)
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
    WITH cur AS (
        SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                    ELSE pg_current_wal_lsn() END AS lsn
    )
    SELECT r.pid, r.application_name, r.client_addr, r.client_port, r.backend_start,
           r.state, r.sync_state,
           s.slot_name, s.slot_type, s.plugin, s.database,
           r.sent_lsn, r.write_lsn, r.flush_lsn, r.replay_lsn,
           greatest(pg_wal_lsn_diff(cur.lsn, r.sent_lsn), 0)::bigint,
           greatest(pg_wal_lsn_diff(cur.lsn, r.write_lsn), 0)::bigint,
           greatest(pg_wal_lsn_diff(cur.lsn, r.flush_lsn), 0)::bigint,
           greatest(pg_wal_lsn_diff(cur.lsn, r.replay_lsn), 0)::bigint,
           r.write_lag, r.flush_lag, r.replay_lag, r.reply_time
      FROM pg_stat_replication r
      CROSS JOIN cur
      LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
     ORDER BY r.application_name, r.pid
$$;

COMMENT ON FUNCTION logical_ext.replication_status() IS
    'Each walsender joined with its slot: positions and lag in bytes and time';
COMMENT ON FUNCTION logical_ext.slot_health() IS
    'One row per replication slot: lag, retained WAL, inactive time, growth, forecast, xmin ages, status and reason';
COMMENT ON FUNCTION logical_ext.metrics() IS
    'slot_health(), replication_status(), logical_ext subscription and sampler figures in the Prometheus text format';
COMMENT ON FUNCTION logical_ext.sampler_status() IS
    'State of the background sampler that records slot history';
COMMENT ON FUNCTION logical_ext.drop_stale_slots(interval, boolean, text[], text[], text[], bigint, boolean) IS
    'Drops (dry_run => false) or lists the candidate slots neither active nor moved for at least inactive_for; audited';

-- Permissions: reading is for pg_monitor; dropping is checked inside
-- drop_stale_slots() (superuser or REPLICATION; pg_monitor may dry-run), so
-- it stays executable by PUBLIC like pg_drop_replication_slot().
GRANT USAGE ON SCHEMA logical_ext TO PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.slot_health() FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.replication_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.metrics() FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.sampler_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.slot_health() TO pg_monitor;
GRANT EXECUTE ON FUNCTION logical_ext.replication_status() TO pg_monitor;
GRANT EXECUTE ON FUNCTION logical_ext.metrics() TO pg_monitor;
GRANT EXECUTE ON FUNCTION logical_ext.sampler_status() TO pg_monitor;
REVOKE ALL ON logical_ext.slot_drop_audit FROM PUBLIC;
GRANT SELECT ON logical_ext.slot_drop_audit TO pg_monitor;
