//! What operators see of a running query: logged and counted events, the
//! Prometheus metrics they feed, per-batch progress records, the run's
//! status, the terminal progress bar and the HTTP endpoint. Events carry
//! plain values, so the components below report through them without this
//! folder knowing their types.

pub(crate) mod events;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod progress;
pub mod progress_bar;
pub(crate) mod status;
