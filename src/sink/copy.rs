//! Postgres binary COPY encoding, straight from Arrow columns.
//!
//! The format (PostgreSQL docs, "COPY ... BINARY"): a fixed header, then per
//! row a 16-bit field count and per field a 32-bit length (-1: NULL) and the
//! value in the column type's own binary format, network byte order, then a
//! 16-bit -1 trailer. Each output column is written in its table column's
//! format ([`Target`], checked at start): text as UTF-8, integers and floats
//! big-endian (widened where the column is wider), booleans as one byte,
//! timestamps as microseconds and dates as days since 2000-01-01; an array
//! as Postgres' one-dimensional array (a header, then each element in its
//! type's format), and an array or struct bound for `json`/`jsonb` as the
//! JSON text arrow-json writes for it, as the Kafka sink does.

use arrow::array::{Array, ArrayRef, AsArray, GenericListArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Field, FieldRef, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use bytes::{BufMut, BytesMut};

use super::target::Target;
use crate::error::{CopyError, Error, Result};
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

/// Microseconds from the Unix epoch to Postgres' (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to Postgres'.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One column, typed once per call rather than once per value.
enum Values<'a> {
    Text(Text<'a>),
    Int2(&'a arrow::array::Int16Array),
    Int4(&'a arrow::array::Int32Array),
    Int8(&'a arrow::array::Int64Array),
    Float4(&'a arrow::array::Float32Array),
    Float8(&'a arrow::array::Float64Array),
    Bool(&'a arrow::array::BooleanArray),
    Timestamp(&'a arrow::array::TimestampMicrosecondArray),
    Date(&'a arrow::array::Date32Array),
    /// Each value as JSON text (after a version byte for `jsonb`).
    Json {
        encoder: NullableEncoder<'a>,
        jsonb: bool,
        scratch: Vec<u8>,
    },
    /// Each list as an array of `element` type `oid`.
    Array {
        lists: &'a GenericListArray<i32>,
        element: Box<Values<'a>>,
        oid: u32,
    },
}

/// Appends rows `start..end` of `batch`, column `i` in `targets[i]`'s
/// format; with `ordinal`, each row gets one more field: its number, counted
/// on from there (an upsert's staging table orders by it).
pub fn write_rows(
    batch: &RecordBatch,
    targets: &[Target],
    start: usize,
    end: usize,
    out: &mut BytesMut,
    mut ordinal: Option<&mut i64>,
) -> Result<()> {
    let names = batch.schema();
    let arrays = batch
        .columns()
        .iter()
        .zip(targets)
        .zip(names.fields())
        .map(|((array, target), field)| {
            as_target(array, *target).map_err(|e| Error::arrow(format!("column {} for COPY", field.name()), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = EncoderOptions::default();
    let mut columns = arrays
        .iter()
        .zip(targets)
        .zip(names.fields())
        .map(|((a, t), f)| values(a, *t, f, &options))
        .collect::<Result<Vec<_>>>()?;
    let fields = columns.len() + usize::from(ordinal.is_some());
    let count = i16::try_from(fields).map_err(|_| CopyError::TooManyColumns(fields))?;
    for row in start..end {
        out.put_i16(count);
        for (i, column) in columns.iter_mut().enumerate() {
            write_value(column, row, out).map_err(|()| CopyError::NotFinite(names.field(i).name().clone()))?;
        }
        if let Some(n) = ordinal.as_deref_mut() {
            out.put_i32(8);
            out.put_i64(*n);
            *n += 1;
        }
    }
    Ok(())
}

/// `array` cast to the Arrow type whose values `target` writes as they are
/// (a wider integer or float, microseconds; a list of those).
fn as_target(array: &ArrayRef, target: Target) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    match wanted(target, array.data_type()) {
        Some(wanted) => arrow::compute::cast(array, &wanted),
        None => Ok(array.clone()),
    }
}

/// The type `target` writes a column of type `ty` as, if not `ty` itself.
fn wanted(target: Target, ty: &DataType) -> Option<DataType> {
    Some(match (target, ty) {
        (Target::Text, DataType::Utf8View | DataType::LargeUtf8) => DataType::Utf8,
        (Target::Int4, DataType::Int16) => DataType::Int32,
        (Target::Int8, DataType::Int16 | DataType::Int32) => DataType::Int64,
        (Target::Float8, DataType::Float32) => DataType::Float64,
        (Target::Timestamp, DataType::Timestamp(unit, _)) if *unit != TimeUnit::Microsecond => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        (Target::Timestamp, DataType::Timestamp(_, Some(_))) => DataType::Timestamp(TimeUnit::Microsecond, None),
        (Target::Array { element, .. }, DataType::List(item)) => {
            let item_type = wanted(element.target(), item.data_type())?;
            DataType::List(std::sync::Arc::new(Field::new(item.name(), item_type, true)))
        }
        _ => return None,
    })
}

fn values<'a>(
    array: &'a ArrayRef,
    target: Target,
    field: &'a FieldRef,
    options: &'a EncoderOptions,
) -> Result<Values<'a>> {
    let name = field.name();
    if let Target::Json { jsonb } = target {
        let encoder = make_encoder(field, array.as_ref(), options)
            .map_err(|e| Error::arrow(format!("column {name} as JSON for COPY"), e))?;
        return Ok(Values::Json { encoder, jsonb, scratch: Vec::new() });
    }
    if let (Target::Array { element, oid }, DataType::List(_)) = (target, array.data_type()) {
        let lists = array.as_list::<i32>();
        let element = Box::new(values(lists.values(), element.target(), field, options)?);
        return Ok(Values::Array { lists, element, oid });
    }
    if let Some(text) = Text::of(array.as_ref()) {
        return Ok(Values::Text(text));
    }
    Ok(match array.data_type() {
        DataType::Int16 => Values::Int2(array.as_primitive::<Int16Type>()),
        DataType::Int32 => Values::Int4(array.as_primitive::<Int32Type>()),
        DataType::Int64 => Values::Int8(array.as_primitive::<Int64Type>()),
        DataType::Float32 => Values::Float4(array.as_primitive::<Float32Type>()),
        DataType::Float64 => Values::Float8(array.as_primitive::<Float64Type>()),
        DataType::Boolean => Values::Bool(array.as_boolean()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Values::Timestamp(array.as_primitive::<TimestampMicrosecondType>())
        }
        DataType::Date32 => Values::Date(array.as_primitive::<Date32Type>()),
        other => return Err(CopyError::Type { column: name.to_string(), data_type: other.clone() }.into()),
    })
}

impl Values<'_> {
    fn is_null(&self, row: usize) -> bool {
        match self {
            Values::Text(a) => a.is_null(row),
            Values::Int2(a) => a.is_null(row),
            Values::Int4(a) => a.is_null(row),
            Values::Int8(a) => a.is_null(row),
            Values::Float4(a) => a.is_null(row),
            Values::Float8(a) => a.is_null(row),
            Values::Bool(a) => a.is_null(row),
            Values::Timestamp(a) => a.is_null(row),
            Values::Date(a) => a.is_null(row),
            Values::Json { encoder, .. } => encoder.is_null(row),
            Values::Array { lists, .. } => lists.is_null(row),
        }
    }
}

/// One value; `Err` for a float that is NaN or infinite (Kafka's JSON
/// would write `null`: the sinks would disagree).
fn write_value(column: &mut Values<'_>, row: usize, out: &mut BytesMut) -> std::result::Result<(), ()> {
    if column.is_null(row) {
        out.put_i32(-1);
        return Ok(());
    }
    match column {
        Values::Text(a) => {
            let v = a.value(row).as_bytes();
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        Values::Int2(a) => {
            out.put_i32(2);
            out.put_i16(a.value(row));
        }
        Values::Int4(a) => {
            out.put_i32(4);
            out.put_i32(a.value(row));
        }
        Values::Int8(a) => {
            out.put_i32(8);
            out.put_i64(a.value(row));
        }
        Values::Float4(a) if a.value(row).is_finite() => {
            out.put_i32(4);
            out.put_f32(a.value(row));
        }
        Values::Float8(a) if a.value(row).is_finite() => {
            out.put_i32(8);
            out.put_f64(a.value(row));
        }
        Values::Float4(_) | Values::Float8(_) => return Err(()),
        Values::Bool(a) => {
            out.put_i32(1);
            out.put_u8(u8::from(a.value(row)));
        }
        Values::Timestamp(a) => {
            out.put_i32(8);
            out.put_i64(a.value(row).saturating_sub(PG_EPOCH_MICROS));
        }
        Values::Date(a) => {
            out.put_i32(4);
            out.put_i32(a.value(row).saturating_sub(PG_EPOCH_DAYS));
        }
        Values::Json { encoder, jsonb, scratch } => {
            scratch.clear();
            encoder.encode(row, scratch);
            out.put_i32((scratch.len() + usize::from(*jsonb)) as i32);
            if *jsonb {
                out.put_u8(1);
            }
            out.put_slice(scratch);
        }
        Values::Array { lists, element, oid } => write_array(lists, element, *oid, row, out)?,
    }
    Ok(())
}

/// One list as a one-dimensional Postgres array: its length, then the
/// dimensions (none when empty), whether it has NULLs, the element type,
/// the size and lower bound (1), and each element as a field.
fn write_array(
    lists: &GenericListArray<i32>,
    element: &mut Values<'_>,
    oid: u32,
    row: usize,
    out: &mut BytesMut,
) -> std::result::Result<(), ()> {
    let range = lists.value_offsets()[row] as usize..lists.value_offsets()[row + 1] as usize;
    let at = out.len();
    out.put_i32(0);
    out.put_i32(i32::from(!range.is_empty()));
    out.put_i32(i32::from(range.clone().any(|i| element.is_null(i))));
    out.put_u32(oid);
    if !range.is_empty() {
        out.put_i32(range.len() as i32);
        out.put_i32(1);
    }
    for i in range {
        write_value(element, i, out)?;
    }
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
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
        write_rows(&batch, &[Target::Text, Target::Int8, Target::Int4], 0, 1, &mut out, None).unwrap();
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
