//! The original deployment's Kafka security settings (SASL_SSL, SCRAM-SHA-512, a CA file)
//! reach librdkafka for both the consumer and the producer, and the bundled
//! librdkafka is built with what they need. No handshake is made here: the
//! end-to-end tests over the test broker's SASL_SSL listener (exactly-once
//! delivery, a wrong password, an unknown CA, a PLAINTEXT client on the
//! SASL_SSL port, the password in no log, file or endpoint) are in
//! `sasl_ssl.rs`.

use anyhow::Result;
use sparklet::source::KafkaSource;

use crate::support::repo_path;

fn original_security(ca: &str) -> Vec<String> {
    [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanisms=SCRAM-SHA-512".into(),
        "sasl.username=de-user".into(),
        "sasl.password=env:SPARKLET_TEST_KAFKA_PASSWORD".into(),
        format!("ssl.ca.location={ca}"),
    ]
    .to_vec()
}

fn kafka_config(options: Vec<String>) -> Result<sparklet::config::KafkaConfig> {
    std::env::set_var("SPARKLET_TEST_KAFKA_PASSWORD", "not-a-real-password");
    Ok(sparklet::config::KafkaConfig {
        bootstrap_servers: "127.0.0.1:9".into(),
        input_topic: "in".into(),
        output_topic: "out".into(),
        marker_topic: "markers".into(),
        options: sparklet::config::parse_kafka_options(&options)?,
        timeout: std::time::Duration::from_secs(1),
    })
}

#[test]
fn sasl_ssl_scram_with_a_ca_file_is_accepted_by_both_clients() -> Result<()> {
    let ca = repo_path("tests/fixtures/tls/test-ca.crt");
    let kafka = kafka_config(original_security(ca.to_str().unwrap()))?;
    KafkaSource::try_new(&kafka, "q", std::sync::Arc::new(sparklet::source::input::Input::seed()?))?;
    let producer: rdkafka::producer::BaseProducer = sparklet::kafka::producer_config(&kafka, "q", true).create()?;
    drop(producer);
    Ok(())
}

#[test]
fn a_missing_ca_file_is_an_error_naming_the_setting() -> Result<()> {
    let kafka = kafka_config(original_security("/nonexistent/YandexCA.crt"))?;
    let err = KafkaSource::try_new(&kafka, "q", std::sync::Arc::new(sparklet::source::input::Input::seed()?))
        .err()
        .expect("creation must fail")
        .chain()
        .to_string();
    assert!(err.starts_with("kafka: creating the input consumer"), "{err}");
    assert!(err.contains("ssl.ca.location") || err.contains("YandexCA.crt"), "{err}");
    Ok(())
}
