//! The job folder (`--sql-dir`): the input's declaration (`input.sql`), the
//! job's options (`job.toml`) and the SQL steps, loaded and checked once at
//! start. A folder without `input.sql` or `job.toml` takes the seed job's
//! (the files in the repository's `sql/`, built in).

use std::path::{Path, PathBuf};

mod input;
mod options;

pub use input::{CheckDecl, ColumnDecl, ColumnType, InputDecl, UTC};
pub use options::{
    CheckOptions, Format, InputOptions, JobOptions, KafkaSinkOptions, LookupOptions, LookupRefresh, OnConflict,
    PostgresSinkOptions, SinkOptions, UnknownFields, Window,
};

use crate::error::Result;
use input::job_error;

/// The input's declaration in a job folder.
pub const INPUT_FILE: &str = "input.sql";
/// The job's options in a job folder.
pub const OPTIONS_FILE: &str = "job.toml";

const SEED_INPUT: &str = include_str!("../../sql/input.sql");
const SEED_OPTIONS: &str = include_str!("../../sql/job.toml");

/// Options given on the command line (or in the environment), over
/// `job.toml`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOverrides {
    pub kafka_key: Option<String>,
    pub postgres_table: Option<String>,
    pub upsert_key: Option<Vec<String>>,
    pub on_conflict: Option<OnConflict>,
}

/// A loaded, checked job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub input: InputDecl,
    pub options: JobOptions,
    /// Each lookup's query, read from its file.
    pub lookup_queries: std::collections::BTreeMap<String, String>,
}

impl Job {
    /// Loads the job of folder `dir`.
    pub fn load(dir: &Path) -> Result<Job> {
        let (input_path, input_text) = read_or_seed(dir, INPUT_FILE, SEED_INPUT)?;
        let (options_path, options_text) = read_or_seed(dir, OPTIONS_FILE, SEED_OPTIONS)?;
        let input = InputDecl::parse(&input_path, &input_text)?;
        let options = JobOptions::parse(&options_path, &options_text)?;
        check_options(&options_path, &input, &options)?;
        let mut lookup_queries = std::collections::BTreeMap::new();
        for (name, lookup) in &options.lookups {
            let path = dir.join(&lookup.query);
            let query = std::fs::read_to_string(&path)
                .map_err(|e| job_error(&path, None, format!("[lookups.{name}] query: cannot read the file: {e}")))?;
            if query.trim().is_empty() {
                return Err(job_error(&path, None, format!("[lookups.{name}] query: the file is empty")));
            }
            lookup_queries.insert(name.clone(), query.trim().trim_end_matches(';').to_string());
        }
        Ok(Job { input, options, lookup_queries })
    }

    /// The same job with `overrides` over its options (checked again).
    pub fn with_overrides(mut self, overrides: &JobOverrides) -> Result<Job> {
        let sink = &mut self.options.sink;
        if let Some(key) = &overrides.kafka_key {
            sink.kafka.key = Some(key.clone());
        }
        if let Some(table) = &overrides.postgres_table {
            sink.postgres.table = table.clone();
        }
        if let Some(key) = &overrides.upsert_key {
            sink.postgres.upsert_key = key.clone();
        }
        if let Some(on_conflict) = overrides.on_conflict {
            sink.postgres.on_conflict = on_conflict;
        }
        check_options(Path::new("the command line"), &self.input, &self.options)?;
        Ok(self)
    }

    /// The seed job: the repository's `sql/input.sql` and `sql/job.toml`.
    pub fn seed() -> Result<Job> {
        Job::load(Path::new("/nonexistent: built in"))
    }

