-- Postgres query that loads the subscribers cache (run at start and every
-- --subscribers-refresh). It must return text columns client_id and
-- restaurant_id; add a WHERE clause to cache fewer rows.
SELECT client_id, restaurant_id
FROM subscribers_restaurants
