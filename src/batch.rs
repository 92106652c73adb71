//! What one micro-batch is: its id, its timestamp and the offset ranges it reads.
//!
//! A [`BatchPlan`] is decided before anything is read and is written to the
//! checkpoint (`offsets/N`) as is, so a replay reads exactly the same messages
//! with exactly the same `now`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Current time in epoch milliseconds: a batch's timestamp, a commit's time.
pub fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Sequence number of a micro-batch within one query, starting at 0.
pub type BatchId = u64;

/// Half-open offset range `[start, end)` of one partition of the input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// The next offset after the last one to read (exclusive).
    pub end: i64,
}

impl OffsetRange {
    /// Number of offsets in the range (messages, or fewer with compaction or
    /// transaction markers).
    pub fn len(&self) -> i64 {
        (self.end - self.start).max(0)
    }

    /// Whether the range reads nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything needed to run (or re-run) one micro-batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchPlan {
    pub batch_id: BatchId,
    /// Wall-clock time the batch was planned, in milliseconds since the epoch.
    pub batch_timestamp_ms: i64,
    /// The input topic the ranges belong to.
    pub topic: String,
    /// One range per partition of the input topic, empty ones included, so the
    /// next batch knows where every partition stands.
    pub ranges: Vec<OffsetRange>,
    /// Id of the subscribers snapshot the batch joins with.
    pub subscribers_snapshot: String,
    /// Fingerprint of the SQL files the batch was planned with (absent in
    /// plans written before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_fingerprint: Option<String>,
    /// Fingerprint of the whole job: the SQL files and the job folder's
    /// declaration and options ([`crate::job::Job::identity`]); absent in
    /// plans written before job folders, which `sql_fingerprint` covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_fingerprint: Option<String>,
    /// Whether the batch holds campaigns that start after its `now`
    /// (`--hold-future-campaigns`, [`crate::hold`]); recorded so a replay
    /// does what the first attempt did whatever the flag says now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_future_campaigns: bool,
    /// The subscribers table's change version the snapshot was read at
    /// (`--subscribers-refresh on-change`), for a replay's progress record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers_version: Option<i64>,
    /// The snapshot id of each lookup the batch joins with, by name
    /// (`job.toml`'s `[lookups]`; none for the seed job).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lookups: std::collections::BTreeMap<String, String>,
}

impl BatchPlan {
    /// The batch's `now` in whole seconds: the value the window filter uses
    /// and the one written as `trigger_datetime_created`.
    pub fn now_seconds(&self) -> i64 {
        self.batch_timestamp_ms.div_euclid(1000)
    }

    /// The non-empty ranges as `topic[p] start..end`, comma-separated, for
    /// messages about this batch.
    pub fn describe_ranges(&self) -> String {
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| format!("{}[{}] {}..{}", self.topic, r.partition, r.start, r.end))
            .collect();
        ranges.join(", ")
    }

    /// The end offset of every partition, i.e. where the next batch starts.
    pub fn end_offsets(&self) -> Vec<(i32, i64)> {
        self.ranges.iter().map(|r| (r.partition, r.end)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_whole_seconds_of_the_batch_timestamp() {
        let plan = BatchPlan {
            batch_id: 3,
            batch_timestamp_ms: 1_659_304_828_999,
            topic: "in".into(),
            ranges: vec![
                OffsetRange { partition: 0, start: 5, end: 9 },
                OffsetRange { partition: 1, start: 2, end: 2 },
            ],
            subscribers_snapshot: "s".into(),
            sql_fingerprint: None,
            job_fingerprint: None,
            hold_future_campaigns: false,
            subscribers_version: None,
            lookups: Default::default(),
        };
        assert_eq!(plan.now_seconds(), 1_659_304_828);
        assert_eq!(plan.end_offsets(), vec![(0, 9), (1, 2)]);
        assert_eq!(plan.describe_ranges(), "in[0] 5..9");
    }
}