    /// What makes the job's output what it is, as canonical text (one
    /// `key=value` line per part): the declared columns and CHECKs, and the
    /// options that change what is written or where. Layout, comments and
    /// run-time settings are not part of it.
    pub fn identity(&self) -> String {
        let mut lines = vec![format!("input={}", self.input.table)];
        for c in &self.input.columns {
            let default = c.default.as_ref().map(|d| format!(" default {d:?}")).unwrap_or_default();
            lines.push(format!("column={} {:?} nullable={}{default}", c.name, c.ty, c.nullable));
        }
        for c in &self.input.checks {
            lines.push(format!("check={} {}", c.name.as_deref().unwrap_or(""), c.expr));
        }
        let o = &self.options;
        lines.push(format!("unknown_fields={:?}", o.input.unknown_fields));
        for (name, check) in &o.input.checks {
            lines.push(format!("check_message={name} {}", check.message));
        }
        if let Some(w) = &o.input.window {
            lines.push(format!("window={} {}", w.start, w.end));
        }
        lines.push(format!("kafka_key={}", o.sink.kafka.key.as_deref().unwrap_or("")));
        let pg = &o.sink.postgres;
        lines.push(format!("postgres_table={}", pg.table));
        lines.push(format!("upsert_key={} {:?}", pg.upsert_key.join(","), pg.on_conflict));
        for name in o.lookups.keys() {
            let query = self.lookup_queries.get(name).map_or("", String::as_str);
            lines.push(format!("lookup={name} {query}"));
        }
        lines.join("\n")
    }

    /// The message of a named CHECK's refusal, if `job.toml` gives one.
    pub fn check_message(&self, name: &str) -> Option<&str> {
        self.options.input.checks.get(name).map(|c| c.message.as_str())
    }
}

/// `dir/name`, or the seed's built-in text when the folder has no such file.
fn read_or_seed(dir: &Path, name: &str, seed: &str) -> Result<(PathBuf, String)> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((PathBuf::from(format!("{name} (built in)")), seed.into()))
        }
        Err(e) => Err(job_error(&path, None, format!("cannot read the file: {e}"))),
    }
}

