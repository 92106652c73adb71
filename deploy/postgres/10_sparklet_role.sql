-- The role sparklet runs as in docker-compose: it may log in and nothing
-- more; 20_sparklet_setup.sql grants it what `sparklet run` uses.
-- Development password only: set your own (and keep it in a secret).
CREATE ROLE sparklet LOGIN PASSWORD 'sparklet';
