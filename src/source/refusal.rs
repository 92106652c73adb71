//! Why an input message was refused: a stable [`Reason`] code and a
//! sentence for people, and the quoting that makes text taken from a hostile
//! message safe for log lines and dead-letter headers.
//!
//! A refusal's sentence is written to the log (text or JSON), to the error
//! that stops a `--on-bad-record fail` run and to the dead-letter header
//! `sparklet.error.message`. Anything in it that comes from the message (a
//! field name, a decoder's quote of a value) could be up to
//! `--max-record-bytes` long and hold `\n` or terminal escapes, which would
//! forge log lines in text format. So [`Refusal::new`] escapes every control
//! character as Rust's `{:?}` does (`\n`, `\u{1b}`) and cuts the sentence
//! after [`MAX_MESSAGE_BYTES`], marking the cut; quoted parts are cut
//! shorter, after [`MAX_QUOTED_BYTES`] ([`quote`]).

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
    /// More than [`super::validate::MAX_FIELDS`] fields in the object.
    TooManyFields,
    /// Text with a NUL character, which Postgres text cannot hold.
    NulCharacter,
    /// `adv_campaign_datetime_end` before `adv_campaign_datetime_start`.
    EndsBeforeStart,
    /// Passed validation but the JSON decoder still refused it (a bug: the
    /// message is kept as a dead letter rather than stalling the query).
    Undecodable,
}

impl Reason {
    /// Every reason, in code order (for tests, documentation and metrics).
    pub const ALL: [Reason; 17] = [
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
        Reason::EndsBeforeStart,
        Reason::Undecodable,
    ];

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
            Reason::EndsBeforeStart => "ends_before_start",
            Reason::Undecodable => "undecodable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Longest refusal sentence kept, in bytes (the cut marker included): it
/// goes to a log line and a dead-letter header.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Longest piece of message text (a field name) quoted in a sentence, in
/// bytes of its escaped form, the cut marker included.
pub const MAX_QUOTED_BYTES: usize = 200;

/// A refused message: the reason and what exactly is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// For people: control characters escaped, at most
    /// [`MAX_MESSAGE_BYTES`].
    pub message: String,
}

impl Refusal {
    /// A refusal whose sentence is escaped and bounded ([`quote`]).
    pub(crate) fn new(reason: Reason, message: impl AsRef<str>) -> Self {
        Refusal { reason, message: quote(message.as_ref(), MAX_MESSAGE_BYTES) }
    }
}

/// `text` made safe for one log line: every control character (and other
/// unprintable one) escaped as `{:?}` does (`\n`, `\u{1b}`), backslashes
/// and quotes left as they are, and the whole cut at a character boundary to
/// at most `max` bytes (`max` at least 40), ending in `…[N more bytes]` when
/// cut (N counts the original's bytes left out). Its own output comes back
/// unchanged.
pub fn quote(text: &str, max: usize) -> String {
    let (whole, covered) = escape_prefix(text, max);
    if covered == text.len() {
        return whole;
    }
    let room = max.saturating_sub(cut_marker(text.len()).len());
    let (mut kept, covered) = escape_prefix(text, room);
    kept.push_str(&cut_marker(text.len() - covered));
    kept
}

/// The escaped form of the longest prefix of `text` that takes at most `max`
/// bytes escaped, and how many bytes of `text` that prefix is.
fn escape_prefix(text: &str, max: usize) -> (String, usize) {
    let mut out = String::with_capacity(text.len().min(max));
    for (at, c) in text.char_indices() {
        let escape = c.escape_debug();
        let plain = escape.len() == 1 || matches!(c, '\\' | '"' | '\'');
        let len = if plain { c.len_utf8() } else { escape.len() };
        if out.len() + len > max {
            return (out, at);
        }
        match plain {
            true => out.push(c),
            false => out.extend(escape),
        }
    }
    (out, text.len())
}

fn cut_marker(left_out: usize) -> String {
    format!("…[{left_out} more bytes]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_kept() {
        assert_eq!(quote("plain café \"quoted\" a\\b", 100), "plain café \"quoted\" a\\b");
        assert_eq!(quote("a\nb\r\tc\u{1b}[31m\u{0}", 100), r"a\nb\r\tc\u{1b}[31m\0");
        assert_eq!(quote("line\u{2028}sep \u{202e}rtl", 100), r"line\u{2028}sep \u{202e}rtl");
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_and_the_cut_marked() {
        let text = "é".repeat(1000);
        let cut = quote(&text, 200);
        assert!(cut.len() <= 200 && cut.len() > 150, "{} bytes", cut.len());
        let kept = cut.split('…').next().unwrap_or_default().len();
        assert_eq!(cut, format!("{}…[{} more bytes]", "é".repeat(kept / 2), 2000 - kept));
        assert_eq!(quote(&"x".repeat(200), 200), "x".repeat(200), "text of exactly max bytes is kept");
        let over = quote(&"x".repeat(201), 200);
        assert!(over.len() <= 200 && over.ends_with(" more bytes]"), "{over}");
        assert_eq!(quote(&"\n".repeat(10), 20), r"\n".repeat(10), "an escape counts its own bytes");
    }

    #[test]
    fn quoting_twice_changes_nothing_and_escapes_count_against_the_bound() {
        let hostile = format!("{}\n{}", "\u{1b}".repeat(300), "y".repeat(5000));
        let once = quote(&hostile, MAX_MESSAGE_BYTES);
        assert!(once.len() <= MAX_MESSAGE_BYTES && !once.chars().any(char::is_control), "{once}");
        assert_eq!(quote(&once, MAX_MESSAGE_BYTES), once);
        assert_eq!(Refusal::new(Reason::NotJson, &hostile).message, once);
    }
}
