//! Why an input message was refused: a stable [`Reason`] code and a
//! sentence for people.
//!
//! A refusal's sentence is written to the log (text or JSON), to the error
//! that stops a `--on-bad-record fail` run and to the dead-letter header
//! `sparklet.error.message`. Anything in it that comes from the message (a
//! field name, a decoder's quote of a value) could be up to
//! `--max-record-bytes` long and hold `\n` or terminal escapes, which would
//! forge log lines in text format. So [`Refusal::new`] escapes and bounds
//! it ([`quote`]).

use crate::schema::Reason;
use crate::util::text::{quote, MAX_MESSAGE_BYTES};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_twice_changes_nothing_and_escapes_count_against_the_bound() {
        let hostile = format!("{}\n{}", "\u{1b}".repeat(300), "y".repeat(5000));
        let once = quote(&hostile, MAX_MESSAGE_BYTES);
        assert!(once.len() <= MAX_MESSAGE_BYTES && !once.chars().any(char::is_control), "{once}");
        assert_eq!(quote(&once, MAX_MESSAGE_BYTES), once);
        assert_eq!(Refusal::new(Reason::NotJson, &hostile).message, once);
    }
}
