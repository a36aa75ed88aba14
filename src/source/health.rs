//! Whether the Kafka cluster can be reached, as one process-wide state with one log line per
//! change: "broker unreachable" when librdkafka reports every broker down, "reachable again"
//! at the next answer from the broker. `/readyz` and the catch-up log read it, so an outage
//! is called what it is rather than "catching up".

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The cluster's reachability as last observed by any of freshet's Kafka clients.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    down: Mutex<Option<Outage>>,
    /// When a client last got an answer from the broker.
    last_answer: Mutex<Option<Instant>>,
}

/// Each client reports "all brokers down" on its own, some late (a client that was still
/// waiting out its reconnect backoff when the broker came back): a report this soon after
/// another client's answer is not an outage. A real one is still noticed, by the watermark
/// reads that keep failing.
const ANSWERED_RECENTLY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Outage {
    since: Instant,
    reason: String,
    /// The cluster answered but refused freshet (credentials, certificates).
    refused: bool,
}

/// The process's broker health (freshet runs one pipeline per process).
pub fn broker_health() -> &'static BrokerHealth {
    static HEALTH: OnceLock<BrokerHealth> = OnceLock::new();
    HEALTH.get_or_init(BrokerHealth::default)
}

impl BrokerHealth {
    /// Every broker is down; logs the change once (the clients keep retrying by themselves).
    pub fn mark_down(&self, reason: &str) {
        if self
            .last_answer
            .lock()
            .is_some_and(|at| at.elapsed() < ANSWERED_RECENTLY)
        {
            return;
        }
        let mut down = self.down.lock();
        if down.is_none() {
            tracing::warn!(
                "broker unreachable: {reason}; serving what was applied, not ready until it is back (kafka.brokers)"
            );
            *down = Some(Outage {
                since: Instant::now(),
                reason: reason.to_string(),
                refused: false,
            });
        }
    }

    /// The cluster refuses freshet (credentials, certificates): the cause, already logged as
    /// an ERROR by the caller, is what `/readyz` says from now on.
    pub fn mark_refused(&self, reason: &str) {
        let mut down = self.down.lock();
        let since = down.as_ref().map_or_else(Instant::now, |o| o.since);
        *down = Some(Outage {
            since,
            reason: reason.to_string(),
            refused: true,
        });
    }

    /// The broker answered; logs the change once if it was down.
    pub fn mark_up(&self) {
        *self.last_answer.lock() = Some(Instant::now());
        let mut down = self.down.lock();
        if let Some(outage) = down.take() {
            tracing::info!(
                "broker reachable again after {:.0} s",
                outage.since.elapsed().as_secs_f64()
            );
        }
    }

    /// While the broker is unreachable (or refuses freshet): why, and for how long.
    pub fn unreachable(&self) -> Option<(String, Duration)> {
        self.down
            .lock()
            .as_ref()
            .map(|o| (o.reason.clone(), o.since.elapsed()))
    }

    /// A one-line description for `/readyz`, while unreachable.
    pub fn describe(&self) -> Option<String> {
        let down = self.down.lock();
        let outage = down.as_ref()?;
        let secs = outage.since.elapsed().as_secs();
        Some(if outage.refused {
            format!(
                "cannot use the Kafka cluster for {secs} s: {}",
                outage.reason
            )
        } else {
            format!("broker unreachable for {secs} s: {}", outage.reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_state_until_the_broker_answers() {
        let health = BrokerHealth::default();
        assert!(health.describe().is_none());
        health.mark_down("1/1 brokers are down");
        health.mark_down("something later");
        let text = health.describe().unwrap_or_default();
        assert!(
            text.starts_with("broker unreachable for 0 s: 1/1 brokers are down"),
            "{text}"
        );
        health.mark_up();
        assert!(health.unreachable().is_none());
        // A late report from another client, just after an answer, is not a new outage.
        health.mark_down("1/1 brokers are down");
        assert!(health.unreachable().is_none());
    }
}
