//! One JSON field's value checked against its declared type, as
//! [`super::validate`] reads a message: scalars by kind and range, a
//! `TIMESTAMPTZ` string parsed, and the arrays and objects of a declared
//! `T[]` or `STRUCT` walked element by element, member by member, each
//! refusal naming its place (`tags[2]`, `address.city`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::refusal::Refusal;
use crate::job::{ColumnType, UnknownFields};
use crate::schema::Reason;
use crate::util::text::{quote, MAX_QUOTED_BYTES};

/// Whether a value of type `ty` at `name` is `value` as it is (a reason and
/// sentence if not); arrays and objects were checked as they were read.
pub(super) fn accepts(ty: &ColumnType, name: &Place<'_>, value: Scalar) -> Result<(), (Reason, String)> {
    let outside =
        |v: &dyn fmt::Display, ty: &str| Err((Reason::OutOfRange, format!("field {name}: {v} is outside {ty}")));
    match (ty, value) {
        (_, Scalar::Null) => Ok(()),
        (ColumnType::List(_), Scalar::Array) | (ColumnType::Struct(_), Scalar::Object) => Ok(()),
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
        (&ColumnType::Float(bits), Scalar::Int(v)) => {
            match (v as f64) as i128 == i128::from(v) && (bits == 64 || v.unsigned_abs() <= 1 << 24) {
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

/// The kind of a field's JSON value (text is checked, not kept).
pub(super) enum Scalar {
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
    /// An array, or an object (of the declared type, if one was declared).
    Array,
    Object,
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
            Scalar::Array => "an array".into(),
            Scalar::Object => "an object".into(),
        }
    }
}

/// Where a value is in the message, for refusals: `tags[2]`, `address.city`.
#[derive(Clone, Copy)]
pub(super) enum Place<'p> {
    Field(&'p str),
    Index(&'p Place<'p>, usize),
    Member(&'p Place<'p>, &'p str),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Field(name) => f.write_str(name),
            Place::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Place::Member(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// Reads one value of declared type `ty`: a string in a `TIMESTAMPTZ` field
/// is parsed; an array or object of a declared `T[]` or `STRUCT` is checked
/// element by element, field by field (the first problem is stored in
/// `refusal` and aborts the walk); any other array or object is skipped.
pub(super) struct ValueSeed<'a, 'r> {
    pub(super) ty: &'a ColumnType,
    pub(super) place: Place<'a>,
    pub(super) unknown: UnknownFields,
    pub(super) refusal: &'r mut Option<Refusal>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Scalar;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        if *self.ty == ColumnType::TimestampTz {
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
        let ValueSeed { ty, place, unknown, refusal } = self;
        let ColumnType::List(element) = ty else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Scalar::Array);
        };
        let mut index = 0;
        loop {
            let place = Place::Index(&place, index);
            let seed = ValueSeed { ty: element, place, unknown, refusal: &mut *refusal };
            let Some(value) = seq.next_element_seed(seed)? else { return Ok(Scalar::Array) };
            checked(accepts(element, &place, value), refusal)?;
            index += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        let ValueSeed { ty, place, unknown, refusal } = self;
        let ColumnType::Struct(fields) = ty else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Scalar::Object);
        };
        let mut seen = 0u64;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = fields.iter().position(|(name, _)| *name == key) else {
                if unknown == UnknownFields::Refuse {
                    let message =
                        format!("field {place}.{} is not declared in input.sql", quote(&key, MAX_QUOTED_BYTES));
                    return checked(Err((Reason::UnknownField, message)), refusal).map(|()| Scalar::Object);
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let (name, field_ty) = (&fields[i].0, &fields[i].1);
            let place = Place::Member(&place, name);
            if seen & (1 << i) != 0 {
                return checked(Err((Reason::DuplicateField, format!("field {place} appears twice"))), refusal)
                    .map(|()| Scalar::Object);
            }
            seen |= 1 << i;
            let value = map.next_value_seed(ValueSeed { ty: field_ty, place, unknown, refusal: &mut *refusal })?;
            checked(accepts(field_ty, &place, value), refusal)?;
        }
        Ok(Scalar::Object)
    }
}

/// `result`, its refusal stored in `refusal` to abort the walk.
fn checked<E: de::Error>(result: Result<(), (Reason, String)>, refusal: &mut Option<Refusal>) -> Result<(), E> {
    result.map_err(|(reason, message)| {
        *refusal = Some(Refusal::new(reason, message));
        E::custom(reason.code())
    })
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
