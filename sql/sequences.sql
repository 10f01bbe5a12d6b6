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
