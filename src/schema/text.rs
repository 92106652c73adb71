//! Campaign text shared by reference across output rows instead of copied
//! into each: the text columns the SQL sees as dictionaries, and the reader
//! the sinks use for a text column in either form.
//!
//! A campaign reaches every subscriber of its restaurant, so a 100k-campaign
//! batch with 10 subscribers per restaurant becomes 900k output rows that
//! repeat the campaign's id, content, owner and contact. Handed to DataFusion
//! as plain text, the join copies those strings into every output row (about
//! 100 bytes a row here, 90 MB for that batch). As a dictionary whose keys
//! are the row numbers and whose values are the decoded column itself (not
//! copied, not hashed), the join copies a 4-byte key instead, and the sinks
//! read the text through it.
//!
//! The subscribers' `client_id` stays plain: it appears once per output row
//! (twice only for a restaurant with two campaigns in one batch), and the
//! output is computed a chunk at a time, so a shared form would only add a
//! 4-byte key per cached row (4 MB for a million).
//!
//! `restaurant_id`, the join key, stays plain text in both tables: DataFusion
//! compares a dictionary with plain text by casting one side, and the cast
//! must not fall on the cached subscribers (a million rows, every batch).
//! The SQL files see the campaigns' other text columns as
//! `Dictionary(Int32, Utf8)`; text functions and comparisons accept them
//! (`docs/sql.md`, "How the files run").

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};

use crate::error::{Error, Result};

/// Columns that stay plain text (the join key of both tables).
const PLAIN: &[&str] = &["restaurant_id"];

/// The type a shared text column has.
pub(crate) fn shared_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A table as the SQL files see it: every text column but the join key
/// becomes a dictionary over itself (keys `0..n`).
pub(crate) fn for_sql(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match column.as_string_opt::<i32>().filter(|_| !PLAIN.contains(&field.name().as_str())) {
            Some(text) => {
                columns.push(Arc::new(share(text)?));
                fields.push(Field::new(field.name(), shared_type(), field.is_nullable()));
            }
            None => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::arrow("sharing text columns", e))
}

/// A dictionary whose value `i` is row `i` of `text`.
fn share(text: &StringArray) -> Result<DictionaryArray<Int32Type>> {
    let n = i32::try_from(text.len()).map_err(|_| Error::Runtime(format!("{} rows in one table", text.len())))?;
    let keys = Int32Array::new((0..n).collect(), text.nulls().cloned());
    DictionaryArray::try_new(keys, Arc::new(text.clone())).map_err(|e| Error::arrow("sharing a text column", e))
}

/// A text column as the sinks read it: plain or shared.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text<'a> {
    Plain(&'a StringArray),
    Shared { keys: &'a Int32Array, values: &'a StringArray },
}

impl<'a> Text<'a> {
    /// `array` as text, if it is `Utf8` or a dictionary of `Utf8` with
    /// `Int32` keys.
    pub(crate) fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(plain) = array.as_string_opt::<i32>() {
            return Some(Text::Plain(plain));
        }
        let dictionary = array.as_dictionary_opt::<Int32Type>()?;
        let values = dictionary.values().as_string_opt::<i32>()?;
        Some(Text::Shared { keys: dictionary.keys(), values })
    }

    /// Row `row`'s text (the caller has checked that there are no nulls).
    pub(crate) fn value(&self, row: usize) -> &'a str {
        match self {
            Text::Plain(a) => a.value(row),
            Text::Shared { keys, values } => values.value(keys.value(row) as usize),
        }
    }

    /// Whether row `row` is NULL.
    pub(crate) fn is_null(&self, row: usize) -> bool {
        match self {
            Text::Plain(a) => a.is_null(row),
            Text::Shared { keys, .. } => keys.is_null(row),
        }
    }

    /// Whether `data_type` is read as text.
    pub(crate) fn is_text(data_type: &DataType) -> bool {
        *data_type == DataType::Utf8 || *data_type == shared_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn text_columns_but_the_join_key_are_shared_without_copying() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("restaurant_id", DataType::Utf8, false),
            Field::new("adv_campaign_content", DataType::Utf8, false),
            Field::new("datetime_created", DataType::Int64, false),
        ]));
        let content = StringArray::from(vec!["a", "bb", "a"]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["r1", "r2", "r1"])),
            Arc::new(content.clone()),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ];
        let shared = for_sql(RecordBatch::try_new(schema, columns).unwrap()).unwrap();
        assert_eq!(shared.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(shared.schema().field(1).data_type(), &shared_type());
        assert_eq!(shared.schema().field(2).data_type(), &DataType::Int64);
        let text = Text::of(shared.column(1).as_ref()).unwrap();
        assert_eq!((0..3).map(|i| text.value(i)).collect::<Vec<_>>(), ["a", "bb", "a"]);
        let values = shared.column(1).as_dictionary::<Int32Type>().values().as_string::<i32>().values().as_ptr();
        assert_eq!(values, content.values().as_ptr(), "the values are the decoded column, not a copy");
    }

    #[test]
    fn only_utf8_and_int32_keyed_utf8_dictionaries_read_as_text() {
        assert!(Text::of(&Int64Array::from(vec![1])).is_none());
        assert!(Text::is_text(&DataType::Utf8) && Text::is_text(&shared_type()));
        assert!(!Text::is_text(&DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))));
    }
}
