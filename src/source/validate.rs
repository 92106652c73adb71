//! Full validation of one input message against the job's declaration
//! ([`Input`]), before any sink sees it.
//!
//! [`validate`] is a pure function of the message bytes, the declaration and
//! the limits, so a replay classifies every message exactly as the first run
//! did. A message it accepts decodes into one row of the declared types with
//! nothing coerced (no NUL in text, integers in range, `"123"` is not an
//! integer, `1.5` not an integer, an output row under the producer's size
//! limit); a message it refuses gets a [`Reason`] (a short stable code,
//! written to the dead-letter header `sparklet.error.reason`) and a sentence
//! for people ([`super::refusal`]: escaped and bounded where it quotes the
//! message). Fields are checked in declaration order. Unknown fields are
//! ignored (or refused: `unknown_fields = "refuse"`), up to [`MAX_FIELDS`]
//! fields in all; duplicate names are found in one pass (a hash set). The
//! declaration's `CHECK`s run on the decoded chunk ([`super::finish`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::input::{ColumnPlan, Input};
pub(crate) use super::refusal::Refusal;
use crate::config::{Limits, OUTPUT_OVERHEAD};
use crate::job::{ColumnType, UnknownFields};
use crate::schema::Reason;
use crate::util::text::{quote, MAX_QUOTED_BYTES};

/// Most fields one message may have, the declared fields and unknown
/// ones together: far more than a real campaign carries, and a bound on the
/// work and memory of checking one message (each name is checked against
/// those seen, in a hash set). More is [`Reason::TooManyFields`].
pub(crate) const MAX_FIELDS: usize = 1000;

/// Checks one message; `Ok` means it decodes into a row of the declared
/// types, and holds a bit per defaulted column whose field was absent
/// ([`super::input::ColumnPlan::default_bit`]).
pub(crate) fn validate(payload: Option<&[u8]>, limits: &Limits, input: &Input) -> Result<u64, Refusal> {
    let bytes = match payload {
        None => return Err(Refusal::new(Reason::Empty, "the message has no value (null payload)")),
        Some([]) => return Err(Refusal::new(Reason::Empty, "the message value is empty")),
        Some(bytes) => bytes,
    };
    if bytes.len() > limits.max_record_bytes {
        let (len, max) = (bytes.len(), limits.max_record_bytes);
        return Err(Refusal::new(Reason::TooLarge, format!("{len} bytes, more than --max-record-bytes {max}")));
    }
    if bytes.len() + OUTPUT_OVERHEAD > limits.max_output_bytes {
        return Err(Refusal::new(
            Reason::OutputTooLarge,
            format!(
                "{} bytes: its output messages could exceed the producer's message.max.bytes {}",
                bytes.len(),
                limits.max_output_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Refusal::new(Reason::NotUtf8, format!("not UTF-8 text: invalid byte at {}", e.valid_up_to())))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut refusal = None;
    let absent = match (ObjectSeed { input, refusal: &mut refusal }).deserialize(&mut de) {
        Ok(absent) => absent,
        Err(e) => return Err(refusal.unwrap_or_else(|| json_refusal(&e))),
    };
    de.end().map_err(|_| Refusal::new(Reason::SeveralValues, "data after the JSON object (several values?)"))?;
    Ok(absent)
}

fn json_refusal(e: &serde_json::Error) -> Refusal {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => Refusal::new(Reason::Truncated, format!("the JSON ends early: {e}")),
        _ => Refusal::new(Reason::NotJson, format!("not JSON: {e}")),
    }
}

/// Declared columns whose values one message's check keeps on the stack.
const STACK_COLUMNS: usize = 16;

/// Walks one JSON object; the first problem is stored in `refusal` and
/// aborts the walk.
struct ObjectSeed<'r> {
    input: &'r Input,
    refusal: &'r mut Option<Refusal>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        // One slot per declared column: on the stack for a usual table (no
        // allocation per message), on the heap for a wide one.
        let mut small: [Option<Scalar>; STACK_COLUMNS] = Default::default();
        let mut wide: Vec<Option<Scalar>> = Vec::new();
        let values: &mut [Option<Scalar>] = match self.input.columns.len() {
            n if n <= STACK_COLUMNS => &mut small[..n],
            n => {
                wide.resize_with(n, || None);
                &mut wide
            }
        };
        let mut unknown: HashSet<Cow<'de, str>> = HashSet::new();
        let mut fields = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            fields += 1;
            if fields > MAX_FIELDS {
                return Err(self.refuse(Reason::TooManyFields, format!("more than {MAX_FIELDS} fields")));
            }
            let Some(index) = self.input.index(&key) else {
                if self.input.unknown == UnknownFields::Refuse {
                    let message = format!("field {} is not declared in input.sql", quote(&key, MAX_QUOTED_BYTES));
                    return Err(self.refuse(Reason::UnknownField, message));
                }
                if let Some(key) = unknown.replace(key) {
                    return Err(self.refuse(Reason::DuplicateField, twice(&key)));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if values[index].is_some() {
                return Err(self.refuse(Reason::DuplicateField, twice(&key)));
            }
            let ty = self.input.columns[index].ty;
            values[index] = Some(map.next_value_seed(ValueSeed { timestamp: ty == ColumnType::TimestampTz })?);
        }
        self.check_fields(values)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON array, not an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON string, not an object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON boolean, not an object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is JSON null, not an object"))
    }
}

impl ObjectSeed<'_> {
    fn refuse<E: de::Error>(self, reason: Reason, message: impl AsRef<str>) -> E {
        *self.refusal = Some(Refusal::new(reason, message));
        E::custom(reason.code())
    }

    /// Every field of its column's type, in declaration order; the absent
    /// fields that have a default, as bits.
    fn check_fields<E: de::Error>(self, values: &mut [Option<Scalar>]) -> Result<u64, E> {
        let mut absent = 0u64;
        for (column, value) in self.input.columns.iter().zip(values.iter_mut().map(Option::take)) {
            let name = &column.name;
            let refusal = match value {
                None => match (column.default_bit, column.nullable) {
                    (Some(bit), _) => {
                        absent |= 1 << bit;
                        continue;
                    }
                    (None, true) => continue,
                    (None, false) => (Reason::MissingField, format!("field {name} is missing")),
                },
                Some(Scalar::Null) if column.nullable => continue,
                Some(Scalar::Null) => (Reason::NullField, format!("field {name} is null")),
                Some(value) => match accepts(column, value) {
                    Ok(()) => continue,
                    Err(refusal) => refusal,
                },
            };
            return Err(self.refuse(refusal.0, refusal.1));
        }
        Ok(absent)
    }
}

