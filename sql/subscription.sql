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
    created_at   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON logical_ext.subscription FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('logical_ext.subscription', '');

COMMENT ON TABLE logical_ext.subscription IS
    'logical_ext subscriptions; use logical_ext.create_subscription() and friends, read logical_ext.subscription_status';

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
               w.applied_transactions AS txns, w.applied_changes AS changes,
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
           t.werror,
           timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => t.error_us / 1e6),
           coalesce(t.txns, 0), coalesce(t.changes, 0),
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
