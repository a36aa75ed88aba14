//! The Kafka side: a consumer that assigns every partition of the configured topics (no
//! consumer group, so each replica holds the whole view, like a Kafka Streams global table),
//! a metadata client for watermarks, and the dead-letter producer.
//!
//! freshet, not Kafka, owns the positions: offsets are never committed to the broker; a
//! partition resumes at the view's next offset. The poll loop runs on its own OS thread
//! because librdkafka's poll blocks, and hands batches to the apply thread over a bounded
//! channel, so a slow apply slows consumption instead of growing memory.

pub mod dlq;
pub mod meta;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::KafkaConfig;
use crate::time::now_ms;
use crate::view::Progress;

pub use dlq::DeadLetters;
pub use meta::MetaClient;

/// A record as received, owned so it can cross to the apply thread.
#[derive(Clone, Debug)]
pub struct SourceRecord {
    /// Topic it came from.
    pub topic: Arc<str>,
    /// Partition it came from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// The Kafka key (`None` when absent).
    pub key: Option<Vec<u8>>,
    /// The Kafka value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// The Kafka timestamp (create or log-append time).
    pub timestamp_ms: Option<i64>,
    /// When this process received it.
    pub ingested_at_ms: i64,
}

/// What the consumer hands downstream in one go.
#[derive(Debug, Default)]
pub struct Batch {
    /// Partitions re-read from their earliest offset from here on: everything the view holds
    /// from them must go before `records` are applied (the log they came from is gone).
    pub resets: Vec<(Arc<str>, i32)>,
    /// Records, in partition order.
    pub records: Vec<SourceRecord>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.resets.is_empty() && self.records.is_empty()
    }
}

/// A request to re-read a partition from its earliest offset.
pub type ResetRequest = (String, i32);

/// Errors setting up Kafka clients.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration (a bad `[kafka.properties]` entry, usually).
    #[error("kafka client configuration rejected: {0}")]
    Config(#[source] rdkafka::error::KafkaError),
}

/// The librdkafka settings every freshet client starts from; `[kafka.properties]` wins.
pub fn client_config(kafka: &KafkaConfig, purpose: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        .set("client.id", format!("freshet-{purpose}"))
        // `assign` still wants a group id, but nothing is ever committed to it.
        .set("group.id", "freshet")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Low fetch wait: some brokers (tansu) do not wake a waiting fetch when data arrives,
        // so this bounds produce→apply latency.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.error.backoff.ms", "50")
        .set("socket.keepalive.enable", "true");
    for (k, v) in &kafka.properties {
        cc.set(k, v);
    }
    cc
}

/// Tuning of the poll loop.
#[derive(Clone, Debug)]
pub struct PollOptions {
    /// Largest batch handed to the apply thread at once.
    pub max_batch: usize,
    /// How often topic metadata is re-read to pick up new topics and partitions.
    pub metadata_refresh: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            max_batch: 1024,
            metadata_refresh: Duration::from_secs(5),
        }
    }
}

/// How the consumer thread talks to the rest of the pipeline.
pub struct ConsumerLinks {
    /// Where batches go (bounded: a full channel stops polling).
    pub batches: mpsc::Sender<Batch>,
    /// Partitions to re-read from the start.
    pub resets: std::sync::mpsc::Receiver<ResetRequest>,
    /// Set to stop polling.
    pub stop: Arc<AtomicBool>,
}

/// Runs the consumer on a dedicated thread until `stop` is set or the receiver is dropped.
/// `before` runs on that thread before anything is assigned (restoring a snapshot, so that
/// partitions resume where it left off).
pub fn spawn_consumer(
    kafka: &KafkaConfig,
    topics: Vec<String>,
    progress: Arc<Progress>,
    links: ConsumerLinks,
    options: PollOptions,
    before: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let consumer: BaseConsumer = client_config(kafka, "consumer")
        .create()
        .map_err(SourceError::Config)?;
    let metadata_timeout = Duration::from_millis(kafka.metadata_timeout_ms);
    let handle = std::thread::Builder::new()
        .name("freshet-consumer".into())
        .spawn(move || {
            before();
            let mut poller = Poller {
                consumer,
                topics,
                progress,
                assigned: BTreeMap::new(),
                metadata_timeout,
                options,
                last_error_log: None,
                resets: links.resets,
            };
            poller.run(&links.batches, &links.stop);
        })
        .map_err(|e| {
            SourceError::Config(rdkafka::error::KafkaError::ClientCreation(e.to_string()))
        })?;
    Ok(handle)
}

struct Poller {
    consumer: BaseConsumer,
    topics: Vec<String>,
    progress: Arc<Progress>,
    /// Partition count per topic as currently assigned.
    assigned: BTreeMap<String, i32>,
    metadata_timeout: Duration,
    options: PollOptions,
    /// Rate limit for repeated broker errors.
    last_error_log: Option<Instant>,
    /// Partitions to re-read from the start (their offsets no longer exist).
    resets: std::sync::mpsc::Receiver<ResetRequest>,
}