/// Whether `column` takes `value` as it is (a reason and sentence if not).
fn accepts(column: &ColumnPlan, value: Scalar) -> Result<(), (Reason, String)> {
    let name = &column.name;
    let outside =
        |v: &dyn fmt::Display, ty: &str| Err((Reason::OutOfRange, format!("field {name}: {v} is outside {ty}")));
    match (column.ty, value) {
        (ColumnType::Text, Scalar::Text { nul: true }) => {
            Err((Reason::NulCharacter, format!("field {name} contains a NUL character")))
        }
        (ColumnType::Text, Scalar::Text { nul: false }) => Ok(()),
        (ColumnType::Int(bits), Scalar::Int(v)) => match bits {
            16 if i16::try_from(v).is_err() => outside(&v, "int2"),
            32 if i32::try_from(v).is_err() => outside(&v, "int4"),
            _ => Ok(()),
        },
        (ColumnType::Int(_), Scalar::BigInt(v)) => outside(&v, "int8"),
        (ColumnType::Int(_), Scalar::Float(v)) if v.fract() == 0.0 && v.abs() >= 9.2e18 => outside(&v, "int8"),
        (ColumnType::Float(bits), Scalar::Int(v)) => {
            match (v as f64) as i64 == v && (bits == 64 || v.unsigned_abs() <= 1 << 24) {
                true => Ok(()),
                false => Err((Reason::OutOfRange, format!("field {name}: {v} has no exact float{bits} value"))),
            }
        }
        (ColumnType::Float(_), Scalar::BigInt(v)) => outside(&v, "the exact floats"),
        (ColumnType::Float(32), Scalar::Float(v)) if v.abs() > f64::from(f32::MAX) => outside(&v, "real"),
        (ColumnType::Float(_), Scalar::Float(_)) => Ok(()),
        (ColumnType::Bool, Scalar::Bool) => Ok(()),
        (ColumnType::TimestampTz, Scalar::Int(v)) if v.checked_mul(1_000_000).is_none() => {
            outside(&v, "the timestamps (epoch seconds)")
        }
        (ColumnType::TimestampTz, Scalar::Int(_) | Scalar::Timestamp(Ok(()))) => Ok(()),
        (ColumnType::TimestampTz, Scalar::Timestamp(Err(why))) => Err((
            Reason::WrongType,
            format!("field {name} should be {}, found {why}", ColumnType::TimestampTz.wanted()),
        )),
        (ty, other) => {
            Err((Reason::WrongType, format!("field {name} should be {}, found {}", ty.wanted(), other.describe())))
        }
    }
}

/// The sentence for a field named twice; the name comes from the message,
/// so it is quoted ([`quote`]).
fn twice(name: &str) -> String {
    format!("field {} appears twice", quote(name, MAX_QUOTED_BYTES))
}

/// The kind of a field's JSON value (text is checked, not kept).
enum Scalar {
    Null,
    Text {
        nul: bool,
    },
    /// A string in a `TIMESTAMPTZ` field: RFC 3339 of at most microsecond
    /// precision, or why not.
    Timestamp(Result<(), String>),
    Int(i64),
    /// An integer beyond i64 (serde_json reads it as u64).
    BigInt(u64),
    Float(f64),
    Bool,
    Nested(&'static str),
}

impl Scalar {
    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Text { .. } => "a string".into(),
            Scalar::Timestamp(_) => "a string".into(),
            Scalar::Int(v) => format!("the integer {v}"),
            Scalar::BigInt(v) => format!("the integer {v}"),
            Scalar::Float(v) => format!("the number {v} (not an integer)"),
            Scalar::Bool => "a boolean".into(),
            Scalar::Nested(kind) => format!("an {kind}"),
        }
    }
}

/// Reads one field's value; a string in a `TIMESTAMPTZ` field is parsed.
struct ValueSeed {
    timestamp: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Scalar;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        if self.timestamp {
            return Ok(Scalar::Timestamp(rfc3339(v)));
        }
        Ok(Scalar::Text { nul: v.contains('\0') })
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::BigInt(v), Scalar::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested("object"))
    }
}

/// Whether `text` is an RFC 3339 timestamp sparklet keeps exactly
/// (microseconds at most), and why not.
fn rfc3339(text: &str) -> Result<(), String> {
    let shown = || quote(text, MAX_QUOTED_BYTES);
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| format!("the string {} ({e})", shown()))?;
    if time.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!("the string {} (finer than microseconds)", shown()));
    }
    Ok(())
}
