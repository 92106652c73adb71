-- The input: one JSON object per Kafka message, declared as the table the
-- steps read (`campaigns`). A message that does not fit is a bad record,
-- dead-lettered with a reason naming the column or the constraint:
--   a NOT NULL field missing or null (missing_field, null_field), a value of
--   another JSON type (wrong_type: "123" is not an integer, 1.5 is not an
--   integer), a number outside the type (out_of_range), a CHECK that is false
--   (the constraint's name, or check_failed). An absent nullable field is
--   NULL, or its DEFAULT. Fields the table lacks are ignored (or refused:
--   job.toml, [input] unknown_fields = "refuse").
-- Types: TEXT, VARCHAR, SMALLINT, INTEGER, BIGINT, REAL, DOUBLE PRECISION,
-- BOOLEAN, TIMESTAMPTZ (an RFC 3339 string or epoch seconds). See docs/sql.md.
CREATE TABLE campaigns (
    restaurant_id TEXT NOT NULL,
    adv_campaign_id TEXT NOT NULL,
    adv_campaign_content TEXT NOT NULL,
    adv_campaign_owner TEXT NOT NULL,
    adv_campaign_owner_contact TEXT NOT NULL,
    adv_campaign_datetime_start BIGINT NOT NULL,  -- epoch seconds
    adv_campaign_datetime_end BIGINT NOT NULL,
    datetime_created BIGINT NOT NULL,
    CONSTRAINT ends_before_start CHECK (adv_campaign_datetime_end >= adv_campaign_datetime_start)
)
