//! A decoded chunk made whole: `TIMESTAMPTZ` columns from their text,
//! `DEFAULT`s where a field was absent, then the `CHECK`s; a row whose check
//! is false (SQL's rule: NULL passes) leaves the chunk as a refusal.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::zip::zip;
use arrow::util::display::array_value_to_string;

use super::input::{Check, Input};
use super::refusal::Refusal;
use crate::error::{Error, Result};
use crate::job::UTC;
use crate::util::text::{quote, MAX_QUOTED_BYTES};

/// A finished chunk and its refused rows (their index in the chunk).
pub(crate) struct Finished {
    pub(crate) batch: RecordBatch,
    pub(crate) refused: Vec<(usize, Refusal)>,
}

/// Finishes `chunk`, whose row `r` had the absent-field mask `absent[r]`.
pub(crate) fn finish(input: &Input, chunk: RecordBatch, absent: &[u64]) -> Result<Finished> {
    let mut columns = chunk.columns().to_vec();
    for (i, field) in input.schema().fields().iter().enumerate() {
        if field.data_type() != input.decode_schema.field(i).data_type() {
            columns[i] = timestamps(&columns[i], field.name())?;
        }
    }
    for (bit, (i, value)) in input.defaults.iter().enumerate() {
        let mask: BooleanArray = absent.iter().map(|a| Some(a >> bit & 1 == 1)).collect();
        let value = value.to_scalar().map_err(|e| Error::Runtime(format!("default of column {i}: {e}")))?;
        columns[*i] = zip(&mask, &value, &columns[*i]).map_err(|e| Error::arrow("filling the defaults", e))?;
    }
    let batch = RecordBatch::try_new(input.schema(), columns).map_err(|e| Error::arrow("finishing a chunk", e))?;
    // One slot per row, made only once a check fails (the usual chunk has
    // no refused row).
    let mut refused: Vec<Option<Refusal>> = Vec::new();
    for check in &input.checks {
        apply(check, &batch, &mut refused);
    }
    if refused.iter().all(Option::is_none) {
        return Ok(Finished { batch, refused: Vec::new() });
    }
    let keep: BooleanArray = refused.iter().map(|r| Some(r.is_none())).collect();
    let batch = filter_record_batch(&batch, &keep).map_err(|e| Error::arrow("dropping refused rows", e))?;
    let refused = refused.into_iter().enumerate().filter_map(|(i, r)| r.map(|r| (i, r))).collect();
    Ok(Finished { batch, refused })
}

/// A `TIMESTAMPTZ` column from the text arrow-json kept: epoch seconds, or
/// RFC 3339 (both checked by validation, so a failure here is a bug).
fn timestamps(column: &ArrayRef, name: &str) -> Result<ArrayRef> {
    let text = column.as_string::<i32>();
    let micros = text.iter().map(|value| {
        value
            .map(|v| match v.parse::<i64>() {
                Ok(seconds) => seconds.checked_mul(1_000_000),
                Err(_) => chrono::DateTime::parse_from_rfc3339(v).ok().map(|t| t.timestamp_micros()),
            })
            .map(|m| m.ok_or_else(|| Error::Runtime(format!("column {name}: {v:?} is not a timestamp", v = value))))
            .transpose()
    });
    let micros = micros.collect::<Result<TimestampMicrosecondArray>>()?;
    Ok(Arc::new(micros.with_timezone(UTC)))
}

/// Marks the rows `check` refuses (those not refused already); `refused`
/// gets its slots when the first row is refused.
fn apply(check: &Check, batch: &RecordBatch, refused: &mut Vec<Option<Refusal>>) {
    let whole = check.expr.evaluate(batch).and_then(|v| v.into_array(batch.num_rows()));
    match whole {
        // SQL's rule: NULL passes. Nothing false: nothing to do.
        Ok(values) if values.as_boolean().iter().all(|v| v != Some(false)) => {}
        Ok(values) => {
            let values = values.as_boolean();
            refused.resize(batch.num_rows(), None);
            for (row, slot) in refused.iter_mut().enumerate() {
                if slot.is_none() && values.is_valid(row) && !values.value(row) {
                    *slot = Some(Refusal::new(check.reason, sentence(check, batch, row, None)));
                }
            }
        }
        // One row's value breaks the expression (an overflow): row by row,
        // so only that row is refused.
        Err(_) => {
            refused.resize(batch.num_rows(), None);
            for (row, slot) in refused.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let one = batch.slice(row, 1);
                match check.expr.evaluate(&one).and_then(|v| v.into_array(1)) {
                    Ok(v) if v.as_boolean().is_valid(0) && !v.as_boolean().value(0) => {
                        *slot = Some(Refusal::new(check.reason, sentence(check, batch, row, None)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let why = e.strip_backtrace();
                        *slot = Some(Refusal::new(check.reason, sentence(check, batch, row, Some(&why))));
                    }
                }
            }
        }
    }
}

/// Why row `row` was refused: `job.toml`'s sentence, or `CHECK name (expr)
/// is false for a = 1, b = 2` (text quoted and cut).
fn sentence(check: &Check, batch: &RecordBatch, row: usize, error: Option<&str>) -> String {
    let value = |i: usize| {
        let column = batch.column(i);
        if column.is_null(row) {
            return "NULL".to_string();
        }
        let text = array_value_to_string(column, row).unwrap_or_default();
        match column.data_type().is_numeric() {
            true => text,
            false => quote(&text, MAX_QUOTED_BYTES),
        }
    };
    if let (Some(template), None) = (&check.template, error) {
        let mut out = template.clone();
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let name = format!("{{{}}}", field.name());
            if out.contains(&name) {
                out = out.replace(&name, &value(i));
            }
        }
        return out;
    }
    let values: Vec<String> =
        check.columns.iter().map(|i| format!("{} = {}", batch.schema().field(*i).name(), value(*i))).collect();
    match error {
        Some(e) => format!("{} could not be evaluated for {}: {e}", check.text, values.join(", ")),
        None => format!("{} is false for {}", check.text, values.join(", ")),
    }
}
