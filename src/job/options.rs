//! `job.toml`: the options that belong to the job rather than to a run
//! (what an input message may carry, the Kafka key, the Postgres table and
//! its upsert key), in the words Flink, Arroyo and RisingWave use for them.
//! Unknown keys are refused, at their line and column.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::sql::sqlparser::tokenizer::Location;
use serde::Deserialize;

use super::input::job_error;
use crate::error::Result;

/// Everything `job.toml` may say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    #[serde(default)]
    pub input: InputOptions,
    #[serde(default)]
    pub sink: SinkOptions,
    /// `[lookups.NAME]`: Postgres tables cached for the SQL steps, besides
    /// `subscribers`.
    #[serde(default)]
    pub lookups: BTreeMap<String, LookupOptions>,
}

/// `[lookups.NAME]`: a Postgres query whose rows the SQL steps read as the
/// table `NAME`, cached, pinned per batch (a replay reads the same rows) and
/// reloaded every `refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupOptions {
    /// The file (in the job folder) holding the query.
    pub query: String,
    /// How often it is reloaded (`60s`, `5m`).
    #[serde(default = "default_refresh")]
    pub refresh: String,
    /// How long batches may go on with the loaded version while reloads
    /// fail, before they stop.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: String,
}

fn default_refresh() -> String {
    "60s".into()
}

fn default_max_staleness() -> String {
    "1h".into()
}

impl LookupOptions {
    /// `refresh` and `max_staleness`, parsed.
    pub fn durations(&self) -> std::result::Result<(std::time::Duration, std::time::Duration), String> {
        let parse = |name: &str, value: &str| {
            humantime::parse_duration(value).map_err(|e| format!("{name} = \"{value}\": not a duration ({e})"))
        };
        let refresh = parse("refresh", &self.refresh)?;
        if refresh.is_zero() {
            return Err("refresh = \"0s\": a lookup is reloaded every interval; give one (60s, 5m)".into());
        }
        Ok((refresh, parse("max_staleness", &self.max_staleness)?))
    }
}

/// `[input]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputOptions {
    /// Only `json`.
    #[serde(default)]
    pub format: Format,
    /// What a field the declaration lacks does: ignored, or the message is
    /// refused (`unknown_field`).
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// The campaign's validity window: held back until its start
    /// (`--hold-future-campaigns`) and counted as expired after its end.
    pub window: Option<Window>,
    /// `[input.checks.NAME]`: the sentence of a named CHECK's refusal.
    #[serde(default)]
    pub checks: BTreeMap<String, CheckOptions>,
}

/// The columns of an input's validity window (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: String,
    pub end: String,
}

/// `[input.checks.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOptions {
    /// `{column}` is replaced by the message's value of that column.
    pub message: String,
}

/// A topic's message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
}

/// `[input] unknown_fields`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    #[default]
    Ignore,
    Refuse,
}

/// `[sink]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    #[serde(default)]
    pub kafka: KafkaSinkOptions,
    #[serde(default)]
    pub postgres: PostgresSinkOptions,
}

/// `[sink.kafka]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkOptions {
    #[serde(default)]
    pub format: Format,
    /// The output column whose value keys each message (text or an
    /// integer); none: messages have no key.
    pub key: Option<String>,
}

/// `[sink.postgres]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkOptions {
    /// The table the output rows go to, by column name.
    pub table: String,
    /// Upsert by these columns (a unique index of the table must cover
    /// exactly them); empty: plain COPY.
    #[serde(default)]
    pub upsert_key: Vec<String>,
    /// What an upsert does with a row whose key exists.
    #[serde(default)]
    pub on_conflict: OnConflict,
}

impl Default for PostgresSinkOptions {
    fn default() -> Self {
        PostgresSinkOptions { table: String::new(), upsert_key: Vec::new(), on_conflict: OnConflict::Update }
    }
}

/// `[sink.postgres] on_conflict`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// `DO UPDATE`: the batch's row replaces the stored one.
    #[default]
    Update,
    /// `DO NOTHING`: the stored row stays.
    Nothing,
}

impl JobOptions {
    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<JobOptions> {
        let options: JobOptions = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| location(text, span.start));
            job_error(path, at, e.message().trim_end().to_string())
        })?;
        if options.sink.postgres.table.trim().is_empty() {
            return Err(job_error(
                path,
                None,
                "[sink.postgres] table: the Postgres table to write to is missing".into(),
            ));
        }
        Ok(options)
    }
}

/// Line and column (from 1) of byte `offset` of `text`.
fn location(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    Location { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_refused_at_its_line_and_column() {
        let text = "[sink.postgres]\ntable = \"t\"\n\n[sink.kafka]\nkeyy = \"client_id\"\n";
        let err = JobOptions::parse(Path::new("job/job.toml"), text).unwrap_err().to_string();
        assert!(err.starts_with("job: job/job.toml:5:1: unknown field `keyy`"), "{err}");
    }

    #[test]
    fn a_missing_table_and_a_bad_value_are_named() {
        let err = JobOptions::parse(Path::new("j.toml"), "").unwrap_err().to_string();
        assert!(err.contains("[sink.postgres] table"), "{err}");
        let text = "[sink.postgres]\ntable = \"t\"\non_conflict = \"ignore\"\n";
        let err = JobOptions::parse(Path::new("j.toml"), text).unwrap_err().to_string();
        assert!(err.starts_with("job: j.toml:3:15: unknown variant `ignore`"), "{err}");
    }
}
