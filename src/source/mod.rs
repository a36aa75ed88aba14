//! The Kafka side: a consumer that assigns every partition of the configured topics (no
//! consumer group, so each replica holds the whole view, like a Kafka Streams global table),
//! a metadata client for watermarks, and the dead-letter producer.
//!
//! freshet, not Kafka, owns the positions: offsets are never committed to the broker. The
//! poll loop starts from the offsets the opened checkpoints end at ([`StartOffsets`], given
//! as values) and then keeps its own read positions; it hands batches, which carry their
//! per-partition positions, to the pipeline over a bounded channel, so a slow apply slows
//! consumption instead of growing memory. The consume stage
//! ([`crate::pipeline::consume::Consumer`]) runs it on its own OS thread because
//! librdkafka's poll blocks.

pub mod context;
pub mod dlq;
pub mod health;
pub mod meta;
pub mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::cluster::Ownership;
use crate::config::KafkaConfig;
use crate::time::now_ms;
use crate::view::{BrokerFacts, Progress};

pub use context::KafkaContext;
pub use dlq::DeadLetters;
pub use health::broker_health;
pub use meta::MetaClient;
use topics::{TopicState, describe_topics};

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

/// A partition whose topic was recreated: what the view holds from it must go before any
/// record of the new generation is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReset {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// ID of the new generation (`None` when the broker reports none).
    pub topic_id: Option<Arc<str>>,
}

/// The consumer's position in a partition: every offset below it was delivered or needs no
/// applying (transaction markers, records of aborted transactions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Next offset the consumer would deliver.
    pub next_offset: i64,
}

/// What the consumer hands downstream in one go; applied in field order.
#[derive(Debug, Default)]
pub struct Batch {
    /// Partitions re-read from their earliest offset from here on.
    pub resets: Vec<PartitionReset>,
    /// Records, in partition order.
    pub records: Vec<SourceRecord>,
    /// Positions reached after `records` (only where they moved past the last record).
    pub positions: Vec<Position>,
    /// Partitions another cluster node owns now: their documents go after `records`.
    pub released: Vec<(Arc<str>, i32)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.resets.is_empty()
            && self.records.is_empty()
            && self.positions.is_empty()
            && self.released.is_empty()
    }
}

/// A request to re-read a partition from its earliest offset: its log is not the one the
/// restored offsets came from (found by watermarks, for partitions restored without a topic ID).
pub type ResetRequest = (String, i32);

/// Where the consumer starts, as values: what the opened checkpoints hold when consuming
/// begins. Partitions not listed start at their log start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOffsets {
    /// Per partition, the next offset to read.
    pub offsets: HashMap<(Arc<str>, i32), i64>,
    /// Per topic, the generation (Kafka topic ID) those offsets belong to, when known.
    pub topic_ids: HashMap<String, Arc<str>>,
}

impl StartOffsets {
    /// What `progress` holds for `topics` (all when empty), once checkpoints are opened.
    pub fn of(progress: &Progress, topics: &[String]) -> StartOffsets {
        let mut start = StartOffsets::default();
        for ((topic, partition), p) in progress.snapshot(topics) {
            if let Some(id) = &p.topic_id {
                start
                    .topic_ids
                    .entry(topic.to_string())
                    .or_insert_with(|| Arc::clone(id));
            }
            if let Some(next) = p.next_offset {
                start.offsets.insert((topic, partition), next);
            }
        }
        start
    }
}

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
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Records of aborted transactions are never applied; watermarks are read at the same
        // level, so "caught up" means caught up with what is committed.
        .set("isolation.level", "read_committed")
        // Measured on Apache Kafka (docs/BENCHMARKS.md): the default 500 ms costs occasional
        // stalls of that length; a short wait keeps produce-to-searchable latency low.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.error.backoff.ms", "50")
        .set("socket.keepalive.enable", "true");
    for (k, v) in &kafka.properties {
        cc.set(k, v);
    }
    cc
}

