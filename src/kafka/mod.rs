//! librdkafka client settings shared by the source, the sink and the tools,
//! and the two metadata questions they all ask (a topic's partitions; whether
//! a reader has reached an offset).
//!
//! User options (`--kafka-option`) are applied first and sparklet's own
//! settings last, so SASL_SSL, SCRAM and CA files pass straight through while
//! the settings that offsets and exactly-once depend on stay sparklet's.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::log::{Failure, FailureKind, LoggingContext};

pub(crate) mod log;
mod ranges;

pub use ranges::{read_ranges, read_ranges_while};

/// How long one metadata request of the start-up check may take before the
/// check looks at what librdkafka reported and tries again.
const REACHABILITY_PROBE: Duration = Duration::from_millis(250);

/// The consumer group sparklet commits its input offsets to (inside the
/// output transaction), named after the query so lag tools can see it.
pub fn group_id(query_id: &str) -> String {
    format!("sparklet-{query_id}")
}

/// The producer's `transactional.id`: stable per query, so a new run fences
/// a zombie of an earlier one.
pub fn transactional_id(query_id: &str) -> String {
    format!("sparklet-{query_id}")
}

/// Base settings of every client: bootstrap servers plus the user's options.
pub fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    client_config(&kafka.bootstrap_servers, &kafka.options)
}

