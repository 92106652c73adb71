-- Step 1 (DataFusion SQL): keep the campaigns that are valid now.
-- `campaigns` holds this micro-batch's messages; $now is the batch timestamp
-- in epoch seconds, pinned in the checkpoint so a replay filters the same way.
-- The result is available to later files as the view `active_campaigns`.
SELECT *
FROM campaigns
WHERE adv_campaign_datetime_start <= $now
  AND adv_campaign_datetime_end >= $now
