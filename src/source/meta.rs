//! Reads partition watermarks from the broker for lag reporting and `consistency: "head"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::context::{KafkaContext, REPEAT_EVERY};
use super::{SourceError, client_config};
use crate::config::KafkaConfig;

/// Low and high watermark of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Log start offset.
    pub low: i64,
    /// Log end offset (the next offset to be written); with `read_committed`, the last
    /// stable offset.
    pub high: i64,
}

/// The result of one watermark reading.
#[derive(Debug, Default)]
pub struct Reading {
    /// Partitions that answered.
    pub marks: Vec<Watermarks>,
    /// Partitions that did not, with why.
    pub failed: Vec<((String, i32), String)>,
}

/// A metadata-only client (no consumer group); its calls block, so they run on tokio's
/// blocking pool.
#[derive(Clone)]
pub struct MetaClient {
    consumer: Arc<Mutex<Arc<BaseConsumer<KafkaContext>>>>,
    /// For replacing the client (see [`MetaClient::watermarks`]).
    kafka: KafkaConfig,
    /// When the client was last replaced.
    replaced_at: Arc<Mutex<Instant>>,
    /// When each partition's failure was last logged, for logging one line per outage.
    failures: Arc<Mutex<HashMap<(String, i32), Instant>>>,
}

impl MetaClient {
    /// Creates the client (it connects lazily).
    pub fn new(kafka: &KafkaConfig) -> Result<MetaClient, SourceError> {
        Ok(MetaClient {
            consumer: Arc::new(Mutex::new(Arc::new(create(kafka)?))),
            kafka: kafka.clone(),
            replaced_at: Arc::new(Mutex::new(Instant::now())),
            failures: Arc::default(),
        })
    }

    /// Current watermarks of the given partitions, all read in parallel; partitions whose
    /// read fails or times out are left out. A failure is logged at WARN once per partition
    /// and outage (again at most every 30 s while it lasts), and makes the client re-read
    /// the topic's metadata, so partitions added to a topic are found.
    pub async fn watermarks(&self, partitions: Vec<(String, i32)>, timeout: Duration) -> Reading {
        let client = Arc::clone(&self.consumer.lock());
        let reads = partitions.into_iter().map(|(topic, partition)| {
            let consumer = Arc::clone(&client);
            tokio::task::spawn_blocking(move || {
                let read =
                    consumer
                        .fetch_watermarks(&topic, partition, timeout)
                        .map(|(low, high)| Watermarks {
                            topic: topic.clone(),
                            partition,
                            low,
                            high,
                        });
                (topic, partition, read)
            })
        });
        let mut reading = Reading::default();
        let mut stale_topics: Vec<String> = Vec::new();
        for read in futures::future::join_all(reads).await {
            match read {
                Ok((_, _, Ok(w))) => reading.marks.push(w),
                Ok((topic, partition, Err(e))) => {
                    if !stale_topics.contains(&topic) {
                        stale_topics.push(topic.clone());
                    }
                    reading.failed.push(((topic, partition), e.to_string()));
                }
                Err(e) => tracing::warn!("watermark task failed: {e}"),
            }
        }
        let failing_again = self.note_failures(&reading);
        if failing_again {
            self.replace_client();
        } else if !stale_topics.is_empty() {
            let consumer = Arc::clone(&client);
            let refreshed = tokio::task::spawn_blocking(move || {
                for topic in stale_topics {
                    // Fills librdkafka's metadata cache (new partitions, moved leaders).
                    let _ = consumer.fetch_metadata(Some(&topic), timeout);
                }
            });
            let _ = refreshed.await;
        }
        // Serves the client's log and error events (nothing else arrives on it).
        let consumer = client;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = consumer.poll(Duration::ZERO);
        })
        .await;
        reading
    }

    /// After a broker restart librdkafka's metadata cache can keep a partition unknown to
    /// this client for minutes (a metadata refresh does not always clear it); a new client
    /// starts with an empty cache. At most every 5 s.
    fn replace_client(&self) {
        let mut replaced_at = self.replaced_at.lock();
        if replaced_at.elapsed() < Duration::from_secs(5) {
            return;
        }
        match create(&self.kafka) {
            Ok(fresh) => {
                *self.consumer.lock() = Arc::new(fresh);
                *replaced_at = Instant::now();
                tracing::debug!("watermark reads keep failing: replaced the watermark client");
            }
            Err(e) => tracing::warn!("cannot create a new watermark client: {e}"),
        }
    }

    /// Logs failed reads: once when a partition starts failing, then at most every 30 s;
    /// a partition that answers again is forgotten, so its next outage is logged at once.
    /// Returns true if a partition failed that had already failed before this reading.
    fn note_failures(&self, reading: &Reading) -> bool {
        let mut failures = self.failures.lock();
        for w in &reading.marks {
            if failures.remove(&(w.topic.clone(), w.partition)).is_some() {
                tracing::info!(
                    topic = w.topic,
                    partition = w.partition,
                    "watermarks readable again"
                );
            }
        }
        let now = Instant::now();
        let mut again = false;
        for (key, reason) in &reading.failed {
            again |= failures.contains_key(key);
            let due = failures
                .get(key)
                .is_none_or(|at| now.duration_since(*at) >= REPEAT_EVERY);
            if due {
                tracing::warn!(
                    topic = key.0,
                    partition = key.1,
                    "cannot read the partition's watermarks from the broker: {reason}"
                );
                failures.insert(key.clone(), now);
            }
        }
        again
    }
}

fn create(kafka: &KafkaConfig) -> Result<BaseConsumer<KafkaContext>, SourceError> {
    client_config(kafka, "meta")
        .create_with_context(KafkaContext::new("meta"))
        .map_err(SourceError::Config)
}
