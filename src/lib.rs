//! sparklet: a micro-batch stream processor modelled on Spark Structured
//! Streaming, for one job done right: Kafka campaigns joined in SQL with a
//! cached Postgres table, written exactly once to a Kafka topic and to Postgres.
//!
//! # Layout
//!
//! One concept per folder. A module uses only modules on lines below its
//! own (`tests/it/house.rs` checks it, and that no import circle crosses
//! folders):
//!
//! - entry points: `process` (what `sparklet run` does: the status, the HTTP
//!   endpoint, the queries, the trigger loop until shutdown), `admin`
//!   (`sparklet checkpoint ...`, `sparklet setup`), `cli` (the command line,
//!   and `sparklet run`'s options into a `Config`);
//! - the loop: `driver` (trigger policy, retries, shutdown, the run summary),
//!   `query` (one batch through plan, log offsets, read, hold, transform,
//!   write, commit; a replay checked first);
//! - components: `sink` (Kafka and Postgres, transactional with markers),
//!   `transform` (the user's SQL files in DataFusion), `subscribers` (the
//!   cached table, its snapshots, kept fresh), `lookups` (the job's other
//!   cached tables, pinned per batch), `source` (Kafka reads, planning,
//!   validation against the declared input, JSON to Arrow);
//! - operations: `ops` (events, metrics, progress, status, the progress bar,
//!   the HTTP endpoint); events take plain values, so the components report
//!   through them;
//! - infrastructure: `kafka` (client settings, ranged reads, librdkafka's
//!   logs), `postgres` (connections), `config` (checked settings),
//!   `checkpoint` (offsets, commits, state and snapshots in a folder or an
//!   object store);
//! - the job: `job` (the job folder: the input's declaration `input.sql`,
//!   the options `job.toml`);
//! - shared types: `batch` (a batch's id, time and offset ranges), `schema`
//!   (the message formats, reason codes, shared text), `shard`;
//! - leaves: `crash` (named crash points, test builds only), `util` (time,
//!   back-off, hashing, quoting, files), `error` (one type; each variant
//!   names its component and whether a retry can help).
//!
//! The binary adds `sparklet demo` (`src/demo/`) and the client tools that
//! generate, produce and read campaigns (`src/tools.rs`), which the
//! examples, benches and tests also compile as their own module.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(unreachable_pub)]

// Entry points.
pub mod admin;
pub mod cli;
mod process;
// The loop.
mod driver;
mod query;
// Components.
pub mod lookups;
pub mod sink;
pub mod source;
pub mod subscribers;
pub mod transform;
// Operations.
pub mod ops;
// Infrastructure.
pub mod checkpoint;
pub mod config;
pub mod kafka;
pub mod postgres;
// The job.
pub mod job;
// Shared types.
pub mod batch;
pub mod schema;
mod shard;
// Leaves.
pub mod crash;
mod error;
mod util;

pub use config::Config;
pub use driver::RunSummary;
pub use error::{Error, Result};
pub use process::run;
