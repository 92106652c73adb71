//! Why an input message was refused, as a stable code: the dead-letter
//! header `sparklet.error.reason` and the metrics' `reason` label carry it.
//! A named `CHECK` of the job's `input.sql` is a code of its own.

use std::fmt;

/// Why a message was refused. The codes are stable: dashboards and
/// dead-letter consumers match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No value (a null payload) or an empty one.
    Empty,
    /// Larger than `--max-record-bytes`.
    TooLarge,
    /// Its output row could exceed the producer's `message.max.bytes`.
    OutputTooLarge,
    NotUtf8,
    NotJson,
    /// The JSON ends early.
    Truncated,
    NotAnObject,
    /// More than one JSON value, or other data after the object.
    SeveralValues,
    MissingField,
    NullField,
    /// A string where a number belongs, a float such as 1.9 where an integer
    /// belongs, and so on: nothing is coerced or truncated.
    WrongType,
    /// An integer outside the column's range (int8).
    OutOfRange,
    DuplicateField,
    /// More than the field cap (1,000) in the object.
    TooManyFields,
    /// Text with a NUL character, which Postgres text cannot hold.
    NulCharacter,
    /// A field `input.sql` does not declare, with `unknown_fields =
    /// "refuse"`.
    UnknownField,
    /// A `CHECK` of `input.sql` is false: the constraint's name (the seed's
    /// `ends_before_start`), or `check_failed` for one without a name.
    Check(&'static str),
    /// Passed validation but the JSON decoder still refused it (a bug: the
    /// message is kept as a dead letter rather than stalling the query).
    Undecodable,
}

impl Reason {
    /// Every reason, in code order (for tests, documentation and metrics).
    pub const ALL: [Reason; 18] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::OutputTooLarge,
        Reason::NotUtf8,
        Reason::NotJson,
        Reason::Truncated,
        Reason::NotAnObject,
        Reason::SeveralValues,
        Reason::MissingField,
        Reason::NullField,
        Reason::WrongType,
        Reason::OutOfRange,
        Reason::DuplicateField,
        Reason::TooManyFields,
        Reason::NulCharacter,
        Reason::UnknownField,
        Reason::Check(Reason::CHECK_FAILED),
        Reason::Undecodable,
    ];

    /// The code of a failed `CHECK` without a name.
    pub const CHECK_FAILED: &'static str = "check_failed";

    /// The stable short code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::OutputTooLarge => "output_too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::NotJson => "not_json",
            Reason::Truncated => "truncated",
            Reason::NotAnObject => "not_an_object",
            Reason::SeveralValues => "several_values",
            Reason::MissingField => "missing_field",
            Reason::NullField => "null_field",
            Reason::WrongType => "wrong_type",
            Reason::OutOfRange => "out_of_range",
            Reason::DuplicateField => "duplicate_field",
            Reason::TooManyFields => "too_many_fields",
            Reason::NulCharacter => "nul_character",
            Reason::UnknownField => "unknown_field",
            Reason::Check(name) => name,
            Reason::Undecodable => "undecodable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
