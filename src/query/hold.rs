//! The hold step of a batch (`--hold-future-campaigns`, [`crate::hold`]):
//! between read and transform, the campaigns held before the batch join
//! those that arrived, those due go on to the SQL, the rest stay held; the
//! new state is recorded after both sinks, before the commit.

use arrow::array::RecordBatch;

use crate::batch::{BatchId, BatchPlan};
use crate::checkpoint::CheckpointStore;
use crate::error::Result;
use crate::hold::{self, Split};

use super::Query;

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
        self.held.campaigns.as_ref().is_some_and(|held| hold::any_due(held, now))
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
        let split = hold::split(before, arrived, plan.now_seconds(), plan.hold_future_campaigns)?;
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
