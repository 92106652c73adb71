//! Replay from the checkpoint: a planned batch without a commit runs again
//! with exactly its ranges and timestamp.

use anyhow::Result;
use sparklet::batch::{BatchPlan, OffsetRange};
use sparklet::checkpoint::CheckpointStore;
use sparklet::subscribers::Subscribers;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_batch_is_replayed_with_the_same_ranges_and_timestamp() -> Result<()> {
    let job = Job::new(1).await?;
    let clients = ["c1", "c2"];
    job.db.add_subscribers(RESTAURANT, &clients).await?;
    // Valid only around t0 (long past), so only a replay pinned at t0 emits it.
    let t0: i64 = 1_700_000_000;
    job.kafka.produce(
        &job.input,
        0,
        &[
            campaign(RESTAURANT, "only-then", t0 - 100, t0 + 100),
            campaign(RESTAURANT, "third-not-in-batch", t0 - 100, t0 + 100),
        ],
    )?;
    let subs =
        Subscribers::from_rows(clients.iter().map(|c| c.to_string()).collect(), vec![RESTAURANT.to_string(); 2])?;
    let store = CheckpointStore::open(job.checkpoint.path())?;
    store.write_offsets(&BatchPlan {
        batch_id: 0,
        batch_timestamp_ms: t0 * 1000 + 250,
        topic: job.input.clone(),
        ranges: vec![OffsetRange { partition: 0, start: 0, end: 1 }],
        subscribers_snapshot: subs.id.clone(),
        sql_fingerprint: None,
        job_fingerprint: None,
        hold_future_campaigns: false,
        subscribers_version: None,
        lookups: Default::default(),
    })?;

    drop(store); // the run takes the checkpoint's lock
    let summary = job.run_available_now(&[]).await?;
    assert_eq!(summary.last_batch_id, Some(1), "batch 0 replayed, then batch 1 for offset 1");
    let messages = job.output_messages()?;
    let replayed: Vec<_> = messages.iter().filter(|(_, v)| v["adv_campaign_id"] == "only-then").collect();
    assert_eq!(replayed.len(), 2, "{messages:?}");
    for (_, v) in &replayed {
        assert_eq!(v["trigger_datetime_created"], t0);
    }
    assert!(
        messages.iter().all(|(_, v)| v["adv_campaign_id"] != "third-not-in-batch"),
        "offset 1 is outside batch 0 and expired for batch 1"
    );
    let rows = job.db.feedback().await?;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["trigger_datetime_created"] == t0));
    assert!(CheckpointStore::open(job.checkpoint.path())?.read_commit(0)?.is_some());
    Ok(())
}
