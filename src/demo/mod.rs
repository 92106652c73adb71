//! `sparklet demo`: the whole job on one machine (part of the binary, not of
//! the library). An in-process Kafka
//! (librdkafka's mock cluster, real wire protocol on a local port), sample
//! subscribers in the local Postgres (schema `sparklet_demo`; a throwaway
//! server of the demo's own when none runs, see [`postgres`]),
//! the example campaign of the message format plus generated ones, a few
//! micro-batches, then a sample of both sinks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use serde_json::json;

use anyhow::{bail, Context, Result};
use sparklet::cli::DemoArgs;
use sparklet::config::PostgresConfig;

use crate::tools;

pub(crate) mod postgres;

const SCHEMA: &str = "sparklet_demo";
const INPUT: &str = "promotions_in";
const OUTPUT: &str = "promotions_out";
const DEAD_LETTERS: &str = "promotions_in-dead-letter";
const MARKERS: &str = sparklet::cli::DEFAULT_MARKER_TOPIC;
const EXAMPLE_RESTAURANT: &str = "123e4567-e89b-12d3-a456-426614174000";

/// Runs the demo. A live one (`--http-addr`) finishes its batch and stops
/// when `shutdown` resolves; any other is abandoned there (its checkpoint and
/// Kafka are new every run). A throwaway Postgres it started is removed in
/// every case.
pub(crate) async fn run(args: DemoArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    reset_checkpoint(&args)?;
    let (database_url, _throwaway) = postgres::database(args.database_url.as_deref())?;
    if args.http_addr.is_some() {
        return run_job(&args, &database_url, shutdown).await;
    }
    tokio::select! {
        result = run_job(&args, &database_url, std::future::pending()) => result,
        () = shutdown => bail!("interrupted"),
    }
}

async fn run_job(args: &DemoArgs, database_url: &str, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let cluster = MockCluster::new(1).context("starting the in-process Kafka")?;
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic(INPUT, 3, 1).context("creating the input topic")?;
    cluster.create_topic(OUTPUT, 1, 1).context("creating the output topic")?;
    cluster.create_topic(DEAD_LETTERS, 1, 1).context("creating the dead-letter topic")?;
    cluster.create_topic(MARKERS, 1, 1).context("creating the marker topic")?;
    println!("== in-process Kafka at {bootstrap}: topics {INPUT} (3 partitions), {OUTPUT}, {DEAD_LETTERS}, {MARKERS}");

    let url = prepare_postgres(database_url, &args.sql_dir).await?;

    let client = tools::client_config(&bootstrap, &[]);
    let messages = sample_campaigns(args.campaigns);
    tools::produce(&client, INPUT, &messages)?;
    println!("== produced {} campaigns (the example message first, one malformed)", messages.len());

    let config = demo_config(&bootstrap, &url, args)?;
    let summary = match &args.http_addr {
        None => sparklet::run(config, std::future::pending()).await?,
        Some(addr) => {
            println!("== live: status page at http://{addr}/ (also /metrics /progress /livez /readyz); Ctrl-C stops");
            let feeder = tokio::spawn(feed(client.clone()));
            let summary = sparklet::run(config, shutdown).await;
            feeder.abort();
            summary?
        }
    };
    println!(
        "== {} batches: {} messages in, {} malformed (to {DEAD_LETTERS}), {} rows out to each sink",
        summary.batches, summary.input_rows, summary.malformed_rows, summary.output_rows
    );
    print_samples(&client, &url).await
}

/// Demo schema with the job's tables, emptied, plus sample subscribers.
async fn prepare_postgres(database_url: &str, sql_dir: &std::path::Path) -> Result<String> {
    let admin = PostgresConfig::parse(database_url)?;
    println!("== writing to Postgres {} (schema {SCHEMA}; --database-url to choose another)", admin.target());
    let db = sparklet::postgres::connect(&admin, "the demo").await?;
    db.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .await
        .with_context(|| format!("creating schema {SCHEMA}"))?;
    let url = sparklet::config::url_with_search_path(database_url, SCHEMA);
    let db = sparklet::postgres::connect(&PostgresConfig::parse(&url)?, "the demo").await?;
    let schema_file = sql_dir.join("schema.sql");
    let ddl = std::fs::read_to_string(&schema_file).with_context(|| format!("reading {}", schema_file.display()))?;
    let mut setup = format!("{ddl};\n");
    setup.push_str("TRUNCATE subscribers_restaurants, subscribers_feedback;\nDROP TABLE IF EXISTS sparklet_commits;\n");
    for (client, restaurant) in sample_subscribers() {
        setup.push_str(&format!(
            "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('{client}', '{restaurant}');\n"
        ));
    }
    db.batch_execute(&setup).await.with_context(|| format!("preparing schema {SCHEMA}"))?;
    println!("== schema {SCHEMA}: the job's tables with {} subscriptions", sample_subscribers().len());
    Ok(url)
}

/// Empties the demo's checkpoint (its Kafka is new every run), but only if
/// the directory is absent, empty or a sparklet checkpoint: anything else is
/// refused and left as it is.
fn reset_checkpoint(args: &DemoArgs) -> Result<()> {
    let dir = &args.checkpoint_dir;
    if !dir.exists() || is_empty_dir(dir) {
        return Ok(());
    }
    if !sparklet::checkpoint::is_checkpoint(dir) {
        bail!(
            "option --checkpoint-dir: {} is neither empty nor a sparklet checkpoint; the demo empties its \
             checkpoint directory, so give it a new or empty one",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))
}

