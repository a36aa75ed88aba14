//! The librdkafka client context shared by freshet's Kafka clients: librdkafka's own log
//! lines go through `tracing` (in freshet's format, at levels that fit), and repeated client
//! errors — a broker that is down, a wrong password, an untrusted certificate — are logged once
//! and then at most every [`REPEAT_EVERY`], with a count of what was held back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How often one kind of repeated message is logged.
pub const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Context of every freshet Kafka client; `purpose` names the client in log lines.
pub struct KafkaContext {
    purpose: &'static str,
    limiter: RateLimiter,
}

impl KafkaContext {
    /// A context for the client used for `purpose` (consumer, meta, dead-letters).
    pub fn new(purpose: &'static str) -> KafkaContext {
        KafkaContext {
            purpose,
            limiter: RateLimiter::default(),
        }
    }
}

/// How serious a client error is for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    /// freshet cannot work until someone fixes the configuration (credentials, certificates).
    Misconfigured,
    /// Transient: the broker is unreachable or restarting; the client retries by itself.
    Transient,
}

fn classify(code: Option<RDKafkaErrorCode>) -> Severity {
    match code {
        Some(
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState,
        ) => Severity::Misconfigured,
        _ => Severity::Transient,
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let purpose = self.purpose;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                // Connection failures are also reported through `error` below, which says
                // what to do about them; here they are detail for whoever enables debug.
                if matches!(fac, "FAIL" | "BROKERFAIL" | "ERROR") {
                    tracing::debug!(target: "librdkafka", client = purpose, "{fac}: {message}");
                    return;
                }
                if let Some(held_back) = self.limiter.admit(fac) {
                    tracing::warn!(target: "librdkafka", client = purpose, held_back, "{fac}: {message}");
                }
            }
            // A disconnect is logged at this level too; `error` reports what matters of it.
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info
                if matches!(fac, "FAIL" | "BROKERFAIL" | "ERROR") =>
            {
                tracing::debug!(target: "librdkafka", client = purpose, "{fac}: {message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client = purpose, "{fac}: {message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client = purpose, "{fac}: {message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            super::health::broker_health().mark_down(reason);
            return;
        }
        if classify(code) == Severity::Transient
            && super::health::broker_health().unreachable().is_some()
        {
            // Part of an outage already reported as "broker unreachable".
            tracing::debug!(target: "librdkafka", client = self.purpose, "kafka: {reason}");
            return;
        }
        let key = format!("{code:?}");
        let Some(held_back) = self.limiter.admit(&key) else {
            return;
        };
        let purpose = self.purpose;
        if classify(code) == Severity::Misconfigured {
            super::health::broker_health().mark_refused(reason);
        }
        match classify(code) {
            Severity::Misconfigured => tracing::error!(
                target: "librdkafka",
                client = purpose,
                held_back,
                "cannot use the Kafka cluster: {reason} (check [kafka] brokers and [kafka.properties]; repeated at most every {} s)",
                REPEAT_EVERY.as_secs()
            ),
            Severity::Transient => tracing::warn!(
                target: "librdkafka",
                client = purpose,
                held_back,
                "kafka: {reason} (the client retries; repeated at most every {} s)",
                REPEAT_EVERY.as_secs()
            ),
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// Lets one message per key through every [`REPEAT_EVERY`]; reports how many were held back.
#[derive(Default)]
struct RateLimiter {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimiter {
    /// `Some(held back since the last admitted one)` if a message with this key may be logged now.
    fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        match seen.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < REPEAT_EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let released = *held;
                *last = now;
                *held = 0;
                Some(released)
            }
            None => {
                // Bounded: keys are librdkafka facilities and error codes, a small set.
                if seen.len() < 256 {
                    seen.insert(key.to_string(), (now, 0));
                }
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_messages_are_held_back_and_counted() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at("FAIL", t0), Some(0));
        assert_eq!(limiter.admit_at("FAIL", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit_at("FAIL", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            limiter.admit_at("OTHER", t0 + Duration::from_secs(2)),
            Some(0),
            "keys are limited independently"
        );
        assert_eq!(
            limiter.admit_at("FAIL", t0 + REPEAT_EVERY + Duration::from_secs(1)),
            Some(2),
            "the next admitted message reports what was held back"
        );
    }

    #[test]
    fn credentials_and_certificates_are_configuration_errors() {
        assert_eq!(
            classify(Some(RDKafkaErrorCode::Authentication)),
            Severity::Misconfigured
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::SSL)),
            Severity::Misconfigured
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::AllBrokersDown)),
            Severity::Transient
        );
        assert_eq!(classify(None), Severity::Transient);
    }
}
