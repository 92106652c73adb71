-- A restaurant's campaign with a city, an optional picture and discount,
-- and its validity as RFC 3339 timestamps (or epoch seconds).
CREATE TABLE campaigns (
    restaurant_id TEXT NOT NULL,
    adv_campaign_id TEXT NOT NULL,
    adv_campaign_content TEXT NOT NULL,
    city TEXT NOT NULL,
    image_url TEXT,
    discount_percent SMALLINT DEFAULT 0,
    starts_at TIMESTAMPTZ NOT NULL,
    ends_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT image_url_https CHECK (image_url IS NULL OR image_url LIKE 'https://%'),
    CONSTRAINT discount_range CHECK (discount_percent BETWEEN 0 AND 90),
    CONSTRAINT ends_after_start CHECK (ends_at > starts_at)
)