/// Base settings for `bootstrap` plus `--kafka-option` pairs (see
/// [`crate::config::parse_kafka_options`]).
pub fn client_config(bootstrap: &str, options: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// Sends `record`, waiting while the producer's queue is full (the one
/// back-off for QueueFull, shared by the sink and the tools).
pub fn send_when_room<'a, C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
) -> std::result::Result<(), KafkaError>
where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Settings of the consumer that reads planned ranges with `assign()`.
pub fn consumer_config(kafka: &KafkaConfig, query_id: &str) -> ClientConfig {
    let mut config = base_config(kafka);
    config
        .set("group.id", group_id(query_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    // A batch reads up to a known end offset; a long broker-side fetch wait
    // only delays what is queued behind it: a fetch left in flight by the
    // last batch's read holds up the next one's (20 ms here cost a 21 ms
    // read in about 1 batch of 50 at 1,000 campaigns/s).
    config.set_default("fetch.wait.max.ms", "5");
    // Messages fetched ahead of the reader, bounded at 8 MiB (librdkafka's
    // default is 64 MiB, plus about 230 bytes of bookkeeping a message: a
    // 100k-campaign batch sat in it almost whole, 54 MiB, while it was
    // decoded). A full queue pauses fetching for `fetch.queue.backoff.ms`,
    // 1 s by default: 5 ms resumes it as soon as the reader catches up.
    config.set_default("queued.max.messages.kbytes", CONSUMER_QUEUE_KIB);
    config.set_default("fetch.queue.backoff.ms", "5");
    config
}

/// The input consumer's prefetch bound (`queued.max.messages.kbytes`).
const CONSUMER_QUEUE_KIB: &str = "8192";

/// Settings of the producer that writes the output topic; transactional for
/// exactly-once.
pub fn producer_config(kafka: &KafkaConfig, query_id: &str, transactional: bool) -> ClientConfig {
    let mut config = base_config(kafka);
    if transactional {
        config
            .set("transactional.id", transactional_id(query_id))
            .set("transaction.timeout.ms", transaction_timeout_ms(kafka));
    }
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // 5 ms, librdkafka's own default. On Apache Kafka's broker (this
        // machine, 10-campaign batches, three interleaved runs each) the
        // median batch took 24-46 ms at 5 and 23-29 ms at 1: within the
        // noise, while a 100k-campaign batch fills `batch.num.messages`
        // before either fires. rdkafka's `flush` polls in 100 ms steps: no
        // substitute for awaiting the delivery reports.
        .set_default("linger.ms", "5")
        .set_default("batch.num.messages", "10000")
        // The queue of messages not yet acknowledged, bounded in bytes: a
        // 900k-message batch would otherwise sit in it whole (about 500 MB);
        // sends wait while it is full ([`send_when_room`]).
        .set_default("queue.buffering.max.messages", "100000")
        .set_default("queue.buffering.max.kbytes", PRODUCER_QUEUE_KIB);
    config
}

/// The output producer's queue bound (`queue.buffering.max.kbytes`), 4 MiB
/// of payloads (librdkafka adds about 200 bytes a message): one
/// `batch.num.messages` batch in flight and the next being filled. The sink
/// writes at the pace of the shared output (the Postgres sink's), so a
/// deeper queue only holds more: at 32 MiB, peak RSS for a 100k-campaign
/// batch ranged 167-205 MiB over five runs, at 4 MiB 167-176.
const PRODUCER_QUEUE_KIB: &str = "4096";

/// Transactions must outlive a batch's writes; give them a generous budget
/// above the request timeout.
fn transaction_timeout_ms(kafka: &KafkaConfig) -> String {
    transaction_timeout(kafka).as_millis().to_string()
}

/// The output transaction's timeout: 4x `--kafka-timeout`, 1 to 15 minutes.
/// A batch that takes longer cannot commit.
pub fn transaction_timeout(kafka: &KafkaConfig) -> Duration {
    (kafka.timeout * 4).clamp(Duration::from_secs(60), Duration::from_secs(900))
}

trait SetDefault {
    fn set_default(&mut self, key: &str, value: &str) -> &mut Self;
}

impl SetDefault for ClientConfig {
    fn set_default(&mut self, key: &str, value: &str) -> &mut Self {
        if self.get(key).is_none() {
            self.set(key, value);
        }
        self
    }
}

/// Checks once, at start, that the bootstrap servers answer a metadata
/// request. Fails as soon as a broker refuses the security settings (SASL
/// credentials, the TLS handshake, a plain client on a TLS listener: errors
/// a retry cannot fix, each naming the broker), or librdkafka has tried
/// every broker and none answered, naming the servers and the cause it
/// reported (`connection refused`, a name that does not resolve), or after
/// `--kafka-timeout` if they accept connections but never answer.
pub async fn check_reachable(kafka: &KafkaConfig) -> Result<()> {
    let kafka = kafka.clone();
    crate::util::blocking(move || check_reachable_blocking(&kafka)).await
}

fn check_reachable_blocking(kafka: &KafkaConfig) -> Result<()> {
    let consumer: BaseConsumer<LoggingContext> = base_config(kafka)
        .create_with_context(LoggingContext::new("start-up check"))
        .map_err(|e| Error::kafka("creating the start-up check client", e))?;
    let deadline = Instant::now() + kafka.timeout;
    loop {
        let probe = REACHABILITY_PROBE.min(deadline.saturating_duration_since(Instant::now()));
        let error = match consumer.fetch_metadata(Some(&kafka.input_topic), probe) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // Serves librdkafka's log and error events, which say why.
        let _ = consumer.poll(Duration::ZERO);
        let log = &consumer.context().0;
        let failure = log.last_failure();
        let wrong_setting = failure.as_ref().is_some_and(|f| f.kind != FailureKind::Connection);
        if let (true, Some(failure)) = (wrong_setting || log.all_brokers_down(), failure) {
            return Err(start_failure(kafka, failure));
        }
        if Instant::now() >= deadline {
            let cause = format!("no answer within {:?} ({error})", kafka.timeout);
            let failure = log.last_failure().unwrap_or(Failure { kind: FailureKind::Connection, broker: None, cause });
            return Err(start_failure(kafka, failure));
        }
    }
}

/// The error of a start-up check that failed with `failure`: one that names
/// the broker and says whether a retry can help.
fn start_failure(kafka: &KafkaConfig, failure: Failure) -> Error {
    let Failure { kind, broker, cause } = failure;
    let broker = broker.unwrap_or_else(|| kafka.bootstrap_servers.clone());
    let protocol = security_protocol(kafka);
    // A TLS client got through the handshake: not a plain client on a TLS listener.
    let speaks_tls = protocol.ends_with("SSL");
    match kind {
        FailureKind::Authentication => Error::KafkaAuthentication { broker, cause },
        FailureKind::Tls => Error::KafkaTls { broker, cause },
        FailureKind::Protocol if !speaks_tls => Error::KafkaProtocol { broker, protocol, cause },
        FailureKind::Protocol | FailureKind::Connection => {
            Error::KafkaUnreachable { servers: kafka.bootstrap_servers.clone(), cause }
        }
    }
}

/// The `security.protocol` the clients use (librdkafka's default: PLAINTEXT).
fn security_protocol(kafka: &KafkaConfig) -> String {
    let set = kafka.options.iter().rev().find(|(key, _)| key == "security.protocol");
    set.map_or_else(|| "PLAINTEXT".to_string(), |(_, value)| value.trim().to_uppercase())
}

/// Partition ids of `topic` as the broker reports them (none if it does not
/// know the topic).
pub fn topic_partitions<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| Error::kafka(format!("fetching metadata of topic '{topic}'"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Where the next batch after `plan` starts, per partition: the offsets
/// committed to the query's consumer group.
pub(crate) fn end_offsets(plan: &crate::batch::BatchPlan) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for range in &plan.ranges {
        tpl.add_partition_offset(&plan.topic, range.partition, Offset::Offset(range.end))
            .map_err(|e| Error::kafka("building the input offsets", e))?;
    }
    Ok(tpl)
}

/// Whether `positions` (a consumer's) are at or past `end` in `topic[partition]`.
pub fn position_reached(positions: &TopicPartitionList, topic: &str, partition: i32, end: i64) -> bool {
    matches!(positions.find_partition(topic, partition).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn kafka(options: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "b:9091".into(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            marker_topic: "markers".into(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn passes_sasl_ssl_options_to_both_clients() {
        let k = kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "de-user"),
            ("sasl.password", "secret-pw"),
            ("ssl.ca.location", "/usr/local/share/ca-certificates/Yandex/YandexCA.crt"),
        ]);
        for config in [consumer_config(&k, "q"), producer_config(&k, "q", true)] {
            assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
            assert_eq!(config.get("sasl.password"), Some("secret-pw"));
        }
    }

    #[test]
    fn user_can_tune_but_not_override_exactly_once_settings() {
        let config = producer_config(&kafka(&[("linger.ms", "50")]), "q", true);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("transactional.id"), Some("sparklet-q"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        let plain = producer_config(&kafka(&[]), "q", false);
        assert_eq!(plain.get("transactional.id"), None);
    }

    #[test]
    fn a_start_failure_names_the_broker_and_the_setting_to_check() {
        let failure = |kind| Failure { kind, broker: Some("b:9093".into()), cause: "why".into() };
        let plain = kafka(&[]);
        let err = start_failure(&plain, failure(FailureKind::Authentication)).to_string();
        assert!(err.starts_with("kafka: SASL authentication with broker b:9093 failed (why)"), "{err}");
        let err = start_failure(&plain, failure(FailureKind::Tls)).to_string();
        assert!(err.starts_with("kafka: TLS handshake with broker b:9093 failed (why)"), "{err}");
        let err = start_failure(&plain, failure(FailureKind::Protocol)).to_string();
        assert!(err.contains("security.protocol is PLAINTEXT"), "{err}");
        // A TLS client that got through the handshake is not a plain client on a TLS listener.
        let tls = kafka(&[("security.protocol", "sasl_ssl")]);
        let err = start_failure(&tls, failure(FailureKind::Protocol)).to_string();
        assert_eq!(err, "kafka: cannot reach bootstrap servers b:9091: why");
        let nameless = Failure { broker: None, ..failure(FailureKind::Tls) };
        assert!(start_failure(&plain, nameless).to_string().contains("broker b:9091"));
    }
}
