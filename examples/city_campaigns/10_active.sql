-- Campaigns valid now, in the cities the app serves.
SELECT *
FROM campaigns
WHERE starts_at <= to_timestamp($now)
  AND ends_at >= to_timestamp($now)
  AND city IN ('Moscow', 'Saint Petersburg', 'Kazan')
