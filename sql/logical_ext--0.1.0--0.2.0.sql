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
