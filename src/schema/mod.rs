//! The message formats of the job: the campaign a restaurant
//! publishes (input), the row written per subscriber (output), the reason
//! codes of refused messages ([`Reason`]), and campaign text shared between
//! rows ([`text`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

mod reason;
pub(crate) mod text;

pub use reason::Reason;

/// Name under which a batch's campaigns are registered for the SQL files.
pub const CAMPAIGNS_TABLE: &str = "campaigns";
/// Name under which the cached subscribers are registered for the SQL files.
pub const SUBSCRIBERS_TABLE: &str = "subscribers";

// Each field of the formats, defined once.
const RESTAURANT_ID: (&str, DataType) = ("restaurant_id", DataType::Utf8);
const ADV_CAMPAIGN_ID: (&str, DataType) = ("adv_campaign_id", DataType::Utf8);
const ADV_CAMPAIGN_CONTENT: (&str, DataType) = ("adv_campaign_content", DataType::Utf8);
const ADV_CAMPAIGN_OWNER: (&str, DataType) = ("adv_campaign_owner", DataType::Utf8);
const ADV_CAMPAIGN_OWNER_CONTACT: (&str, DataType) = ("adv_campaign_owner_contact", DataType::Utf8);
const ADV_CAMPAIGN_DATETIME_START: (&str, DataType) = ("adv_campaign_datetime_start", DataType::Int64);
const ADV_CAMPAIGN_DATETIME_END: (&str, DataType) = ("adv_campaign_datetime_end", DataType::Int64);
const DATETIME_CREATED: (&str, DataType) = ("datetime_created", DataType::Int64);
const CLIENT_ID: (&str, DataType) = ("client_id", DataType::Utf8);
const TRIGGER_DATETIME_CREATED: (&str, DataType) = ("trigger_datetime_created", DataType::Int32);

/// Fields of an input campaign message, all required.
pub const CAMPAIGN_FIELDS: &[(&str, DataType)] = &[
    RESTAURANT_ID,
    ADV_CAMPAIGN_ID,
    ADV_CAMPAIGN_CONTENT,
    ADV_CAMPAIGN_OWNER,
    ADV_CAMPAIGN_OWNER_CONTACT,
    ADV_CAMPAIGN_DATETIME_START,
    ADV_CAMPAIGN_DATETIME_END,
    DATETIME_CREATED,
];

/// Fields of an output message, in the output format's order: the
/// campaign's, with `client_id` before `datetime_created`, and the trigger's
/// time last. The Postgres sink writes the same columns into
/// `subscribers_feedback` (its `id` and `feedback` are left to their
/// defaults).
pub const OUTPUT_FIELDS: &[(&str, DataType)] = &[
    RESTAURANT_ID,
    ADV_CAMPAIGN_ID,
    ADV_CAMPAIGN_CONTENT,
    ADV_CAMPAIGN_OWNER,
    ADV_CAMPAIGN_OWNER_CONTACT,
    ADV_CAMPAIGN_DATETIME_START,
    ADV_CAMPAIGN_DATETIME_END,
    CLIENT_ID,
    DATETIME_CREATED,
    TRIGGER_DATETIME_CREATED,
];

/// Columns of the subscribers table as the SQL files see it (the cache
/// stores `restaurant_id` as a dictionary: see [`subscribers`]).
pub const SUBSCRIBER_FIELDS: &[(&str, DataType)] = &[CLIENT_ID, RESTAURANT_ID];

/// Arrow schema of the `campaigns` table.
pub fn campaigns() -> SchemaRef {
    schema(CAMPAIGN_FIELDS)
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

/// `batch`'s columns, in order, cast to `schema`'s types (a dictionary to
/// text, or back).
pub(crate) fn cast_to(batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}
