//! The one loop that reads offset ranges with `assign()`: the source reads a
//! batch with it, recovery reads the output topic's tail for batch markers,
//! and the tools read a whole topic.
//!
//! A range `[start, end)` is done when a message at `end - 1` or later
//! arrived, or when the consumer's position reached `end` (transaction
//! markers and compacted gaps have no message). Reading fails when `timeout`
//! passes without progress.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::OffsetRange;
use crate::error::{Error, Result};

/// How long one poll waits for a message before the positions are checked.
const POLL: Duration = Duration::from_millis(50);

/// Reads every message of `ranges` in `topic` (each partition's messages in
/// offset order) and hands it to `on_message`; returns when every range is
/// done. The consumer is assigned the ranges and unassigned afterwards.
pub fn read_ranges<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    ranges: &[OffsetRange],
    timeout: Duration,
    mut on_message: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    read_ranges_while(consumer, topic, ranges, timeout, |message| {
        on_message(message);
        ControlFlow::Continue(())
    })
}

/// As [`read_ranges`], but `on_message` may end its message's partition
/// early: after [`ControlFlow::Break`] no more messages of that partition are
/// handed over (the one that broke is not taken).
pub fn read_ranges_while<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    ranges: &[OffsetRange],
    timeout: Duration,
    mut on_message: impl FnMut(&BorrowedMessage<'_>) -> ControlFlow<()>,
) -> Result<()> {
    let mut pending: BTreeMap<i32, OffsetRange> =
        ranges.iter().filter(|r| !r.is_empty()).map(|r| (r.partition, *r)).collect();
    if pending.is_empty() {
        return Ok(());
    }
    assign(consumer, topic, pending.values())?;
    let mut deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(timed_out(topic, &pending, timeout));
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                let Some(range) = pending.get(&partition) else { continue };
                let mut done = offset + 1 >= range.end;
                if offset >= range.start && offset < range.end {
                    done |= on_message(&message).is_break();
                    deadline = Instant::now() + timeout;
                }
                if done {
                    pending.remove(&partition);
                }
            }
            // Already logged by the client's context (see crate::kafka::log).
            Some(Err(err)) => tracing::debug!(topic, cause = %err, "kafka read error, retrying"),
            None => {
                let positions = consumer.position().map_err(|e| Error::kafka("reading the consumer position", e))?;
                pending.retain(|p, r| !super::position_reached(&positions, topic, *p, r.end));
            }
        }
    }
    let _ = consumer.unassign();
    Ok(())
}

fn assign<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    ranges: impl Iterator<Item = &'a OffsetRange>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for r in ranges {
        tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))
            .map_err(|e| Error::kafka("building the assignment", e))?;
    }
    consumer.assign(&tpl).map_err(|e| Error::kafka(format!("assigning partitions of '{topic}'"), e))
}

fn timed_out(topic: &str, pending: &BTreeMap<i32, OffsetRange>, timeout: Duration) -> Error {
    let missing: Vec<String> = pending.values().map(|r| format!("[{}] {}..{}", r.partition, r.start, r.end)).collect();
    Error::KafkaTimeout(format!(
        "timed out after {timeout:?} without progress reading '{topic}' partitions {}",
        missing.join(", ")
    ))
}
