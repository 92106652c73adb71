//! Shared test fixtures: an in-process Kafka (librdkafka's mock cluster, real
//! wire protocol on a TCP port), a private Postgres schema per test, and the
//! example messages of the input format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::mocking::MockCluster;

pub use crate::broker::{admin, Broker};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

pub const RESTAURANT: &str = "123e4567-e89b-12d3-a456-426614174000";
pub const CAMPAIGN: &str = "123e4567-e89b-12d3-a456-426614174003";
/// A campaign end far in the future (epoch seconds): never expired.
pub const FOREVER: i64 = 4_000_000_000;

/// The example campaign of the input format (valid from 2022 to 2054).
pub fn example_message() -> Value {
    serde_json::json!({
        "restaurant_id": RESTAURANT,
        "adv_campaign_id": CAMPAIGN,
        "adv_campaign_content": "first campaign",
        "adv_campaign_owner": "Ivanov Ivan Ivanovich",
        "adv_campaign_owner_contact": "iiivanov@restaurant.ru",
        "adv_campaign_datetime_start": 1659203516i64,
        "adv_campaign_datetime_end": 2659207116i64,
        "datetime_created": 1659131516i64
    })
}

/// A campaign of `restaurant` valid from `start` to `end` (epoch seconds).
/// Produces campaigns `prefix-0` .. `prefix-(n-1)` of [`RESTAURANT`], valid
/// now, to the job's input partition 0; returns their ids.
pub fn produce_wave(job: &Job, prefix: &str, n: usize) -> Result<Vec<String>> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, id, 0, FOREVER)])?;
    }
    Ok(ids)
}

pub fn campaign(restaurant: &str, id: &str, start: i64, end: i64) -> Value {
    let mut m = example_message();
    m["restaurant_id"] = restaurant.into();
    m["adv_campaign_id"] = id.into();
    m["adv_campaign_datetime_start"] = start.into();
    m["adv_campaign_datetime_end"] = end.into();
    m
}

/// The default `--marker-topic`, for tests of a cluster of their own (the
/// mock). On the shared broker each [`Job`] has its own marker topic.
pub const MARKERS: &str = sparklet::cli::DEFAULT_MARKER_TOPIC;

/// Polls `done` every 20 ms until it says yes, for at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while !done().await? {
        if std::time::Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A message's key and value, either possibly null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A Kafka cluster for one test: Apache Kafka's own broker (the shared one,
/// [`Broker::shared`], or a private one), or librdkafka's in-process mock
/// cluster where a test needs what only the mock gives (injected request
/// errors). Topics are created here; every test names its own.
pub struct Kafka {
    bootstrap: String,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Kafka {
    /// The shared real broker.
    pub fn start() -> Result<Self> {
        Self::on(&Broker::shared()?.plaintext)
    }

    /// A client of the real broker at `bootstrap` (a private one).
    pub fn on(bootstrap: &str) -> Result<Self> {
        Ok(Kafka { bootstrap: bootstrap.to_string(), mock: None, producer: test_producer(bootstrap)? })
    }

    /// librdkafka's mock cluster: no abort, no fencing, no last stable
    /// offset, so it proves nothing about exactly-once; for request errors.
    pub fn mock() -> Result<Self> {
        let cluster = MockCluster::new(1).context("starting the mock cluster")?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Kafka { producer: test_producer(&bootstrap)?, bootstrap, mock: Some(cluster) })
    }

    /// The mock cluster, for a test that injects errors.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        self.mock.as_ref().expect("a test of the real broker asked for the mock cluster")
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        self.create_topic_with(name, partitions, &[])
    }

    /// Creates `name` with topic-level settings (`cleanup.policy=compact`, ...).
    pub fn create_topic_with(&self, name: &str, partitions: i32, settings: &[(&str, &str)]) -> Result<()> {
        match &self.mock {
            Some(cluster) => cluster.create_topic(name, partitions, 1).context("creating topic")?,
            None => admin::create_topic(&self.bootstrap, name, partitions, settings)?,
        }
        Ok(())
    }

    /// Deletes `name` (real broker only).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        admin::delete_topic(&self.bootstrap, name)
    }
    /// Produces raw payloads to one partition and waits for delivery.
    pub fn produce_raw(&self, topic: &str, partition: i32, payloads: &[&[u8]]) -> Result<()> {
        let keys: Vec<String> = (0..payloads.len()).map(|i| format!("message_{i}")).collect();
        let records: Vec<_> = keys.iter().zip(payloads).map(|(k, p)| (Some(k.as_bytes()), Some(*p))).collect();
        self.produce_records(topic, partition, &records)
    }

    /// Produces (key, value) pairs, either possibly null, to one partition.
    pub fn produce_records(&self, topic: &str, partition: i32, records: &[KeyValue<'_>]) -> Result<()> {
        for (key, value) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
            record.key = *key;
            record.payload = *value;
            self.producer.send(record).map_err(|(e, _)| e).context("producing")?;
        }
        self.producer.flush(Duration::from_secs(10)).context("flushing")?;
        Ok(())
    }

    /// Produces JSON campaigns to one partition.
    pub fn produce(&self, topic: &str, partition: i32, messages: &[Value]) -> Result<()> {
        let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.to_string().into_bytes()).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.produce_raw(topic, partition, &refs)
    }

    /// Everything a `read_committed` consumer sees in `topic`: (key, value).
    pub fn read_committed(&self, topic: &str) -> Result<Vec<(String, Value)>> {
        read_committed(&self.bootstrap(), topic)
    }
}

