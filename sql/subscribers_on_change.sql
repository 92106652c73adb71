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
-- The bump runs at commit (a deferred constraint trigger, once per
-- transaction thanks to a transaction-local flag), so the version row is
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
-- search_path does not matter.

DO $install$
DECLARE
    s text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.oid = 'subscribers_restaurants'::regclass);
BEGIN
    EXECUTE pg_catalog.format('CREATE TABLE IF NOT EXISTS %I.sparklet_subscribers_version (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        version bigint NOT NULL)', s);
    EXECUTE pg_catalog.format('INSERT INTO %I.sparklet_subscribers_version (version) VALUES (0) ON CONFLICT DO NOTHING', s);

    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION %1$I.sparklet_subscribers_changed() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            new_version bigint;
        BEGIN
            IF current_setting('sparklet.subscribers_bumped', true) = 'yes' THEN
                RETURN NULL;
            END IF;
            PERFORM set_config('sparklet.subscribers_bumped', 'yes', true);
            UPDATE %1$I.sparklet_subscribers_version SET version = version + 1 RETURNING version INTO new_version;
            PERFORM pg_notify('sparklet_subscribers_changed', %2$L || ':' || new_version);
            RETURN NULL;
        END
        $body$;$f$, s, s);

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
