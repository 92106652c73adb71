-- One notification per (campaign, subscriber), with a title made for it.
SELECT
    c.adv_campaign_id,
    s.client_id,
    c.city,
    c.adv_campaign_content || ' in ' || c.city
        || CASE WHEN c.discount_percent > 0
                THEN ' (-' || CAST(c.discount_percent AS VARCHAR) || '%)'
                ELSE '' END AS title,
    c.image_url,
    c.ends_at AS valid_until,
    CAST($now AS INT) AS trigger_datetime_created
FROM active c
JOIN subscribers s ON s.restaurant_id = c.restaurant_id
