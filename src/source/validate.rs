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
//! message). Fields are checked in declaration order; an array or object of
//! a declared `T[]` or `STRUCT` is checked as it is read, each element and
//! member against its type, and a refusal names its place (`tags[2]`,
//! `address.city`). Unknown fields, at the top or in a struct, are
//! ignored (or refused: `unknown_fields = "refuse"`), up to [`MAX_FIELDS`]
//! fields in all; duplicate names are found in one pass (a hash set). The
//! declaration's `CHECK`s run on the decoded chunk ([`super::finish`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::input::Input;
pub(crate) use super::refusal::Refusal;
use super::value::{accepts, Place, Scalar, ValueSeed};
use crate::config::{Limits, OUTPUT_OVERHEAD};
use crate::job::UnknownFields;
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
            let column = &self.input.columns[index];
            let place = Place::Field(&column.name);
            let seed = ValueSeed { ty: &column.ty, place, unknown: self.input.unknown, refusal: &mut *self.refusal };
            values[index] = Some(map.next_value_seed(seed)?);
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
                Some(value) => match accepts(&column.ty, &Place::Field(name), value) {
                    Ok(()) => continue,
                    Err(refusal) => refusal,
                },
            };
            return Err(self.refuse(refusal.0, refusal.1));
        }
        Ok(absent)
    }
}
/// The sentence for a field named twice; the name comes from the message,
/// so it is quoted ([`quote`]).
fn twice(name: &str) -> String {
    format!("field {} appears twice", quote(name, MAX_QUOTED_BYTES))
}
