-- DDL capture (src/ddl/): the log of captured commands, the catalog questions
-- capture asks ("which publications cover this object?"), and the event
-- triggers. The triggers' functions are SECURITY DEFINER with a pinned
-- search_path (pg_catalog first, pg_temp explicitly last, so no temporary
-- object can shadow a catalog); every helper pins the same search_path; the
-- Rust functions they call are not callable by PUBLIC.

CREATE TABLE logical_ext.ddl_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at       timestamptz NOT NULL DEFAULT now(),
    -- event_trigger / replicate_ddl: captured here; apply: replayed here by
    -- the apply worker of `subscription`.
    source          text NOT NULL CHECK (source IN ('event_trigger', 'replicate_ddl', 'apply')),
    subscription    text,
    -- Position of the DDL message (on the publisher, also for `apply` rows).
    lsn             pg_lsn,
    command_tag     text NOT NULL,
    object_type     text,
    object_identity text,
    schema_name     text,
    publications    text[] NOT NULL DEFAULT '{}',
    search_path     text NOT NULL,
    role_name       text NOT NULL,
    command         text NOT NULL,
    replicated      boolean NOT NULL,
    -- Why a captured command was not replicated (NULL when it was).
    reason          text,
    CHECK (replicated OR reason IS NOT NULL),
    -- Replicated rows only: the capturing (top-level) transaction and the
    -- SHA-256 of the DDL message the row vouches for. The output plugin reads
    -- them under the decoding snapshot (a user catalog table may be read
    -- there) and prints a DDL document only for a message with such a row:
    -- src/ddl/authentic.rs.
    capture_xid     xid8,
    digest          bytea
) WITH (user_catalog_table = true);
CREATE INDEX ON logical_ext.ddl_log (logged_at);
REVOKE ALL ON logical_ext.ddl_log FROM PUBLIC;
-- DDL text (never a password: statements carrying one are recorded by tag).
GRANT SELECT ON logical_ext.ddl_log TO pg_monitor, logical_ext_operator;
COMMENT ON TABLE logical_ext.ddl_log IS
    'DDL captured by logical_ext (replicated or refused) and DDL replayed by its apply workers';

-- Publications that cover a schema: FOR TABLES IN SCHEMA it, and FOR ALL
-- TABLES (which covers every schema but the system ones).
CREATE FUNCTION logical_ext.ddl_schema_publications(nsp name)
RETURNS text[] LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT p.pubname::text ORDER BY p.pubname::text), '{}')
    FROM pg_publication p
    WHERE (p.puballtables AND nsp NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nsp !~ '^pg_temp')
       OR EXISTS (SELECT 1 FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid
                  WHERE pn.pnpubid = p.oid AND n.nspname = nsp)
$$;

-- Publications whose changes include a table's: as pgoutput decides, a
-- partition is published when it or an ancestor is listed, or sits in a
-- listed schema.
CREATE FUNCTION logical_ext.ddl_relation_publications(rel oid)
RETURNS text[] LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH tree AS (
        SELECT rel AS relid UNION SELECT a.relid FROM pg_partition_ancestors(rel) a
    )
    SELECT coalesce(array_agg(DISTINCT pub ORDER BY pub), '{}') FROM (
        SELECT p.pubname::text AS pub
        FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid
        WHERE r.prrelid IN (SELECT relid FROM tree)
        UNION ALL
        SELECT unnest(logical_ext.ddl_schema_publications(n.nspname))
        FROM tree JOIN pg_class c ON c.oid = tree.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
    ) s
$$;

