//! Hostile input that aims at the bad-record path itself (issue 24): a key
//! too large for its dead letter, a message of 100,000 fields, text built to
//! forge log lines. Each sits beside valid campaigns in one batch: the valid
//! ones reach both sinks, the hostile one is dead-lettered with its reason,
//! and the batch commits, so the query goes on (a good batch after it is
//! written too). The runs are child processes; each test prints the peak
//! RSS and time of the hostile batch and of the good one after it, as
//! figures for people (nothing is asserted on them).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::child::*;
use crate::support::*;
use crate::tools::{read_committed_records, Record};

/// sparklet's producer keeps librdkafka's default `message.max.bytes`.
const MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Largest input message here: the input topic of [`large_input`] and the
/// test producer take it.
const LARGE: usize = 4 << 20;

type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An input topic that takes messages up to [`LARGE`] bytes (a real topic
/// may allow more than sparklet's producer writes), with the job's
/// dead-letter topic: the arguments that point the job at it.
fn large_input(job: &Job) -> Result<(String, Vec<String>)> {
    let topic = unique("in-large");
    job.kafka.create_topic_with(&topic, 1, &[("max.message.bytes", &LARGE.to_string())])?;
    let args = ["--input-topic", &topic, "--dead-letter-topic", &job.dead_letters].map(String::from).to_vec();
    Ok((topic, args))
}

/// Produces (key, value) pairs to partition 0 of `topic`, up to [`LARGE`].
fn produce(job: &Job, topic: &str, records: &[KeyValue]) -> Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", job.kafka.bootstrap())
        .set("message.max.bytes", (LARGE + 64 * 1024).to_string())
        .create()
        .context("creating the large-message producer")?;
    for (key, value) in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(0);
        record.key = key.as_deref();
        record.payload = value.as_deref();
        producer.send(record).map_err(|(e, _)| e).context("producing")?;
    }
    producer.flush(Duration::from_secs(30)).context("flushing")?;
    Ok(())
}

fn good(id: &str) -> Option<Vec<u8>> {
    Some(campaign(RESTAURANT, id, 0, FOREVER).to_string().into_bytes())
}

fn small_key(i: usize) -> Option<Vec<u8>> {
    Some(format!("key-{i}").into_bytes())
}

fn dead_letters(job: &Job) -> Result<Vec<Record>> {
    let config = crate::tools::client_config(&job.kafka.bootstrap(), &[]);
    read_committed_records(&config, &job.dead_letters, Duration::from_secs(20))
}

/// What librdkafka counts against `message.max.bytes` for a record, at most.
fn wire_size(letter: &Record) -> usize {
    let headers: usize = letter.headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    36 + letter.key.as_ref().map_or(0, Vec::len) + letter.value.as_ref().map_or(0, Vec::len) + headers
}

/// Peak RSS and time of one `--trigger available-now` run of the binary.
pub(crate) struct Figures {
    pub peak_rss_mib: f64,
    pub run_ms: u128,
    /// The batches' `duration_ms` in the log (trigger to commit).
    pub batch_ms: Vec<u64>,
}

