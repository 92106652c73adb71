-- Change detection for a lookup with refresh = "on-change" (job.toml), on
-- one watched table. Built into sparklet, which runs it at start for each
-- watched table that lacks it ({table_oid} replaced by the table's oid), in
-- one transaction under an advisory lock with a lock timeout.
--
-- Every transaction that changes the table (INSERT, UPDATE, DELETE;
-- TRUNCATE) bumps the table's row of sparklet_lookup_versions once, when it
-- commits, and sends NOTIFY sparklet_lookups_changed with the table's oid
-- (delivered at commit). sparklet LISTENs, reloads the lookups that watch
-- the table when its version moves, and reads the versions when planning
-- each batch. A notification is only a hint: the version is the truth.
--
-- The bump runs at commit (a deferred constraint trigger), once per
-- transaction: the row records the transaction that bumped it last
-- (bumped_by), so a transaction's later rows find it bumped. A deferred
-- trigger queues one small event per changed row until commit: for a bulk
-- load of millions of rows, disable the trigger for the load and bump by hand:
--   ALTER TABLE t DISABLE TRIGGER sparklet_lookup_changed;
--   ... load ...
--   ALTER TABLE t ENABLE TRIGGER sparklet_lookup_changed;
--   UPDATE sparklet_lookup_versions SET version = version + 1 WHERE table_oid = 't'::regclass;
--
-- The triggers pass the watched table's oid to the function, so on a
-- partitioned table (whose row trigger is cloned onto each partition) a
-- change to any partition bumps the parent's row; a TRUNCATE of one
-- partition on its own is not seen.
--
-- The version table and the function live in the watched table's schema;
-- the function runs as its owner with a fixed search_path, so writers need
-- no rights on the version table and their search_path does not matter.
-- Nobody may call the function directly (EXECUTE is revoked from PUBLIC).
-- The install refuses a version table or function that another role created
-- first (neither the installer, the schema's owner nor a superuser), or a
-- version table with triggers. Every call is pg_catalog-qualified.

DO $install$
DECLARE
    t regclass := {table_oid}::oid::regclass;
    s text := (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE c.oid = t);
    ns oid := (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = t);
    untrusted text;
BEGIN
    SELECT pg_catalog.string_agg(o.kind || ' ' || s || '.' || o.name || ' (owner ' || pg_catalog.pg_get_userbyid(o.owner)
             || CASE WHEN o.triggers THEN ', with triggers' ELSE '' END || ')', '; ')
      INTO untrusted
      FROM (SELECT 'table' AS kind, c.relname::text AS name, c.relowner AS owner, c.relnamespace AS ns,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal) AS triggers
              FROM pg_catalog.pg_class c
             WHERE c.relname = 'sparklet_lookup_versions' AND c.relnamespace = ns
            UNION ALL
            SELECT 'function', p.proname::text, p.proowner, p.pronamespace, false
              FROM pg_catalog.pg_proc p
             WHERE p.proname = 'sparklet_lookup_changed' AND p.pronamespace = ns) o
      JOIN pg_catalog.pg_namespace n ON n.oid = o.ns
     WHERE o.triggers OR NOT (o.owner = n.nspowner
            OR o.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
            OR pg_catalog.pg_has_role(o.owner, n.nspowner, 'MEMBER')
            OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = o.owner));
    IF untrusted IS NOT NULL THEN
        RAISE EXCEPTION 'sparklet: refusing to install over objects another role made: %; drop them, or have their owner hand them over', untrusted;
    END IF;

    EXECUTE pg_catalog.format('CREATE TABLE IF NOT EXISTS %I.sparklet_lookup_versions (
        table_oid oid PRIMARY KEY,
        version bigint NOT NULL,
        bumped_by xid8)', s);
    EXECUTE pg_catalog.format('INSERT INTO %I.sparklet_lookup_versions (table_oid, version) VALUES (%s, 0)
        ON CONFLICT DO NOTHING', s, t::oid);

    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION %1$I.sparklet_lookup_changed() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            UPDATE %1$I.sparklet_lookup_versions
               SET version = version + 1, bumped_by = pg_catalog.pg_current_xact_id()
             WHERE table_oid = TG_ARGV[0]::pg_catalog.oid
               AND bumped_by IS DISTINCT FROM pg_catalog.pg_current_xact_id();
            IF FOUND THEN
                PERFORM pg_catalog.pg_notify('sparklet_lookups_changed', TG_ARGV[0]);
            END IF;
            RETURN NULL;
        END
        $body$;$f$, s);
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %I.sparklet_lookup_changed() FROM PUBLIC', s);

    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS sparklet_lookup_changed ON %s', t);
    EXECUTE pg_catalog.format('CREATE CONSTRAINT TRIGGER sparklet_lookup_changed
        AFTER INSERT OR UPDATE OR DELETE ON %s
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %I.sparklet_lookup_changed(%L)', t, s, t::oid::text);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS sparklet_lookup_truncated ON %s', t);
    EXECUTE pg_catalog.format('CREATE TRIGGER sparklet_lookup_truncated
        AFTER TRUNCATE ON %s
        FOR EACH STATEMENT EXECUTE FUNCTION %I.sparklet_lookup_changed(%L)', t, s, t::oid::text);
END
$install$;
