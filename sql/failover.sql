-- Publisher failover (issue 16, parts 3 and 4; src/failover/, docs/FAILOVER.md).
-- The Rust function failover_readiness() is created before this file runs.

-- The logical slots marked for failover. A table, so physical standbys get
-- the marks with the WAL: their slot synchronization worker copies the
-- slots listed here (logical_ext.synchronize_slots), and the primary's
-- walsenders of these slots wait for logical_ext.standby_slot_names.
CREATE TABLE logical_ext.failover_slot (
    slot_name  name PRIMARY KEY,
    marked_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    marked_by  name NOT NULL DEFAULT SESSION_USER
);
REVOKE ALL ON logical_ext.failover_slot FROM PUBLIC;
GRANT SELECT ON logical_ext.failover_slot TO pg_monitor;

-- Mark (enabled => true) or unmark a logical_ext slot of this database for
-- failover. Superusers and logical_ext_operator.
CREATE FUNCTION logical_ext.set_slot_failover(slot_name name, enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF $2 IS DISTINCT FROM true THEN
        DELETE FROM logical_ext.failover_slot f WHERE f.slot_name = $1;
        RETURN;
    END IF;
    SELECT r.slot_type, r.plugin, r.database, r.active INTO s
      FROM pg_catalog.pg_replication_slots r WHERE r.slot_name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'replication slot "%" does not exist', $1
            USING ERRCODE = 'undefined_object',
                  HINT = 'Mark the slot on the primary after creating it (create_subscription creates it on the publisher).';
    END IF;
    IF s.slot_type <> 'logical' OR s.plugin IS DISTINCT FROM 'logical_ext' THEN
        RAISE EXCEPTION 'replication slot "%" is not a logical_ext slot', $1
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only logical slots of the logical_ext plugin can be marked for failover.';
    END IF;
    IF s.database IS DISTINCT FROM pg_catalog.current_database() THEN
        RAISE EXCEPTION 'replication slot "%" belongs to database "%"', $1, s.database
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Call set_slot_failover() in the slot''s database.';
    END IF;
    INSERT INTO logical_ext.failover_slot AS f (slot_name) VALUES ($1)
        ON CONFLICT ON CONSTRAINT failover_slot_pkey DO NOTHING;
    IF s.active THEN
        RAISE NOTICE 'replication slot "%" is in use: its walsender waits for logical_ext.standby_slot_names from its next start', $1;
    END IF;
END
$$;

COMMENT ON TABLE logical_ext.failover_slot IS
    'Logical slots marked for failover: copied by standbys, held back to logical_ext.standby_slot_names';
COMMENT ON FUNCTION logical_ext.set_slot_failover(name, boolean) IS
    'Marks (or unmarks) a logical_ext slot of this database for failover';
COMMENT ON FUNCTION logical_ext.failover_readiness() IS
    'Per failover slot: synchronized, persistent, positions, lag, and whether failing over now would lose nothing (safe, reason)';

REVOKE ALL ON FUNCTION logical_ext.set_slot_failover(name, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.set_slot_failover(name, boolean) TO logical_ext_operator;
REVOKE ALL ON FUNCTION logical_ext.failover_readiness() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.failover_readiness() TO pg_monitor;
