//! A dead letter: what the dead-letter topic gets for one refused input
//! message.
//!
//! It is the message's key and value byte for byte, with headers saying
//! where it came from (`sparklet.source.topic`, `.partition`, `.offset`) and
//! why it was refused (`sparklet.error.reason`, `sparklet.error.message`),
//! plus the batch headers every sparklet message carries.
//!
//! Key, value and headers together must fit the producer's
//! `message.max.bytes`: librdkafka refuses a larger message, which would
//! abort the batch's transaction on every replay and wedge the query. The
//! input topic may hold larger messages than the producer may write (a key
//! of any size, a value above `--max-record-bytes`), so a dead letter that
//! would not fit is cut (marked, and pointing to the original) rather than
//! failing the batch: the header text is bounded ([`Refusal`] sentences are at
//! most [`MAX_MESSAGE_BYTES`]), the value keeps as much as fits after the
//! first [`KEY_PREFIX_BYTES`] of the key, and the key gets the rest. A cut
//! key or value is a prefix of the original (not necessarily valid UTF-8),
//! and the headers `sparklet.truncated.key.bytes` /
//! `sparklet.truncated.value.bytes` give its original size; the source
//! headers name the original message in the input topic (while retention
//! keeps it). A dead letter that fits is never cut.
//!
//! [`Refusal`]: crate::source::validate::Refusal

use rdkafka::message::{Header, OwnedHeaders};

use crate::sink::kafka_marker::{BATCH_HEADER, QUERY_HEADER};
use crate::source::decode::BadMessage;
use crate::util::text::{quote, MAX_MESSAGE_BYTES};

/// Bytes of a cut key kept ahead of the value; the key gets more if the
/// value leaves room.
pub(crate) const KEY_PREFIX_BYTES: usize = 1024;

/// Bytes a produced message takes beyond its key, value and headers:
/// librdkafka counts at most 36 for a v2 record; the record batch's own
/// header (61) is added so that a batch of this one message fits too.
const RECORD_OVERHEAD: usize = 128;

/// Bytes a header takes beyond its name and value (two varint lengths).
const HEADER_OVERHEAD: usize = 10;

/// Room kept for the two truncation headers (name, a number, overhead).
const TRUNCATION_HEADERS: usize = 2 * (32 + 20 + HEADER_OVERHEAD);

/// Where a batch's dead letters come from.
pub(crate) struct Origin<'a> {
    pub query_id: &'a str,
    pub batch_id: &'a str,
    pub topic: &'a str,
}

/// One dead letter, ready to send.
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Header names and values, in order.
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> DeadLetter<'a> {
    /// The dead letter of `message`, cut (as the module says) so that it
    /// fits in `max_bytes`, the producer's `message.max.bytes`.
    pub(crate) fn new(message: &'a BadMessage, origin: &Origin<'_>, max_bytes: usize) -> Self {
        let headers = vec![
            (QUERY_HEADER, origin.query_id.to_string()),
            (BATCH_HEADER, origin.batch_id.to_string()),
            ("sparklet.source.topic", origin.topic.to_string()),
            ("sparklet.source.partition", message.partition.to_string()),
            ("sparklet.source.offset", message.offset.to_string()),
            ("sparklet.error.reason", message.refusal.reason.code().to_string()),
            ("sparklet.error.message", quote(&message.refusal.message, MAX_MESSAGE_BYTES)),
        ];
        let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len() + HEADER_OVERHEAD).sum();
        let room = max_bytes.saturating_sub(RECORD_OVERHEAD + TRUNCATION_HEADERS + header_bytes);
        let (key, value) = (message.key.as_deref(), message.value.as_deref());
        let (key_len, value_len) = (key.map_or(0, <[u8]>::len), value.map_or(0, <[u8]>::len));
        let (key_kept, value_kept) = fit(key_len, value_len, room);
        let mut letter =
            DeadLetter { key: key.map(|k| &k[..key_kept]), value: value.map(|v| &v[..value_kept]), headers };
        if key_kept < key_len {
            letter.headers.push(("sparklet.truncated.key.bytes", key_len.to_string()));
        }
        if value_kept < value_len {
            letter.headers.push(("sparklet.truncated.value.bytes", value_len.to_string()));
        }
        letter
    }

    /// Whether the key or the value was cut.
    pub(crate) fn is_cut(&self) -> bool {
        self.headers.iter().any(|(name, _)| name.starts_with("sparklet.truncated."))
    }

    /// The headers for the producer.
    pub(crate) fn record_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(OwnedHeaders::new_with_capacity(self.headers.len()), |all, (key, value)| {
            all.insert(Header { key, value: Some(value.as_str()) })
        })
    }
}

