//! The output producer's context: it counts delivery reports and wakes the
//! writer when the last one of a batch arrived (no polling loop), and routes
//! the producer's logs (see [`crate::kafka::log`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::ClientContext;

use crate::kafka::log::KafkaLog;

/// Delivery reports of the current batch.
#[derive(Debug, Default, Clone)]
pub(super) struct Reports {
    pub delivered: u64,
    pub failed: u64,
    /// The first failure's cause.
    pub first_error: Option<KafkaError>,
    /// The writer waits for this many reports (0: nobody waits).
    awaited: u64,
}

impl Reports {
    fn reported(&self) -> u64 {
        self.delivered + self.failed
    }
}

/// Counts delivery reports; see the module docs.
pub(super) struct Deliveries {
    reports: Mutex<Reports>,
    all_reported: Condvar,
    log: KafkaLog,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            reports: Mutex::new(Reports::default()),
            all_reported: Condvar::new(),
            log: KafkaLog::new("output producer"),
        }
    }
}

impl Deliveries {
    /// Starts counting a new batch.
    pub(super) fn reset(&self) {
        *self.lock() = Reports::default();
    }

    /// Blocks until `sent` reports arrived, or `timeout` passed; returns the
    /// reports either way (fewer than `sent` means it timed out).
    pub(super) fn wait_for(&self, sent: u64, timeout: Duration) -> Reports {
        let deadline = Instant::now() + timeout;
        let mut reports = self.lock();
        reports.awaited = sent;
        while reports.reported() < sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            reports = match self.all_reported.wait_timeout(reports, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        reports.awaited = 0;
        reports.clone()
    }

    /// Counts one delivery report and wakes the writer on the last one.
    fn report(&self, outcome: std::result::Result<(), &KafkaError>) {
        let mut reports = self.lock();
        match outcome {
            Ok(()) => reports.delivered += 1,
            Err(err) => {
                reports.failed += 1;
                reports.first_error.get_or_insert_with(|| err.clone());
            }
        }
        if reports.awaited > 0 && reports.reported() >= reports.awaited {
            self.all_reported.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.report(result.as_ref().map(|_| ()).map_err(|(err, _)| err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_is_woken_by_the_last_report_and_times_out_without_it() {
        let deliveries = Arc::new(Deliveries::default());
        let counter = deliveries.clone();
        let reporter = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(5));
                counter.report(Ok(()));
            }
        });
        let reports = deliveries.wait_for(3, Duration::from_secs(10));
        reporter.join().unwrap();
        assert_eq!(reports.delivered, 3);
        let reports = deliveries.wait_for(4, Duration::from_millis(20));
        assert_eq!(reports.reported(), 3, "timed out one short");
    }
}
