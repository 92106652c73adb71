//! Where `bench_e2e`'s scenarios run Kafka: by default a librdkafka mock
//! cluster in this process (one per scenario, over TCP); with
//! `--bootstrap-servers` ([`use_broker`]), a real broker, on which the
//! scenario's topics are created with the admin client (a real broker need
//! not create topics on first use) and deleted when the scenario ends. Every
//! scenario's topics have a suffix of their own, so runs never share one.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::tools;

/// The real broker of this run, if any.
static BROKER: OnceLock<String> = OnceLock::new();

/// Runs every later scenario against the broker at `bootstrap`.
pub(crate) fn use_broker(bootstrap: String) {
    let _ = BROKER.set(bootstrap);
}

/// The output topic's partitions.
pub(crate) const OUTPUT_PARTITIONS: i32 = 16;

/// One scenario's Kafka: a mock cluster or a real broker, and the names of
/// its topics.
pub(crate) struct Cluster {
    bootstrap: String,
    backend: Backend,
    suffix: String,
    /// Topics created on the real broker, deleted on drop.
    created: Mutex<Vec<String>>,
}

enum Backend {
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A real broker, through its admin client.
    Broker(AdminClient<DefaultClientContext>),
}

impl Cluster {
    /// A fresh mock cluster, or the broker of [`use_broker`].
    pub(crate) fn new() -> Result<Self> {
        let (bootstrap, backend) = match BROKER.get() {
            Some(bootstrap) => (bootstrap.clone(), Backend::Broker(tools::client_config(bootstrap, &[]).create()?)),
            None => {
                let mock = MockCluster::new(1)?;
                (mock.bootstrap_servers(), Backend::Mock(mock))
            }
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Ok(Cluster { bootstrap, backend, suffix, created: Mutex::default() })
    }

    pub(crate) fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// `base` with this scenario's suffix: a topic name no other run uses.
    pub(crate) fn name(&self, base: &str) -> String {
        format!("{base}_{}", self.suffix)
    }

    /// The output topic ([`OUTPUT_PARTITIONS`]).
    pub(crate) fn output_topic(&self) -> String {
        self.name("bench_out")
    }

    /// The marker topic (`--marker-topic`).
    pub(crate) fn marker_topic(&self) -> String {
        self.name("bench_markers")
    }

    /// Creates `name`; on a real broker with the topic `settings` (the mock
    /// has none: it never compacts) and waits until every partition has a
    /// leader.
    pub(crate) fn create_topic(&self, name: &str, partitions: i32, settings: &[(&str, &str)]) -> Result<()> {
        let admin = match &self.backend {
            Backend::Mock(mock) => return Ok(mock.create_topic(name, partitions, 1)?),
            Backend::Broker(admin) => admin,
        };
        // -1: the broker's default replication factor.
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        for (key, value) in settings {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in futures::executor::block_on(admin.create_topics([&topic], &options))? {
            result.map_err(|(topic, e)| anyhow!("creating topic {topic} on {}: {e}", self.bootstrap))?;
        }
        self.created.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_string());
        wait_for_leaders(admin, name, partitions)
    }
}

impl Drop for Cluster {
    /// Deletes the scenario's topics from the real broker (best effort), so
    /// repeated runs do not fill its disk.
    fn drop(&mut self) {
        let created = std::mem::take(self.created.get_mut().unwrap_or_else(|e| e.into_inner()));
        let Backend::Broker(admin) = &self.backend else { return };
        if created.is_empty() {
            return;
        }
        let names: Vec<&str> = created.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = futures::executor::block_on(admin.delete_topics(&names, &options)) {
            eprintln!("could not delete the topics {names:?}: {e}");
        }
    }
}

/// Waits until `name` has `partitions` partitions, each with a leader.
fn wait_for_leaders(admin: &AdminClient<DefaultClientContext>, name: &str, partitions: i32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = admin.inner().fetch_metadata(Some(name), Duration::from_secs(5))?;
        let ready = metadata.topics().iter().find(|t| t.name() == name).is_some_and(|t| {
            t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {name} did not get {partitions} partitions with leaders within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scenario's cluster with its topics created: the input topic (returned;
/// at least 16 partitions, and one per 8,000 campaigns, as the mock keeps
/// about 5 MB per partition), the output topic, the input's dead-letter
/// topic and a compacted marker topic.
pub(crate) fn new_cluster(messages: usize) -> Result<(Cluster, String)> {
    let cluster = Cluster::new()?;
    let topic = cluster.name(&format!("bench_in_{messages}"));
    cluster.create_topic(&topic, (messages / 8_000 + 1).max(16) as i32, &[])?;
    cluster.create_topic(&cluster.output_topic(), OUTPUT_PARTITIONS, &[])?;
    cluster.create_topic(&format!("{topic}-dead-letter"), 1, &[])?;
    cluster.create_topic(&cluster.marker_topic(), 1, &[("cleanup.policy", "compact")])?;
    Ok((cluster, topic))
}

/// Produces `n` generated campaigns (every tenth expired) to `topic` and
/// waits until all are delivered.
pub(crate) fn produce(cluster: &Cluster, topic: &str, n: usize, restaurants: usize) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let messages: Vec<(Option<String>, String)> = (0..n)
        .map(|i| {
            let id = format!("campaign-{i}-{}", uuid::Uuid::new_v4().simple());
            (Some(format!("message_{i}")), tools::generated_campaign(i, restaurants, &id, now))
        })
        .collect();
    let config = tools::client_config(&cluster.bootstrap_servers(), &[("linger.ms".into(), "5".into())]);
    tools::produce(&config, topic, &messages)?;
    Ok(())
}
