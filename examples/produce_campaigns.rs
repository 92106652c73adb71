//! Produces campaigns to the input topic, like `kcat -K: -P`.
//!
//! Each line of standard input is `key:{json}` (or just `{json}`); with
//! `--example` the example message of the input format is sent instead. Works against any
//! Kafka, including SASL_SSL with SCRAM-SHA-512 via `--kafka-option`:
//!
//! ```text
//! echo 'first_message:{"restaurant_id": ...}' | cargo run --example produce_campaigns -- \
//!     --bootstrap-servers HOST:9091 --topic promotions_in \
//!     --kafka-option security.protocol=SASL_SSL --kafka-option sasl.mechanisms=SCRAM-SHA-512 \
//!     --kafka-option sasl.username=de-user --kafka-option sasl.password=env:KAFKA_PASSWORD \
//!     --kafka-option ssl.ca.location=/usr/local/share/ca-certificates/Yandex/YandexCA.crt
//! ```

#[path = "../src/tools.rs"]
mod tools;

use std::io::BufRead;

use anyhow::{Context, Result};
use clap::Parser;
use tools::parse_key_value;

/// Produce campaign messages in kcat's key:value form.
#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap_servers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "promotions_in")]
    topic: String,
    /// Send the example message of the input format instead of reading standard input.
    #[arg(long)]
    example: bool,
    /// librdkafka setting KEY=VALUE (VALUE env:NAME reads variable NAME).
    #[arg(long = "kafka-option")]
    kafka_options: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let options = sparklet::config::parse_kafka_options(&args.kafka_options)?;
    let config = tools::client_config(&args.bootstrap_servers, &options);
    let lines: Vec<String> = if args.example {
        vec![tools::EXAMPLE_LINE.to_string()]
    } else {
        std::io::stdin().lock().lines().collect::<Result<_, _>>().context("reading standard input")?
    };
    let messages: Vec<(Option<String>, String)> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (key, value) = parse_key_value(l);
            (key.map(str::to_string), value.to_string())
        })
        .collect();
    let sent = tools::produce(&config, &args.topic, &messages)?;
    eprintln!("produced {sent} messages to {}", args.topic);
    Ok(())
}