/// The consumer's settings: `assign` needs a group id, though no group is joined and no
/// offset is ever committed to it.
fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cc = client_config(kafka, "consumer");
    if !kafka.properties.contains_key("group.id") {
        cc.set("group.id", "freshet");
    }
    // A position the broker no longer has is reported to the poll loop instead of being
    // silently moved to the log start, so that records lost to retention are noticed exactly
    // (see `Poller::resolve_out_of_range`).
    if !kafka.properties.contains_key("auto.offset.reset") {
        cc.set("auto.offset.reset", "error");
    }
    cc
}

/// Creates the Kafka consumer client (the consume stage does so at start-up, so that a
/// configuration librdkafka refuses fails it before anything runs).
pub fn create_consumer(kafka: &KafkaConfig) -> Result<BaseConsumer<KafkaContext>, SourceError> {
    consumer_config(kafka)
        .create_with_context(KafkaContext::new("consumer"))
        .map_err(SourceError::Config)
}

/// Tuning of the poll loop.
#[derive(Clone, Debug)]
pub struct PollOptions {
    /// Largest batch handed to the apply thread at once.
    pub max_batch: usize,
    /// How often topic metadata is re-read to pick up new topics and partitions.
    pub metadata_refresh: Duration,
    /// In a cluster: the partitions this node owns (only those are read), and how long a
    /// lost partition's documents are kept before they are dropped. `None`: every partition.
    pub ownership: Option<(Arc<Ownership>, Duration)>,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            max_batch: 1024,
            metadata_refresh: Duration::from_secs(5),
            ownership: None,
        }
    }
}

/// One topic as the consumer currently reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AssignedTopic {
    /// The generation being read (`None` when the broker reports no IDs).
    id: Option<Arc<str>>,
    /// Partitions 0..count are assigned.
    partitions: i32,
}

/// What one metadata refresh decided.
#[derive(Default)]
struct Changes {
    /// Partitions to read from the start in a new generation (the batch says so first).
    resets: Vec<PartitionReset>,
    /// Topics no longer to be read (deleted).
    dropped: Vec<String>,
    /// Newly seen topics or partitions: (topic, first new partition, partition count).
    added: Vec<(String, i32, i32)>,
}

/// The poll loop's state: what is assigned and where each partition is read from.
pub struct Poller {
    kafka: KafkaConfig,
    consumer: BaseConsumer<KafkaContext>,
    topics: Vec<String>,
    facts: BrokerFacts,
    assigned: BTreeMap<String, AssignedTopic>,
    /// Per partition, the next offset to read: after the last record handed downstream, the
    /// position the consumer passed without delivering records, or where reading started
    /// (seeded from [`StartOffsets`]). Kept across client rebuilds, so a partition assigned
    /// again resumes exactly where the batches sent downstream end; dropped when a
    /// partition's documents are.
    positions: HashMap<(Arc<str>, i32), i64>,
    /// Per topic, the generation last read (seeded from [`StartOffsets`]): a different ID on
    /// the broker means the topic was recreated.
    topic_ids: HashMap<String, Arc<str>>,
    last_position_check: Instant,
    metadata_timeout: Duration,
    options: PollOptions,
    /// Rate limit for repeated broker errors.
    last_error_log: Option<Instant>,
    /// Partitions to re-read from the start (their logs are not the ones applied from).
    resets: std::sync::mpsc::Receiver<ResetRequest>,
    /// Set when the broker refused a fetch position and that is not resolved yet: when to try.
    out_of_range: Option<Instant>,
    /// Cluster handoff bookkeeping (unused without `options.ownership`).
    handoff: Handoff,
}

