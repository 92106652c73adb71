-- Postgres query that loads the subscribers cache (run at start and every
-- --subscribers-refresh). It must return non-null text columns client_id and
-- restaurant_id; add a WHERE clause to cache fewer rows. Keep the ORDER BY:
-- the snapshot id is a hash of the rows in order, so a stable order means an
-- unchanged table gives the same snapshot; and in byte order (COLLATE "C") a
-- favourite saved twice arrives as two neighbouring rows, which sparklet
-- drops in one cheap pass (any other order needs a slower hash set).
SELECT client_id, restaurant_id
FROM subscribers_restaurants
ORDER BY restaurant_id COLLATE "C", client_id COLLATE "C"
