-- Lookup `profiles` (job.toml): each subscriber's language, cached and
-- reloaded when subscriber_profiles changes; a batch reads the version it
-- was planned with.
SELECT client_id, language
FROM subscriber_profiles
