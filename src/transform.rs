//! The transform: the user's SQL files, run by DataFusion on each batch.
//!
//! Files named `NN_name.sql` in the SQL directory run in `NN` order. Each is one
//! `SELECT`; its result is registered as a view called `name`, so later files
//! can read earlier ones, and the last file's columns, as they come, are the
//! output both sinks write. Tables available to every file: the input, under
//! the name `input.sql` declares (the seed's `campaigns`: this batch), and
//! `subscribers` (the cached snapshot). Parameters: `$now` (the batch
//! timestamp in epoch seconds, pinned in the checkpoint) and `$batch_id`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::job::{Job, JobOverrides};
use crate::lookups::LookupTable;
use crate::schema::text::Text;
use crate::schema::SUBSCRIBERS_TABLE;
use crate::source::input::Input;
use crate::subscribers::Subscribers;
use crate::util::files::read_sql_file;

/// The SQL's output rows as they are computed, already in the sinks' columns.
pub type RowStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

/// One SQL file of the transform.
#[derive(Debug, Clone)]
pub struct SqlStep {
    /// View name: the file stem without its `NN_` prefix.
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
}

/// The job of a query: its declaration and options, and the ordered SQL
/// files.
#[derive(Debug, Clone)]
pub struct SqlPipeline {
    steps: Vec<SqlStep>,
    job: Arc<Job>,
    input: Arc<Input>,
    /// The lookups' names and columns, once loaded ([`Self::with_lookups`]).
    lookups: Vec<(String, SchemaRef)>,
    /// The output's columns, once planned at start ([`Self::validated`]).
    output: Option<SchemaRef>,
}

impl SqlPipeline {
    /// Reads the job folder `dir`: `input.sql`, `job.toml` ([`Job`]) and the
    /// `NN_name.sql` files.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, &JobOverrides::default())
    }

    /// [`Self::load`], with options from the command line over `job.toml`'s.
    pub fn load_with(dir: &Path, overrides: &JobOverrides) -> Result<Self> {
        let job = Job::load(dir)?.with_overrides(overrides)?;
        let input = Arc::new(Input::new(&job)?);
        let steps = load_steps(dir)?;
        Ok(SqlPipeline { steps, job: Arc::new(job), input, lookups: Vec::new(), output: None })
    }

    /// The same job, its steps planned with these lookup tables (an empty
    /// one of each columns where a run is given none).
    pub fn with_lookups(mut self, lookups: Vec<(String, SchemaRef)>) -> Self {
        self.lookups = lookups;
        self
    }

    /// The job's declaration and options.
    pub fn job(&self) -> &Arc<Job> {
        &self.job
    }

    /// The compiled input declaration.
    pub fn input(&self) -> &Arc<Input> {
        &self.input
    }

    /// A fingerprint of the transform files (names and text), recorded in
    /// each batch's plan so a replay knows whether it runs the same SQL.
    /// FNV-1a, 64 bits, in hex: stable across builds and platforms.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.steps)
    }

    /// A fingerprint of the whole job: [`Job::identity`] and the files'
    /// fingerprint; recorded in each batch's plan.
    pub fn job_fingerprint(&self) -> String {
        use std::hash::Hasher;
        let mut hasher = crate::util::hash::Fnv64::default();
        for part in [self.job.identity().as_bytes(), &[0], self.fingerprint().as_bytes()] {
            hasher.write(part);
        }
        format!("{:016x}", hasher.finish())
    }

    /// The files, in the order they run.
    pub fn steps(&self) -> &[SqlStep] {
        &self.steps
    }

    /// Plans and runs the files on empty tables, so a broken file or an
    /// output the sinks cannot take fails at start, naming the file.
    pub async fn validate(&self) -> Result<()> {
        self.output_schema().await.map(drop)
    }

    /// The same job, planned on empty tables ([`Self::validate`]) and its
    /// output's columns kept, so the sinks' checks do not plan it again.
    pub async fn validated(mut self) -> Result<Self> {
        self.output = Some(self.output_schema().await?);
        Ok(self)
    }

    /// The output's columns, as the last file gives them: kept by
    /// [`Self::validated`], else planned and run on empty tables.
    pub async fn output_schema(&self) -> Result<SchemaRef> {
        if let Some(output) = &self.output {
            return Ok(output.clone());
        }
        let campaigns = RecordBatch::new_empty(self.input.schema());
        let subscribers = Subscribers::from_rows(Vec::new(), Vec::new())?;
        let (running, df) = self.prepare(campaigns, &subscribers, &[], 0, 0).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        if let Err(e) = df.collect().await {
            return Err(running.failed(e).await);
        }
        Ok(schema)
    }

    /// Runs the files on one batch and returns the output (text may stay
    /// shared, see [`crate::schema::text`]), collected.
    pub async fn run(
        &self,
        campaigns: RecordBatch,
        subscribers: &Subscribers,
        now: i64,
        batch_id: u64,
    ) -> Result<Vec<RecordBatch>> {
        self.execute(campaigns, subscribers, &[], now, batch_id).await?.try_collect().await
    }

    /// Plans the files on one batch, with the lookup versions it pinned (a
    /// declared lookup not given is empty), and returns the output as a
    /// stream of chunks, computed as it is read; an error while computing
    /// names the file that fails.
    pub async fn execute(
        &self,
        campaigns: RecordBatch,
        subscribers: &Subscribers,
        lookups: &[LookupTable],
        now: i64,
        batch_id: u64,
    ) -> Result<RowStream> {
        let (running, df) = self.prepare(campaigns, subscribers, lookups, now, batch_id).await?;
        let running = Arc::new(running);
        let rows = match df.execute_stream().await {
            Ok(rows) => rows,
            Err(e) => return Err(running.failed(e).await),
        };
        Ok(rows
            .then(move |batch| {
                let running = running.clone();
                async move {
                    match batch {
                        Ok(batch) => Ok(batch),
                        Err(e) => Err(running.failed(e).await),
                    }
                }
            })
            .boxed())
    }

    /// Registers the tables and the views of all files but the last, and
    /// plans the last, whose output is checked ([`check_output`]).
    async fn prepare(
        &self,
        campaigns: RecordBatch,
        subscribers: &Subscribers,
        lookups: &[LookupTable],
        now: i64,
        batch_id: u64,
    ) -> Result<(Running, datafusion::dataframe::DataFrame)> {
        let ctx = SessionContext::new_with_config(session_config());
        let campaigns = crate::schema::text::for_sql(campaigns)?;
        let input = self.job.input.table.as_str();
        ctx.register_batch(input, campaigns).map_err(|e| Error::transform(format!("registering {input}"), e))?;
        ctx.register_table(SUBSCRIBERS_TABLE, Arc::new(subscribers.table.clone()))
            .map_err(|e| Error::transform("registering subscribers", e))?;
        self.register_lookups(&ctx, lookups)?;
        let params =
            vec![("now", ScalarValue::Int64(Some(now))), ("batch_id", ScalarValue::Int64(Some(batch_id as i64)))];
        let (last, init) = self.steps.split_last().ok_or_else(|| Error::Runtime("no SQL steps".into()))?;
        for step in init {
            let df = plan(&ctx, step, params.clone()).await?;
            ctx.register_table(step.name.as_str(), df.into_view())
                .map_err(|e| sql_err(step, "registering its view", e))?;
        }
        let df = plan(&ctx, last, params).await?;
        // Check the output on the plan's schema, so even a batch (or a
        // start-up validation) with no rows catches a wrong output.
        check_output(df.schema().as_arrow(), &last.path, self.job.options.sink.kafka.key.as_deref())?;
        Ok((Running { ctx, views: init.to_vec(), last: last.clone() }, df))
    }
}

