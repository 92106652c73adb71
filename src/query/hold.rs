//! `--hold-future-campaigns`: a valid campaign whose start is still ahead is
//! held, not filtered out, and delivered by the first batch whose `now` is
//! at or past its start, once, as if it had arrived then. One whose end has
//! also passed by then is counted as expired, like any other.
//!
//! The held campaigns are the query's state, kept in the checkpoint as
//! Spark keeps a stateful query's state store: `state/N` holds what is held
//! after batch N, written after both sinks have the batch and before
//! `commits/N` (only when the set changed). Batch N starts from the newest
//! `state/K` with K < N, so a replay of N sees exactly what the first
//! attempt saw and releases exactly the same campaigns
//! ([`crate::checkpoint::CheckpointStore::read_state_before`]).
//!
//! The step runs between read and transform: the campaigns held before the
//! batch join those that arrived, those due go on to the SQL, the rest stay
//! held; the new state is recorded after both sinks, before the commit.

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::Int64Type;

use super::Query;
use crate::batch::{BatchId, BatchPlan};
use crate::checkpoint::CheckpointStore;
use crate::error::{Error, Result};

/// The held campaigns before batch `before` (none held: `None`).
#[derive(Debug, Default)]
pub(super) struct Held {
    before: BatchId,
    campaigns: Option<RecordBatch>,
}

impl Held {
    /// What the checkpoint holds before batch `next`.
    pub(super) fn load(checkpoint: &CheckpointStore, next: BatchId) -> Result<Self> {
        Ok(Held { before: next, campaigns: checkpoint.read_state_before(next)? })
    }

    /// How many campaigns are held.
    pub(super) fn len(&self) -> usize {
        self.campaigns.as_ref().map_or(0, RecordBatch::num_rows)
    }
}

impl Query {
    /// Whether a held campaign starts at or before `now` (epoch seconds):
    /// a batch is planned for it even without new input.
    pub(super) fn held_due(&self, now: i64) -> bool {
        let start = self.window_start();
        self.held.campaigns.as_ref().is_some_and(|held| start.is_some_and(|start| any_due(held, start, now)))
    }

    /// The input's start column (`job.toml`'s `[input] window`).
    fn window_start(&self) -> Option<&str> {
        self.pipeline.job().options.input.window.as_ref().map(|w| w.start.as_str())
    }

    /// The campaigns batch `plan` delivers, and the split to record, if
    /// anything is or was held.
    pub(super) fn hold(&self, plan: &BatchPlan, arrived: RecordBatch) -> Result<(RecordBatch, Option<Split>)> {
        let before = match self.held.before == plan.batch_id {
            true => self.held.campaigns.clone(),
            false => self.checkpoint.read_state_before(plan.batch_id)?,
        };
        if before.is_none() && !plan.hold_future_campaigns {
            return Ok((arrived, None));
        }
        let start = self.window_start().ok_or_else(|| {
            Error::Runtime("campaigns are held, and job.toml declares no [input] window to release them by".into())
        })?;
        let split = split(before, arrived, start, plan.now_seconds(), plan.hold_future_campaigns)?;
        Ok((split.due.clone(), Some(split)))
    }

    /// After both sinks: writes `state/N` if the held set changed, and
    /// keeps it for the next batch. Returns how many are held.
    pub(super) fn record_held(&mut self, plan: &BatchPlan, split: Option<Split>) -> Result<u64> {
        let Some(split) = split else {
            self.held = Held { before: plan.batch_id + 1, campaigns: None };
            return Ok(0);
        };
        if split.changed {
            self.checkpoint.write_state(plan.batch_id, &split.held)?;
        }
        let held = split.held.num_rows() as u64;
        let campaigns = (held > 0).then_some(split.held);
        self.held = Held { before: plan.batch_id + 1, campaigns };
        Ok(held)
    }
}

/// A batch's campaigns after holding: those it delivers, and those held on.
#[derive(Debug)]
pub(crate) struct Split {
    /// Due at the batch's `now`: what arrived, plus held ones now due.
    pub due: RecordBatch,
    /// Still ahead of their start: the state after this batch.
    pub held: RecordBatch,
    /// Whether `held` differs from the state before the batch.
    pub changed: bool,
}