-- Publications an object touched by a DDL command belongs to: a table's own,
-- a table's for what hangs off it (index, trigger, constraint, rule, policy,
-- statistics, default), the schema's for anything else in a schema.
CREATE FUNCTION logical_ext.ddl_object_publications(classid oid, objid oid, nsp text)
RETURNS text[] LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE classid
        WHEN 'pg_class'::regclass THEN (
            SELECT CASE
                WHEN c.relkind IN ('r', 'p') THEN logical_ext.ddl_relation_publications(c.oid)
                WHEN c.relkind IN ('i', 'I') THEN
                    logical_ext.ddl_relation_publications((SELECT indrelid FROM pg_index WHERE indexrelid = c.oid))
                ELSE logical_ext.ddl_schema_publications(nsp)
            END FROM pg_class c WHERE c.oid = objid)
        WHEN 'pg_trigger'::regclass THEN
            logical_ext.ddl_relation_publications((SELECT tgrelid FROM pg_trigger WHERE oid = objid))
        WHEN 'pg_constraint'::regclass THEN (
            SELECT CASE WHEN conrelid <> 0 THEN logical_ext.ddl_relation_publications(conrelid)
                        ELSE logical_ext.ddl_schema_publications(nsp) END
            FROM pg_constraint WHERE oid = objid)
        WHEN 'pg_rewrite'::regclass THEN
            logical_ext.ddl_relation_publications((SELECT ev_class FROM pg_rewrite WHERE oid = objid))
        WHEN 'pg_policy'::regclass THEN
            logical_ext.ddl_relation_publications((SELECT polrelid FROM pg_policy WHERE oid = objid))
        WHEN 'pg_statistic_ext'::regclass THEN
            logical_ext.ddl_relation_publications((SELECT stxrelid FROM pg_statistic_ext WHERE oid = objid))
        WHEN 'pg_attrdef'::regclass THEN
            logical_ext.ddl_relation_publications((SELECT adrelid FROM pg_attrdef WHERE oid = objid))
        WHEN 'pg_namespace'::regclass THEN
            logical_ext.ddl_schema_publications((SELECT nspname FROM pg_namespace WHERE oid = objid))
        ELSE CASE WHEN nsp IS NULL THEN '{}'::text[] ELSE logical_ext.ddl_schema_publications(nsp) END
    END
$$;

-- Whether an object belongs to an extension (dependency type 'e').
CREATE FUNCTION logical_ext.ddl_object_in_extension(classid oid, objid oid)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_depend d
                   WHERE d.classid = $1 AND d.objid = $2 AND d.deptype = 'e')
$$;

-- Taken just before a DROP runs (the catalog rows that say what was
-- published are gone by the time sql_drop fires): every object that is, or
-- hangs off, a table listed in a FOR TABLE publication, with its publications.
CREATE FUNCTION logical_ext.ddl_published_objects()
RETURNS TABLE (classid oid, objid oid, publications text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH listed AS (
        SELECT r.prrelid, p.pubname::text AS pub
        FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
    ), rels AS (
        -- pg_partition_tree() lists nothing for a table that is not partitioned.
        SELECT prrelid AS relid, pub FROM listed
        UNION
        SELECT t.relid, listed.pub FROM listed, LATERAL pg_partition_tree(listed.prrelid) t
    ), objs AS (
        SELECT 'pg_class'::regclass::oid AS classid, relid AS objid, pub FROM rels
        UNION
        SELECT d.classid, d.objid, rels.pub
        FROM pg_depend d JOIN rels ON d.refclassid = 'pg_class'::regclass AND d.refobjid = rels.relid
    )
    SELECT classid, objid, array_agg(DISTINCT pub ORDER BY pub) FROM objs GROUP BY classid, objid
$$;

-- Also taken before a DROP (DROP SCHEMA removes the schema's publication
-- membership): publications per schema, as ddl_schema_publications says.
CREATE FUNCTION logical_ext.ddl_published_schemas()
RETURNS TABLE (nspname name, publications text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nspname, publications
    FROM (SELECT n.nspname, logical_ext.ddl_schema_publications(n.nspname) AS publications
          FROM pg_namespace n) s
    WHERE cardinality(publications) > 0
$$;

REVOKE ALL ON FUNCTION logical_ext.ddl_schema_publications(name), logical_ext.ddl_relation_publications(oid),
    logical_ext.ddl_object_publications(oid, oid, text), logical_ext.ddl_object_in_extension(oid, oid),
    logical_ext.ddl_published_objects(), logical_ext.ddl_published_schemas() FROM PUBLIC;

-- The event triggers. sql_drop only notes what was dropped; the one capture
-- per command happens at ddl_command_end, which fires after it.
CREATE FUNCTION logical_ext.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM logical_ext._ddl_note_dropped();
END
$$;

CREATE FUNCTION logical_ext.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM logical_ext._ddl_capture(tg_tag);
END
$$;

REVOKE ALL ON FUNCTION logical_ext.on_sql_drop(), logical_ext.on_ddl_command_end() FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_ext._ddl_note_dropped(), logical_ext._ddl_capture(text),
    logical_ext.replicate_ddl(text) FROM PUBLIC;

CREATE EVENT TRIGGER logical_ext_sql_drop ON sql_drop
    EXECUTE FUNCTION logical_ext.on_sql_drop();
CREATE EVENT TRIGGER logical_ext_ddl_command_end ON ddl_command_end
    EXECUTE FUNCTION logical_ext.on_ddl_command_end();