impl SqlPipeline {
    /// Registers each lookup under its name: the pinned version, or an empty
    /// table of its columns.
    fn register_lookups(&self, ctx: &SessionContext, lookups: &[LookupTable]) -> Result<()> {
        for (name, schema) in &self.lookups {
            let batch = match lookups.iter().find(|t| t.name == *name) {
                Some(table) => table.batch.clone(),
                None => RecordBatch::new_empty(schema.clone()),
            };
            let registering = |e| Error::transform(format!("registering lookup {name}"), e);
            let table =
                datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(registering)?;
            ctx.register_table(name.as_str(), Arc::new(table)).map_err(registering)?;
        }
        Ok(())
    }
}

/// A planned run, kept with its stream to name the file that fails.
struct Running {
    ctx: SessionContext,
    views: Vec<SqlStep>,
    last: SqlStep,
}

impl Running {
    async fn failed(&self, e: DataFusionError) -> Error {
        sql_err(failing_step(&self.ctx, &self.views).await.unwrap_or(&self.last), "running", e)
    }
}

/// One partition (a batch is small; the machine has two cores and the
/// sinks use them), and the join's key filter pushed to the subscribers scan
/// as a list of up to 10,000 restaurants (DataFusion's default, 150, would
/// make a 1,000-campaign batch scan every cached row; see
/// [`crate::subscribers::scan`]).
pub(crate) fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(1);
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_inlist_pushdown_max_distinct_values = 10_000;
    optimizer.hash_join_inlist_pushdown_max_size = 1 << 20;
    config
}

/// Which file a run-time error comes from: the views are evaluated one by
/// one, in order, and the first that fails is named (the last file if none
/// does). Runs only after a failure.
async fn failing_step<'a>(ctx: &SessionContext, views: &'a [SqlStep]) -> Option<&'a SqlStep> {
    for step in views {
        let fails = match ctx.table(step.name.as_str()).await {
            Ok(df) => df.collect().await.is_err(),
            Err(_) => true,
        };
        if fails {
            return Some(step);
        }
    }
    None
}