fn test_producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .context("creating the test producer")
}

/// Reads every committed message of `topic`, all partitions, from the start.
pub fn read_committed(bootstrap: &str, topic: &str) -> Result<Vec<(String, Value)>> {
    let config = crate::tools::client_config(bootstrap, &[]);
    crate::tools::read_committed(&config, topic, Duration::from_secs(20))?
        .into_iter()
        .map(|(key, value)| Ok((key.unwrap_or_default(), serde_json::from_str(&value)?)))
        .collect()
}

/// A private schema in the `test` database, with the job's tables.
pub struct Db {
    pub url: String,
    /// Also the `application_name` of every connection made with `url`.
    pub schema: String,
    pub client: Client,
}

pub fn base_url() -> String {
    std::env::var("SPARKLET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl Db {
    pub async fn new() -> Result<Self> {
        let schema = unique("it");
        let admin = connect(&base_url()).await?;
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
        let url = format!("{}&application_name={schema}", sparklet::config::url_with_search_path(&base_url(), &schema));
        let client = connect(&url).await?;
        let ddl = std::fs::read_to_string(repo_path("sql/schema.sql"))?;
        client.batch_execute(&ddl).await.context("applying sql/schema.sql")?;
        Ok(Db { url, schema, client })
    }

    pub async fn add_subscribers(&self, restaurant: &str, clients: &[&str]) -> Result<()> {
        for c in clients {
            self.client
                .execute(
                    "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, $2)",
                    &[c, &restaurant],
                )
                .await?;
        }
        Ok(())
    }

    /// Kills every other server connection made with this database's URL
    /// (as a database restart or a network cut would).
    pub async fn terminate_other_connections(&self) -> Result<u64> {
        let row = self
            .client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.schema],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// All feedback rows as JSON objects (without `id`), ordered.
    pub async fn feedback(&self) -> Result<Vec<Value>> {
        let rows = self
            .client
            .query(
                "SELECT row_to_json(f)::text FROM (SELECT restaurant_id, adv_campaign_id, adv_campaign_content,
                   adv_campaign_owner, adv_campaign_owner_contact, adv_campaign_datetime_start,
                   adv_campaign_datetime_end, client_id, datetime_created, trigger_datetime_created, feedback
                 FROM subscribers_feedback ORDER BY adv_campaign_id, client_id, id) f",
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?)).collect()
    }
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting {url}"))?;
    tokio::spawn(conn);
    Ok(client)
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Copies a folder tree (a checkpoint, as another machine or a backup would have it).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Copies the repo's SQL files into `to`, for a test that edits them.
pub fn copy_sql(to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(repo_path("sql"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// One test's topics, database and checkpoint directory.
pub struct Job {
    pub kafka: Kafka,
    pub db: Db,
    pub input: String,
    pub output: String,
    /// The default dead-letter topic of `input`.
    pub dead_letters: String,
    /// This job's `--marker-topic`, compacted as `docs/deployment.md` says.
    pub markers: String,
    pub checkpoint: tempfile::TempDir,
}

impl Job {
    /// A job on the shared real broker.
    pub async fn new(partitions: i32) -> Result<Self> {
        Self::on(Kafka::start()?, partitions).await
    }

    /// A job on librdkafka's mock cluster (for injected request errors).
    pub async fn on_mock(partitions: i32) -> Result<Self> {
        Self::on(Kafka::mock()?, partitions).await
    }

    /// A job on `kafka`, with its own topics.
    pub async fn on(kafka: Kafka, partitions: i32) -> Result<Self> {
        let input = unique("in");
        let output = unique("out");
        kafka.create_topic(&input, partitions)?;
        kafka.create_topic(&output, 1)?;
        let dead_letters = format!("{input}-dead-letter");
        kafka.create_topic(&dead_letters, 1)?;
        let markers = if kafka.mock.is_some() { MARKERS.to_string() } else { unique("markers") };
        kafka.create_topic_with(&markers, 1, &[("cleanup.policy", "compact")])?;
        Ok(Job { kafka, db: Db::new().await?, input, output, dead_letters, markers, checkpoint: tempfile::tempdir()? })
    }

    /// `sparklet run` arguments for this job, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--bootstrap-servers",
            &self.kafka.bootstrap(),
            "--input-topic",
            &self.input,
            "--output-topic",
            &self.output,
            "--database-url",
            &self.db.url,
            "--checkpoint-dir",
            &self.checkpoint.path().display().to_string(),
            "--sql-dir",
            &repo_path("sql").display().to_string(),
            "--starting-offsets",
            "earliest",
            "--kafka-timeout",
            "10s",
            "--marker-topic",
            &self.markers,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Later values replace earlier ones, so a test can override a default.
        for pair in extra.chunks(2) {
            match (args.iter().position(|a| a == pair[0]), pair.get(1)) {
                (Some(at), Some(value)) if pair[0].starts_with("--") => args[at + 1] = value.to_string(),
                _ => args.extend(pair.iter().map(|s| s.to_string())),
            }
        }
        args
    }

    pub fn config(&self, extra: &[&str]) -> Result<sparklet::Config> {
        config_from(self.args(extra))
    }

    /// Runs the job in process with `--trigger available-now` until the data
    /// available now is done.
    pub async fn run_available_now(&self, extra: &[&str]) -> Result<sparklet::RunSummary> {
        let mut all = vec!["--trigger", "available-now"];
        all.extend_from_slice(extra);
        Ok(sparklet::run(self.config(&all)?, std::future::pending()).await?)
    }

    /// Starts the job in process (for `--trigger` intervals); stop it with
    /// [`Running::stop`], which acts like SIGTERM.
    pub fn start(&self, extra: &[&str]) -> Result<Running> {
        let config = self.config(extra)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(sparklet::run(config, async move {
            let _ = stopped.await;
        }));
        Ok(Running { stop, handle })
    }

    pub fn output_messages(&self) -> Result<Vec<(String, Value)>> {
        self.kafka.read_committed(&self.output)
    }
}

/// A job running in process.
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<sparklet::Result<sparklet::RunSummary>>,
}

impl Running {
    /// Graceful stop: the current batch finishes, then the run returns.
    pub async fn stop(self) -> Result<sparklet::RunSummary> {
        let _ = self.stop.send(());
        Ok(self.handle.await??)
    }
}

pub fn config_from(args: Vec<String>) -> Result<sparklet::Config> {
    let cli = sparklet::cli::Cli::try_parse_from(std::iter::once("sparklet".to_string()).chain(args))?;
    match cli.command {
        sparklet::cli::Command::Run(run) => Ok(sparklet::Config::try_from(*run)?),
        _ => bail!("not a run command"),
    }
}