/// Partitions this node lost, on their way out.
#[derive(Default)]
struct Handoff {
    /// The ownership generation the assignment was last built for.
    generation: u64,
    /// Lost partitions still held, and when they are dropped.
    pending: HashMap<(Arc<str>, i32), Instant>,
    /// Partitions whose drop was sent: if regained, they are read from their log start.
    released: std::collections::HashSet<(Arc<str>, i32)>,
    /// When lost partitions were last looked for.
    checked: Option<Instant>,
}

/// How long to wait before retrying to resolve a refused fetch position (the broker may be
/// unreachable for the watermark reads it needs).
const OUT_OF_RANGE_RETRY: Duration = Duration::from_millis(500);

impl Poller {
    /// A poll loop over `consumer` (see [`create_consumer`]) reading `topics` from `start`.
    pub fn new(
        kafka: KafkaConfig,
        consumer: BaseConsumer<KafkaContext>,
        topics: Vec<String>,
        facts: BrokerFacts,
        start: StartOffsets,
        resets: std::sync::mpsc::Receiver<ResetRequest>,
        options: PollOptions,
    ) -> Poller {
        let metadata_timeout = Duration::from_millis(kafka.metadata_timeout_ms);
        Poller {
            kafka,
            consumer,
            topics,
            facts,
            assigned: BTreeMap::new(),
            positions: start.offsets,
            topic_ids: start.topic_ids,
            last_position_check: Instant::now(),
            metadata_timeout,
            options,
            last_error_log: None,
            resets,
            out_of_range: None,
            handoff: Handoff::default(),
        }
    }

