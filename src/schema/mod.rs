//! The message formats of the job: the campaign a restaurant
//! publishes (input), the row written per subscriber (output), the reason
//! codes of refused messages ([`Reason`]), and campaign text shared between
//! rows ([`text`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

mod reason;
pub(crate) mod text;

pub use reason::Reason;

/// Name under which a batch's campaigns are registered for the SQL files.
pub const CAMPAIGNS_TABLE: &str = "campaigns";
/// Name under which the cached subscribers are registered for the SQL files.
pub const SUBSCRIBERS_TABLE: &str = "subscribers";

/// Fields of an input campaign message, all required.
pub const CAMPAIGN_FIELDS: &[(&str, DataType)] = &[
    ("restaurant_id", DataType::Utf8),
    ("adv_campaign_id", DataType::Utf8),
    ("adv_campaign_content", DataType::Utf8),
    ("adv_campaign_owner", DataType::Utf8),
    ("adv_campaign_owner_contact", DataType::Utf8),
    ("adv_campaign_datetime_start", DataType::Int64),
    ("adv_campaign_datetime_end", DataType::Int64),
    ("datetime_created", DataType::Int64),
];

/// Fields of an output message, in the output format's order. The Postgres sink writes
/// the same columns into `subscribers_feedback` (its `id` and `feedback` are
/// left to their defaults).
pub const OUTPUT_FIELDS: &[(&str, DataType)] = &[
    ("restaurant_id", DataType::Utf8),
    ("adv_campaign_id", DataType::Utf8),
    ("adv_campaign_content", DataType::Utf8),
    ("adv_campaign_owner", DataType::Utf8),
    ("adv_campaign_owner_contact", DataType::Utf8),
    ("adv_campaign_datetime_start", DataType::Int64),
    ("adv_campaign_datetime_end", DataType::Int64),
    ("client_id", DataType::Utf8),
    ("datetime_created", DataType::Int64),
    ("trigger_datetime_created", DataType::Int32),
];

/// Columns of the subscribers table as the SQL files see it (the cache
/// stores `restaurant_id` as a dictionary: see [`subscribers`]).
pub const SUBSCRIBER_FIELDS: &[(&str, DataType)] = &[("client_id", DataType::Utf8), ("restaurant_id", DataType::Utf8)];

/// Arrow schema of the `campaigns` table.
pub fn campaigns() -> SchemaRef {
    schema(CAMPAIGN_FIELDS)
}

/// Arrow schema of a batch handed to the sinks.
pub fn output() -> SchemaRef {
    schema(OUTPUT_FIELDS)
}

/// Arrow schema of the cached subscribers table: `restaurant_id` is a
/// dictionary, each restaurant's id stored once for all its subscribers
/// (for a million rows, 10 per restaurant: 6 MB instead of 20), and handed
/// to the SQL as plain text ([`crate::subscribers::scan`]).
pub fn subscribers() -> SchemaRef {
    let fields = SUBSCRIBER_FIELDS.iter().map(|(name, ty)| {
        let ty = if *name == "restaurant_id" { crate::schema::text::shared_type() } else { ty.clone() };
        Field::new(*name, ty, false)
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(name, ty)| Field::new(*name, ty.clone(), false)).collect::<Vec<_>>()))
}
