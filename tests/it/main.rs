//! sparklet's integration tests, in one binary (one link of DataFusion and
//! librdkafka). Real Postgres (a private schema per test) and the Kafka wire
//! protocol through librdkafka's in-process mock cluster.

mod bad_records;
mod checkpoint_tools;
mod child;
mod deploy;
mod exactly_once;
mod hold;
mod http;
mod newcomer;
mod object_store;
mod observability;
mod outages;
mod ownership;
mod pipeline;
mod postgres_tls;
mod progress_bar;
mod proxy;
mod replay;
mod restart;
mod security;
mod shards;
mod sql_files;
mod startup_errors;
mod status_page;
mod streaming;
mod subscribers_fresh;
mod support;
#[path = "../../src/tools.rs"]
mod tools;
