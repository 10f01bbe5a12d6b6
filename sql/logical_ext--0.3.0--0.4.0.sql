-- logical_ext 0.3.0 -> 0.4.0 (ALTER EXTENSION logical_ext UPDATE).
-- pg_test/tests/upgrade.rs checks that an installation upgraded from each
-- released version (0.1.0, 0.2.0, 0.3.0) has exactly the objects, grants and
-- function attributes of a fresh one. One section per issue.

-- == Issue 15: statistics that survive restarts ==
-- subscription_status reads its counters (now persisted, src/apply/stats.rs)
-- through subscription_counters() and shows apply_error_count,
-- sync_error_count and stats_reset; reset_subscription_stats() zeroes them.
CREATE FUNCTION logical_ext."subscription_counters"(
	"subid" INT, /* i32 */
	"created_at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"applied_transactions" bigint,  /* i64 */
	"applied_changes" bigint,  /* i64 */
	"conflicts" bigint[],  /* Vec < i64 > */
	"apply_error_count" bigint,  /* i64 */
	"sync_error_count" bigint,  /* i64 */
	"stats_reset" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscription_counters_wrapper';

CREATE FUNCTION logical_ext."reset_subscription_stats"(
	"name" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reset_subscription_stats_wrapper';

REVOKE ALL ON FUNCTION logical_ext.subscription_counters(integer, timestamptz) FROM PUBLIC;
-- One row per call (the default estimate of 1000 made the view's plan
-- expensive enough for JIT: a second of compilation per query).
ALTER FUNCTION logical_ext.subscription_counters(integer, timestamptz) ROWS 1;
REVOKE ALL ON FUNCTION logical_ext.reset_subscription_stats(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.reset_subscription_stats(text) TO logical_ext_operator;

-- New columns: the view and its function are created again.
DROP VIEW logical_ext.subscription_status;
DROP FUNCTION logical_ext.subscription_status_rows();

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
GRANT EXECUTE ON FUNCTION logical_ext.subscription_status_rows() TO pg_monitor;
GRANT SELECT ON logical_ext.subscription_status TO pg_monitor;

-- == Issue 16: no silent gap, sequences ==
-- The apply worker refuses to stream from a slot whose confirmed_flush_lsn is
-- past its origin's progress (src/apply/slot_fence.rs, docs/FAILOVER.md).
-- Subscriptions of 0.3.0 start with accept_once: their workers reported idle
-- positions as flushed without moving the origin, so their slots are
-- legitimately ahead; the first start under 0.4.0 adopts the slot's position.
ALTER TABLE logical_ext.subscription
    ADD COLUMN slot_gap text NOT NULL DEFAULT 'accept_once' CHECK (slot_gap IN ('refuse', 'accept_once')),
    ADD COLUMN slot_gap_accepted text;
ALTER TABLE logical_ext.subscription ALTER COLUMN slot_gap SET DEFAULT 'refuse';

CREATE FUNCTION logical_ext."accept_slot_gap"(
	"subscription" TEXT /* &str */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'accept_slot_gap_wrapper';
REVOKE ALL ON FUNCTION logical_ext.accept_slot_gap(text) FROM PUBLIC;

-- Sequences in the stream (src/sequences/, src/apply/sequence/).
CREATE FUNCTION logical_ext."replicate_sequence"(
	"seq" regclass /* pgrx :: PgRelation */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'replicate_sequence_wrapper';

CREATE FUNCTION logical_ext."start_sequence_capture"() RETURNS bool /* bool */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_sequence_capture_wrapper';

CREATE FUNCTION logical_ext."sync_sequences"(
	"subscription" TEXT /* & str */
) RETURNS TABLE (
	"sequence" TEXT,  /* String */
	"action" TEXT,  /* String */
	"publisher_last_value" bigint,  /* i64 */
	"publisher_is_called" bool,  /* bool */
	"local_before" bigint,  /* Option < i64 > */
	"local_after" bigint  /* Option < i64 > */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sync_sequences_wrapper';

-- Sequences in the stream (src/sequences/, docs/FORMAT.md "SEQ documents",
-- docs/FAILOVER.md). On the publisher, the capture worker reads the sequences
-- that feed published tables (and those added with replicate_sequence()) every
-- logical_ext.sequence_capture_interval and, for those that moved, writes one
-- transactional logical message (prefix logical_ext.sequence). This table is
-- what makes such a message authentic: only the capture worker (a superuser)
-- writes it, in the message's own transaction, with the values it sends; the
-- output plugin reads it under the decoding snapshot (user_catalog_table).
-- id: the sequence's pg_class oid (bigint: the key the plugin looks up).
-- explicit: added with replicate_sequence() (sent to every consumer).
CREATE TABLE logical_ext.replicated_sequence (
    id             bigint PRIMARY KEY,
    explicit       boolean NOT NULL DEFAULT false,
    sent_xid       xid8,
    sent_value     bigint,
    sent_is_called boolean,
    sent_at        timestamptz
) WITH (user_catalog_table = true);
REVOKE ALL ON logical_ext.replicated_sequence FROM PUBLIC;
GRANT SELECT ON logical_ext.replicated_sequence TO pg_monitor;

-- The state of one sequence, exactly (pg_sequence_last_value() hides
-- last_value when is_called is false). Needs SELECT on the sequence.
CREATE FUNCTION logical_ext.sequence_state(seq regclass, OUT last_value bigint, OUT is_called boolean)
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format('SELECT last_value, is_called FROM %s', seq) INTO last_value, is_called;
END
$$;

-- The sequences a consumer of `publications` (every publication when NULL)
-- gets: those feeding a published table through a column default (serial,
-- nextval('s') shared by several tables) or an identity column, and every
-- sequence added with replicate_sequence(). Publisher side: read by the
-- capture worker and, over the subscription's connection, by
-- sync_sequences() on a subscriber. Runs with the caller's privileges.
CREATE FUNCTION logical_ext.replicated_sequences(publications text[] DEFAULT NULL)
RETURNS TABLE (seqid oid, schema text, name text, last_value bigint, is_called boolean,
               increment bigint, publications text[], explicit boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH published AS (
        SELECT c.oid AS relid, pt.pubname::text AS pubname
          FROM pg_catalog.pg_publication_tables pt
          JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
          JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
         WHERE $1 IS NULL OR pt.pubname = ANY ($1)
    ), fed AS (
        SELECT d.refobjid AS seq, p.pubname
          FROM published p
          JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = p.relid
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
               AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
        UNION
        SELECT d.objid, p.pubname
          FROM published p
          JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refobjid = p.relid AND d.deptype = 'i'
    ), chosen AS (
        SELECT x.seq,
               coalesce(pg_catalog.array_agg(DISTINCT x.pubname) FILTER (WHERE x.pubname IS NOT NULL), '{}') AS pubs,
               pg_catalog.bool_or(x.explicit) AS explicit
          FROM (SELECT f.seq, f.pubname, false AS explicit FROM fed f
                UNION ALL
                SELECT r.id::oid, NULL, true FROM logical_ext.replicated_sequence r WHERE r.explicit) x
         GROUP BY x.seq
    )
    SELECT s.oid, n.nspname::text, s.relname::text, st.last_value, st.is_called, sq.seqincrement, c.pubs, c.explicit
      FROM chosen c
      JOIN pg_catalog.pg_class s ON s.oid = c.seq AND s.relkind = 'S'
           AND s.relpersistence <> 't'  -- another session's temporary sequence cannot be read
      JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
      JOIN pg_catalog.pg_sequence sq ON sq.seqrelid = s.oid
     CROSS JOIN LATERAL logical_ext.sequence_state(s.oid::pg_catalog.regclass) st
     ORDER BY 2, 3
$$;

-- Reading sequence values needs SELECT on them: whoever the subscription
-- connects as (sync_sequences) and the capture worker (a superuser).
REVOKE ALL ON FUNCTION logical_ext.sequence_state(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.replicated_sequences(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.sequence_state(regclass) TO pg_monitor;
GRANT EXECUTE ON FUNCTION logical_ext.replicated_sequences(text[]) TO pg_monitor;
-- replicate_sequence(): the sequence's owner or a superuser (checked inside).
-- sync_sequences(): superusers (it reads the subscription's conninfo).
REVOKE ALL ON FUNCTION logical_ext.sync_sequences(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.start_sequence_capture() FROM PUBLIC;
-- The capture worker of this database starts with the extension (with
-- logical_ext in shared_preload_libraries; otherwise at the next start).
SELECT logical_ext.start_sequence_capture();

-- == Issue 18: slot xmin ages and the temporary flag ==
-- slot_health() gains the columns temporary, xmin_age and catalog_xmin_age;
-- its forecast_basis is now 'safe_wal_size' or 'disk' (the nearer limit).
-- A new OUT column changes the row type: the function is created again.
DROP FUNCTION logical_ext.slot_health();
CREATE FUNCTION logical_ext."slot_health"() RETURNS TABLE (
	"slot_name" TEXT,  /* String */
	"plugin" TEXT,  /* Option < String > */
	"slot_type" TEXT,  /* String */
	"database" TEXT,  /* Option < String > */
	"active" bool,  /* bool */
	"active_pid" INT,  /* Option < i32 > */
	"restart_lsn" pg_lsn,  /* Option < Lsn > */
	"confirmed_flush_lsn" pg_lsn,  /* Option < Lsn > */
	"lag_bytes" bigint,  /* Option < i64 > */
	"retained_wal_bytes" bigint,  /* Option < i64 > */
	"wal_status" TEXT,  /* Option < String > */
	"safe_wal_size" bigint,  /* Option < i64 > */
	"inactive_since" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"wal_growth_bytes_per_sec" double precision,  /* Option < f64 > */
	"seconds_until_exhausted" double precision,  /* Option < f64 > */
	"forecast_basis" TEXT,  /* String */
	"status" TEXT,  /* String */
	"reason" TEXT,  /* String */
	"temporary" bool,  /* bool */
	"xmin_age" bigint,  /* Option < i64 > */
	"catalog_xmin_age" bigint  /* Option < i64 > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'slot_health_wrapper';
COMMENT ON FUNCTION logical_ext.slot_health() IS
    'One row per replication slot: lag, retained WAL, inactive time, growth, forecast, xmin ages, status and reason';
REVOKE ALL ON FUNCTION logical_ext.slot_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION logical_ext.slot_health() TO pg_monitor;

-- == Issue 16: slot ownership and the subscriber timeline check ==
-- The apply worker names itself to the publisher's plugin ("owner" option;
-- src/decoder/owner.rs records the claim beside the slot) and a node whose
-- system identifier or timeline differs from the one the subscription last ran
-- on waits for adopt_subscription() (src/apply/slot_owner.rs,
-- docs/FAILOVER.md). Existing subscriptions record their node at their next start.
ALTER TABLE logical_ext.subscription
    ADD COLUMN node_identity text,
    ADD COLUMN slot_takeover boolean NOT NULL DEFAULT false,
    ADD COLUMN slot_taken_over_at timestamptz;

CREATE FUNCTION logical_ext."takeover_slot"(
	"subscription" TEXT /* &str */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'takeover_slot_wrapper';
REVOKE ALL ON FUNCTION logical_ext.takeover_slot(text) FROM PUBLIC;

CREATE FUNCTION logical_ext."adopt_subscription"(
	"subscription" TEXT /* &str */
) RETURNS void
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'adopt_subscription_wrapper';
REVOKE ALL ON FUNCTION logical_ext.adopt_subscription(text) FROM PUBLIC;

-- subscription_status: state 'blocked' for a subscription waiting for adopt.
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

-- == Issue 17: online reconciliation (docs/RECONCILE.md) ==
-- Publisher side: reconcile_verify/reconcile_repair (granted by the operator to
-- the subscription's role); subscriber side: verify_table, verify_subscription,
-- repair_table; the tables of sql/reconcile.sql.
CREATE FUNCTION logical_ext."reconcile_repair"(
	"subscription" TEXT, /* & str */
	"node" TEXT, /* & str */
	"nonce" TEXT, /* & str */
	"run" bigint, /* i64 */
	"batch" INT, /* i32 */
	"schema" TEXT, /* & str */
	"table" TEXT, /* & str */
	"sub_relation" bigint, /* i64 */
	"publications" TEXT[], /* Vec < String > */
	"columns" TEXT[], /* Vec < String > */
	"keys" TEXT[], /* Vec < String > */
	"key_list" TEXT, /* & str */
	"lock_timeout_ms" INT /* i32 */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reconcile_repair_wrapper';

CREATE FUNCTION logical_ext."reconcile_verify"(
	"subscription" TEXT, /* & str */
	"node" TEXT, /* & str */
	"nonce" TEXT, /* & str */
	"run" bigint, /* i64 */
	"chunk" INT, /* i32 */
	"schema" TEXT, /* & str */
	"table" TEXT, /* & str */
	"sub_relation" bigint, /* i64 */
	"publications" TEXT[], /* Vec < String > */
	"columns" TEXT[], /* Vec < String > */
	"keys" TEXT[], /* Vec < String > */
	"codings" TEXT[], /* Vec < String > */
	"lower" TEXT[], /* :: std :: option :: Option < Vec < String > > */
	"upper" TEXT[], /* :: std :: option :: Option < Vec < String > > */
	"max_rows" INT, /* i32 */
	"per_key" bool, /* bool */
	"lock_timeout_ms" INT /* i32 */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reconcile_verify_wrapper';

CREATE FUNCTION logical_ext."repair_table"(
	"subscription" TEXT, /* & str */
	"relation" regclass, /* pgrx :: PgRelation */
	"run_id" bigint DEFAULT NULL, /* Option < i64 > */
	"timeout_ms" INT DEFAULT 300000, /* i32 */
	"lock_timeout_ms" INT DEFAULT 1000 /* i32 */
) RETURNS TABLE (
	"run_id" bigint,  /* i64 */
	"repaired" bigint,  /* i64 */
	"failed" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'repair_table_wrapper';

CREATE FUNCTION logical_ext."verify_subscription"(
	"subscription" TEXT, /* & str */
	"chunk_rows" INT DEFAULT 10000, /* i32 */
	"throttle_ms" INT DEFAULT 0, /* i32 */
	"timeout_ms" INT DEFAULT 300000 /* i32 */
) RETURNS TABLE (
	"relation" TEXT,  /* String */
	"run_id" bigint,  /* i64 */
	"chunks" INT,  /* i32 */
	"rows" bigint,  /* i64 */
	"mismatched_chunks" bigint,  /* i64 */
	"missing" bigint,  /* i64 */
	"extra" bigint,  /* i64 */
	"different" bigint,  /* i64 */
	"errors" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_subscription_wrapper';

CREATE FUNCTION logical_ext."verify_table"(
	"subscription" TEXT, /* & str */
	"relation" regclass, /* pgrx :: PgRelation */
	"chunk_rows" INT DEFAULT 10000, /* i32 */
	"key_rows" INT DEFAULT 1000, /* i32 */
	"throttle_ms" INT DEFAULT 0, /* i32 */
	"timeout_ms" INT DEFAULT 300000, /* i32 */
	"lock_timeout_ms" INT DEFAULT 1000 /* i32 */
) RETURNS TABLE (
	"run_id" bigint,  /* i64 */
	"chunks" INT,  /* i32 */
	"rows" bigint,  /* i64 */
	"mismatched_chunks" bigint,  /* i64 */
	"missing" bigint,  /* i64 */
	"extra" bigint,  /* i64 */
	"different" bigint,  /* i64 */
	"errors" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_table_wrapper';


-- On the publisher: one row per reconcile message, vouching for it (as
-- ddl_log does for DDL events): the writing transaction and the SHA-256 of
-- the message. A user catalog table, read by the output plugin under the
-- decoding snapshot. Rows may be deleted once every subscriber is past them.
CREATE TABLE logical_ext.reconcile_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    capture_xid xid8 NOT NULL,
    digest      bytea NOT NULL
) WITH (user_catalog_table = true);
REVOKE ALL ON logical_ext.reconcile_log FROM PUBLIC;
GRANT SELECT ON logical_ext.reconcile_log TO pg_monitor, logical_ext_operator;

-- On the subscriber: run numbers, and what the apply worker found.
CREATE SEQUENCE logical_ext.verify_run_seq;
REVOKE ALL ON SEQUENCE logical_ext.verify_run_seq FROM PUBLIC;

-- One row per chunk compared (pass 1: per_key false; the per-key re-check
-- of a mismatching chunk: per_key true). Range (lower_key, upper_key] of
-- the key columns' texts, NULL meaning unbounded. pub_ms / sub_ms: time
-- each node spent reading and hashing the chunk.
CREATE TABLE logical_ext.verify_chunks (
    run_id       bigint NOT NULL,
    subscription text NOT NULL,
    relid        regclass NOT NULL,
    chunk        integer NOT NULL,
    per_key      boolean NOT NULL,
    lower_key    text[],
    upper_key    text[],
    pub_rows     bigint NOT NULL,
    sub_rows     bigint,
    matches      boolean,
    lsn          pg_lsn NOT NULL,
    error        text,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    pub_ms       double precision,
    sub_ms       double precision,
    PRIMARY KEY (run_id, chunk)
);
REVOKE ALL ON logical_ext.verify_chunks FROM PUBLIC;
-- Key bounds and error texts (which may quote row values) are row data:
-- pg_monitor sees the figures only.
GRANT SELECT (run_id, subscription, relid, chunk, per_key, pub_rows, sub_rows, matches, lsn, checked_at, pub_ms, sub_ms)
    ON logical_ext.verify_chunks TO pg_monitor;
GRANT SELECT ON logical_ext.verify_chunks TO logical_ext_operator;

-- One row per differing key: missing (on the publisher only), extra (on
-- the subscriber only), different (values differ); repaired_at once
-- repair_table brought it to the publisher's version; chunk: the per-key
-- chunk that found it.
CREATE TABLE logical_ext.verify_differences (
    run_id       bigint NOT NULL,
    subscription text NOT NULL,
    relid        regclass NOT NULL,
    key_columns  text[] NOT NULL,
    key          text[] NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('missing', 'extra', 'different')),
    lsn          pg_lsn NOT NULL,
    found_at     timestamptz NOT NULL DEFAULT now(),
    repaired_at  timestamptz,
    repair_lsn   pg_lsn,
    repair_error text,
    chunk        integer NOT NULL,
    PRIMARY KEY (run_id, relid, key)
);
REVOKE ALL ON logical_ext.verify_differences FROM PUBLIC;
-- Keys are row data: for the operator, not pg_monitor.
GRANT SELECT ON logical_ext.verify_differences TO logical_ext_operator;

-- Reconcile documents the apply worker did not act on (no open request of
-- this subscriber matched, or they named what the request did not), counted
-- per subscription and reason (src/reconcile/requests.rs, Rejection).
CREATE TABLE logical_ext.reconcile_rejected (
    subscription text NOT NULL,
    reason       text NOT NULL,
    count        bigint NOT NULL,
    last_lsn     pg_lsn NOT NULL,
    first_at     timestamptz NOT NULL DEFAULT now(),
    last_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, reason)
);
REVOKE ALL ON logical_ext.reconcile_rejected FROM PUBLIC;
GRANT SELECT ON logical_ext.reconcile_rejected TO pg_monitor, logical_ext_operator;

-- One row per repaired key, with the local row before and after (the
-- compared columns' canonical text), like conflict_log.
CREATE TABLE logical_ext.repair_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       bigint NOT NULL,
    subscription text NOT NULL,
    relid        regclass NOT NULL,
    key_columns  text[] NOT NULL,
    key          text[] NOT NULL,
    action       text NOT NULL CHECK (action IN ('insert', 'update', 'delete', 'none')),
    local_row    text,
    repaired_row text,
    lsn          pg_lsn NOT NULL,
    repaired_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON logical_ext.repair_log FROM PUBLIC;
GRANT SELECT ON logical_ext.repair_log TO logical_ext_operator;

-- Publisher side: granted by the operator to the subscription's role.
REVOKE ALL ON FUNCTION logical_ext.reconcile_verify(text, text, text, bigint, integer, text, text, bigint, text[], text[], text[], text[], text[], text[], integer, boolean, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext.reconcile_repair(text, text, text, bigint, integer, text, text, bigint, text[], text[], text[], text, integer) FROM PUBLIC;
-- Subscriber side: any login may call them; each checks that the caller owns
-- the table or is an operator (docs/SECURITY.md).

-- Issue 16, parts 3 and 4: publisher failover (sql/failover.sql).
CREATE FUNCTION logical_ext."failover_readiness"() RETURNS TABLE (
	"slot_name" TEXT,  /* String */
	"role" TEXT,  /* String */
	"synchronized" bool,  /* bool */
	"persistent" bool,  /* bool */
	"restart_lsn" pg_lsn,  /* Option < Lsn > */
	"confirmed_flush_lsn" pg_lsn,  /* Option < Lsn > */
	"lag_bytes" bigint,  /* Option < i64 > */
	"safe" bool,  /* bool */
	"reason" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'failover_readiness_wrapper';

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
