//! Which partitions this node owns, as its Kafka consumer group decides.
//!
//! A membership consumer subscribes to the collections' topics in the node's group and never
//! reads a record: partitions are paused as soon as they are assigned, and no offset is ever
//! committed (freshet's own checkpoints say where reading resumes). Its rebalance callback
//! keeps [`Ownership`] current; the data consumer (`source::Poller`) assigns what it says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use super::config::{ClusterConfig, GroupProtocol};
use crate::config::KafkaConfig;
use crate::source::{KafkaContext, SourceError, client_config};

/// A partition: topic and number.
pub type PartitionKey = (Arc<str>, i32);

/// The partitions this node owns, shared by the membership consumer (writer), the data
/// consumer and the query side (readers).
#[derive(Debug, Default)]
pub struct Ownership {
    owned: RwLock<BTreeSet<PartitionKey>>,
    /// Bumped on every change of `owned`.
    generation: AtomicU64,
    /// Set at the first assignment: until then nothing is known to be owned or lost.
    assigned_once: AtomicBool,
    /// Partition count per topic as last read from the broker.
    partition_counts: RwLock<BTreeMap<String, i32>>,
    /// The node is shutting down and has left its group: it owns nothing, but keeps what
    /// it holds (no handoff drop), so its last checkpoint still has it for a restart.
    leaving: AtomicBool,
}

impl Ownership {
    /// True if this node owns the partition.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.read().contains(&(Arc::from(topic), partition))
    }

    /// The owned partitions, sorted.
    pub fn owned(&self) -> Vec<PartitionKey> {
        self.owned.read().iter().cloned().collect()
    }

    /// Changes with every gain or loss.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once the group has assigned this node anything (possibly nothing).
    pub fn assigned_once(&self) -> bool {
        self.assigned_once.load(Ordering::Acquire)
    }

    /// Adds assigned partitions.
    pub fn gain(&self, partitions: impl IntoIterator<Item = PartitionKey>) {
        let mut owned = self.owned.write();
        owned.extend(partitions);
        self.assigned_once.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes revoked partitions.
    pub fn lose(&self, partitions: impl IntoIterator<Item = PartitionKey>) {
        let mut owned = self.owned.write();
        for p in partitions {
            owned.remove(&p);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Leaves: owns nothing from now on, and hands nothing over for dropping (see
    /// [`is_leaving`](Self::is_leaving)).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let all = self.owned();
        self.lose(all);
    }

    /// True once the node has left its group at shutdown: lost partitions are kept, not
    /// dropped after the grace period.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Records how many partitions a topic has (the consumer reads this from the broker).
    pub fn set_partition_count(&self, topic: &str, partitions: i32) {
        self.partition_counts
            .write()
            .insert(topic.to_string(), partitions);
    }

    /// Partition count per topic, as far as known.
    pub fn partition_counts(&self) -> BTreeMap<String, i32> {
        self.partition_counts.read().clone()
    }
}

/// The membership consumer's context: logs like every freshet client, and turns rebalances
/// into ownership changes.
struct MembershipContext {
    log: KafkaContext,
    ownership: Arc<Ownership>,
}

impl ClientContext for MembershipContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ConsumerContext for MembershipContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Records are read by the data consumer from freshet's own offsets; this one
                // only holds the assignment.
                if let Err(e) = consumer.pause(tpl) {
                    tracing::debug!("membership consumer: cannot pause {tpl:?}: {e}");
                }
                let gained = keys(tpl);
                tracing::info!(partitions = ?gained, "cluster: partitions assigned to this node");
                self.ownership.gain(gained);
            }
            Rebalance::Revoke(tpl) => {
                let lost = keys(tpl);
                tracing::info!(partitions = ?lost, "cluster: partitions revoked from this node");
                self.ownership.lose(lost);
            }
            Rebalance::Error(e) => tracing::warn!("cluster: rebalance failed: {e}"),
        }
    }
}

/// The running membership consumer; leaves the group when stopped (a clean handoff).
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Joins `cluster`'s group for `topics` and keeps `ownership` current until stopped.
    pub fn start(
        kafka: &KafkaConfig,
        cluster: &ClusterConfig,
        topics: Vec<String>,
        ownership: Arc<Ownership>,
    ) -> Result<Membership, SourceError> {
        let mut cc = client_config(kafka, "membership");
        cc.set("group.id", cluster.group_id())
            .set("enable.auto.commit", "false")
            // Nothing is ever fetched (partitions are paused); should a fetch slip through
            // before the pause, it starts at the log end and is dropped.
            .set("auto.offset.reset", "latest");
        match cluster.group_protocol {
            GroupProtocol::Consumer => {
                cc.set("group.protocol", "consumer");
            }
            GroupProtocol::Classic => {
                cc.set("group.protocol", "classic")
                    .set("partition.assignment.strategy", "cooperative-sticky");
                if let Some(ms) = cluster.session_timeout_ms {
                    cc.set("session.timeout.ms", ms.to_string())
                        .set("heartbeat.interval.ms", (ms / 3).max(100).to_string());
                }
            }
        }
        let consumer: BaseConsumer<MembershipContext> = cc
            .create_with_context(MembershipContext {
                log: KafkaContext::new("membership"),
                ownership,
            })
            .map_err(SourceError::Config)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(SourceError::Config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("freshet-membership".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    // Serves the rebalance callback (and, for the classic protocol, proves
                    // liveness); a record that arrives before its partition was paused is
                    // dropped: the data consumer reads it.
                    if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                        tracing::debug!("membership consumer: {e}");
                    }
                }
                // Leaving the group hands the partitions over now, not after a session timeout.
                consumer.unsubscribe();
                let _ = consumer.poll(Duration::from_millis(200));
            })
            .map_err(|e| SourceError::Config(KafkaError::ClientCreation(e.to_string())))?;
        Ok(Membership {
            stop,
            thread: Some(thread),
        })
    }

    /// Leaves the group and waits for the consumer thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_and_losses_move_the_generation() {
        let o = Ownership::default();
        assert!(!o.assigned_once());
        let g0 = o.generation();
        o.gain([(Arc::from("t"), 0), (Arc::from("t"), 2)]);
        assert!(o.assigned_once() && o.owns("t", 2) && !o.owns("t", 1));
        o.lose([(Arc::from("t"), 2)]);
        assert!(!o.owns("t", 2) && o.owns("t", 0));
        assert_eq!(o.generation(), g0 + 2);
        assert_eq!(o.owned(), vec![(Arc::from("t"), 0)]);
    }
}
