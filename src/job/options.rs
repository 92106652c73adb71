//! `job.toml`: the options that belong to the job rather than to a run
//! (what an input message may carry, the Kafka key, the Postgres table and
//! its upsert key), in the words Flink, Arroyo and RisingWave use for them.
//! Unknown keys are refused, at their line and column.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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
    /// `[lookups.subscribers]`: the favourites cache's refresh options (it is
    /// kept apart: its own loader and index serve the join).
    #[serde(skip)]
    pub subscribers: Option<LookupOptions>,
}

/// `[lookups.NAME]`: a Postgres query whose rows the SQL steps read as the
/// table `NAME`, cached, pinned per batch (a replay reads the same rows) and
/// reloaded every `refresh`, or on change of the `watch` tables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupOptions {
    /// The file (in the job folder) holding the query.
    pub query: String,
    /// How often it is reloaded (`60s`, `5m`), or `on-change`: when a
    /// transaction that changed a `watch` table commits.
    #[serde(default = "default_refresh")]
    pub refresh: String,
    /// With `on-change`: how often the watched tables' versions are read
    /// besides the notifications (default `1m`).
    pub version_check: Option<String>,
    /// With `on-change`: the Postgres tables (`table` or `schema.table`)
    /// whose changes reload the lookup.
    pub watch: Option<Vec<String>>,
    /// How long batches may go on with the loaded version while reloads
    /// fail, before they stop.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: String,
}

/// When a lookup is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupRefresh {
    /// Every interval, changed or not.
    Every(Duration),
    /// When a watched table's change version moves (notified, read every
    /// `version_check`, and read before each plan).
    OnChange { version_check: Duration, watch: Vec<String> },
}

fn default_refresh() -> String {
    "60s".into()
}

fn default_max_staleness() -> String {
    "1h".into()
}

/// `refresh`'s value that reloads on change.
const ON_CHANGE: &str = "on-change";

impl LookupOptions {
    /// `refresh` (with `version_check` and `watch`) and `max_staleness`,
    /// checked; the message names the option.
    pub fn schedule(&self) -> std::result::Result<(LookupRefresh, Duration), String> {
        let parse = |name: &str, value: &str| {
            let d =
                humantime::parse_duration(value).map_err(|e| format!("{name} = \"{value}\": not a duration ({e})"))?;
            match d.is_zero() {
                true => Err(format!("{name} = \"{value}\": give a duration above zero (60s, 5m)")),
                false => Ok(d),
            }
        };
        let refresh = if self.refresh.trim() == ON_CHANGE {
            let version_check = parse("version_check", self.version_check.as_deref().unwrap_or("1m"))?;
            let Some(watch) = self.watch.clone() else {
                return Err(format!(
                    "refresh = \"{ON_CHANGE}\" needs watch = [\"table\", \"schema.table\", ...]: the Postgres tables whose changes reload it"
                ));
            };
            check_watch(&watch)?;
            LookupRefresh::OnChange { version_check, watch }
        } else {
            let every = parse("refresh", &self.refresh).map_err(|e| format!("{e}; or \"{ON_CHANGE}\""))?;
            for (set, option) in [(self.watch.is_some(), "watch"), (self.version_check.is_some(), "version_check")] {
                if set {
                    return Err(format!(
                        "{option} is only read with refresh = \"{ON_CHANGE}\" (refresh is \"{}\")",
                        self.refresh
                    ));
                }
            }
            LookupRefresh::Every(every)
        };
        let max_staleness = humantime::parse_duration(&self.max_staleness)
            .map_err(|e| format!("max_staleness = \"{}\": not a duration ({e})", self.max_staleness))?;
        Ok((refresh, max_staleness))
    }
}

/// `watch`: at least one table, each `table` or `schema.table` of plain
/// identifiers.
fn check_watch(watch: &[String]) -> std::result::Result<(), String> {
    if watch.is_empty() {
        return Err("watch = []: name at least one table whose changes reload the lookup".into());
    }
    let identifier = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    for name in watch {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| identifier(p)) {
            return Err(format!("watch = [\"{name}\"]: not a table name (table or schema.table, plain identifiers)"));
        }
    }
    Ok(())
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
        let mut options: JobOptions = toml::from_str(text).map_err(|e| {
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
        options.subscribers = options.lookups.remove("subscribers");
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

    fn lookup(extra: &str) -> std::result::Result<(LookupRefresh, Duration), String> {
        let text = format!("[sink.postgres]\ntable = \"t\"\n[lookups.p]\nquery = \"p.sql\"\n{extra}");
        let options = JobOptions::parse(Path::new("job.toml"), &text).map_err(|e| e.to_string())?;
        options.lookups["p"].schedule()
    }

    #[test]
    fn on_change_reads_watch_and_version_check_with_a_one_minute_default() {
        let (refresh, staleness) = lookup("refresh = \"on-change\"\nwatch = [\"profiles\", \"crm.people\"]").unwrap();
        let watch = vec!["profiles".to_string(), "crm.people".to_string()];
        assert_eq!(refresh, LookupRefresh::OnChange { version_check: Duration::from_secs(60), watch });
        assert_eq!(staleness, Duration::from_secs(3600));
        let (refresh, _) = lookup("refresh = \"on-change\"\nversion_check = \"1h\"\nwatch = [\"p\"]").unwrap();
        assert!(matches!(refresh, LookupRefresh::OnChange { version_check, .. } if version_check.as_secs() == 3600));
        assert_eq!(lookup("refresh = \"5m\"").unwrap().0, LookupRefresh::Every(Duration::from_secs(300)));
        assert_eq!(lookup("").unwrap().0, LookupRefresh::Every(Duration::from_secs(60)));
    }

    #[test]
    fn on_change_without_watch_and_watch_without_on_change_are_refused_naming_the_option() {
        let err = lookup("refresh = \"on-change\"").unwrap_err();
        assert!(err.contains("refresh = \"on-change\" needs watch = ["), "{err}");
        let err = lookup("refresh = \"30s\"\nwatch = [\"p\"]").unwrap_err();
        assert!(err.contains("watch is only read with refresh = \"on-change\""), "{err}");
        let err = lookup("version_check = \"5m\"").unwrap_err();
        assert!(err.contains("version_check is only read with"), "{err}");
        let err = lookup("refresh = \"on-change\"\nwatch = []").unwrap_err();
        assert!(err.contains("name at least one table"), "{err}");
        for bad in ["a.b.c", "x y", "", "1t", "\\\"q\\\""] {
            let err = lookup(&format!("refresh = \"on-change\"\nwatch = [\"{bad}\"]")).unwrap_err();
            assert!(err.contains("not a table name"), "{bad}: {err}");
        }
        let err = lookup("refresh = \"on-change\"\nversion_check = \"0s\"\nwatch = [\"p\"]").unwrap_err();
        assert!(err.contains("version_check = \"0s\": give a duration above zero"), "{err}");
        let err = lookup("refresh = \"often\"").unwrap_err();
        assert!(err.contains("refresh = \"often\": not a duration") && err.contains("or \"on-change\""), "{err}");
    }
}
