//! Apache Kafka's own broker for the tests (`tests/kafka/broker`, KRaft, one
//! node, a PLAINTEXT and a SASL_SSL + SCRAM-SHA-512 listener): the shared one
//! the test command started (the `SPARKLET_TEST_KAFKA*` variables), else one
//! this test binary starts for itself, stopped when it exits; private ones
//! for tests that stop a broker. Plus the admin calls and Kafka's own
//! command-line tools, the tests' independent witnesses.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

/// One running broker and what a client needs to reach it.
pub struct Broker {
    /// `host:port` of the PLAINTEXT listener.
    pub plaintext: String,
    /// `host:port` of the SASL_SSL listener (SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// The CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing this broker knows.
    pub other_ca: PathBuf,
    pub user: String,
    pub password: String,
    /// The broker's folder: configuration, data, `broker.log`, `broker.pid`.
    pub dir: PathBuf,
    /// Stopped and removed when dropped (a private broker).
    owned: bool,
}

fn script() -> PathBuf {
    crate::support::repo_path("tests/kafka/broker")
}

impl Broker {
    /// The broker every test shares (each test with its own topics).
    pub fn shared() -> Result<&'static Broker> {
        static SHARED: OnceLock<std::result::Result<Broker, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| match Self::from_env() {
                Some(broker) => Ok(broker),
                None => {
                    eprintln!("NOTICE: SPARKLET_TEST_KAFKA is not set; starting a broker for this test run");
                    Self::launch(false).map_err(|e| format!("{e:#}"))
                }
            })
            .as_ref()
            .map_err(|e| anyhow!("no Kafka broker for the tests: {e}"))
    }

    /// A broker of the caller's own, for a test that stops or restarts it.
    pub fn start_private() -> Result<Broker> {
        Self::launch(true)
    }

    fn from_env() -> Option<Broker> {
        let var = |name: &str| std::env::var(format!("SPARKLET_TEST_KAFKA{name}")).unwrap_or_default();
        let plaintext = std::env::var("SPARKLET_TEST_KAFKA").ok()?;
        Some(Broker {
            plaintext,
            sasl_ssl: var("_SASL_SSL"),
            ca: var("_CA").into(),
            other_ca: var("_OTHER_CA").into(),
            user: var("_USER"),
            password: var("_PASSWORD"),
            dir: var("_DIR").into(),
            owned: false,
        })
    }

    /// Runs `tests/kafka/broker start` in a new folder, stopped when this
    /// process exits however it ends (the script watches our pid).
    fn launch(owned: bool) -> Result<Broker> {
        let dir = std::env::temp_dir().join(crate::support::unique("sparklet-kafka"));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .args(["--watch", &std::process::id().to_string()])
            .output()
            .context("running tests/kafka/broker")?;
        ensure!(
            out.status.success(),
            "tests/kafka/broker start failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| -> Result<String> {
            let key = format!("SPARKLET_TEST_KAFKA{name}=");
            env.lines()
                .find_map(|l| l.strip_prefix(&key))
                .map(str::to_string)
                .with_context(|| format!("tests/kafka/broker printed no {key}"))
        };
        Ok(Broker {
            plaintext: var("")?,
            sasl_ssl: var("_SASL_SSL")?,
            ca: var("_CA")?.into(),
            other_ca: var("_OTHER_CA")?.into(),
            user: var("_USER")?,
            password: var("_PASSWORD")?,
            dir,
            owned,
        })
    }

    fn run_script(&self, verb: &str) -> Result<()> {
        let out = Command::new("bash").arg(script()).arg(verb).arg(&self.dir).output()?;
        ensure!(out.status.success(), "broker {verb}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// SIGKILLs the broker, keeping its data (an outage).
    pub fn kill(&self) -> Result<()> {
        ensure!(self.owned, "only a private broker may be killed");
        self.run_script("kill")
    }

    /// Starts a killed broker again on the same data and ports; returns when ready.
    pub fn resume(&self) -> Result<()> {
        self.run_script("resume")
    }

    /// Runs one of Kafka's own command-line tools (a class of `kafka-tools`)
    /// against this broker's PLAINTEXT listener; returns what it printed.
    pub fn tool(&self, class: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("tool")
            .arg(&self.dir)
            .arg(class)
            .args(["--bootstrap-server", &self.plaintext])
            .args(args)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "{class} {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// `kafka-consumer-groups --describe --group GROUP --offsets`: the
    /// group's committed offset per (topic, partition), as Kafka's own tool
    /// reports them (a lag tool's view).
    pub fn committed_offsets(&self, group: &str) -> Result<Vec<(String, i32, Option<i64>)>> {
        let out = self.tool(
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            &["--describe", "--group", group, "--offsets"],
        )?;
        let mut offsets = Vec::new();
        for line in out.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[0] != group {
                continue;
            }
            let offset = cols[3].parse().ok();
            offsets.push((cols[1].to_string(), cols[2].parse()?, offset));
        }
        offsets.sort();
        Ok(offsets)
    }

    /// The broker's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.run_script("stop");
        }
    }
}

/// Topic administration on a real broker (rdkafka's admin client), each
/// call waiting until the broker's metadata shows the change.
pub mod admin {
    use super::*;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;

    fn client(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
        Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).create()?)
    }

    pub fn create_topic(bootstrap: &str, name: &str, partitions: i32, settings: &[(&str, &str)]) -> Result<()> {
        let admin = client(bootstrap)?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in settings {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in futures::executor::block_on(admin.create_topics([&topic], &options))? {
            result.map_err(|(topic, e)| anyhow!("creating topic {topic}: {e}"))?;
        }
        wait_for_partitions(&admin, name, Some(partitions))
    }

    pub fn delete_topic(bootstrap: &str, name: &str) -> Result<()> {
        let admin = client(bootstrap)?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in futures::executor::block_on(admin.delete_topics(&[name], &options))? {
            result.map_err(|(topic, e)| anyhow!("deleting topic {topic}: {e}"))?;
        }
        wait_for_partitions(&admin, name, None)
    }

    /// Waits until `name` has `partitions` partitions, each with a leader
    /// (or, for `None`, until it is gone).
    fn wait_for_partitions(
        admin: &AdminClient<DefaultClientContext>,
        name: &str,
        partitions: Option<i32>,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metadata = admin.inner().fetch_metadata(Some(name), Duration::from_secs(5))?;
            let topic = metadata.topics().iter().find(|t| t.name() == name);
            let ready = match (topic, partitions) {
                (Some(t), Some(n)) => {
                    t.error().is_none()
                        && t.partitions().len() == n as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
                }
                (Some(t), None) => t.error().is_some(),
                (None, None) => true,
                (None, Some(_)) => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {name} did not reach {partitions:?} partitions within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