/// Runs the binary over what is available now, sampling its peak RSS
/// (`VmHWM`) until it exits; it must exit 0.
pub(crate) fn measured_run(job: &Job, extra: &[&str]) -> Result<Figures> {
    let mut args = vec!["--trigger", "available-now"];
    args.extend_from_slice(extra);
    let log_before = child_log(job).len();
    let started = Instant::now();
    let mut child = spawn(job, &args, None)?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill()?;
            bail!("sparklet did not finish within 120 s:\n{}", child_log(job));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let run_ms = started.elapsed().as_millis();
    ensure!(status.success(), "the run failed ({status}):\n{}", child_log(job));
    let log = child_log(job);
    let batch_ms = log[log_before..]
        .lines()
        .filter(|l| l.contains("malformed="))
        .filter_map(|l| l.split("duration_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    Ok(Figures { peak_rss_mib: peak_kib as f64 / 1024.0, run_ms, batch_ms })
}

fn report(test: &str, hostile: &Figures, good: &Figures) {
    for (what, f) in [("hostile batch", hostile), ("good batch after it", good)] {
        println!(
            "figures {test}: {what}: peak RSS {:.1} MiB, run {} ms (start to exit), batch duration_ms {:?}",
            f.peak_rss_mib, f.run_ms, f.batch_ms
        );
    }
}

/// A good batch after the hostile one is written: the query goes on.
/// Returns its figures.
async fn the_query_goes_on(job: &Job, topic: &str, args: &[&str], rows_before: usize) -> Result<Figures> {
    let ids = ["after-0", "after-1", "after-2"];
    produce(job, topic, &ids.iter().enumerate().map(|(i, id)| (small_key(i), good(id))).collect::<Vec<_>>())?;
    let figures = measured_run(job, args)?;
    assert_eq!(job.db.feedback().await?.len(), rows_before + 2 * ids.len(), "the next batch reaches Postgres");
    assert_eq!(job.output_messages()?.len(), rows_before + 2 * ids.len(), "and Kafka");
    Ok(figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_key_never_makes_a_dead_letter_too_large() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let (topic, args) = large_input(&job)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let key = |n: usize| Some(vec![b'K'; n]);
    let too_large = Some(
        campaign(RESTAURANT, "big", 0, FOREVER)
            .to_string()
            .replace("first campaign", &"x".repeat(300 * 1024))
            .into_bytes(),
    );
    let records: Vec<KeyValue> = vec![
        (small_key(0), good("a0")),
        // Fits whole: 900 KiB + a few bytes and the headers.
        (key(900 * 1024), Some(b"{not json".to_vec())),
        (small_key(2), good("a1")),
        // 900 KiB + 300 KiB: the value is kept, the key cut.
        (key(900 * 1024), too_large.clone()),
        (small_key(4), good("a2")),
        // The key alone is too large.
        (key(1536 * 1024), Some(b"[1]".to_vec())),
        // A valid campaign with a huge key: keys are not validated.
        (key(1536 * 1024), good("a3")),
        (small_key(7), good("a4")),
    ];
    produce(&job, &topic, &records)?;
    let _log = LogOnFailure(&job);
    let hostile = measured_run(&job, &args)?;

    assert_eq!(job.db.feedback().await?.len(), 2 * 5, "the five valid campaigns reach both subscribers");
    assert_eq!(job.output_messages()?.len(), 2 * 5);
    let letters = dead_letters(&job)?;
    let reasons: Vec<Option<String>> = letters.iter().map(|l| l.header("sparklet.error.reason")).collect();
    assert_eq!(reasons, ["not_json", "too_large", "not_an_object"].map(|r| Some(r.to_string())));
    let offsets: Vec<Option<String>> = letters.iter().map(|l| l.header("sparklet.source.offset")).collect();
    assert_eq!(offsets, ["1", "3", "5"].map(|o| Some(o.to_string())));
    for letter in &letters {
        assert!(wire_size(letter) <= MESSAGE_MAX_BYTES, "{} bytes", wire_size(letter));
    }
    let (whole, cut, key_alone) = (&letters[0], &letters[1], &letters[2]);
    assert_eq!((&whole.key, &whole.value), (&records[1].0, &records[1].1), "a dead letter that fits is kept whole");
    assert_eq!(whole.header("sparklet.truncated.key.bytes"), None);
    assert_eq!(cut.value, too_large, "the value is kept whole");
    assert!(cut.key.as_ref().is_some_and(|k| k.len() > 600_000 && k.iter().all(|b| *b == b'K')), "a prefix of the key");
    assert_eq!(cut.header("sparklet.truncated.key.bytes").as_deref(), Some("921600"));
    assert_eq!(key_alone.value, Some(b"[1]".to_vec()));
    assert_eq!(key_alone.header("sparklet.truncated.key.bytes").as_deref(), Some("1572864"));
    ensure!(child_log(&job).contains("dead letter cut to fit"), "the cut is logged:\n{}", child_log(&job));

    let good = the_query_goes_on(&job, &topic, &args, 10).await?;
    report("large key", &hostile, &good);
    Ok(())
}

/// A JSON object of `n` distinct fields with short names (base 36), then
/// the example's: about 8.6 bytes a field.
fn with_fields(n: usize) -> Vec<u8> {
    let name = |mut i: usize| {
        let mut s = Vec::new();
        loop {
            s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
            i /= 36;
            if i == 0 {
                break;
            }
        }
        String::from_utf8(s).unwrap_or_default()
    };
    let fields: String = (0..n).map(|i| format!(r#""{}":0,"#, name(i))).collect();
    let example = campaign(RESTAURANT, "many", 0, FOREVER).to_string();
    example.replacen('{', &format!("{{{fields}"), 1).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_100k_fields_is_refused_at_the_cap() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let many = with_fields(100_000);
    assert!(many.len() < 990_000, "{} bytes", many.len());
    let (topic, mut args) = large_input(&job)?;
    args.extend(["--max-record-bytes", "990000"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let records: Vec<KeyValue> = vec![
        (small_key(0), good("a0")),
        (small_key(1), Some(many.clone())),
        (small_key(2), good("a1")),
        // Under the cap: extra fields are ignored.
        (small_key(3), Some(with_fields(900))),
        (small_key(4), good("a2")),
    ];
    produce(&job, &topic, &records)?;
    let _log = LogOnFailure(&job);
    let hostile = measured_run(&job, &args)?;

    assert_eq!(job.db.feedback().await?.len(), 2 * 4, "the valid campaigns (900 fields too) reach both subscribers");
    assert_eq!(job.output_messages()?.len(), 2 * 4);
    let letters = dead_letters(&job)?;
    ensure!(letters.len() == 1, "one dead letter: {:?}", letters.iter().map(|l| l.header("sparklet.error.message")));
    assert_eq!(letters[0].header("sparklet.error.reason").as_deref(), Some("too_many_fields"));
    let message = letters[0].header("sparklet.error.message").unwrap_or_default();
    ensure!(message.contains("more than 1000 fields"), "{message}");
    assert_eq!(letters[0].value, Some(many), "byte for byte");

    let good = the_query_goes_on(&job, &topic, &args, 8).await?;
    report("100k fields", &hostile, &good);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_text_cannot_forge_or_flood_log_lines() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let forged = "\nFORGED 2030-01-01T00:00:00Z ERROR sparklet: all data lost";
    let name = serde_json::to_string(&format!("x{forged}{}", "y".repeat(100 * 1024)))?;
    let example = campaign(RESTAURANT, "dup", 0, FOREVER).to_string();
    let hostile = example.replacen('{', &format!("{{{name}: 1, {name}: 2, "), 1).into_bytes();
    let key = format!("k{forged}{}", "z".repeat(100 * 1024)).into_bytes();
    let (topic, args) = large_input(&job)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let records: Vec<KeyValue> =
        vec![(small_key(0), good("a0")), (Some(key.clone()), Some(hostile.clone())), (small_key(2), good("a1"))];
    produce(&job, &topic, &records)?;
    let _log = LogOnFailure(&job);
    let figures = measured_run(&job, &args)?;

    assert_eq!(job.db.feedback().await?.len(), 2 * 2);
    let log = child_log(&job);
    ensure!(!log.lines().any(|l| l.starts_with("FORGED")), "a forged log line:\n{log}");
    let line = log.lines().find(|l| l.contains("bad record")).context("no bad-record line")?;
    ensure!(line.len() < 2048, "the bad-record line is bounded: {} bytes", line.len());
    ensure!(line.contains(r"x\nFORGED") && line.contains("more bytes]"), "escaped and marked as cut: {line}");
    ensure!(log.lines().all(|l| l.len() < 4096), "no log line quotes the message at length");
    let letters = dead_letters(&job)?;
    assert_eq!(letters.len(), 1);
    assert_eq!((&letters[0].key, &letters[0].value), (&Some(key), &Some(hostile)), "byte for byte");
    let message = letters[0].header("sparklet.error.message").unwrap_or_default();
    ensure!(message.len() <= 512 && !message.contains('\n'), "the header is bounded and escaped: {message:?}");
    println!(
        "figures log forging: peak RSS {:.1} MiB, run {} ms, batch duration_ms {:?}",
        figures.peak_rss_mib, figures.run_ms, figures.batch_ms
    );
    Ok(())
}
