//! sparklet's integration tests, in one binary (one link of DataFusion and
//! librdkafka). Real Postgres (a private schema per test) and Apache Kafka's
//! own broker (shared, each test with its own topics; private brokers for
//! tests that stop one). librdkafka's in-process mock cluster only where a
//! test injects request errors, which a real broker cannot.

mod bad_records;
mod bad_records_hostile;
mod broker;
mod byte_budget;
mod checkpoint_tools;
mod child;
mod database_objects;
mod demo_postgres;
mod deploy;
mod docs;
mod exactly_once;
mod golden;
mod hold;
mod house;
mod http;
mod http_limits;
mod isolation;
mod job_folder;
mod lookups_on_change;
mod nested_input;
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
mod ride_through;
mod sasl_ssl;
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
mod transactions;
