-- logical_ext 0.1.0 -> 0.2.0 (ALTER EXTENSION logical_ext UPDATE).
-- pg_test/tests/upgrade.rs checks that an upgraded installation has exactly
-- the objects, grants and function attributes of a fresh one.

-- == Issue 11: security ==

-- sql/roles.sql
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'logical_ext_operator') THEN
        CREATE ROLE logical_ext_operator NOLOGIN;
    END IF;
END
$$;
GRANT pg_monitor TO logical_ext_operator;

-- DDL documents are authentic only with their ddl_log row (src/ddl/authentic.rs).
ALTER TABLE logical_ext.ddl_log ADD COLUMN capture_xid xid8, ADD COLUMN digest bytea;
ALTER TABLE logical_ext.ddl_log SET (user_catalog_table = true);
GRANT SELECT ON logical_ext.ddl_log TO logical_ext_operator;

-- pg_temp explicitly last: no temporary object shadows a catalog.
ALTER FUNCTION logical_ext.ddl_schema_publications(name) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.ddl_relation_publications(oid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.ddl_object_publications(oid, oid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.ddl_object_in_extension(oid, oid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.ddl_published_objects() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.ddl_published_schemas() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.on_sql_drop() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION logical_ext.on_ddl_command_end() SET search_path = pg_catalog, pg_temp;

-- Row images are for superusers and logical_ext_operator; pg_monitor keeps the rest.
REVOKE SELECT ON logical_ext.conflict_log FROM pg_monitor;
GRANT SELECT (id, detected_at, subscription, relation, conflict_type, resolution, remote_origin,
              remote_commit_lsn, remote_commit_ts, local_commit_ts, local_origin)
    ON logical_ext.conflict_log TO pg_monitor;
GRANT SELECT ON logical_ext.conflict_log TO logical_ext_operator;

-- conflict_resolutions (documented for pg_monitor) reads subscription names.
GRANT SELECT (id, name) ON logical_ext.subscription TO pg_monitor;

-- == Issue 12: crash safety and conservative destructive paths ==

-- issue 12b: drop_stale_slots() gains candidate filters (slot types, name
-- patterns, retained WAL, subscription slots); the two-argument function of
-- 0.1.0 is replaced (keeping both would make two-argument calls ambiguous).
DROP FUNCTION logical_ext.drop_stale_slots(interval, boolean);
CREATE FUNCTION logical_ext."drop_stale_slots"(
	"inactive_for" interval,
	"dry_run" bool DEFAULT true,
	"slot_types" TEXT[] DEFAULT ARRAY['logical'],
	"include_names" TEXT[] DEFAULT ARRAY['%'],
	"exclude_names" TEXT[] DEFAULT ARRAY[]::text[],
	"min_retained_bytes" bigint DEFAULT 0,
	"include_subscription_slots" bool DEFAULT false
) RETURNS TABLE (
	"slot_name" TEXT,
	"slot_type" TEXT,
	"plugin" TEXT,
	"database" TEXT,
	"inactive_since" timestamp with time zone,
	"restart_lsn" pg_lsn,
	"confirmed_flush_lsn" pg_lsn,
	"lag_bytes" bigint,
	"retained_wal_bytes" bigint,
	"wal_status" TEXT,
	"dropped" bool,
	"action" TEXT
)
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_stale_slots_filtered_wrapper';
COMMENT ON FUNCTION logical_ext.drop_stale_slots(interval, boolean, text[], text[], text[], bigint, boolean) IS
    'Drops (dry_run => false) or lists the candidate slots neither active nor moved for at least inactive_for; audited';
