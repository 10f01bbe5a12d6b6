-- Online reconciliation (issue 17, docs/RECONCILE.md, src/reconcile/).

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
