//! One progress record per batch, with Spark's `StreamingQueryProgress` field
//! names where they fit, as JSON and as a readable line.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::batch::{epoch_ms, BatchPlan};
use crate::error::{Error, Result};
use crate::util::time::rfc3339_ms;

/// Time spent in each phase of a batch, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DurationMs {
    /// Asking the broker for end offsets and planning ranges.
    pub latest_offset: u64,
    /// Writing `offsets/N`.
    pub wal_commit: u64,
    /// Reading the ranges from Kafka.
    pub get_batch: u64,
    /// Decoding JSON to Arrow.
    pub decode: u64,
    /// Running the SQL files and collecting the result.
    pub query_planning_and_execution: u64,
    /// Both sinks, run concurrently.
    pub add_batch: u64,
    pub kafka_sink: u64,
    pub postgres_sink: u64,
    /// Writing `commits/N`.
    pub commit_offsets: u64,
    /// The whole batch.
    pub trigger_execution: u64,
}

impl DurationMs {
    /// Each phase with its metric label (`trigger` is the whole batch).
    pub(crate) fn phases(&self) -> [(&'static str, u64); 10] {
        [
            ("latest_offset", self.latest_offset),
            ("wal_commit", self.wal_commit),
            ("get_batch", self.get_batch),
            ("decode", self.decode),
            ("query", self.query_planning_and_execution),
            ("add_batch", self.add_batch),
            ("kafka_sink", self.kafka_sink),
            ("postgres_sink", self.postgres_sink),
            ("commit_offsets", self.commit_offsets),
            ("trigger", self.trigger_execution),
        ]
    }
}

/// Offsets and row count of the input topic in this batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SourceProgress {
    pub description: String,
    /// `{"topic": {"partition": offset}}`, as Spark prints it.
    pub start_offset: BTreeMap<String, BTreeMap<String, i64>>,
    pub end_offset: BTreeMap<String, BTreeMap<String, i64>>,
    /// High watermarks when the batch was planned (absent for a replay).
    pub latest_offset: Option<BTreeMap<String, BTreeMap<String, i64>>>,
    pub num_input_rows: u64,
    /// Per partition, offsets left behind the high watermark after this
    /// batch (`latestOffset - endOffset`; empty for a replay, whose
    /// watermarks were not asked for).
    pub offsets_behind_latest: BTreeMap<String, i64>,
    /// Per partition with offsets behind, how old the newest message this
    /// batch read there is, in seconds (an upper bound of how far behind
    /// the partition is); 0 for a partition with none behind.
    pub seconds_behind_latest: BTreeMap<String, f64>,
}

/// What a sink did with the batch.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SinkProgress {
    pub description: String,
    pub num_output_rows: u64,
    /// The batch was already committed in this sink (replay) and not rewritten.
    pub skipped: bool,
}

/// The subscribers snapshot the batch joined with.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscribersProgress {
    pub snapshot: String,
    /// The table's change version the snapshot was read at (0 unless
    /// `--subscribers-refresh on-change` installed the version counter).
    pub version: i64,
    pub num_rows: u64,
    pub age_ms: u64,
    /// How long reading this version took (from Postgres, or from its
    /// snapshot file for a replay).
    pub load_ms: u64,
    /// Repeated (client, restaurant) pairs left out of the cache.
    pub duplicates_dropped: u64,
}

/// Progress of one batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchProgress {
    /// The query id (checkpoint `metadata`).
    pub id: String,
    /// The shard (`1/3`) of a query with several; batch ids are per shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub batch_id: u64,
    /// The batch timestamp (`now`), RFC 3339.
    pub timestamp: String,
    /// Whether this batch was planned by an earlier run and replayed.
    pub replayed: bool,
    pub num_input_rows: u64,
    /// Input messages refused by validation (all reasons).
    pub num_malformed_rows: u64,
    /// Refused messages per reason code (`not_json`, `missing_field`, ...).
    pub bad_records: BTreeMap<String, u64>,
    /// Refused messages written to the dead-letter topic.
    pub num_dead_lettered_rows: u64,
    /// Campaigns of the batch whose end had passed at the batch's `now`
    /// (e.g. expired while waiting in a backlog): valid input, no output.
    pub num_expired_rows: u64,
    /// Campaigns held after this batch because they start later
    /// (`--hold-future-campaigns`).
    pub num_held_rows: u64,
    pub num_output_rows: u64,
    pub input_rows_per_second: f64,
    pub processed_rows_per_second: f64,
    pub duration_ms: DurationMs,
    pub sources: Vec<SourceProgress>,
    pub sinks: Vec<SinkProgress>,
    pub subscribers: SubscribersProgress,
}

