-- Sample subscribers for the local docker compose setup.
--
-- docker-compose.yml mounts this file as
-- /docker-entrypoint-initdb.d/02_sample_subscribers.sql, so Postgres runs it
-- once, right after sql/schema.sql (01_schema.sql), when its data volume is
-- first created. To load it into an existing database:
--   psql "$DATABASE_URL" -f examples/sample_subscribers.sql
--
-- Restaurant 123e4567-e89b-12d3-a456-426614174000 is the one used in the
-- sample campaign messages; the other two restaurants have subscribers too,
-- so campaigns for them also fan out.

INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES
    ('023e4567-e89b-12d3-a456-426614174000', '123e4567-e89b-12d3-a456-426614174000'),
    ('023e4567-e89b-12d3-a456-426614174001', '123e4567-e89b-12d3-a456-426614174000'),
    ('023e4567-e89b-12d3-a456-426614174002', '123e4567-e89b-12d3-a456-426614174000'),
    ('023e4567-e89b-12d3-a456-426614174003', '223e4567-e89b-12d3-a456-426614174001'),
    ('023e4567-e89b-12d3-a456-426614174004', '223e4567-e89b-12d3-a456-426614174001'),
    ('023e4567-e89b-12d3-a456-426614174000', '323e4567-e89b-12d3-a456-426614174002'),
    ('023e4567-e89b-12d3-a456-426614174005', '323e4567-e89b-12d3-a456-426614174002');
