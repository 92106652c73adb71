-- Step 2 (DataFusion SQL): one row per (campaign, subscriber of its restaurant).
-- `subscribers` is the cached subscribers_restaurants table. The last file's
-- columns are the output, as they come: each row is one Kafka message (JSON,
-- fields in this order, keyed by client_id: job.toml) and one row of
-- subscribers_feedback (columns by name; sparklet checks the table at start).
SELECT
    c.restaurant_id,
    c.adv_campaign_id,
    c.adv_campaign_content,
    c.adv_campaign_owner,
    c.adv_campaign_owner_contact,
    c.adv_campaign_datetime_start,
    c.adv_campaign_datetime_end,
    s.client_id,
    c.datetime_created,
    CAST($now AS INT) AS trigger_datetime_created
FROM active_campaigns c
JOIN subscribers s ON s.restaurant_id = c.restaurant_id