/// What a finished batch did, for [`BatchProgress::new`].
pub(crate) struct BatchReport<'a> {
    /// The shard (`1/3`) of a query with several.
    pub shard: Option<String>,
    pub plan: &'a BatchPlan,
    pub replayed: bool,
    pub input_rows: u64,
    /// Refused messages per reason code.
    pub bad_records: BTreeMap<String, u64>,
    pub dead_lettered: u64,
    pub expired_rows: u64,
    pub held_rows: u64,
    pub output_rows: u64,
    pub durations: DurationMs,
    /// Time since the previous batch of this run started (input rate).
    pub since_last_trigger: Option<Duration>,
    /// Time the batch took (processing rate).
    pub elapsed: Duration,
    /// High watermarks when the batch was planned (none for a replay).
    pub latest: Option<Vec<(i32, i64)>>,
    /// Per partition, the newest message timestamp read (epoch ms).
    pub newest_timestamps: &'a BTreeMap<i32, i64>,
    pub sinks: [SinkProgress; 2],
    pub subscribers: SubscribersProgress,
}

impl BatchProgress {
    /// The progress record of a batch of query `id`.
    pub(crate) fn new(id: &str, r: BatchReport<'_>) -> Self {
        let sources = vec![source_progress(&r)];
        BatchProgress {
            id: id.to_string(),
            shard: r.shard,
            batch_id: r.plan.batch_id,
            timestamp: rfc3339_ms(r.plan.batch_timestamp_ms),
            replayed: r.replayed,
            num_input_rows: r.input_rows,
            num_malformed_rows: r.bad_records.values().sum(),
            bad_records: r.bad_records,
            num_dead_lettered_rows: r.dead_lettered,
            num_expired_rows: r.expired_rows,
            num_held_rows: r.held_rows,
            num_output_rows: r.output_rows,
            input_rows_per_second: r.since_last_trigger.map_or(0.0, |s| rate(r.input_rows, s)),
            processed_rows_per_second: rate(r.input_rows, r.elapsed),
            duration_ms: r.durations,
            sources,
            sinks: r.sinks.into(),
            subscribers: r.subscribers,
        }
    }

    /// A one-line human summary; every rate says what it counts.
    pub(crate) fn summary(&self) -> String {
        let sinks: Vec<String> = self
            .sinks
            .iter()
            .map(|s| {
                let skipped = if s.skipped { " (already committed)" } else { "" };
                format!("{} {}{skipped}", s.description, s.num_output_rows)
            })
            .collect();
        format!(
            "batch {}{}: {} in ({} bad, {} dead-lettered, {} expired) -> {} out [{}] in {} ms (read {}, sql {}, sinks {}); \
             {:.0} input messages/s processed; subscribers: {}, age {} s",
            self.batch_id,
            if self.replayed { " (replay)" } else { "" },
            count(self.num_input_rows, "message"),
            self.num_malformed_rows,
            self.num_dead_lettered_rows,
            self.num_expired_rows,
            count(self.num_output_rows, "row"),
            sinks.join(", "),
            self.duration_ms.trigger_execution,
            self.duration_ms.get_batch,
            self.duration_ms.query_planning_and_execution,
            self.duration_ms.add_batch,
            self.processed_rows_per_second,
            count(self.subscribers.num_rows, "row"),
            self.subscribers.age_ms / 1000,
        )
    }