impl Poller {
    fn run(&mut self, batches: &mpsc::Sender<Batch>, stop: &AtomicBool) {
        let mut next_refresh = Instant::now();
        let mut batch = Batch::default();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_refresh {
                self.refresh_assignment();
                next_refresh = Instant::now()
                    + if self.all_topics_assigned() {
                        self.options.metadata_refresh
                    } else {
                        Duration::from_millis(500)
                    };
            }
            while let Ok((topic, partition)) = self.resets.try_recv() {
                if self.reassign_from_start(&topic, partition) {
                    batch.resets.push((Arc::from(topic.as_str()), partition));
                }
            }
            if self.assigned.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // Block briefly for the first record, then drain what is already buffered.
            let mut timeout = Duration::from_millis(100);
            while batch.records.len() < self.options.max_batch {
                match self.consumer.poll(timeout) {
                    None => break,
                    Some(Ok(msg)) => {
                        batch.records.push(SourceRecord {
                            topic: Arc::from(msg.topic()),
                            partition: msg.partition(),
                            offset: msg.offset(),
                            key: msg.key().map(<[u8]>::to_vec),
                            value: msg.payload().map(<[u8]>::to_vec),
                            timestamp_ms: msg.timestamp().to_millis(),
                            ingested_at_ms: now_ms(),
                        });
                        timeout = Duration::ZERO;
                    }
                    Some(Err(e)) => {
                        self.log_error(&e);
                        break;
                    }
                }
            }
            if !batch.is_empty() && batches.blocking_send(std::mem::take(&mut batch)).is_err() {
                return; // the apply thread is gone: shutting down
            }
        }
    }

    /// Assigns every partition again, `partition` of `topic` from its earliest offset and the
    /// others where the view stands. Returns false if the assignment failed.
    fn reassign_from_start(&mut self, topic: &str, partition: i32) -> bool {
        let mut tpl = TopicPartitionList::new();
        for (t, &count) in &self.assigned {
            for p in 0..count {
                let offset = if t == topic && p == partition {
                    Offset::Beginning
                } else {
                    match self.progress.next_offset(t, p) {
                        Some(next) => Offset::Offset(next),
                        None => Offset::Beginning,
                    }
                };
                if tpl.add_partition_offset(t, p, offset).is_err() {
                    return false;
                }
            }
        }
        match self.consumer.assign(&tpl) {
            Ok(()) => {
                tracing::warn!(
                    topic,
                    partition,
                    "re-reading partition from its earliest offset"
                );
                true
            }
            Err(e) => {
                self.log_error(&e);
                false
            }
        }
    }

    fn all_topics_assigned(&self) -> bool {
        self.topics.iter().all(|t| self.assigned.contains_key(t))
    }

    /// Reads topic metadata and (re)assigns every partition, resuming each at the view's
    /// next offset (or the earliest offset for a partition never seen).
    fn refresh_assignment(&mut self) {
        let mut wanted = self.assigned.clone();
        for topic in &self.topics.clone() {
            match self
                .consumer
                .fetch_metadata(Some(topic), self.metadata_timeout)
            {
                Ok(md) => {
                    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                        continue;
                    };
                    if let Some(err) = t.error() {
                        if !self.assigned.contains_key(topic) {
                            self.log_message(&format!(
                                "topic `{topic}` not available yet ({err:?}); retrying"
                            ));
                        }
                        continue;
                    }
                    let count = t.partitions().len() as i32;
                    if count > 0 && wanted.get(topic).is_none_or(|&c| c < count) {
                        wanted.insert(topic.clone(), count);
                    }
                }
                Err(e) => self.log_error(&e),
            }
        }
        if wanted == self.assigned {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, &count) in &wanted {
            for p in 0..count {
                self.progress.track(topic, p, None);
                let offset = match self.progress.next_offset(topic, p) {
                    Some(next) => Offset::Offset(next),
                    None => Offset::Beginning,
                };
                if let Err(e) = tpl.add_partition_offset(topic, p, offset) {
                    self.log_error(&e);
                }
            }
        }
        match self.consumer.assign(&tpl) {
            Ok(()) => {
                for (topic, count) in &wanted {
                    if self.assigned.get(topic) != Some(count) {
                        tracing::info!(topic, partitions = count, "assigned all partitions");
                    }
                }
                self.assigned = wanted;
            }
            Err(e) => self.log_error(&e),
        }
    }

    fn log_error(&mut self, e: &rdkafka::error::KafkaError) {
        self.log_message(&format!("kafka: {e}"));
    }

    fn log_message(&mut self, message: &str) {
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if due {
            tracing::warn!("{message}");
            self.last_error_log = Some(Instant::now());
        }
    }
}
