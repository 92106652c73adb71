//! Unit tests of option validation: every bad value names its option.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::*;

/// The checked config of `sparklet run` with `extra` options; a value clap
/// refuses (not one of an enum's names) is an error too.
fn args(extra: &[&str]) -> std::result::Result<Config, Box<dyn std::error::Error>> {
    let mut argv = vec![
        "sparklet",
        "run",
        "--bootstrap-servers",
        "b:9092",
        "--input-topic",
        "in",
        "--output-topic",
        "out",
        "--database-url",
        "postgres://u:pw@db:5433/app",
        "--checkpoint-dir",
        "cp",
    ];
    argv.extend_from_slice(extra);
    let cli = crate::cli::Cli::try_parse_from(argv)?;
    match cli.command {
        crate::cli::Command::Run(run) => Ok(Config::try_from(*run)?),
        _ => unreachable!(),
    }
}

#[test]
fn defaults_match_spark() {
    let config = args(&[]).unwrap();
    assert_eq!(config.trigger, Trigger::ProcessingTime(Duration::ZERO));
    assert_eq!(config.starting_offsets, StartingOffsets::Latest);
    assert_eq!(config.max_offsets_per_trigger, Some(100_000), "a default cap, unlike Spark (see --help)");
    assert_eq!(config.bad_records.on_bad_record, OnBadRecord::DeadLetter);
    assert_eq!(config.bad_records.dead_letter_topic, "in-dead-letter");
    assert_eq!(config.subscribers.refresh, RefreshPolicy::Every(Duration::from_secs(60)));
    assert_eq!(config.sql_dir, PathBuf::from("sql"));
    assert_eq!(config.guarantee, Guarantee::ExactlyOnce);
}

#[test]
fn database_ca_file_requires_tls_and_a_readable_ca() {
    let err = args(&["--database-ca-file", "/no/such/ca.pem"]).unwrap_err().to_string();
    assert!(err.contains("--database-ca-file") && err.contains("/no/such/ca.pem"), "{err}");
    let ca_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/test-ca.crt");
    let config = args(&["--database-ca-file", ca_path]).unwrap();
    assert_eq!(config.postgres.parsed.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    let err = PostgresConfig::parse("postgres://db/app?sslmode=disable")
        .unwrap()
        .with_ca_file(Some(ca_path.into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--database-ca-file") && err.contains("sslmode=disable"), "{err}");
}

#[test]
fn database_ca_file_that_holds_no_certificate_is_refused() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = args(&["--database-ca-file", empty.path().to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("--database-ca-file") && err.contains(empty.path().to_str().unwrap()), "{err}");
}

#[test]
fn parses_triggers() {
    assert_eq!("500ms".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::from_millis(500)));
    assert_eq!("5s".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::from_secs(5)));
    assert_eq!("0s".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::ZERO));
    assert_eq!("once".parse::<Trigger>().unwrap(), Trigger::Once);
    assert_eq!("available-now".parse::<Trigger>().unwrap(), Trigger::AvailableNow);
}

#[test]
fn bad_values_name_option_and_value() {
    let err = args(&["--trigger", "soon"]).unwrap_err().to_string();
    assert!(err.contains("--trigger") && err.contains("'soon'"), "{err}");
    let err = args(&["--starting-offsets", "middle"]).unwrap_err().to_string();
    assert!(err.contains("--starting-offsets") && err.contains("'middle'"), "{err}");
    let err = args(&["--max-offsets-per-trigger", "0"]).unwrap_err().to_string();
    assert!(err.contains("--max-offsets-per-trigger"), "{err}");
    let err = args(&["--guarantee", "maybe-once"]).unwrap_err().to_string();
    assert!(err.contains("--guarantee") && err.contains("'maybe-once'"), "{err}");
    let err = args(&["--on-bad-record", "skip"]).unwrap_err().to_string();
    assert!(err.contains("--on-bad-record") && err.contains("'skip'"), "{err}");
    let err = args(&["--subscribers-refresh", "often"]).unwrap_err().to_string();
    assert!(err.contains("--subscribers-refresh") && err.contains("'often'"), "{err}");
}