    /// Appends the record as one JSON line to `path` (`-` for stdout).
    pub(crate) fn append_json(&self, path: &Path) -> Result<()> {
        let line = serde_json::to_string(self).map_err(|e| Error::Runtime(format!("serialising progress: {e}")))?;
        if path == Path::new("-") {
            println!("{line}");
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::ProgressFile { action: "opening", path: path.to_path_buf(), source })?;
        writeln!(file, "{line}").map_err(|source| Error::ProgressFile {
            action: "writing",
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `{"topic": {"partition": offset}}` from `(partition, offset)` pairs.
pub(crate) fn offsets_json(
    topic: &str,
    offsets: impl Iterator<Item = (i32, i64)>,
) -> BTreeMap<String, BTreeMap<String, i64>> {
    let partitions = offsets.map(|(p, o)| (p.to_string(), o)).collect();
    BTreeMap::from([(topic.to_string(), partitions)])
}

/// The source part of a batch's progress.
fn source_progress(r: &BatchReport<'_>) -> SourceProgress {
    let plan = r.plan;
    let latest = r.latest.as_deref();
    let (behind, seconds) = latest.map(|l| lag(plan, l, r.newest_timestamps, epoch_ms())).unwrap_or_default();
    SourceProgress {
        description: format!("KafkaV2[Assign[{}]]", plan.topic),
        start_offset: offsets_json(&plan.topic, plan.ranges.iter().map(|r| (r.partition, r.start))),
        end_offset: offsets_json(&plan.topic, plan.ranges.iter().map(|r| (r.partition, r.end))),
        latest_offset: latest.map(|l| offsets_json(&plan.topic, l.iter().copied())),
        num_input_rows: r.input_rows,
        offsets_behind_latest: behind,
        seconds_behind_latest: seconds,
    }
}

/// Per partition, offsets behind `latest` after `plan`, and the age in
/// seconds at `now_ms` of the newest message read there (0 when none is
/// behind; left out when nothing was read there to tell).
fn lag(
    plan: &BatchPlan,
    latest: &[(i32, i64)],
    newest: &BTreeMap<i32, i64>,
    now_ms: i64,
) -> (BTreeMap<String, i64>, BTreeMap<String, f64>) {
    let (mut records, mut seconds) = (BTreeMap::new(), BTreeMap::new());
    for range in &plan.ranges {
        let high = latest.iter().find(|(p, _)| *p == range.partition).map_or(range.end, |(_, h)| *h);
        let behind = (high - range.end).max(0);
        records.insert(range.partition.to_string(), behind);
        let age = match newest.get(&range.partition) {
            _ if behind == 0 => Some(0.0),
            Some(ts) => Some((now_ms - ts).max(0) as f64 / 1000.0),
            None => None,
        };
        if let Some(age) = age {
            seconds.insert(range.partition.to_string(), age);
        }
    }
    (records, seconds)
}

/// `1 message`, `2 messages`: a count that agrees in number.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Rows per second, zero for an empty interval.
pub(crate) fn rate(rows: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        rows as f64 / d.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(input: u64, output: u64, subscribers: u64) -> BatchProgress {
        BatchProgress {
            id: "q".into(),
            shard: None,
            batch_id: 4,
            timestamp: rfc3339_ms(0),
            replayed: false,
            num_input_rows: input,
            num_malformed_rows: 0,
            bad_records: BTreeMap::new(),
            num_dead_lettered_rows: 0,
            num_expired_rows: 0,
            num_held_rows: 0,
            num_output_rows: output,
            input_rows_per_second: 0.0,
            processed_rows_per_second: 12.0,
            duration_ms: DurationMs::default(),
            sources: Vec::new(),
            sinks: vec![SinkProgress { description: "kafka".into(), num_output_rows: output, skipped: false }],
            subscribers: SubscribersProgress { snapshot: "s".into(), num_rows: subscribers, ..Default::default() },
        }
    }

    #[test]
    fn lag_is_what_is_left_behind_the_watermark_and_the_age_of_the_newest_message_read() {
        use crate::batch::OffsetRange;
        let plan = BatchPlan {
            batch_id: 1,
            batch_timestamp_ms: 0,
            topic: "in".into(),
            ranges: vec![
                OffsetRange { partition: 0, start: 0, end: 10 },
                OffsetRange { partition: 1, start: 5, end: 5 },
                OffsetRange { partition: 2, start: 0, end: 3 },
            ],
            subscribers_snapshot: "s".into(),
            sql_fingerprint: None,
            job_fingerprint: None,
            hold_future_campaigns: false,
            subscribers_version: None,
            lookups: Default::default(),
        };
        let newest = BTreeMap::from([(0, 7_000), (2, 9_500)]);
        let (records, seconds) = lag(&plan, &[(0, 15), (1, 9), (2, 3)], &newest, 10_000);
        assert_eq!(records, BTreeMap::from([("0".into(), 5), ("1".into(), 4), ("2".into(), 0)]));
        // Partition 1 is behind but read nothing: its age is unknown.
        assert_eq!(seconds, BTreeMap::from([("0".into(), 3.0), ("2".into(), 0.0)]));
    }

    #[test]
    fn summary_counts_agree_in_number_and_rates_say_what_they_count() {
        let one = progress(1, 1, 1).summary();
        assert!(one.contains("1 message in") && one.contains("-> 1 row out"), "{one}");
        assert!(one.contains("subscribers: 1 row,") && one.contains("12 input messages/s"), "{one}");
        let many = progress(2, 0, 3).summary();
        assert!(many.contains("2 messages in") && many.contains("-> 0 rows out"), "{many}");
        assert!(!many.contains(" rows/s"), "{many}");
    }
}
