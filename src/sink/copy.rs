//! Postgres binary COPY encoding, straight from Arrow columns.
//!
//! The format (PostgreSQL docs, "COPY ... BINARY"): a fixed header, then per
//! row a 16-bit field count and per field a 32-bit length and the value in
//! network byte order, then a 16-bit -1 trailer. Text is its UTF-8 bytes,
//! `int8`/`int4` big-endian integers.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use bytes::{BufMut, BytesMut};

use crate::error::{CopyError, Result};
use crate::schema::text::Text;

/// Signature, flags and header-extension length.
pub fn write_header(out: &mut BytesMut) {
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
}

/// End-of-data marker.
pub fn write_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// One column, typed once per batch rather than once per value.
enum Column<'a> {
    Text(Text<'a>),
    Int8(&'a arrow::array::Int64Array),
    Int4(&'a arrow::array::Int32Array),
}

/// Appends rows `start..end` of `batch`; columns must be text (plain or
/// shared, [`Text`]), Int64 or Int32 without nulls (the sink's schema
/// guarantees both).
pub fn write_rows(batch: &RecordBatch, start: usize, end: usize, out: &mut BytesMut) -> Result<()> {
    let columns = typed_columns(batch)?;
    let count = i16::try_from(columns.len()).map_err(|_| CopyError::TooManyColumns(columns.len()))?;
    for row in start..end {
        out.put_i16(count);
        for column in &columns {
            match column {
                Column::Text(a) => {
                    let v = a.value(row).as_bytes();
                    out.put_i32(v.len() as i32);
                    out.put_slice(v);
                }
                Column::Int8(a) => {
                    out.put_i32(8);
                    out.put_i64(a.value(row));
                }
                Column::Int4(a) => {
                    out.put_i32(4);
                    out.put_i32(a.value(row));
                }
            }
        }
    }
    Ok(())
}

fn typed_columns(batch: &RecordBatch) -> Result<Vec<Column<'_>>> {
    batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(array, field)| {
            if array.logical_null_count() > 0 {
                return Err(CopyError::Nulls(field.name().clone()).into());
            }
            if let Some(text) = Text::of(array.as_ref()) {
                return Ok(Column::Text(text));
            }
            match array.data_type() {
                DataType::Int64 => Ok(Column::Int8(array.as_primitive::<Int64Type>())),
                DataType::Int32 => Ok(Column::Int4(array.as_primitive::<Int32Type>())),
                other => Err(CopyError::Type { column: field.name().clone(), data_type: other.clone() }.into()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn encodes_rows_in_postgres_binary_format() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Utf8, false),
            Field::new("b", DataType::Int64, false),
            Field::new("i", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["ab"])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int32Array::from(vec![-2])),
            ],
        )
        .unwrap();
        let mut out = BytesMut::new();
        write_header(&mut out);
        write_rows(&batch, 0, 1, &mut out).unwrap();
        write_trailer(&mut out);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out.to_vec(), expected);
    }
}