/// Bytes of the key and of the value kept in `room` bytes: both whole if
/// they fit, otherwise the value after a [`KEY_PREFIX_BYTES`] prefix of the
/// key, and the key in what the value leaves.
fn fit(key: usize, value: usize, room: usize) -> (usize, usize) {
    if key.saturating_add(value) <= room {
        return (key, value);
    }
    let value_kept = value.min(room.saturating_sub(key.min(KEY_PREFIX_BYTES)));
    (key.min(room - value_kept), value_kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Reason;
    use crate::source::validate::Refusal;

    const MAX: usize = 1_000_000;

    fn bad(key: Option<usize>, value: Option<usize>, refusal: Refusal) -> BadMessage {
        let bytes = |n: usize| vec![b'k'; n];
        BadMessage { partition: 3, offset: 42, key: key.map(bytes), value: value.map(bytes), refusal }
    }

    fn origin() -> Origin<'static> {
        Origin { query_id: "q", batch_id: "7", topic: "in" }
    }

    /// What librdkafka counts against `message.max.bytes` (36 bytes of
    /// record overhead at most, each header's name, value and two varints).
    fn wire_size(letter: &DeadLetter<'_>) -> usize {
        let headers: usize = letter.headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        36 + letter.key.map_or(0, <[u8]>::len) + letter.value.map_or(0, <[u8]>::len) + headers
    }

    fn header<'l>(letter: &'l DeadLetter<'_>, name: &str) -> Option<&'l str> {
        letter.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_dead_letter_that_fits_is_kept_byte_for_byte() {
        let message = bad(Some(900 * 1024), Some(10), Refusal::new(Reason::NotJson, "not JSON"));
        let letter = DeadLetter::new(&message, &origin(), MAX);
        assert_eq!(letter.key, message.key.as_deref());
        assert_eq!(letter.value, message.value.as_deref());
        assert!(!letter.is_cut());
        assert_eq!(header(&letter, "sparklet.source.offset"), Some("42"));
        assert_eq!(header(&letter, "sparklet.error.reason"), Some("not_json"));
        let nulls = bad(None, None, Refusal::new(Reason::Empty, "no value"));
        let letter = DeadLetter::new(&nulls, &origin(), MAX);
        assert_eq!((letter.key, letter.value, letter.is_cut()), (None, None, false));
    }

    #[test]
    fn a_large_key_with_a_large_value_is_cut_to_fit_keeping_the_value() {
        let message = bad(Some(900 * 1024), Some(300 * 1024), Refusal::new(Reason::TooLarge, "too large"));
        let letter = DeadLetter::new(&message, &origin(), MAX);
        assert!(wire_size(&letter) <= MAX, "{} bytes", wire_size(&letter));
        assert!(wire_size(&letter) > MAX - 1000, "no more is cut than needed: {} bytes", wire_size(&letter));
        assert_eq!(letter.value, message.value.as_deref(), "the value whole");
        let key = letter.key.unwrap_or_default();
        assert!(message.key.as_deref().unwrap_or_default().starts_with(key), "a prefix of the key");
        assert_eq!(header(&letter, "sparklet.truncated.key.bytes"), Some("921600"));
        assert_eq!(header(&letter, "sparklet.truncated.value.bytes"), None);
    }

    #[test]
    fn a_key_or_a_value_too_large_alone_is_cut_too() {
        let key_alone = bad(Some(5 << 20), Some(100), Refusal::new(Reason::NotJson, "x"));
        let letter = DeadLetter::new(&key_alone, &origin(), MAX);
        assert!(wire_size(&letter) <= MAX && letter.value == key_alone.value.as_deref());
        assert_eq!(header(&letter, "sparklet.truncated.key.bytes"), Some("5242880"));
        let value_alone = bad(Some(2000), Some(3 << 20), Refusal::new(Reason::TooLarge, "x"));
        let letter = DeadLetter::new(&value_alone, &origin(), MAX);
        assert!(wire_size(&letter) <= MAX, "{} bytes", wire_size(&letter));
        assert_eq!(letter.key.map(<[u8]>::len), Some(KEY_PREFIX_BYTES), "the key's prefix is kept");
        assert_eq!(header(&letter, "sparklet.truncated.value.bytes"), Some("3145728"));
        let tiny = DeadLetter::new(&value_alone, &origin(), 100);
        assert_eq!((tiny.key, tiny.value), (Some(&[][..]), Some(&[][..])), "nothing fits: empty prefixes");
    }

    #[test]
    fn the_quoted_sentence_is_bounded_and_escaped() {
        let mut message = bad(Some(10), Some(10), Refusal::new(Reason::DuplicateField, "x"));
        message.refusal.message = format!("field a\nb{} appears twice", "y".repeat(200_000));
        let letter = DeadLetter::new(&message, &origin(), MAX);
        let sentence = header(&letter, "sparklet.error.message").unwrap_or_default();
        assert!(sentence.len() <= MAX_MESSAGE_BYTES && sentence.starts_with(r"field a\nb"), "{sentence}");
    }

    #[test]
    fn fit_gives_the_value_priority_after_a_key_prefix() {
        assert_eq!(fit(10, 20, 30), (10, 20));
        assert_eq!(fit(5000, 20, 3000), (2980, 20));
        assert_eq!(fit(5000, 5000, 3000), (KEY_PREFIX_BYTES, 3000 - KEY_PREFIX_BYTES));
        assert_eq!(fit(100, 5000, 3000), (100, 2900));
        assert_eq!(fit(usize::MAX, 1, 2000), (1999, 1), "no overflow");
        assert_eq!(fit(usize::MAX, 1, 10), (10, 0), "the key prefix comes first");
        assert_eq!(fit(7, 7, 0), (0, 0));
    }
}
