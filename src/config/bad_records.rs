//! What happens to input messages that fail validation: `--on-bad-record`,
//! `--dead-letter-topic` and the size limits a message must keep
//! ([`Limits`]).

use std::fmt;

use crate::error::{Error, Result};

/// The policy for a refused message, as Spark's PERMISSIVE, DROPMALFORMED
/// and FAILFAST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBadRecord {
    /// Write it, byte for byte with its reason, to the dead-letter topic in
    /// the batch's transaction (cut only where it would not fit the
    /// producer's `message.max.bytes`); the rest of the batch flows normally.
    DeadLetter,
    /// Log and count it; nothing else keeps it.
    Drop,
    /// Stop before anything of the batch is written, naming the message.
    Fail,
}

impl fmt::Display for OnBadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::value_name(self, f)
    }
}

/// Checked bad-record settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecords {
    pub on_bad_record: OnBadRecord,
    /// Where dead letters go (`--dead-letter-topic`, by default the input
    /// topic's name + `-dead-letter`); used only with `dead-letter`.
    pub dead_letter_topic: String,
    pub limits: Limits,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl BadRecords {
    /// Checks the options against the topics and the producer's settings.
    pub(crate) fn parse(
        on_bad_record: OnBadRecord,
        dead_letter_topic: Option<&str>,
        max_record_bytes: usize,
        topics: (&str, &str),
        kafka_options: &[(String, String)],
    ) -> Result<Self> {
        let (input, output) = topics;
        let dead_letter_topic = match dead_letter_topic.map(str::trim) {
            Some("") => return Err(Error::config("--dead-letter-topic", "must not be empty")),
            Some(topic) => topic.to_string(),
            None => format!("{input}-dead-letter"),
        };
        if dead_letter_topic == input || dead_letter_topic == output {
            return Err(Error::config(
                "--dead-letter-topic",
                format!("'{dead_letter_topic}' is also the input or the output topic"),
            ));
        }
        let max_output_bytes = Self::message_max_bytes(kafka_options)?;
        let limits = Limits { max_record_bytes, max_output_bytes };
        if max_record_bytes == 0 || max_record_bytes + OUTPUT_OVERHEAD > max_output_bytes {
            return Err(Error::config(
                "--max-record-bytes",
                format!(
                    "{max_record_bytes} must be at least 1 and leave {} bytes under the producer's message.max.bytes {max_output_bytes}",
                    OUTPUT_OVERHEAD
                ),
            ));
        }
        Ok(BadRecords { on_bad_record, dead_letter_topic, limits })
    }

    /// The producer's `message.max.bytes` (`--kafka-option`, librdkafka's
    /// default if unset): output messages and dead letters must fit it
    /// (dead letters are cut to fit, see [`crate::sink`]'s `dead_letter`).
    pub(crate) fn message_max_bytes(kafka_options: &[(String, String)]) -> Result<usize> {
        match kafka_options.iter().find(|(k, _)| k == "message.max.bytes") {
            Some((_, v)) => v.parse().map_err(|_| {
                Error::config("--kafka-option", format!("message.max.bytes '{v}' is not a number of bytes"))
            }),
            None => Ok(DEFAULT_MESSAGE_MAX_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(mode: &str, topic: Option<&str>, max: usize, options: &[(&str, &str)]) -> Result<BadRecords> {
        let options: Vec<(String, String)> = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mode = <OnBadRecord as clap::ValueEnum>::from_str(mode, false).unwrap();
        BadRecords::parse(mode, topic, max, ("in", "out"), &options)
    }

    #[test]
    fn defaults_to_a_dead_letter_topic_named_after_the_input() {
        let b = parse("dead-letter", None, 1000, &[]).unwrap();
        assert_eq!(b.dead_letter_topic, "in-dead-letter");
        assert_eq!(b.limits, Limits { max_record_bytes: 1000, max_output_bytes: 1_000_000 });
        assert_eq!(parse("fail", Some("dlq"), 1000, &[]).unwrap().on_bad_record, OnBadRecord::Fail);
        let b = parse("drop", None, 1000, &[("message.max.bytes", "5000000")]).unwrap();
        assert_eq!(b.limits.max_output_bytes, 5_000_000);
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        let err = |r: Result<BadRecords>| r.unwrap_err().to_string();
        assert!(err(parse("drop", Some("out"), 1000, &[])).contains("--dead-letter-topic"));
        assert!(err(parse("drop", Some(" "), 1000, &[])).contains("must not be empty"));
        assert!(err(parse("drop", None, 0, &[])).contains("--max-record-bytes"));
        assert!(err(parse("drop", None, 999_000, &[])).contains("message.max.bytes 1000000"));
        assert!(err(parse("drop", None, 10, &[("message.max.bytes", "big")])).contains("not a number"));
    }
}

/// Size limits a message must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-record-bytes`.
    pub max_record_bytes: usize,
    /// The producer's `message.max.bytes`.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_record_bytes: 256 * 1024, max_output_bytes: 1_000_000 }
    }
}

/// Bytes an output message can add to its campaign: the client id (at most
/// [`MAX_CLIENT_ID_BYTES`] in the cached table, longer ones are refused at
/// load), the trigger time, field names and the record overhead.
pub const OUTPUT_OVERHEAD: usize = 1024 + MAX_CLIENT_ID_BYTES;

/// Longest client id the output bound allows for.
pub const MAX_CLIENT_ID_BYTES: usize = 1024;
