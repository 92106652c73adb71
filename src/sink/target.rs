//! The binary formats output columns are written in by COPY: a table
//! column's base type ([`Target`]), which Arrow types each takes without
//! losing anything, and the element types of array columns ([`Element`]).

use arrow::datatypes::DataType;

use crate::schema::text::Text;

/// The binary format a column is written in: its Postgres base type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Text,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    /// `timestamptz` and `timestamp`: microseconds since 2000-01-01.
    Timestamp,
    /// Days since 2000-01-01.
    Date,
    /// `json` or `jsonb`: an array or struct as the JSON text the Kafka sink
    /// writes for it (`jsonb`'s binary format puts a version byte first).
    Json {
        jsonb: bool,
    },
    /// A one-dimensional array column: each element in `element`'s format,
    /// the column's element type `oid` in each value's header.
    Array {
        element: Element,
        oid: u32,
    },
}

/// The element types of the array columns sparklet writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    Text,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
}

impl Element {
    /// Elements are written in the format of the same base type.
    pub fn target(self) -> Target {
        match self {
            Element::Text => Target::Text,
            Element::Int2 => Target::Int2,
            Element::Int4 => Target::Int4,
            Element::Int8 => Target::Int8,
            Element::Float4 => Target::Float4,
            Element::Float8 => Target::Float8,
            Element::Bool => Target::Bool,
        }
    }

    fn of(target: Target) -> Option<Element> {
        Some(match target {
            Target::Text => Element::Text,
            Target::Int2 => Element::Int2,
            Target::Int4 => Element::Int4,
            Target::Int8 => Element::Int8,
            Target::Float4 => Element::Float4,
            Target::Float8 => Element::Float8,
            Target::Bool => Element::Bool,
            _ => return None,
        })
    }

    /// The element type's oid in `pg_type` (of `text[]`, `int4[]`, ...).
    fn oid(self) -> u32 {
        match self {
            Element::Text => 25,
            Element::Int2 => 21,
            Element::Int4 => 23,
            Element::Int8 => 20,
            Element::Float4 => 700,
            Element::Float8 => 701,
            Element::Bool => 16,
        }
    }
}

impl Target {
    /// The column type a column of Arrow type `ty` is written to as it is
    /// (text to `text`, Int64 to `int8`, a list of int4 to `int4[]`, a
    /// struct to `jsonb`, ...), if any.
    pub fn natural(ty: &DataType) -> Option<Target> {
        use DataType as D;
        if Text::is_text(ty) || matches!(ty, D::Utf8View | D::LargeUtf8) {
            return Some(Target::Text);
        }
        Some(match ty {
            D::Int16 => Target::Int2,
            D::Int32 => Target::Int4,
            D::Int64 => Target::Int8,
            D::Float32 => Target::Float4,
            D::Float64 => Target::Float8,
            D::Boolean => Target::Bool,
            D::Timestamp(..) => Target::Timestamp,
            D::Date32 => Target::Date,
            D::List(item) => match Target::natural(item.data_type()).and_then(Element::of) {
                Some(element) => Target::Array { element, oid: element.oid() },
                None => Target::Json { jsonb: true },
            },
            D::Struct(_) => Target::Json { jsonb: true },
            _ => return None,
        })
    }

    /// The target for Postgres base type `name` (`pg_type.typname`).
    fn of(name: &str) -> Option<Target> {
        Some(match name {
            "text" | "varchar" | "bpchar" | "name" => Target::Text,
            "int2" => Target::Int2,
            "int4" => Target::Int4,
            "int8" => Target::Int8,
            "float4" => Target::Float4,
            "float8" => Target::Float8,
            "bool" => Target::Bool,
            "timestamptz" | "timestamp" => Target::Timestamp,
            "date" => Target::Date,
            "json" => Target::Json { jsonb: false },
            "jsonb" => Target::Json { jsonb: true },
            _ => return None,
        })
    }

    /// The target of a column of base type `base` (`typname`), or for an
    /// array column of its `element` (`typname` and oid).
    pub(super) fn of_column(base: &str, element: Option<&(String, u32)>) -> Option<Target> {
        match element {
            Some((name, oid)) => {
                Target::of(name).and_then(Element::of).map(|element| Target::Array { element, oid: *oid })
            }
            None => Target::of(base),
        }
    }

    /// Whether a column of Arrow type `ty` can be written as `self` without
    /// losing anything (integers and floats only widen; arrays element by
    /// element; JSON takes arrays and structs).
    pub(super) fn takes(self, ty: &DataType) -> bool {
        use DataType as D;
        match self {
            Target::Text => Text::is_text(ty) || matches!(ty, D::Utf8View | D::LargeUtf8),
            Target::Int2 => matches!(ty, D::Int16),
            Target::Int4 => matches!(ty, D::Int16 | D::Int32),
            Target::Int8 => matches!(ty, D::Int16 | D::Int32 | D::Int64),
            Target::Float4 => matches!(ty, D::Float32),
            Target::Float8 => matches!(ty, D::Float32 | D::Float64),
            Target::Bool => matches!(ty, D::Boolean),
            Target::Timestamp => matches!(ty, D::Timestamp(..)),
            Target::Date => matches!(ty, D::Date32),
            Target::Json { .. } => matches!(ty, D::List(_) | D::Struct(_)),
            Target::Array { element, .. } => matches!(ty, D::List(item) if element.target().takes(item.data_type())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn integers_and_floats_only_widen_and_text_takes_every_string_type() {
        assert!(Target::Int8.takes(&DataType::Int32) && !Target::Int4.takes(&DataType::Int64));
        assert!(Target::Float8.takes(&DataType::Float32) && !Target::Float4.takes(&DataType::Float64));
        assert!(!Target::Int8.takes(&DataType::Float64) && !Target::Float8.takes(&DataType::Int64));
        for ty in [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8, crate::schema::text::shared_type()] {
            assert!(Target::Text.takes(&ty), "{ty}");
        }
        assert_eq!(Target::of("varchar"), Some(Target::Text));
        assert_eq!(Target::of("numeric"), None, "numeric is not written yet");
    }

    #[test]
    fn arrays_take_lists_element_by_element_and_json_takes_lists_and_structs() {
        let list = |ty: DataType| DataType::new_list(ty, true);
        let int4s = Target::of_column("_int4", Some(&("int4".into(), 23))).unwrap();
        assert_eq!(int4s, Target::Array { element: Element::Int4, oid: 23 });
        assert!(int4s.takes(&list(DataType::Int16)) && int4s.takes(&list(DataType::Int32)));
        assert!(!int4s.takes(&list(DataType::Int64)) && !int4s.takes(&DataType::Int32));
        let structs = DataType::Struct(vec![Field::new("a", DataType::Utf8, true)].into());
        let jsonb = Target::of("jsonb").unwrap();
        assert!(jsonb.takes(&structs) && jsonb.takes(&list(DataType::Utf8)) && !jsonb.takes(&DataType::Utf8));
        assert_eq!(Target::of_column("_numeric", Some(&("numeric".into(), 1700))), None);
        assert_eq!(Target::natural(&list(DataType::Utf8)), Some(Target::Array { element: Element::Text, oid: 25 }));
        assert_eq!(Target::natural(&structs), Some(Target::Json { jsonb: true }));
    }
}
