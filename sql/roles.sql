-- Roles (docs/SECURITY.md). Runs first.
--
-- logical_ext_operator: for the people who run replication. A member of
-- pg_monitor (every figure and state), and in addition allowed to read the
-- row images of logical_ext.conflict_log and the DDL text of ddl_log.
-- Managing subscriptions stays with superusers, as CREATE SUBSCRIPTION does
-- on PostgreSQL 15. Roles are cluster-wide: the role is created once, by the
-- first database that installs the extension, and outlives DROP EXTENSION.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'logical_ext_operator') THEN
        CREATE ROLE logical_ext_operator NOLOGIN;
    END IF;
END
$$;
GRANT pg_monitor TO logical_ext_operator;