    /// Polls until `stop` is cancelled or the next stage is gone.
    pub fn run(&mut self, batches: &mpsc::Sender<Batch>, stop: &CancellationToken) {
        let mut next_refresh = Instant::now();
        let mut batch = Batch::default();
        while !stop.is_cancelled() {
            if Instant::now() >= next_refresh {
                self.refresh(&mut batch);
                next_refresh = Instant::now()
                    + if self.all_topics_assigned() {
                        self.options.metadata_refresh
                    } else {
                        Duration::from_millis(500)
                    };
            }
            self.follow_ownership(&mut batch);
            let requested: Vec<ResetRequest> = self.resets.try_iter().collect();
            if !requested.is_empty() {
                self.reset_partitions(&requested, &mut batch);
            }
            if self.out_of_range.is_some_and(|at| Instant::now() >= at) {
                self.resolve_out_of_range();
            }
            if self.assigned.is_empty() {
                if !batch.is_empty() && batches.blocking_send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // Block briefly for the first record, then drain what is already buffered.
            let mut timeout = Duration::from_millis(100);
            while batch.records.len() < self.options.max_batch {
                match self.consumer.poll(timeout) {
                    None => {
                        self.check_positions(&mut batch);
                        break;
                    }
                    Some(Ok(msg)) => {
                        let topic: Arc<str> = Arc::from(msg.topic());
                        self.positions
                            .insert((Arc::clone(&topic), msg.partition()), msg.offset() + 1);
                        batch.records.push(SourceRecord {
                            topic,
                            partition: msg.partition(),
                            offset: msg.offset(),
                            key: msg.key().map(<[u8]>::to_vec),
                            value: msg.payload().map(<[u8]>::to_vec),
                            timestamp_ms: msg.timestamp().to_millis(),
                            ingested_at_ms: now_ms(),
                        });
                        timeout = Duration::ZERO;
                    }
                    Some(Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::AutoOffsetReset,
                    ))) => {
                        // The partition stays stopped until it is assigned again.
                        self.out_of_range.get_or_insert_with(Instant::now);
                        break;
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

    /// When idle, reports partitions whose position moved past the last delivered record
    /// (a transaction's commit marker at the log end, an aborted transaction), so that they
    /// count as caught up. At most every 100 ms: the call walks the whole assignment.
    fn check_positions(&mut self, batch: &mut Batch) {
        if self.last_position_check.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_position_check = Instant::now();
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for elem in positions.elements() {
            let Offset::Offset(position) = elem.offset() else {
                continue;
            };
            let key = (Arc::from(elem.topic()), elem.partition());
            let moved = self.positions.get(&key).is_some_and(|&d| position > d);
            if moved {
                self.positions.insert(key.clone(), position);
                batch.positions.push(Position {
                    topic: key.0,
                    partition: key.1,
                    next_offset: position,
                });
            }
        }
    }

    fn all_topics_assigned(&self) -> bool {
        self.topics.iter().all(|t| self.assigned.contains_key(t))
    }

    /// Reads every topic's ID and partition count and acts on what changed: a new topic or
    /// partition is assigned; a recreated topic (new ID) is read again from the start after
    /// its old documents are removed; a deleted topic stops being read (its documents stay
    /// until a new generation appears).
    fn refresh(&mut self, batch: &mut Batch) {
        let described =
            match describe_topics(self.consumer.client(), &self.topics, self.metadata_timeout) {
                Ok(d) => {
                    health::broker_health().mark_up();
                    d
                }
                // While every broker is down that is the one line said about it.
                Err(e) if health::broker_health().unreachable().is_some() => {
                    tracing::debug!("kafka: {e}; retrying");
                    return;
                }
                Err(e) => {
                    self.log_message(&format!("kafka: {e}; retrying"));
                    return;
                }
            };
        let changes = self.decide(described);
        if changes.resets.is_empty() && changes.dropped.is_empty() && changes.added.is_empty() {
            return;
        }
        let restart_from: Vec<(Arc<str>, i32)> = changes
            .resets
            .iter()
            .map(|r| (Arc::clone(&r.topic), r.partition))
            .collect();
        // What was read of them belongs to the old generation.
        for key in &restart_from {
            self.positions.remove(key);
        }
        batch.resets.extend(changes.resets);
        if restart_from.is_empty() && changes.dropped.is_empty() {
            self.assign_added(&changes.added);
        } else {
            // Re-assigning in place around a recreated or deleted topic has aborted librdkafka
            // (rd_kafka_assignment_partition_stopped: rktp_started); a new client has no
            // stopped partitions to trip over.
            let starts: Vec<_> = restart_from
                .into_iter()
                .map(|key| (key, Offset::Beginning))
                .collect();
            self.rebuild(&starts);
        }
    }

    /// The broker refused a fetch position: retention removed records before they were read
    /// (reading goes on from the log start; the view keeps what it applied), or the log now
    /// ends below the position (it is read again from its start, as `earliest` would). rdkafka
    /// does not say which partition failed, so every partition read from an explicit position
    /// is checked against its watermarks; the affected ones are assigned again, on a new client
    /// as in [`Self::refresh`].
    fn resolve_out_of_range(&mut self) {
        let mut starts = Vec::new();
        let mut unknown = false;
        let reading: Vec<((Arc<str>, i32), i64)> = self
            .positions
            .iter()
            .filter(|((topic, partition), _)| self.is_assigned(topic, *partition))
            .map(|(key, &position)| (key.clone(), position))
            .collect();
        for ((topic, partition), position) in reading {
            // 0 is where a partition read from its log start stands before its first record:
            // no position the broker could refuse.
            if position <= 0 {
                continue;
            }
            let (low, high) = match self.consumer.fetch_watermarks(
                &topic,
                partition,
                self.metadata_timeout,
            ) {
                Ok(marks) => marks,
                Err(e) => {
                    self.log_message(&format!(
                            "kafka: cannot read the watermarks of {topic} [{partition}] after the broker refused a fetch position: {e}; retrying"
                        ));
                    unknown = true;
                    continue;
                }
            };
            if position < low {
                self.facts
                    .set_watermarks(&topic, partition, low, high, now_ms());
                if self.facts.mark_truncated(&topic, partition) {
                    tracing::warn!(
                        topic = &*topic,
                        partition,
                        "retention removed offsets {position}..{} before they were applied: reading on from the log start offset {low}; documents keep the last version applied",
                        low - 1
                    );
                }
                starts.push(((topic, partition), Offset::Offset(low)));
            } else if position > high {
                tracing::warn!(
                    topic = &*topic,
                    partition,
                    "the log ends at offset {high}, below the position {position}: reading the partition again from its start"
                );
                starts.push(((topic, partition), Offset::Beginning));
            }
        }
        if unknown {
            self.out_of_range = Some(Instant::now() + OUT_OF_RANGE_RETRY);
            return;
        }
        self.out_of_range = None;
        // When no position is out of range any more (the log grew past it meanwhile), a new
        // client still restarts whatever partition the refusal stopped.
        self.rebuild(&starts);
    }

    /// Compares what the cluster reports with what is being read.
    fn decide(&mut self, described: Vec<(String, TopicState)>) -> Changes {
        let mut changes = Changes::default();
        for (name, state) in described {
            match state {
                TopicState::Present { id, partitions } => {
                    if let Some((ownership, _)) = &self.options.ownership {
                        ownership.set_partition_count(&name, partitions);
                    }
                    let id: Option<Arc<str>> = id.as_deref().map(Arc::from);
                    // Not assigned now: compare with the generation read last, or the one
                    // the start offsets came from.
                    let previous = match self.assigned.get(&name) {
                        Some(a) => a.id.clone(),
                        None => self.topic_ids.get(&name).cloned(),
                    };
                    if let Some(id) = &id {
                        self.topic_ids.insert(name.clone(), Arc::clone(id));
                    }
                    if let (Some(old), Some(new)) = (&previous, &id)
                        && old != new
                    {
                        tracing::warn!(
                            topic = name,
                            old_id = &**old,
                            new_id = &**new,
                            "the topic was deleted and created again: removing what was applied from the old topic and reading the new one from its start"
                        );
                        let mut reset: Vec<i32> = self
                            .facts
                            .held(std::slice::from_ref(&name))
                            .into_iter()
                            .map(|(_, p)| p)
                            .collect();
                        reset.extend(0..partitions);
                        reset.sort_unstable();
                        reset.dedup();
                        reset.retain(|&p| self.owns(&name, p));
                        for partition in reset {
                            changes.resets.push(PartitionReset {
                                topic: Arc::from(name.as_str()),
                                partition,
                                topic_id: id.clone(),
                            });
                        }
                        self.assigned.insert(name, AssignedTopic { id, partitions });
                        continue;
                    }
                    if let Some(id) = &id {
                        self.facts.adopt_topic_id(&name, id);
                    }
                    let before = self.assigned.get(&name).map_or(0, |a| a.partitions);
                    if partitions > before {
                        if before > 0 {
                            tracing::info!(
                                topic = name,
                                from = before,
                                to = partitions,
                                "partitions added: reading the new ones from their start"
                            );
                        }
                        changes.added.push((name.clone(), before, partitions));
                        self.assigned.insert(name, AssignedTopic { id, partitions });
                    }
                }
                TopicState::Missing => {
                    if self.assigned.remove(&name).is_some() {
                        tracing::warn!(
                            topic = name,
                            "the topic no longer exists: serving what was applied from it until it is created again"
                        );
                        changes.dropped.push(name);
                    } else {
                        self.log_message(&format!(
                            "topic `{name}` does not exist yet; waiting for it"
                        ));
                    }
                }
                TopicState::Failed(reason) => {
                    self.log_message(&format!("topic `{name}` cannot be read: {reason}"));
                }
            }
        }
        changes
    }

    /// Tracks a partition and adds it to `tpl`: from `start` if given, else where reading it
    /// stopped (its log start when it was never read, or its documents were dropped).
    fn add_partition(
        &mut self,
        tpl: &mut TopicPartitionList,
        topic: &str,
        partition: i32,
        topic_id: Option<Arc<str>>,
        start: Option<Offset>,
    ) {
        if !self.owns(topic, partition) {
            return;
        }
        // Its documents were dropped: nothing of it is held, whatever progress said then.
        let dropped = self.handoff.released.remove(&(Arc::from(topic), partition));
        let start = start.or(dropped.then_some(Offset::Beginning));
        self.facts.reading(topic, partition, topic_id);
        let resume = self.positions.get(&(Arc::from(topic), partition)).copied();
        let offset = match (start, resume) {
            (Some(start), _) => start,
            (None, Some(next)) => Offset::Offset(next),
            (None, None) => Offset::Beginning,
        };
        self.note_start(topic, partition, offset);
        if let Err(e) = tpl.add_partition_offset(topic, partition, offset) {
            self.log_error(&e);
        }
    }

    /// Adds new topics and partitions to the running assignment.
    fn assign_added(&mut self, added: &[(String, i32, i32)]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, from, to) in added {
            let id = self.assigned.get(topic).and_then(|a| a.id.clone());
            for p in *from..*to {
                self.add_partition(&mut tpl, topic, p, id.clone(), None);
            }
        }
        match self.consumer.incremental_assign(&tpl) {
            Ok(()) => {
                for (topic, from, to) in added {
                    tracing::info!(topic, partitions = to - from, "assigned partitions");
                }
            }
            Err(e) => {
                // Forget them, so the next refresh tries again.
                for (topic, from, _) in added {
                    match from {
                        0 => {
                            self.assigned.remove(topic);
                        }
                        n => {
                            if let Some(a) = self.assigned.get_mut(topic) {
                                a.partitions = *n;
                            }
                        }
                    }
                }
                self.log_error(&e);
            }
        }
    }

    /// Replaces the consumer by a new one assigned to every partition being read: those in
    /// `starts` at the offset given there, the others where reading them stopped.
    fn rebuild(&mut self, starts: &[((Arc<str>, i32), Offset)]) {
        let consumer = match create_consumer(&self.kafka) {
            Ok(c) => c,
            Err(e) => {
                self.log_message(&format!("cannot create a new Kafka consumer: {e}"));
                return;
            }
        };
        self.consumer = consumer;
        let mut tpl = TopicPartitionList::new();
        for (topic, a) in self.assigned.clone() {
            for p in 0..a.partitions {
                let start = starts
                    .iter()
                    .find(|((t, sp), _)| **t == *topic && *sp == p)
                    .map(|(_, offset)| *offset);
                self.add_partition(&mut tpl, &topic, p, a.id.clone(), start);
            }
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            self.log_error(&e);
            // Nothing is assigned: the next refresh assigns everything again.
            self.assigned.clear();
        }
    }

    /// True if the partition is in the current assignment.
    fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.assigned
            .get(topic)
            .is_some_and(|a| partition < a.partitions)
            && self.owns(topic, partition)
    }

    /// True if this node reads the partition (always, outside a cluster).
    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.options
            .ownership
            .as_ref()
            .is_none_or(|(o, _)| o.owns(topic, partition))
    }

    /// In a cluster: reads exactly the owned partitions (a new client when the ownership
    /// changed, each partition where reading it stopped), and drops the documents of lost ones
    /// once the handoff grace has passed (the drop follows their last records downstream).
    fn follow_ownership(&mut self, batch: &mut Batch) {
        let Some((ownership, grace)) = self.options.ownership.clone() else {
            return;
        };
        let generation = ownership.generation();
        if generation != self.handoff.generation {
            self.handoff.generation = generation;
            self.rebuild(&[]);
        }
        // Before the first assignment nothing is known to be lost; a node leaving at
        // shutdown keeps what it holds for its last checkpoint.
        if !ownership.assigned_once()
            || ownership.is_leaving()
            || self
                .handoff
                .checked
                .is_some_and(|at| at.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.handoff.checked = Some(Instant::now());
        let now = Instant::now();
        for key in self.facts.held(&self.topics) {
            let partition = key.1;
            if !ownership.owns(&key.0, partition) && !self.handoff.released.contains(&key) {
                self.handoff.pending.entry(key).or_insert(now + grace);
            }
        }
        let mut due = Vec::new();
        self.handoff.pending.retain(|(topic, partition), at| {
            if ownership.owns(topic, *partition) {
                return false;
            }
            if *at <= now {
                due.push((Arc::clone(topic), *partition));
                return false;
            }
            true
        });
        for key in due {
            self.positions.remove(&key);
            self.handoff.released.insert(key.clone());
            batch.released.push(key);
        }
    }

    /// Remembers where reading a partition starts (for [`Self::check_positions`]).
    fn note_start(&mut self, topic: &str, partition: i32, offset: Offset) {
        let start = match offset {
            Offset::Offset(o) => o,
            _ => 0,
        };
        self.positions.insert((Arc::from(topic), partition), start);
    }

    /// Re-reads partitions whose logs are not the ones their restored offsets came from.
    fn reset_partitions(&mut self, requested: &[ResetRequest], batch: &mut Batch) {
        let mut from_start = Vec::new();
        for (topic, partition) in requested {
            let Some(a) = self.assigned.get(topic) else {
                continue;
            };
            tracing::warn!(
                topic,
                partition,
                "re-reading the partition from its log start: its log is not the one the restored offsets came from"
            );
            batch.resets.push(PartitionReset {
                topic: Arc::from(topic.as_str()),
                partition: *partition,
                topic_id: a.id.clone(),
            });
            from_start.push(((Arc::from(topic.as_str()), *partition), Offset::Beginning));
        }
        if !from_start.is_empty() {
            self.rebuild(&from_start);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_are_what_the_opened_checkpoints_hold() {
        let progress = Progress::default();
        // Restored with an ID, restored from an older freshet without one, and a partition
        // only known to be read (nothing applied yet).
        progress.track("a", 0, Some(42), Some(Arc::from("id-a")));
        progress.track("a", 1, Some(7), None);
        progress.track("b", 0, Some(3), None);
        progress.track("c", 0, None, Some(Arc::from("id-c")));

        let start = StartOffsets::of(&progress, &[]);
        assert_eq!(start.offsets.len(), 3);
        assert_eq!(start.offsets[&(Arc::from("a"), 0)], 42);
        assert_eq!(start.offsets[&(Arc::from("a"), 1)], 7);
        assert_eq!(start.offsets[&(Arc::from("b"), 0)], 3);
        assert!(!start.offsets.contains_key(&(Arc::from("c"), 0)));
        assert_eq!(start.topic_ids.get("a").map(|id| &**id), Some("id-a"));
        assert_eq!(start.topic_ids.get("c").map(|id| &**id), Some("id-c"));
        assert!(!start.topic_ids.contains_key("b"));

        // Only the topics asked for.
        let only_b = StartOffsets::of(&progress, &["b".to_string()]);
        assert_eq!(only_b.offsets.len(), 1);
        assert!(only_b.topic_ids.is_empty());
    }

    #[test]
    fn broker_facts_cannot_move_applied_offsets() {
        let progress = Arc::new(Progress::default());
        progress.track("t", 0, Some(10), None);
        let facts = BrokerFacts::new(Arc::clone(&progress));
        // Reading a partition again keeps what was applied; a new one starts with nothing.
        facts.reading("t", 0, Some(Arc::from("id")));
        facts.reading("t", 1, Some(Arc::from("id")));
        facts.set_watermarks("t", 0, 0, 20, 1);
        assert_eq!(progress.next_offset("t", 0), Some(10));
        assert_eq!(progress.next_offset("t", 1), None);
        let held: Vec<i32> = facts.held(&[]).into_iter().map(|(_, p)| p).collect();
        assert_eq!(held, vec![0, 1]);
    }
}
