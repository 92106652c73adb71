//! Which failures a retry can help with, and which component each names:
//! [`Error::is_retryable`] answers yes only for an allowlist of transient
//! failures (timeouts, transport, a broker or coordinator not available, a
//! Postgres connection lost, a serialization failure).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::Error;

impl Error {
    /// Whether running the same trigger again may succeed: only transient
    /// failures of Kafka or Postgres (see the module docs). A topic that does
    /// not exist, an authentication failure, a fenced producer, a constraint
    /// violation, bad SQL or a bad checkpoint are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => kafka_retryable(source),
            Error::KafkaTimeout(_) => true,
            Error::Postgres { source, .. } => postgres_retryable(source),
            Error::CheckpointObject { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }
            ),
            _ => false,
        }
    }

    /// Whether Kafka says a newer producer with the same transactional id
    /// exists (this one must stop, never re-initialise and fence it back).
    pub(crate) fn is_kafka_fenced(&self) -> bool {
        let Error::Kafka { source, .. } = self else {
            return false;
        };
        let code = match source {
            KafkaError::Transaction(e) => Some(e.code()),
            other => other.rdkafka_error_code(),
        };
        matches!(
            code,
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        )
    }

    /// The component that failed, as the message's first word says it
    /// (`kafka`, `postgres`, ...): the `component` label of the failure metrics.
    pub fn component(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::ProgressFile { .. } => "progress",
            Error::CheckpointIo { .. }
            | Error::CheckpointObject { .. }
            | Error::CheckpointInUse { .. }
            | Error::CheckpointConflict { .. }
            | Error::CheckpointBehind { .. }
            | Error::CheckpointMismatch(_)
            | Error::CheckpointFormat { .. } => "checkpoint",
            Error::Job { .. } => "job",
            Error::Sql { .. } | Error::SqlStep { .. } | Error::SqlRuntime { .. } => "sql",
            Error::Transform { .. } | Error::OutputSchema { .. } => "transform",
            Error::Kafka { .. }
            | Error::KafkaUnreachable { .. }
            | Error::KafkaAuthentication { .. }
            | Error::KafkaTls { .. }
            | Error::KafkaProtocol { .. }
            | Error::KafkaTimeout(_)
            | Error::KafkaState(_)
            | Error::DataLoss { .. } => "kafka",
            Error::Postgres { .. }
            | Error::PostgresObject { .. }
            | Error::PostgresTable { .. }
            | Error::CopyEncoding(_) => "postgres",
            Error::BadRecord { .. } => "input",
            Error::Fenced { sink, .. } => sink,
            Error::RetriesSpent { component, .. } => component,
            Error::SubscribersStale { .. } => "subscribers",
            Error::Arrow { .. } => "arrow",
            Error::OutputCut => "output",
            Error::Runtime(_) => "runtime",
        }
    }
}

/// Kafka failures a retry can fix: the transport, timeouts, a broker, leader
/// or coordinator that is (for now) not available.
fn kafka_retryable(err: &KafkaError) -> bool {
    if let KafkaError::Transaction(e) = err {
        return !e.is_fatal() && (e.is_retriable() || e.txn_requires_abort());
    }
    use RDKafkaErrorCode as C;
    matches!(
        err.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::MessageTimedOut
                | C::OperationTimedOut
                | C::TimedOutQueue
                | C::RequestTimedOut
                | C::NetworkException
                | C::BrokerNotAvailable
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::WaitingForCoordinator
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::ConcurrentTransactions
                | C::Retry
        )
    )
}

/// Postgres failures a retry can fix: a lost or refused connection, and the
/// SQLSTATEs of an overloaded or restarting server and of a transaction that
/// lost a serialization race.
fn postgres_retryable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        // No SQLSTATE: retry when the transport failed (refused, reset).
        None => has_io_cause(err),
        Some(code) => {
            let code = code.code();
            // 08: connection exception; 53: insufficient resources;
            // 57P01..57P03: admin/crash shutdown, cannot connect now;
            // 40001: serialization failure; 40P01: deadlock detected.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }
    }
}

fn has_io_cause(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = err.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_producer_is_recognised_and_never_retried() {
        for code in [RDKafkaErrorCode::Fenced, RDKafkaErrorCode::ProducerFenced, RDKafkaErrorCode::InvalidProducerEpoch]
        {
            assert!(Error::kafka("committing", KafkaError::MessageProduction(code)).is_kafka_fenced(), "{code:?}");
        }
        let transport =
            Error::kafka("sending", KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(!transport.is_kafka_fenced());
        let fenced = Error::Fenced { sink: "kafka", query_id: "q".into() };
        assert!(!fenced.is_retryable(), "a fenced run stops; it never re-initialises its producer");
        assert!(fenced.to_string().contains("fenced by a newer owner of query q"));
    }

    #[test]
    fn only_transient_kafka_failures_are_retryable() {
        let k = |code| Error::kafka("x", KafkaError::MessageProduction(code));
        assert!(k(RDKafkaErrorCode::BrokerTransportFailure).is_retryable());
        assert!(k(RDKafkaErrorCode::RequestTimedOut).is_retryable());
        assert!(Error::KafkaTimeout("reading".into()).is_retryable());
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::Fenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::MessageSizeTooLarge,
        ] {
            assert!(!k(code).is_retryable(), "{code:?}");
        }
        assert!(!Error::KafkaState("input topic 'x' does not exist".into()).is_retryable());
        let (broker, cause) = (String::from("b:9093"), String::from("x"));
        for wrong_setting in [
            Error::KafkaAuthentication { broker: broker.clone(), cause: cause.clone() },
            Error::KafkaTls { broker: broker.clone(), cause: cause.clone() },
            Error::KafkaProtocol { broker, protocol: "PLAINTEXT".into(), cause },
        ] {
            assert!(!wrong_setting.is_retryable(), "{wrong_setting}");
            assert_eq!(wrong_setting.component(), "kafka");
            assert!(wrong_setting.to_string().contains("b:9093"), "{wrong_setting}");
            assert!(wrong_setting.to_string().ends_with("a retry cannot help"), "{wrong_setting}");
        }
        assert!(!Error::config("--trigger", "bad").is_retryable());
    }
}