/// Splits the campaigns held before a batch plus those that `arrived` in it
/// by whether they start after `now` (epoch seconds). With `hold_arrived`
/// false (the flag turned off since), only the campaigns held before are
/// held on; what arrived is all due (the SQL's window drops what is early).
pub(crate) fn split(
    before: Option<RecordBatch>,
    arrived: RecordBatch,
    start: &str,
    now: i64,
    hold_arrived: bool,
) -> Result<Split> {
    let schema = arrived.schema();
    let held_before = before.as_ref().map_or(0, RecordBatch::num_rows);
    let all = match before {
        Some(before) if before.num_rows() > 0 => arrow::compute::concat_batches(&schema, [&before, &arrived])
            .map_err(|e| Error::arrow("joining the held campaigns with the batch's", e))?,
        _ => arrived,
    };
    let mut ahead = starts_after(&all, start, now)?;
    if !hold_arrived {
        let keep = (0..all.num_rows()).map(|i| Some(i < held_before && ahead.value(i)));
        ahead = keep.collect();
    }
    let due =
        arrow::compute::filter_record_batch(&all, &arrow::compute::not(&ahead).map_err(held_err)?).map_err(held_err)?;
    let held = arrow::compute::filter_record_batch(&all, &ahead).map_err(held_err)?;
    // Held ones are first in `all`: the set changed unless none of them
    // became due and nothing new is held.
    let still_held_before = ahead.slice(0, held_before).true_count();
    let changed = still_held_before != held_before || held.num_rows() != still_held_before;
    Ok(Split { due, held, changed })
}

/// Whether any of `held` starts (column `start`) at or before `now`.
pub(crate) fn any_due(held: &RecordBatch, start: &str, now: i64) -> bool {
    starts_after(held, start, now).is_ok_and(|ahead| ahead.true_count() < held.num_rows())
}

/// Per campaign, whether its start (column `start`) is after `now`.
fn starts_after(batch: &RecordBatch, start: &str, now: i64) -> Result<BooleanArray> {
    let starts = batch
        .column_by_name(start)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| Error::Runtime(format!("the campaigns have no int64 {start}")))?;
    Ok(starts.iter().map(|start| Some(start.is_some_and(|s| s > now))).collect())
}

fn held_err(e: arrow::error::ArrowError) -> Error {
    Error::arrow("holding campaigns that start later", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "adv_campaign_datetime_start";
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn campaigns(rows: &[(&str, i64)]) -> RecordBatch {
        let schema = crate::source::input::Input::seed().unwrap().schema();
        let text = |f: &dyn Fn(&(&str, i64)) -> String| -> arrow::array::ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let int = |f: &dyn Fn(&(&str, i64)) -> i64| -> arrow::array::ArrayRef {
            Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let columns = vec![
            text(&|_| "r".into()),
            text(&|r| r.0.to_string()),
            text(&|_| "c".into()),
            text(&|_| "o".into()),
            text(&|_| "x".into()),
            int(&|r| r.1),
            int(&|r| r.1 + 100),
            int(&|_| 0),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn ids(batch: &RecordBatch) -> Vec<String> {
        let ids = batch.column(1).as_string::<i32>();
        (0..batch.num_rows()).map(|i| ids.value(i).to_string()).collect()
    }

    #[test]
    fn a_campaign_is_held_until_now_reaches_its_start_then_delivered_once() {
        let first = split(None, campaigns(&[("now", 10), ("later", 50)]), START, 20, true).unwrap();
        assert_eq!(
            (ids(&first.due), ids(&first.held), first.changed),
            (vec!["now".into()], vec!["later".into()], true)
        );
        let waiting = split(Some(first.held), campaigns(&[]), START, 49, true).unwrap();
        assert_eq!((ids(&waiting.due).len(), waiting.changed), (0, false));
        let released = split(Some(waiting.held), campaigns(&[("new", 55)]), START, 50, true).unwrap();
        assert_eq!(ids(&released.due), ["later"]);
        assert_eq!((ids(&released.held), released.changed), (vec!["new".to_string()], true));
    }

    #[test]
    fn nothing_held_and_nothing_ahead_is_no_change() {
        let s = split(None, campaigns(&[("a", 1)]), START, 5, true).unwrap();
        assert_eq!((s.due.num_rows(), s.held.num_rows(), s.changed), (1, 0, false));
    }

    #[test]
    fn with_the_flag_off_held_campaigns_are_still_released_but_nothing_new_is_held() {
        let before = split(None, campaigns(&[("held", 50)]), START, 20, true).unwrap().held;
        let s = split(Some(before), campaigns(&[("early", 60)]), START, 30, false).unwrap();
        assert_eq!((ids(&s.due), ids(&s.held), s.changed), (vec!["early".into()], vec!["held".into()], false));
    }
}
