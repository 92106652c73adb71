//! Reads the output topic the way its consumers must: with
//! `isolation.level=read_committed`, so only committed batches are seen (once
//! each). Prints `key:value` lines, like `kcat -C -K`.
//!
//! ```text
//! cargo run --example read_output -- --bootstrap-servers HOST:9092 --topic promotions_out
//! ```

#[path = "../src/tools.rs"]
mod tools;

use std::time::Duration;

use anyhow::Result;
use clap::Parser;

/// Print every committed message of the output topic.
#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap_servers: String,
    /// Topic to read.
    #[arg(long, default_value = "promotions_out")]
    topic: String,
    /// librdkafka setting KEY=VALUE (VALUE env:NAME reads variable NAME).
    #[arg(long = "kafka-option")]
    kafka_options: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let options = sparklet::config::parse_kafka_options(&args.kafka_options)?;
    let config = tools::client_config(&args.bootstrap_servers, &options);
    let messages = tools::read_committed(&config, &args.topic, Duration::from_secs(args.timeout_secs))?;
    for (key, value) in &messages {
        println!("{}:{value}", key.as_deref().unwrap_or(""));
    }
    eprintln!("{} committed messages in {}", messages.len(), args.topic);
    Ok(())
}