async fn plan(
    ctx: &SessionContext,
    step: &SqlStep,
    params: Vec<(&str, ScalarValue)>,
) -> Result<datafusion::dataframe::DataFrame> {
    ctx.sql(&step.sql).await.and_then(|df| df.with_param_values(params)).map_err(|e| sql_err(step, "planning", e))
}

/// The `NN_name.sql` files of `dir`, in order.
fn load_steps(dir: &Path) -> Result<Vec<SqlStep>> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Error::Sql { path: dir.to_path_buf(), message: format!("cannot read the SQL directory: {e}") })?;
    let mut steps = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = step_name(&path) else {
            continue;
        };
        steps.push(SqlStep { name, sql: read_sql_file(&path)?, path });
    }
    steps.sort_by(|a, b| a.path.cmp(&b.path));
    if steps.is_empty() {
        return Err(Error::Sql {
            path: dir.to_path_buf(),
            message: "no transform files: expected at least one NN_name.sql (e.g. 10_feedback.sql)".into(),
        });
    }
    Ok(steps)
}

/// FNV-1a over each step's file name and text.
fn fingerprint(steps: &[SqlStep]) -> String {
    use std::hash::Hasher;
    let mut hasher = crate::util::hash::Fnv64::default();
    for step in steps {
        let name = step.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for part in [name.as_bytes(), &[0], step.sql.as_bytes(), &[0]] {
            hasher.write(part);
        }
    }
    format!("{:016x}", hasher.finish())
}

/// `10_active_campaigns.sql` -> `active_campaigns`; other files -> None.
fn step_name(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".sql")?;
    let (digits, name) = stem.split_once('_')?;
    let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty();
    valid.then(|| name.to_string())
}

fn sql_err(step: &SqlStep, action: &'static str, source: DataFusionError) -> Error {
    Error::SqlStep { path: step.path.clone(), action, source }
}

/// The output's columns, as the last file gives them, must have distinct
/// names, and the Kafka key column (`job.toml`'s `[sink.kafka] key`) must be
/// one of them, text or an integer. What the Postgres table takes is checked
/// against its catalog when the sink connects.
fn check_output(schema: &Schema, path: &Path, key: Option<&str>) -> Result<()> {
    let fail = |message: String| Error::OutputSchema { path: path.to_path_buf(), message };
    let mut seen = std::collections::HashSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name().as_str()) {
            return Err(fail(format!("has two columns named {} (name them apart with AS)", field.name())));
        }
    }
    let Some(key) = key else { return Ok(()) };
    let Some(field) = schema.fields().iter().find(|f| f.name() == key) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let message =
            format!("has no column {key}, the Kafka key (job.toml [sink.kafka] key); it has {}", names.join(", "));
        return Err(fail(message));
    };
    let text =
        Text::is_text(field.data_type()) || matches!(field.data_type(), DataType::Utf8View | DataType::LargeUtf8);
    if !(text || field.data_type().is_integer()) {
        return Err(fail(format!(
            "column {key}, the Kafka key, is {}: it must be text or an integer",
            field.data_type()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_come_from_numbered_files_only() {
        assert_eq!(step_name(Path::new("sql/10_active_campaigns.sql")).as_deref(), Some("active_campaigns"));
        assert_eq!(step_name(Path::new("sql/schema.sql")), None);
        assert_eq!(step_name(Path::new("sql/subscribers.sql")), None);
        assert_eq!(step_name(Path::new("sql/10_.sql")), None);
        assert_eq!(step_name(Path::new("sql/notes.txt")), None);
    }

    #[test]
    fn the_fingerprint_is_stable_and_changes_with_any_byte_or_name() {
        let pipeline = |files: &[(&str, &str)]| {
            let steps: Vec<SqlStep> = files
                .iter()
                .map(|(n, sql)| SqlStep { name: n.to_string(), sql: sql.to_string(), path: Path::new(n).to_path_buf() })
                .collect();
            fingerprint(&steps)
        };
        let base = pipeline(&[("10_a.sql", "SELECT 1"), ("20_b.sql", "SELECT 2")]);
        assert_eq!(base, "7be84b85c2e3e868", "FNV-1a of the names and texts, as in any build");
        assert_ne!(base, pipeline(&[("10_a.sql", "SELECT 1 "), ("20_b.sql", "SELECT 2")]));
        assert_ne!(base, pipeline(&[("10_a.sql", "SELECT 1"), ("30_b.sql", "SELECT 2")]));
        assert_ne!(base, pipeline(&[("10_a.sql", "SELECT 1SELECT 2"), ("20_b.sql", "")]));
    }

    #[test]
    fn missing_directory_and_empty_directory_are_named() {
        let err = SqlPipeline::load(Path::new("/nonexistent/sql")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/sql"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = SqlPipeline::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("NN_name.sql"), "{err}");
    }
}