/// What `job.toml` names must exist in `input.sql`.
fn check_options(path: &Path, input: &InputDecl, options: &JobOptions) -> Result<()> {
    let fail = |message: String| Err(job_error(path, None, message));
    for name in options.input.checks.keys() {
        if !input.checks.iter().any(|c| c.name.as_deref() == Some(name.as_str())) {
            return fail(format!("[input.checks.{name}]: input.sql has no CHECK constraint of that name"));
        }
    }
    if let Some(window) = &options.input.window {
        for column in [&window.start, &window.end] {
            match input.column(column) {
                Some(c) if c.ty == ColumnType::Int(64) && !c.nullable => {}
                Some(_) => {
                    return fail(format!("[input] window: column {column} must be BIGINT NOT NULL (epoch seconds)"))
                }
                None => return fail(format!("[input] window: input.sql declares no column {column}")),
            }
        }
    }
    if options.sink.postgres.upsert_key.is_empty() && options.sink.postgres.on_conflict != OnConflict::Update {
        return fail("[sink.postgres] on_conflict needs an upsert_key".into());
    }
    for (name, lookup) in &options.lookups {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid || *name == input.table {
            return fail(format!(
                "[lookups.{name}]: a lookup's name is the table the steps read: [a-z_][a-z0-9_]*, not {}",
                input.table
            ));
        }
        if let Err(e) = lookup.schedule() {
            return fail(format!("[lookups.{name}] {e}"));
        }
    }
    match &options.subscribers {
        Some(s) if s.query != "subscribers.sql" => {
            fail("[lookups.subscribers] query: the favourites cache reads subscribers.sql; edit that file".into())
        }
        Some(s) if s.version_check.is_some() && s.refresh.trim() != "on-change" => fail(format!(
            "[lookups.subscribers] version_check is only read with refresh = \"on-change\" (refresh is \"{}\")",
            s.refresh
        )),
        Some(s) if s.watch.is_some() => fail(
            "[lookups.subscribers] watch: the favourites cache watches subscribers_restaurants (subscribers_on_change.sql); leave watch out".into(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_sql_folder_and_an_empty_folder_are_the_seed_job() {
        let seed = Job::seed().unwrap();
        let same = |job: Job| {
            assert_eq!(
                (&job.input.columns, &job.options, job.identity()),
                (&seed.input.columns, &seed.options, seed.identity())
            );
            let checks = |j: &Job| j.input.checks.iter().map(|c| (c.name.clone(), c.expr.clone())).collect::<Vec<_>>();
            assert_eq!(checks(&job), checks(&seed));
        };
        same(Job::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sql")).unwrap());
        same(Job::load(tempfile::tempdir().unwrap().path()).unwrap());
        assert_eq!(seed.input.checks[0].at, "input.sql (built in):21:41");
        assert_eq!(seed.input.table, "campaigns");
        assert_eq!(seed.options.sink.kafka.key.as_deref(), Some("client_id"));
        assert_eq!(seed.options.sink.postgres.table, "subscribers_feedback");
    }

    #[test]
    fn the_identity_follows_what_is_written_not_layout_or_comments() {
        let dir = tempfile::tempdir().unwrap();
        let load = |input: &str, toml: &str| {
            std::fs::write(dir.path().join(INPUT_FILE), input).unwrap();
            std::fs::write(dir.path().join(OPTIONS_FILE), toml).unwrap();
            Job::load(dir.path()).unwrap().identity()
        };
        let base = load("CREATE TABLE t (a BIGINT CHECK (a > 0))", "[sink.postgres]\ntable = \"t\"\n");
        assert_eq!(
            base,
            load("-- note\nCREATE TABLE t (\n  a   BIGINT CHECK (a>0)\n)", "# x\n[sink.postgres]\ntable=\"t\"")
        );
        assert_ne!(base, load("CREATE TABLE t (a BIGINT NOT NULL CHECK (a > 0))", "[sink.postgres]\ntable = \"t\"\n"));
        assert_ne!(base, load("CREATE TABLE t (a BIGINT CHECK (a > 1))", "[sink.postgres]\ntable = \"t\"\n"));
        assert_ne!(base, load("CREATE TABLE t (a BIGINT CHECK (a > 0))", "[sink.postgres]\ntable = \"u\"\n"));
        let keyed = "[sink.kafka]\nkey = \"a\"\n[sink.postgres]\ntable = \"t\"\n";
        assert_ne!(base, load("CREATE TABLE t (a BIGINT CHECK (a > 0))", keyed));
    }

    #[test]
    fn overrides_replace_the_files_options_and_are_checked_the_same_way() {
        let seed = Job::seed().unwrap();
        let overrides = JobOverrides {
            kafka_key: Some("adv_campaign_id".into()),
            postgres_table: Some("other".into()),
            upsert_key: Some(vec!["adv_campaign_id".into(), "client_id".into()]),
            on_conflict: Some(OnConflict::Nothing),
        };
        let job = seed.clone().with_overrides(&overrides).unwrap();
        assert_eq!(job.options.sink.kafka.key.as_deref(), Some("adv_campaign_id"));
        assert_eq!(job.options.sink.postgres.table, "other");
        assert_eq!(job.options.sink.postgres.on_conflict, OnConflict::Nothing);
        assert_ne!(job.identity(), seed.identity(), "the resolved options are the job's identity");
        let alone = JobOverrides { on_conflict: Some(OnConflict::Nothing), ..Default::default() };
        let err = seed.with_overrides(&alone).unwrap_err().to_string();
        assert!(err.contains("on_conflict needs an upsert_key"), "{err}");
    }

    #[test]
    fn options_naming_what_the_declaration_lacks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INPUT_FILE), "CREATE TABLE t (a BIGINT NOT NULL, b TEXT)").unwrap();
        let write = |toml: &str| std::fs::write(dir.path().join(OPTIONS_FILE), toml).unwrap();
        write("[input.checks.nope]\nmessage = \"x\"\n[sink.postgres]\ntable = \"t\"\n");
        let err = Job::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("job.toml: [input.checks.nope]: input.sql has no CHECK constraint"), "{err}");
        write("[input]\nwindow = { start = \"a\", end = \"b\" }\n[sink.postgres]\ntable = \"t\"\n");
        let err = Job::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("column b must be BIGINT NOT NULL"), "{err}");
        write("[sink.postgres]\ntable = \"t\"\non_conflict = \"nothing\"\n");
        let err = Job::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("on_conflict needs an upsert_key"), "{err}");
    }
}
