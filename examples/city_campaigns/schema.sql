-- The example job's tables (psql "$DATABASE_URL" -f examples/city_campaigns/schema.sql).
CREATE TABLE IF NOT EXISTS subscribers_restaurants (
    id serial4 NOT NULL,
    client_id varchar NOT NULL,
    restaurant_id varchar NOT NULL,
    CONSTRAINT pk_id PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS subscriber_profiles (
    client_id text PRIMARY KEY,
    language text NOT NULL
);

CREATE TABLE IF NOT EXISTS campaign_notifications (
    adv_campaign_id text NOT NULL,
    client_id text NOT NULL,
    city text NOT NULL,
    title text NOT NULL,
    language text NOT NULL,
    image_url text,
    valid_until timestamptz NOT NULL,
    trigger_datetime_created int4 NOT NULL,
    notified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (adv_campaign_id, client_id)
);
