-- One notification per (campaign, subscriber), with a title in the
-- subscriber's language (profiles; English when unknown).
SELECT
    c.adv_campaign_id,
    s.client_id,
    c.city,
    CASE p.language WHEN 'ru' THEN 'Акция: ' WHEN 'de' THEN 'Angebot: ' ELSE 'Deal: ' END
        || c.adv_campaign_content || ' (' || c.city || ')'
        || CASE WHEN c.discount_percent > 0
                THEN ' -' || CAST(c.discount_percent AS VARCHAR) || '%'
                ELSE '' END AS title,
    COALESCE(p.language, 'en') AS language,
    c.image_url,
    c.ends_at AS valid_until,
    CAST($now AS INT) AS trigger_datetime_created
FROM active c
JOIN subscribers s ON s.restaurant_id = c.restaurant_id
LEFT JOIN profiles p ON p.client_id = s.client_id