#[test]
fn settings_are_described_as_the_command_line_spells_them() {
    std::env::set_var("SPARKLET_TEST_DESCRIBE_SECRET", "hunter3");
    let config = args(&[
        "--trigger",
        "500ms",
        "--max-offsets-per-trigger",
        "unlimited",
        "--kafka-option",
        "sasl.password=env:SPARKLET_TEST_DESCRIBE_SECRET",
    ])
    .unwrap();
    let shown = config.describe();
    for expected in [
        "--trigger 500ms",
        "--starting-offsets latest",
        "--guarantee exactly-once",
        "--max-offsets-per-trigger unlimited",
        "--on-bad-record dead-letter",
        "--subscribers-refresh 1m",
        "sasl.password=***",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    assert!(!shown.contains("hunter3") && !shown.contains("auto.offset.reset") && !shown.contains("Exactly"));
    for trigger in [Trigger::Once, Trigger::AvailableNow, Trigger::ProcessingTime(Duration::from_secs(90))] {
        assert_eq!(trigger.to_string().parse::<Trigger>().unwrap(), trigger);
    }
}

#[test]
fn zero_or_nonsense_durations_and_counts_are_refused() {
    for (option, value) in [
        ("--kafka-timeout", "0s"),
        ("--kafka-timeout", "0"),
        ("--kafka-timeout", "1ms"),
        ("--kafka-timeout", "2h"),
        ("--subscribers-refresh", "0s"),
        ("--min-batches-to-retain", "0"),
    ] {
        let err = args(&[option, value]).unwrap_err().to_string();
        assert!(err.contains(option) && err.contains(value), "{option} {value}: {err}");
    }
    assert_eq!(args(&["--kafka-timeout", "500ms"]).unwrap().kafka.timeout, Duration::from_millis(500));
    assert_eq!(args(&["--trigger", "0s"]).unwrap().trigger, Trigger::ProcessingTime(Duration::ZERO));
}

#[test]
fn kafka_options_pass_through_and_refuse_reserved_keys() {
    let config =
        args(&["--kafka-option", "security.protocol=SASL_SSL", "--kafka-option", "sasl.mechanisms=SCRAM-SHA-512"])
            .unwrap();
    assert_eq!(config.kafka.options[0], ("security.protocol".into(), "SASL_SSL".into()));
    let err = args(&["--kafka-option", "group.id=x"]).unwrap_err().to_string();
    assert!(err.contains("group.id"), "{err}");
    let err = args(&["--kafka-option", "novalue"]).unwrap_err().to_string();
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn secrets_come_from_env_and_are_never_printed() {
    std::env::set_var("SPARKLET_TEST_SECRET", "hunter2");
    let config = args(&["--kafka-option", "sasl.password=env:SPARKLET_TEST_SECRET"]).unwrap();
    assert_eq!(config.kafka.options[0].1, "hunter2");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2") && !shown.contains(":pw@"), "{shown}");
    assert!(shown.contains("db:5433/app"), "{shown}");
    let err = args(&["--kafka-option", "sasl.password=env:SPARKLET_TEST_UNSET"]).unwrap_err();
    assert!(err.to_string().contains("SPARKLET_TEST_UNSET"));
}

#[test]
fn same_input_and_output_topic_is_refused() {
    let cli = crate::cli::Cli::try_parse_from([
        "sparklet",
        "run",
        "--bootstrap-servers",
        "b",
        "--input-topic",
        "t",
        "--output-topic",
        "t",
        "--database-url",
        "postgres://localhost/db",
        "--checkpoint-dir",
        "cp",
    ])
    .unwrap();
    let crate::cli::Command::Run(run) = cli.command else { unreachable!() };
    assert!(Config::try_from(*run).unwrap_err().to_string().contains("--output-topic"));
}

#[test]
fn only_allow_listed_kafka_settings_show_their_values() {
    let shown = args(&[
        "--kafka-option",
        "ssl.key.pem=-----BEGIN PRIVATE KEY-----abc",
        "--kafka-option",
        "sasl.oauthbearer.client.secret=s3",
        "--kafka-option",
        "security.protocol=SASL_SSL",
        "--kafka-option",
        "ssl.ca.location=/etc/ca.crt",
    ])
    .unwrap()
    .describe();
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains("s3"), "{shown}");
    for expected in [
        "ssl.key.pem=***",
        "sasl.oauthbearer.client.secret=***",
        "security.protocol=SASL_SSL",
        "ssl.ca.location=/etc/ca.crt",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
}

#[test]
fn the_subscribers_refresh_comes_from_job_toml_unless_a_flag_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["input.sql", "subscribers.sql", "10_active_campaigns.sql", "20_feedback.sql"] {
        std::fs::copy(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql").join(file), dir.path().join(file)).unwrap();
    }
    let sql_dir = dir.path().to_str().unwrap();
    let write = |section: &str| {
        let toml = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/job.toml")).unwrap();
        std::fs::write(dir.path().join("job.toml"), format!("{toml}\n[lookups.subscribers]\n{section}")).unwrap();
    };
    write("query = \"subscribers.sql\"\nrefresh = \"on-change\"\nversion_check = \"5m\"\nmax_staleness = \"2h\"\n");
    let config = args(&["--sql-dir", sql_dir]).unwrap();
    assert_eq!(config.subscribers.refresh, RefreshPolicy::OnChange { check: Duration::from_secs(300) });
    assert_eq!(config.subscribers.max_staleness, Duration::from_secs(7200));
    let config = args(&["--sql-dir", sql_dir, "--subscribers-refresh", "30s"]).unwrap();
    assert_eq!(config.subscribers.refresh, RefreshPolicy::Every(Duration::from_secs(30)), "the flag wins");

    write("query = \"subscribers.sql\"\nrefresh = \"2h\"\n");
    let err = args(&["--sql-dir", sql_dir]).unwrap_err().to_string();
    assert!(err.contains("job.toml") && err.contains("[lookups.subscribers]"), "named where it came from: {err}");
    write("query = \"favourites.sql\"\n");
    let err = args(&["--sql-dir", sql_dir]).unwrap_err().to_string();
    assert!(err.contains("[lookups.subscribers] query"), "{err}");
    write("query = \"subscribers.sql\"\nrefresh = \"5m\"\nversion_check = \"1m\"\n");
    let err = args(&["--sql-dir", sql_dir]).unwrap_err().to_string();
    assert!(err.contains("[lookups.subscribers] version_check is only read with"), "{err}");
    write("query = \"subscribers.sql\"\nrefresh = \"on-change\"\nwatch = [\"subscribers_restaurants\"]\n");
    let err = args(&["--sql-dir", sql_dir]).unwrap_err().to_string();
    assert!(err.contains("[lookups.subscribers] watch"), "{err}");
}
