//! `sparklet check`: a job folder checked against the live Postgres (and
//! the Kafka topics) without running it, every problem listed with the file
//! (and line and column) or object it concerns. What `sparklet run` checks
//! at start, in the same order, without reading or writing anything.

use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;

use crate::cli::CheckArgs;
use crate::config::PostgresConfig;
use crate::error::Result;
use crate::transform::SqlPipeline;

/// Checks the job; returns what to print and whether it passed.
pub async fn check(args: CheckArgs) -> (String, bool) {
    let mut report = Report::default();
    let dir = args.sql_dir.display().to_string();
    let pipeline = match SqlPipeline::load(&args.sql_dir) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            report.problem(e.chain().to_string());
            return report.finish(&dir);
        }
    };
    let job = pipeline.job().clone();
    report.ok(format!(
        "input {}: {} columns, {} CHECKs; {} SQL steps",
        job.input.table,
        job.input.columns.len(),
        job.input.checks.len(),
        pipeline.steps().len()
    ));
    match postgres_checks(&args, pipeline, &mut report).await {
        Ok(()) => {}
        Err(e) => report.problem(e.chain().to_string()),
    }
    if let Some(servers) = &args.bootstrap_servers {
        let topics = [&args.input_topic, &args.output_topic];
        for topic in topics.into_iter().flatten() {
            match topic_exists(servers, topic) {
                Ok(true) => report.ok(format!("topic {topic} exists")),
                Ok(false) => report.problem(format!("kafka: topic '{topic}' does not exist on {servers}")),
                Err(e) => report.problem(format!("kafka: {e}")),
            }
        }
    }
    report.finish(&dir)
}

/// The lookup queries, the steps planned with them, the output against the
/// table's catalog.
async fn postgres_checks(args: &CheckArgs, pipeline: SqlPipeline, report: &mut Report) -> Result<()> {
    let postgres = PostgresConfig::parse(args.database_url.expose())?.with_ca_file(args.database_ca_file.clone())?;
    let lookups = crate::lookups::check_queries(&postgres, pipeline.job(), &args.sql_dir).await?;
    for (name, schema) in &lookups {
        report.ok(format!("lookup {name}: {} columns", schema.fields().len()));
    }
    let pipeline = pipeline.with_lookups(lookups);
    let output = pipeline.output_schema().await?;
    let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
    report.ok(format!("output: {}", names.join(", ")));
    let client = crate::postgres::connect(&postgres, "sparklet check").await?;
    let options = &pipeline.job().options.sink.postgres;
    crate::sink::check_table(&client, options, &output, &postgres.target()).await?;
    report.ok(format!("table {} takes the output", options.table));
    Ok(())
}

fn topic_exists(servers: &str, topic: &str) -> std::result::Result<bool, String> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", servers).create().map_err(|e| e.to_string())?;
    crate::kafka::topic_partitions(&consumer, topic, Duration::from_secs(10))
        .map(|partitions| !partitions.is_empty())
        .map_err(|e| e.chain().to_string())
}

/// What `sparklet check` prints.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    problems: usize,
}

impl Report {
    fn ok(&mut self, line: String) {
        self.lines.push(format!("ok: {line}"));
    }

    fn problem(&mut self, line: String) {
        self.problems += 1;
        self.lines.push(format!("problem: {line}"));
    }

    fn finish(self, dir: &str) -> (String, bool) {
        let verdict = match self.problems {
            0 => format!("sparklet check: job {dir} can run\n"),
            n => format!("sparklet check: job {dir} has {n} problem(s)\n"),
        };
        (format!("{}\n{verdict}", self.lines.join("\n")), self.problems == 0)
    }
}
