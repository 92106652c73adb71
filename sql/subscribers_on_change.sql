-- Change detection for --subscribers-refresh on-change. sparklet runs this
-- file at start unless it is installed already (so a role that does not own
-- the table can run with it once an owner has installed it):
--   psql "$DATABASE_URL" -f sql/subscribers_on_change.sql
--
-- Every transaction that changes subscribers_restaurants (INSERT, UPDATE,
-- DELETE; TRUNCATE) bumps the version in sparklet_subscribers_version once,
-- when it commits, and sends NOTIFY sparklet_subscribers_changed with
-- '<schema>:<version>' (delivered at commit). sparklet LISTENs, reloads the
-- cache when the version moves, and reads the version when planning each
-- batch.
--
-- The bump runs at commit (a deferred constraint trigger), once per
-- transaction: the version row records the transaction that bumped it last
-- (bumped_by), so a transaction's later rows find it bumped. Nothing a
-- writer can set (no session variable) silences a bump. The version row is
-- locked only while a writer commits: writers do not queue behind each
-- other's open transactions, and cannot deadlock on it. A deferred trigger
-- queues one small event per changed row until commit: for a bulk load of
-- millions of rows, disable the trigger for the load and bump by hand:
--   ALTER TABLE subscribers_restaurants DISABLE TRIGGER sparklet_subscribers_changed;
--   ... load ...
--   ALTER TABLE subscribers_restaurants ENABLE TRIGGER sparklet_subscribers_changed;
--   UPDATE sparklet_subscribers_version SET version = version + 1;
--
-- Everything is created in the schema of subscribers_restaurants (as the
-- search_path finds it), and the function runs as its owner with a fixed
-- search_path, so writers need no rights on the version table and their
-- search_path does not matter. Nobody may call the function directly
-- (EXECUTE is revoked from PUBLIC; triggers fire without it). The install
-- refuses a version table or function that another role created first (one
-- that is neither the installer, the schema's owner nor a superuser), or a
-- version table with triggers: their code would run as the function's owner
-- on every subscriber write. Every call is pg_catalog-qualified, so
-- functions planted in the search_path are never called.

DO $install$
DECLARE
    s text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.oid = 'subscribers_restaurants'::regclass);
    ns oid := (SELECT c.relnamespace FROM pg_class c WHERE c.oid = 'subscribers_restaurants'::regclass);
    untrusted text;
BEGIN
    SELECT pg_catalog.string_agg(o.kind || ' ' || s || '.' || o.name || ' (owner ' || pg_catalog.pg_get_userbyid(o.owner)
             || CASE WHEN o.triggers THEN ', with triggers' ELSE '' END || ')', '; ')
      INTO untrusted
      FROM (SELECT 'table' AS kind, c.relname::text AS name, c.relowner AS owner, c.relnamespace AS ns,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS triggers
              FROM pg_catalog.pg_class c
             WHERE c.relname = 'sparklet_subscribers_version' AND c.relnamespace = ns
            UNION ALL
            SELECT 'function', p.proname::text, p.proowner, p.pronamespace, false
              FROM pg_catalog.pg_proc p
             WHERE p.proname = 'sparklet_subscribers_changed' AND p.pronamespace = ns) o
      JOIN pg_catalog.pg_namespace n ON n.oid = o.ns
     WHERE o.triggers OR NOT (o.owner = n.nspowner
            OR o.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
            OR pg_catalog.pg_has_role(o.owner, n.nspowner, 'MEMBER')
            OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = o.owner));
    IF untrusted IS NOT NULL THEN
        RAISE EXCEPTION 'sparklet: refusing to install over objects another role made: %; drop them, or have their owner hand them over', untrusted;
    END IF;

    EXECUTE pg_catalog.format('CREATE TABLE IF NOT EXISTS %I.sparklet_subscribers_version (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        version bigint NOT NULL)', s);
    EXECUTE pg_catalog.format('ALTER TABLE %I.sparklet_subscribers_version ADD COLUMN IF NOT EXISTS bumped_by xid8', s);
    EXECUTE pg_catalog.format('INSERT INTO %I.sparklet_subscribers_version (version) VALUES (0) ON CONFLICT DO NOTHING', s);

    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION %1$I.sparklet_subscribers_changed() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            new_version bigint;
        BEGIN
            UPDATE %1$I.sparklet_subscribers_version
               SET version = version + 1, bumped_by = pg_catalog.pg_current_xact_id()
             WHERE bumped_by IS DISTINCT FROM pg_catalog.pg_current_xact_id()
            RETURNING version INTO new_version;
            IF FOUND THEN
                PERFORM pg_catalog.pg_notify('sparklet_subscribers_changed', %2$L || ':' || new_version);
            END IF;
            RETURN NULL;
        END
        $body$;$f$, s, s);
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %I.sparklet_subscribers_changed() FROM PUBLIC', s);

    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS sparklet_subscribers_changed ON %I.subscribers_restaurants', s);
    EXECUTE pg_catalog.format('CREATE CONSTRAINT TRIGGER sparklet_subscribers_changed
        AFTER INSERT OR UPDATE OR DELETE ON %1$I.subscribers_restaurants
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %1$I.sparklet_subscribers_changed()', s);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS sparklet_subscribers_truncated ON %I.subscribers_restaurants', s);
    EXECUTE pg_catalog.format('CREATE TRIGGER sparklet_subscribers_truncated
        AFTER TRUNCATE ON %1$I.subscribers_restaurants
        FOR EACH STATEMENT EXECUTE FUNCTION %1$I.sparklet_subscribers_changed()', s);
END
$install$;