fn is_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn demo_config(bootstrap: &str, url: &str, args: &DemoArgs) -> Result<sparklet::Config> {
    let run = sparklet::cli::RunArgs {
        bootstrap_servers: bootstrap.to_string(),
        input_topic: INPUT.into(),
        output_topic: OUTPUT.into(),
        marker_topic: MARKERS.into(),
        database_url: url.into(),
        database_ca_file: None,
        checkpoint_dir: args.checkpoint_dir.clone(),
        sql_dir: args.sql_dir.clone(),
        kafka_key_column: None,
        postgres_table: None,
        upsert_key: None,
        on_conflict: None,
        trigger: if args.http_addr.is_some() { "1s" } else { "available-now" }.into(),
        starting_offsets: sparklet::config::StartingOffsets::Earliest,
        max_offsets_per_trigger: "8".into(),
        max_bytes_per_trigger: "auto".into(),
        on_bad_record: sparklet::config::OnBadRecord::DeadLetter,
        dead_letter_topic: None,
        max_record_bytes: 262_144,
        kafka_options: Vec::new(),
        subscribers_refresh: Some("60s".into()),
        subscribers_version_check: Some("60s".into()),
        subscribers_max_staleness: Some("1h".into()),
        fail_on_data_loss: true,
        kafka_timeout: "10s".into(),
        retry_for: "30s".into(),
        max_retries: None,
        guarantee: sparklet::config::Guarantee::ExactlyOnce,
        progress_json: None,
        min_batches_to_retain: 100,
        hold_future_campaigns: false,
        http_addr: args.http_addr.clone(),
        shards: None,
        shard_ids: "all".into(),
        replicas: None,
        pod_name: None,
    };
    Ok(sparklet::Config::try_from(run)?)
}

/// The live demo's input: a few new campaigns every second, some malformed
/// now and then.
async fn feed(client: ClientConfig) {
    for round in 0usize.. {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let mut batch = sample_campaigns(1 + round % 7);
        batch.retain(|(key, _)| key.as_deref() != Some("broken") || round % 5 == 0);
        for (i, (key, _)) in batch.iter_mut().enumerate() {
            *key = Some(format!("live-{round}-{i}"));
        }
        let client = client.clone();
        let sent = tokio::task::spawn_blocking(move || tools::produce(&client, INPUT, &batch)).await;
        if !matches!(sent, Ok(Ok(_))) {
            return;
        }
    }
}

fn sample_subscribers() -> Vec<(String, String)> {
    let mut subs: Vec<(String, String)> =
        (0..3).map(|i| (format!("023e4567-e89b-12d3-a456-42661417400{i}"), EXAMPLE_RESTAURANT.to_string())).collect();
    for r in 1..=4 {
        for c in 0..r {
            subs.push((format!("client-{r}-{c}"), format!("restaurant-{r}")));
        }
    }
    subs
}

/// The example line, `n` generated campaigns (a third expired or not yet
/// started), and one malformed message.
fn sample_campaigns(n: usize) -> Vec<(Option<String>, String)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (key, value) = tools::parse_key_value(tools::EXAMPLE_LINE);
    let mut out = vec![(key.map(str::to_string), value.to_string())];
    for i in 0..n {
        let (start, end) = match i % 3 {
            0 => (now - 3600, now - 60),
            1 => (now + 3600, now + 7200),
            _ => (now - 60, now + 3600),
        };
        let campaign = json!({
            "restaurant_id": format!("restaurant-{}", 1 + i % 4),
            "adv_campaign_id": format!("campaign-{i}"),
            "adv_campaign_content": format!("{}% off the dish of the day", 10 + i),
            "adv_campaign_owner": "Demo Owner",
            "adv_campaign_owner_contact": "owner@restaurant.example",
            "adv_campaign_datetime_start": start,
            "adv_campaign_datetime_end": end,
            "datetime_created": now - 7200,
        });
        out.push((Some(format!("message_{i}")), campaign.to_string()));
    }
    out.push((Some("broken".into()), r#"{"restaurant_id": "oops""#.into()));
    out
}

async fn print_samples(client: &ClientConfig, url: &str) -> Result<()> {
    let mut messages = tools::read_committed(client, OUTPUT, Duration::from_secs(20))?;
    // The example campaign's rows first.
    messages.sort_by_key(|(_, value)| !value.contains(EXAMPLE_RESTAURANT));
    println!("== {OUTPUT}: {} messages (read_committed); first 3:", messages.len());
    for (key, value) in messages.iter().take(3) {
        println!("  key={} value={value}", key.as_deref().unwrap_or("-"));
    }
    let db = sparklet::postgres::connect(&PostgresConfig::parse(url)?, "the demo").await?;
    let rows = db
        .query(
            "SELECT count(*) OVER (), adv_campaign_id, client_id, trigger_datetime_created, feedback IS NULL
             FROM subscribers_feedback ORDER BY restaurant_id <> $1, id LIMIT 3",
            &[&EXAMPLE_RESTAURANT],
        )
        .await
        .context("reading the demo's feedback rows")?;
    let total: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
    println!("== {SCHEMA}.subscribers_feedback: {total} rows; first 3:");
    for r in &rows {
        let (campaign, client, trigger, null): (String, String, i32, bool) = (r.get(1), r.get(2), r.get(3), r.get(4));
        println!("  adv_campaign_id={campaign} client_id={client} trigger_datetime_created={trigger} feedback_is_null={null}");
    }
    let letters = tools::read_committed_records(client, DEAD_LETTERS, Duration::from_secs(20))?;
    println!("== {DEAD_LETTERS}: {} messages, the input byte for byte:", letters.len());
    for letter in &letters {
        let value = letter.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let header = |name: &str| letter.header(name).unwrap_or_default();
        println!(
            "  value={value} reason={} from={}[{}]@{}",
            header("sparklet.error.reason"),
            header("sparklet.source.topic"),
            header("sparklet.source.partition"),
            header("sparklet.source.offset")
        );
    }
    Ok(())
}
