-- Change detection for --subscribers-refresh on-change. sparklet runs this
-- file at start (idempotent; an advisory lock keeps two starts apart). To
-- install it by hand as the table's owner instead:
--   psql "$DATABASE_URL" -f sql/subscribers_on_change.sql
--
-- Every statement that changes subscribers_restaurants (INSERT, UPDATE,
-- DELETE, TRUNCATE; once per statement, not per row) bumps the version in
-- sparklet_subscribers_version and sends NOTIFY sparklet_subscribers_changed
-- with '<schema>:<version>'. Both take effect when the writer's transaction
-- commits; sparklet LISTENs, reloads the cache when the version moves, and
-- reads the version before planning each batch. The version table sits in
-- the same schema as subscribers_restaurants (the trigger names it by the
-- table's schema, whatever the writer's search_path).

CREATE TABLE IF NOT EXISTS sparklet_subscribers_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO sparklet_subscribers_version (version) VALUES (0) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION sparklet_subscribers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
BEGIN
    EXECUTE format('UPDATE %I.sparklet_subscribers_version SET version = version + 1 RETURNING version', TG_TABLE_SCHEMA)
        INTO new_version;
    PERFORM pg_notify('sparklet_subscribers_changed', TG_TABLE_SCHEMA || ':' || new_version);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sparklet_subscribers_changed ON subscribers_restaurants;
CREATE TRIGGER sparklet_subscribers_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscribers_restaurants
    FOR EACH STATEMENT EXECUTE FUNCTION sparklet_subscribers_changed();
