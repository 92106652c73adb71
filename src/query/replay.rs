//! What a replayed batch must check before it reads: that it runs the SQL it
//! was planned with, and that its input can still be read, unless no sink
//! holds any of it yet.
//!
//! A replay writes only to the sinks that lack the batch, so it must produce
//! exactly what the first attempt produced. Changed SQL files, or input
//! offsets that retention deleted (or a recreated topic), would give the
//! other sink a different version: such a replay is refused. If neither sink
//! holds the batch, nothing can disagree: changed SQL is used (and logged),
//! and lost offsets are handled as for a new batch (`--fail-on-data-loss`).

use crate::batch::BatchPlan;
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::source::plan;

use super::Query;

impl Query {
    /// Checks a replay; returns the plan to read: `plan` itself, or with
    /// `--fail-on-data-loss false` its ranges clamped to what is left.
    pub(super) async fn check_replay(&mut self, plan: &BatchPlan) -> Result<BatchPlan> {
        self.check_replay_sql(plan).await?;
        let marks = self.source.watermarks().await?;
        let (losses, left) = plan::unreadable(&plan.ranges, &marks);
        let Some(first) = losses.first() else {
            return Ok(plan.clone());
        };
        if let Some(sink) = self.sink_holding(plan).await? {
            return Err(Error::CheckpointMismatch(format!(
                "batch {} can no longer be read back from '{}' ({first}), but {sink} already holds it: writing \
                 the other sink from what is left would give it a different version, so nothing was written. \
                 To go on, start a new query with a new --checkpoint-dir (the other sink will miss this batch)",
                plan.batch_id, plan.topic
            )));
        }
        if self.config.fail_on_data_loss {
            let (topic, more) = (plan.topic.clone(), losses.len() - 1);
            return Err(Error::DataLoss { topic, detail: first.to_string(), more });
        }
        for loss in &losses {
            loss.report(&plan.topic);
        }
        Ok(BatchPlan { ranges: left, ..plan.clone() })
    }

    /// A batch replayed with another job (SQL files, declaration, options)
    /// than it was planned with is refused if a sink already holds it; if
    /// neither does, it runs with the new job, and says so. Plans from
    /// before job folders have only the SQL files' fingerprint.
    async fn check_replay_sql(&mut self, plan: &BatchPlan) -> Result<()> {
        let (planned, now) = match &plan.job_fingerprint {
            Some(planned) => (Some(planned.as_str()), self.pipeline.job_fingerprint()),
            None => (plan.sql_fingerprint.as_deref(), self.pipeline.fingerprint()),
        };
        let Some(planned) = planned.filter(|f| *f != now) else {
            return Ok(());
        };
        if let Some(sink) = self.sink_holding(plan).await? {
            return Err(Error::CheckpointMismatch(format!(
                "batch {} was written to {sink} by a job (SQL files, input.sql, job.toml) with fingerprint {planned}, \
                 but the job in {} now has fingerprint {now}: replaying it would give the other sink a different \
                 version. Restore the job folder the batch ran with, let it finish, then change it",
                plan.batch_id,
                self.config.sql_dir.display()
            )));
        }
        tracing::warn!(
            planned,
            now,
            "the job (SQL files, input.sql, job.toml) changed since this batch was planned; nothing of it was written, so it runs with the new job"
        );
        Ok(())
    }

    /// The first sink that already holds `plan`'s batch, if any.
    async fn sink_holding(&mut self, plan: &BatchPlan) -> Result<Option<&'static str>> {
        if self.postgres.is_committed(plan).await? {
            return Ok(Some("postgres"));
        }
        if self.kafka.is_committed(plan).await? {
            return Ok(Some("kafka"));
        }
        Ok(None)
    }
}
