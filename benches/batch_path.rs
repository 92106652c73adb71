//! Criterion bench of the per-batch path on generated data, without I/O:
//! decode (Kafka payloads -> Arrow), transform (the repo's SQL files: window
//! filter + join with 1,000 restaurants x 10 subscribers), and encode (JSON
//! messages for Kafka, binary COPY for Postgres); and decode of the same
//! campaigns with an array and a struct more (`decode_nested`).
//!
//! `cargo bench --bench batch_path`

#[path = "../src/tools.rs"]
mod tools;

use std::hint::black_box;

use arrow::array::RecordBatch;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sparklet::source::decode::{decode, RawBatch};
use sparklet::subscribers::Subscribers;
use sparklet::transform::SqlPipeline;

const NOW: i64 = 1_700_000_000;
const RESTAURANTS: usize = 1_000;
const SUBSCRIBERS_PER_RESTAURANT: usize = 10;

/// `n` campaigns in the input format; every tenth has expired.
fn payloads(n: usize) -> RawBatch {
    let mut raw = RawBatch::default();
    for i in 0..n {
        let json = tools::generated_campaign(i, RESTAURANTS, &format!("campaign-{i}"), NOW);
        raw.push(0, i as i64, None, Some(json.as_bytes()));
    }
    raw
}

/// The campaigns of [`payloads`], each also with 3 tags and an address of
/// a city and 2 floors.
fn nested_payloads(n: usize) -> RawBatch {
    let mut raw = RawBatch::default();
    for i in 0..n {
        let json = tools::generated_campaign(i, RESTAURANTS, &format!("campaign-{i}"), NOW);
        let extra = r#","tags": ["vegan", "halal", "new"],"address": {"city": "Kazan", "floors": [1, 2]}}"#;
        let json = format!("{}{extra}", json.trim_end_matches('}'));
        raw.push(0, i as i64, None, Some(json.as_bytes()));
    }
    raw
}

/// The seed's declaration with `tags TEXT[]` and `address STRUCT<...>` more.
fn nested_input() -> sparklet::source::input::Input {
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/input.sql")).expect("input.sql");
    let declared = seed.replace(
        "CREATE TABLE campaigns (",
        "CREATE TABLE campaigns (\n    tags TEXT[],\n    address STRUCT<city TEXT, floors SMALLINT[]>,",
    );
    let dir = std::env::temp_dir().join(format!("sparklet-bench-nested-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("input.sql"), declared).expect("write");
    let job = sparklet::job::Job::load(&dir).expect("job");
    std::fs::remove_dir_all(&dir).ok();
    sparklet::source::input::Input::new(&job).expect("input")
}

fn subscribers() -> Subscribers {
    let (mut clients, mut restaurants) = (Vec::new(), Vec::new());
    for r in 0..RESTAURANTS {
        for c in 0..SUBSCRIBERS_PER_RESTAURANT {
            clients.push(format!("023e4567-e89b-12d3-a456-{:08}{c:04}", r));
            restaurants.push(format!("restaurant-{r}"));
        }
    }
    Subscribers::from_rows(clients, restaurants).expect("subscribers")
}

fn transform(
    rt: &tokio::runtime::Runtime,
    pipeline: &SqlPipeline,
    campaigns: RecordBatch,
    subs: &Subscribers,
) -> Vec<RecordBatch> {
    rt.block_on(pipeline.run(campaigns, subs, NOW, 0)).expect("transform")
}

fn encode_both(output: &[RecordBatch]) -> usize {
    let mut copy = BytesMut::new();
    let mut json_bytes = 0;
    for batch in output {
        json_bytes += sparklet::sink::kafka::encode_json_lines(batch).expect("json").len();
        let targets: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| sparklet::sink::Target::natural(f.data_type()).expect("type"))
            .collect();
        sparklet::sink::copy::write_rows(batch, &targets, 0, batch.num_rows(), &mut copy, None).expect("copy");
    }
    json_bytes + copy.len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let pipeline = SqlPipeline::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))).expect("sql");
    let subs = subscribers();
    let input = pipeline.input().clone();
    let mut group = c.benchmark_group("batch_path");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let raw = payloads(n);
        let campaigns = decode(&raw, &input, &Default::default()).expect("decode").batch;
        let output = transform(&rt, &pipeline, campaigns.clone(), &subs);
        let out_rows: usize = output.iter().map(|b| b.num_rows()).sum();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("decode", n), &raw, |b, raw| {
            b.iter(|| black_box(decode(raw, &input, &Default::default()).expect("decode")))
        });
        group.bench_with_input(BenchmarkId::new("transform", n), &campaigns, |b, campaigns| {
            b.iter(|| black_box(transform(&rt, &pipeline, campaigns.clone(), &subs)))
        });
        group.throughput(Throughput::Elements(out_rows as u64));
        group.bench_with_input(BenchmarkId::new("encode_json_and_copy", out_rows), &output, |b, output| {
            b.iter(|| black_box(encode_both(output)))
        });
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("decode_sql_encode", n), &raw, |b, raw| {
            b.iter(|| {
                let campaigns = decode(raw, &input, &Default::default()).expect("decode").batch;
                black_box(encode_both(&transform(&rt, &pipeline, campaigns, &subs)))
            })
        });
    }
    let (nested, raw) = (nested_input(), nested_payloads(10_000));
    assert!(decode(&raw, &nested, &Default::default()).expect("decode").bad.is_empty(), "every message decodes");
    group.throughput(Throughput::Elements(10_000));
    group.bench_with_input(BenchmarkId::new("decode_nested", 10_000), &raw, |b, raw| {
        b.iter(|| black_box(decode(raw, &nested, &Default::default()).expect("decode")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
