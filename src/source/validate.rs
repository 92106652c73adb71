//! Full validation of one input message, before any sink sees it.
//!
//! [`validate`] is a pure function of the message bytes and the limits, so a
//! replay classifies every message exactly as the first run did. A message it
//! accepts decodes into one campaign row that both sinks take (no NUL in text,
//! integers in range, an output row under the producer's size limit); a
//! message it refuses gets a [`Reason`] (a short stable code, written to the
//! dead-letter header `sparklet.error.reason`) and a sentence for people
//! ([`super::refusal`]: escaped and bounded where it quotes the message).
//! Unknown extra fields are accepted and ignored, up to [`MAX_FIELDS`]
//! fields in all; duplicate names are found in one pass (a hash set).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

pub(crate) use super::refusal::Refusal;
use crate::config::{Limits, OUTPUT_OVERHEAD};
use crate::schema::Reason;
use crate::schema::CAMPAIGN_FIELDS;
use crate::util::text::{quote, MAX_QUOTED_BYTES};

/// Most fields one message may have, the eight campaign fields and unknown
/// ones together: far more than a real campaign carries, and a bound on the
/// work and memory of checking one message (each name is checked against
/// those seen, in a hash set). More is [`Reason::TooManyFields`].
pub(crate) const MAX_FIELDS: usize = 1000;

/// Checks one message; `Ok` means it decodes into a row both sinks accept.
pub(crate) fn validate(payload: Option<&[u8]>, limits: &Limits) -> Result<(), Refusal> {
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
    match (CampaignSeed { refusal: &mut refusal }).deserialize(&mut de) {
        Ok(ends) => ends.check()?,
        Err(e) => return Err(refusal.unwrap_or_else(|| json_refusal(&e))),
    }
    de.end().map_err(|_| Refusal::new(Reason::SeveralValues, "data after the JSON object (several values?)"))
}

fn json_refusal(e: &serde_json::Error) -> Refusal {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => Refusal::new(Reason::Truncated, format!("the JSON ends early: {e}")),
        _ => Refusal::new(Reason::NotJson, format!("not JSON: {e}")),
    }
}

/// Start and end of a valid campaign.
struct Window {
    start: i64,
    end: i64,
}

impl Window {
    fn check(&self) -> Result<(), Refusal> {
        if self.end < self.start {
            return Err(Refusal::new(
                Reason::EndsBeforeStart,
                format!("adv_campaign_datetime_end {} is before adv_campaign_datetime_start {}", self.end, self.start),
            ));
        }
        Ok(())
    }
}

/// Walks one JSON object; the first problem is stored in `refusal` and
/// aborts the walk.
struct CampaignSeed<'r> {
    refusal: &'r mut Option<Refusal>,
}

impl<'de> DeserializeSeed<'de> for CampaignSeed<'_> {
    type Value = Window;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Window, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CampaignSeed<'_> {
    type Value = Window;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Window, A::Error> {
        let mut values: [Option<Scalar>; CAMPAIGN_FIELDS.len()] = Default::default();
        let mut unknown: HashSet<Cow<'de, str>> = HashSet::new();
        let mut fields = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            fields += 1;
            if fields > MAX_FIELDS {
                return Err(self.refuse(Reason::TooManyFields, format!("more than {MAX_FIELDS} fields")));
            }
            let Some(index) = CAMPAIGN_FIELDS.iter().position(|(name, _)| *name == key) else {
                if let Some(key) = unknown.replace(key) {
                    return Err(self.refuse(Reason::DuplicateField, twice(&key)));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if values[index].is_some() {
                return Err(self.refuse(Reason::DuplicateField, twice(&key)));
            }
            values[index] = Some(map.next_value::<Scalar>()?);
        }
        self.check_fields(values)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Window, A::Error> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON array, not an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON string, not an object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON number, not an object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is a JSON boolean, not an object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Window, E> {
        Err(self.refuse(Reason::NotAnObject, "the value is JSON null, not an object"))
    }
}

impl CampaignSeed<'_> {
    fn refuse<E: de::Error>(self, reason: Reason, message: impl AsRef<str>) -> E {
        *self.refusal = Some(Refusal::new(reason, message));
        E::custom(reason.code())
    }

    /// Every field present, of its column's type.
    fn check_fields<E: de::Error>(self, values: [Option<Scalar>; CAMPAIGN_FIELDS.len()]) -> Result<Window, E> {
        let mut ints = [0i64; CAMPAIGN_FIELDS.len()];
        for (i, ((name, ty), value)) in CAMPAIGN_FIELDS.iter().zip(values).enumerate() {
            let integer = *ty == arrow::datatypes::DataType::Int64;
            let wanted = if integer { "an integer" } else { "a string" };
            let found = match value {
                None => return Err(self.refuse(Reason::MissingField, format!("field {name} is missing"))),
                Some(Scalar::Null) => return Err(self.refuse(Reason::NullField, format!("field {name} is null"))),
                Some(Scalar::Text { nul: true }) => {
                    return Err(self.refuse(Reason::NulCharacter, format!("field {name} contains a NUL character")))
                }
                Some(Scalar::Text { nul: false }) if !integer => continue,
                Some(Scalar::Int(v)) if integer => {
                    ints[i] = v;
                    continue;
                }
                Some(Scalar::BigInt(v)) if integer => {
                    return Err(self.refuse(Reason::OutOfRange, format!("field {name}: {v} is outside int8")))
                }
                Some(Scalar::Float(v)) if integer && v.fract() == 0.0 && v.abs() >= 9.2e18 => {
                    return Err(self.refuse(Reason::OutOfRange, format!("field {name}: {v} is outside int8")))
                }
                Some(other) => other.describe(),
            };
            return Err(self.refuse(Reason::WrongType, format!("field {name} should be {wanted}, found {found}")));
        }
        let at = |field: &str| CAMPAIGN_FIELDS.iter().position(|(n, _)| *n == field).map_or(0, |i| ints[i]);
        Ok(Window { start: at("adv_campaign_datetime_start"), end: at("adv_campaign_datetime_end") })
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
            Scalar::Int(v) => format!("the integer {v}"),
            Scalar::BigInt(v) => format!("the integer {v}"),
            Scalar::Float(v) => format!("the number {v} (not an integer)"),
            Scalar::Bool => "a boolean".into(),
            Scalar::Nested(kind) => format!("an {kind}"),
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
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
