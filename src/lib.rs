//! sparklet: a micro-batch stream processor modelled on Spark Structured
//! Streaming, for one job done right: Kafka campaigns joined in SQL with a
//! cached Postgres table, written exactly once to a Kafka topic and to Postgres.
//!
//! # Layout
//!
//! - [`cli`]: the raw command line (clap), no I/O.
//! - [`admin`]: `sparklet checkpoint show|verify|rewind|reset` on a stopped
//!   query's checkpoint.
//! - [`config`]: validated settings built from the command line; Postgres
//!   settings and their TLS connector in [`config::PostgresConfig`].
//! - [`error`]: the error type; every variant names its component and says
//!   whether a retry can help.
//! - [`driver`]: the trigger loop: trigger policy, retries of an outage for
//!   `--retry-for` on new connections (`driver::retry`, planning included),
//!   shutdown and the run summary; nothing else.
//! - [`query`]: one query's components and offset state;
//!   [`query::Query::next_plan`] plans a batch and [`query::Query::run`] takes
//!   it through log offsets, read, transform, write and commit, as a new
//!   batch or a replay ([`query::Attempt`]); a replay is first checked to run
//!   the same SQL on input that can still be read (`query::replay`).
//! - [`batch`]: a batch's id, timestamp and offset ranges ([`batch::BatchPlan`]).
//! - [`checkpoint`]: `offsets/N`, `commits/N`, `metadata`, written atomically;
//!   [`checkpoint::layout`]: one shard at the root or S under `shards/<s>/`;
//!   [`checkpoint::files`]: where the files live, a local folder or an object
//!   store (`s3://`, `gs://`, `az://`).
//! - [`shard`]: which input partitions a shard owns, its key in the sinks,
//!   which shards a process runs (`--shard-ids`, `auto` from the pod's ordinal).
//! - [`source`]: the Kafka source (watermarks, `assign()` reads), planning
//!   arithmetic ([`source::plan`]), JSON-to-Arrow decoding ([`source::decode`]),
//!   done chunk by chunk while a batch is read (`source::stream_decode`), and
//!   the next batch's input read while a batch is written
//!   (`source::read_ahead`).
//! - [`subscribers`]: the cached subscribers table and its snapshots, loaded
//!   by binary COPY straight into Arrow (`subscribers_copy`), scanned by the
//!   SQL through a restaurant index ([`subscribers_scan`]) so a small batch
//!   reads only its restaurants' rows.
//! - [`subscribers_refresh`]: the cache kept fresh in the background (a
//!   timer, or on change), each version published for a plan to pin;
//!   [`subscribers_watch`]: change detection in Postgres (a trigger's
//!   version counter and LISTEN/NOTIFY).
//! - [`source::validate`]: every input message checked before the sinks see
//!   it, with a stable reason code for the dead-letter topic.
//! - [`hold`]: `--hold-future-campaigns`, campaigns held until their start
//!   (state in the checkpoint's `state/N`).
//! - [`transform`]: the user's SQL files, run by DataFusion.
//! - [`schema`]: the input and output message formats of the job.
//! - [`shared_text`]: campaign text handed to the SQL as dictionaries, so the
//!   join repeats a 4-byte key per subscriber instead of the text; the
//!   sinks read text in either form.
//! - [`sink`]: the Kafka and Postgres sinks, transactional with markers
//!   (Kafka's in a marker topic, `sink::kafka_marker`), one owner per query
//!   (`sink::owner`); [`sink::copy`] encodes binary COPY from Arrow;
//!   [`sink::feed`] hands the SQL's output to both sinks chunk by chunk as it
//!   is computed (a small output is computed in full before either starts).
//! - [`kafka`]: librdkafka settings, the start-up reachability check, the
//!   one loop that reads offset ranges with `assign()` ([`kafka::read_ranges`]),
//!   a topic's partitions, the QueueFull back-off.
//! - [`kafka_log`]: librdkafka's logs and errors through `tracing`, each
//!   distinct message once (then at most once a minute).
//! - [`postgres`]: Postgres connections (TLS as libpq does it).
//! - [`progress`], [`events`]: per-batch progress records and logged, counted events.
//! - [`metrics`]: the process's Prometheus metrics, fed by the events.
//! - [`progress_bar`]: a catch-up run's progress bar on a terminal.
//! - [`status`]: what the run is doing now (recent progress, liveness),
//!   shared by the trigger loop and the HTTP endpoint.
//! - [`http`]: the optional endpoint (`--http-addr`): `/metrics`, `/livez`,
//!   `/readyz` ([`http::health`]), `/progress` and the status page.
//! - `backoff`: capped exponential back-off with jitter (a leaf).
//! - [`crash`]: named crash points for the exactly-once tests (test-only: the
//!   `crash-points` feature, which `cargo test` enables).
//!
//! Not in the library: `sparklet demo` (`src/demo.rs`) and the client tools
//! that generate, produce and read campaigns (`src/tools.rs`) belong to the
//! binary; the examples, benches and tests compile `src/tools.rs` as their
//! own module.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(unreachable_pub)]

pub mod admin;
pub(crate) mod backoff;
pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod crash;
pub(crate) mod driver;
pub mod error;
pub(crate) mod events;
pub(crate) mod hold;
pub(crate) mod http;
pub mod kafka;
pub(crate) mod kafka_log;
pub mod metrics;
pub mod postgres;
pub(crate) mod progress;
pub mod progress_bar;
pub(crate) mod query;
pub mod schema;
pub mod shard;
pub mod shared_text;
pub mod sink;
pub mod source;
pub mod status;
pub mod subscribers;
pub(crate) mod subscribers_copy;
pub mod subscribers_refresh;
pub mod subscribers_scan;
pub mod subscribers_watch;
pub mod transform;

pub use config::Config;
pub use driver::{run, RunSummary};
pub use error::{Error, Result};
