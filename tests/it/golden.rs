//! The seed job's bytes, pinned: for a fixed input (generated campaigns,
//! the example message with unicode and escapes, and one message of every
//! bad class), the bytes each sink would get (the Kafka key and value of
//! every output message, the binary COPY tuple of every row) and each
//! refusal's reason and sentence must equal `tests/fixtures/golden/seed_job.txt`.
//! A change to the job's logic, its formats or its encoders shows here first.
//!
//! After a deliberate change of the output, rewrite the file with
//! `SPARKLET_BLESS=1 cargo test --test it golden::` and review its diff.

use anyhow::{Context, Result};
use arrow::array::{AsArray, RecordBatch};
use bytes::BytesMut;
use sparklet::source::decode::{decode, RawBatch};
use sparklet::subscribers::Subscribers;
use sparklet::transform::SqlPipeline;

use crate::support::{example_message, repo_path};

/// The batch's time (`$now`) and `trigger_datetime_created`.
const NOW: i64 = 1_700_000_000;
const RESTAURANTS: usize = 7;

fn input() -> RawBatch {
    let mut raw = RawBatch::default();
    let mut offset = 0;
    let mut push = |value: Option<&[u8]>| {
        raw.push(0, offset, Some(format!("key-{offset}").as_bytes()), value);
        offset += 1;
    };
    for i in 0..40 {
        push(Some(crate::tools::generated_campaign(i, RESTAURANTS, &format!("campaign-{i}"), NOW).as_bytes()));
    }
    let mut example = example_message();
    example["restaurant_id"] = "restaurant-3".into();
    example["adv_campaign_content"] = "Скидка 20% \"today\"\n\u{1F355} \\ tab\there".into();
    example["adv_campaign_datetime_start"] = (NOW - 10).into();
    push(Some(example.to_string().as_bytes()));
    for (_, bad) in crate::bad_records::bad_messages() {
        push(bad.as_deref());
    }
    raw
}

fn subscribers() -> Result<Subscribers> {
    let (mut clients, mut restaurants) = (Vec::new(), Vec::new());
    for r in 0..RESTAURANTS {
        for c in 0..r % 3 + 1 {
            clients.push(format!("client-{r}-{c}"));
            restaurants.push(format!("restaurant-{r}"));
        }
    }
    Ok(Subscribers::from_rows(clients, restaurants)?)
}

/// One line per output row per sink, and per refused message, sorted (the
/// order of rows within a batch is not part of the job's contract).
async fn seed_job_lines() -> Result<Vec<String>> {
    let decoded = decode(&input(), &sparklet::source::input::Input::seed()?, &Default::default())?;
    let pipeline = SqlPipeline::load(&repo_path("sql"))?;
    let output = pipeline.run(decoded.batch, &subscribers()?, NOW, 0).await?;
    let mut lines = Vec::new();
    for batch in &output {
        lines.extend(kafka_lines(batch)?);
        lines.extend(copy_lines(batch)?);
    }
    for bad in &decoded.bad {
        lines.push(format!("refused {} {} {}", bad.offset, bad.refusal.reason.code(), bad.refusal.message));
    }
    lines.sort();
    Ok(lines)
}

/// `kafka <key> <value>`: the key is the row's `client_id`.
fn kafka_lines(batch: &RecordBatch) -> Result<Vec<String>> {
    let json = sparklet::sink::kafka::encode_json_lines(batch)?;
    let values: Vec<&[u8]> = json.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let keys = arrow::compute::cast(
        batch.column_by_name("client_id").context("client_id")?,
        &arrow::datatypes::DataType::Utf8,
    )?;
    let keys = keys.as_string::<i32>();
    anyhow::ensure!(values.len() == batch.num_rows(), "{} JSON lines for {} rows", values.len(), batch.num_rows());
    Ok(values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("kafka {} {}", keys.value(i), String::from_utf8_lossy(v)))
        .collect())
}

/// `copy <hex>`: each row's binary COPY tuple.
fn copy_lines(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for row in 0..batch.num_rows() {
        let mut tuple = BytesMut::new();
        sparklet::sink::copy::write_rows(batch, &natural(batch), row, row + 1, &mut tuple, None)?;
        lines.push(format!("copy {}", tuple.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    }
    Ok(lines)
}

#[tokio::test]
async fn the_seed_jobs_output_and_refusals_are_byte_for_byte_the_pinned_ones() -> Result<()> {
    let lines = seed_job_lines().await?;
    let text = lines.join("\n") + "\n";
    let path = repo_path("tests/fixtures/golden/seed_job.txt");
    if std::env::var_os("SPARKLET_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, &text)?;
    }
    let pinned = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kinds = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert!(kinds("kafka ") > 40 && kinds("kafka ") == kinds("copy ") && kinds("refused ") == 16, "{lines:#?}");
    if text != pinned {
        let differ: Vec<_> = text.lines().zip(pinned.lines()).filter(|(a, b)| a != b).take(3).collect();
        anyhow::bail!(
            "the seed job's bytes changed ({} lines now, {} pinned); first differences (now, pinned): {differ:#?}",
            lines.len(),
            pinned.lines().count()
        );
    }
    Ok(())
}

/// Each column's natural Postgres type (what the seed's table has).
fn natural(batch: &arrow::array::RecordBatch) -> Vec<sparklet::sink::Target> {
    batch.schema().fields().iter().filter_map(|f| sparklet::sink::Target::natural(f.data_type())).collect()
}
