//! Per-partition progress: what has been applied, what the broker has, and a signal that
//! wakes `consistency: "head"` readers when the apply task moves forward.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::watch;

/// Why a partition is being read again from its log start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RereadReason {
    /// The topic was deleted and created again (its ID changed): the old generation's
    /// documents were removed and the new log is read from its start.
    TopicRecreated,
    /// Retention removed records before they were applied: reading continues from the log
    /// start offset; what the view holds stays.
    LogTruncated,
}

impl RereadReason {
    /// How answers and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            RereadReason::TopicRecreated => "topic recreated",
            RereadReason::LogTruncated => "log truncated by retention",
        }
    }
}

/// A re-read in progress: until the partition reaches `until`, it is not caught up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reread {
    /// Why.
    pub reason: RereadReason,
    /// The log end offset read after the re-read began (`None` until the next reading).
    pub until: Option<i64>,
}

/// Where one partition stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Next offset to apply (last applied + 1); `None` before the first record.
    pub next_offset: Option<i64>,
    /// Log end offset last read from the broker (with `read_committed`, the last stable
    /// offset: records of open transactions are not readable yet).
    pub high_watermark: Option<i64>,
    /// Log start offset last read from the broker (records below it are gone).
    pub low_watermark: Option<i64>,
    /// When the broker's watermarks were last read (ms since the epoch).
    pub watermarks_read_at_ms: Option<i64>,
    /// ID of the topic generation the applied offsets belong to (Kafka topic ID), once known.
    pub topic_id: Option<Arc<str>>,
    /// Set while the partition is read again from its log start.
    pub reread: Option<Reread>,
    /// For a partition restored without a topic ID (a snapshot from an older freshet): its
    /// log ended below the restored offset at the first reading, so it is not the log the
    /// offsets came from.
    pub log_replaced: bool,
}

impl PartitionProgress {
    /// Records the broker has that are not applied yet; `None` while the high watermark is unknown.
    pub fn lag(&self) -> Option<i64> {
        let high = self.high_watermark?;
        let start = self
            .next_offset
            .unwrap_or(0)
            .max(self.low_watermark.unwrap_or(0));
        Some((high - start).max(0))
    }

    /// True once everything below `target` has been applied (or no longer exists).
    pub fn reached(&self, target: i64) -> bool {
        let start = self
            .next_offset
            .unwrap_or(0)
            .max(self.low_watermark.unwrap_or(0));
        start >= target
    }
}

/// A topic-partition.
pub type PartitionKey = (Arc<str>, i32);

/// An offset a partition must reach: (topic, partition, next offset to apply).
pub type OffsetTarget = (Arc<str>, i32, i64);

/// Progress of every assigned partition. Applied offsets move only in the apply stage (from
/// what each batch carries, [`Self::advance`]) and at start-up when checkpoints are opened; the
/// consumer writes broker facts through [`BrokerFacts`]; readers take copies.
#[derive(Debug)]
pub struct Progress {
    partitions: RwLock<BTreeMap<PartitionKey, PartitionProgress>>,
    /// Bumped after each applied batch so waiters re-check their targets.
    applied: watch::Sender<u64>,
    /// Times retention removed records of a partition before they were applied.
    truncations: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            partitions: RwLock::new(BTreeMap::new()),
            applied: watch::channel(0).0,
            truncations: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Starts tracking a partition (idempotent), resuming after `next_offset` if known, in
    /// the topic generation `topic_id` if known.
    pub fn track(
        &self,
        topic: &str,
        partition: i32,
        next_offset: Option<i64>,
        topic_id: Option<Arc<str>>,
    ) {
        let mut map = self.partitions.write();
        map.entry((Arc::from(topic), partition))
            .or_insert_with(|| PartitionProgress {
                next_offset,
                topic_id,
                ..Default::default()
            });
    }

    /// The next offset to apply for a partition.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .read()
            .get(&(Arc::from(topic), partition))
            .and_then(|p| p.next_offset)
    }

    /// The topic ID the applied offsets of `topic` belong to, if any partition knows it.
    pub fn topic_id(&self, topic: &str) -> Option<Arc<str>> {
        self.partitions
            .read()
            .iter()
            .filter(|((t, _), _)| &**t == topic)
            .find_map(|(_, p)| p.topic_id.clone())
    }

    /// Records the topic ID of every tracked partition of `topic` that has none yet.
    pub fn adopt_topic_id(&self, topic: &str, id: &Arc<str>) {
        for ((t, _), p) in self.partitions.write().iter_mut() {
            if &**t == topic && p.topic_id.is_none() {
                p.topic_id = Some(Arc::clone(id));
            }
        }
    }

    /// Marks `offset` of a partition applied. Returns false (and changes nothing) when it
    /// was applied before, which is what makes replays idempotent.
    pub fn advance(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let mut map = self.partitions.write();
        let entry = map.entry((Arc::from(topic), partition)).or_default();
        if entry.next_offset.is_some_and(|next| offset < next) {
            return false;
        }
        entry.next_offset = Some(offset + 1);
        finish_reread(topic, partition, entry);
        true
    }

    /// Moves a partition's next offset up to the consumer's position: offsets the consumer
    /// passed without delivering a record (transaction markers, aborted transactions,
    /// compacted-away records) need no applying.
    pub fn advance_to_position(&self, topic: &str, partition: i32, position: i64) {
        let mut map = self.partitions.write();
        let Some(entry) = map.get_mut(&(Arc::from(topic), partition)) else {
            return;
        };
        if entry.next_offset.is_none_or(|next| next < position) {
            entry.next_offset = Some(position);
            finish_reread(topic, partition, entry);
        }
    }

    /// Forgets what was applied from a partition because its topic was recreated: it is read
    /// again from the start, in generation `topic_id`.
    pub fn reset(&self, topic: &str, partition: i32, topic_id: Option<Arc<str>>) {
        let mut map = self.partitions.write();
        let p = map.entry((Arc::from(topic), partition)).or_default();
        p.next_offset = None;
        p.log_replaced = false;
        p.topic_id = topic_id;
        p.reread = Some(Reread {
            reason: RereadReason::TopicRecreated,
            until: None,
        });
        // Watermarks read before the reset describe the old log.
        p.high_watermark = None;
        p.low_watermark = None;
        p.watermarks_read_at_ms = None;
    }

    /// Stops tracking a partition (another cluster node owns it now).
    pub fn untrack(&self, topic: &str, partition: i32) {
        self.partitions
            .write()
            .remove(&(Arc::from(topic), partition));
    }

    /// Notes that retention removed records of a partition before they were applied; the
    /// consumer continues from the log start. Returns false if a re-read was already under
    /// way (then nothing is counted).
    pub fn mark_truncated(&self, topic: &str, partition: i32) -> bool {
        let mut map = self.partitions.write();
        let Some(p) = map.get_mut(&(Arc::from(topic), partition)) else {
            return false;
        };
        if p.reread.is_some() {
            return false;
        }
        p.reread = Some(Reread {
            reason: RereadReason::LogTruncated,
            until: p.high_watermark,
        });
        self.truncations.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many times retention removed records before they were applied (see
    /// [`Self::mark_truncated`]).
    pub fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Relaxed)
    }

    /// Stores watermarks just read from the broker.
    pub fn set_watermarks(&self, topic: &str, partition: i32, low: i64, high: i64, at_ms: i64) {
        let mut map = self.partitions.write();
        let entry = map.entry((Arc::from(topic), partition)).or_default();
        if entry.topic_id.is_none()
            && entry.watermarks_read_at_ms.is_none()
            && entry.next_offset.is_some_and(|next| high < next)
        {
            entry.log_replaced = true;
        }
        entry.low_watermark = Some(low);
        entry.high_watermark = Some(high);
        entry.watermarks_read_at_ms = Some(at_ms);
        if let Some(reread) = entry.reread.as_mut()
            && reread.until.is_none()
        {
            reread.until = Some(high);
        }
        finish_reread(topic, partition, entry);
    }

    /// True once partitions are tracked and every one has a log end read from the broker.
    pub fn all_watermarks_known(&self) -> bool {
        let map = self.partitions.read();
        !map.is_empty() && map.values().all(|p| p.high_watermark.is_some())
    }

    /// How many partitions are tracked.
    pub fn tracked(&self) -> usize {
        self.partitions.read().len()
    }

    /// True while any of the given topics' partitions (all when empty) is being re-read.
    pub fn rereading(&self, topics: &[String]) -> bool {
        self.partitions
            .read()
            .iter()
            .any(|((t, _), p)| p.reread.is_some() && among(topics, t))
    }

    /// Wakes everyone waiting for progress; called once per applied batch.
    pub fn notify_applied(&self) {
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever a batch has been applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// A copy of the progress of the given topics' partitions (all when `topics` is empty).
    pub fn snapshot(&self, topics: &[String]) -> Vec<(PartitionKey, PartitionProgress)> {
        self.partitions
            .read()
            .iter()
            .filter(|((t, _), _)| among(topics, t))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// True when every listed target (topic, partition, offset) has been reached.
    pub fn reached_all(&self, targets: &[OffsetTarget]) -> bool {
        let map = self.partitions.read();
        targets.iter().all(|(t, p, target)| {
            *target <= 0
                || map
                    .get(&(t.clone(), *p))
                    .is_some_and(|progress| progress.reached(*target))
        })
    }
}

/// True if `topic` is one of `topics` (any topic when `topics` is empty).
fn among(topics: &[String], topic: &str) -> bool {
    topics.is_empty() || topics.iter().any(|x| x == topic)
}

/// Ends a re-read once the partition has reached the log end read after it began.
fn finish_reread(topic: &str, partition: i32, p: &mut PartitionProgress) {
    let Some(reread) = &p.reread else { return };
    let Some(until) = reread.until else { return };
    if p.reached(until) {
        tracing::info!(
            topic,
            partition,
            reason = reread.reason.as_str(),
            "re-read complete: the partition is caught up again"
        );
        p.reread = None;
    }
}

/// What the consume stage may tell [`Progress`]: which partitions it reads, in which topic
/// generation, and what the broker reported about their logs. Applied offsets are not in
/// it: the consumer starts from values ([`crate::source::StartOffsets`]) and keeps its own
/// read positions.
#[derive(Clone, Debug)]
pub struct BrokerFacts(Arc<Progress>);

impl BrokerFacts {
    /// The consumer's handle on `progress`.
    pub fn new(progress: Arc<Progress>) -> BrokerFacts {
        BrokerFacts(progress)
    }

    /// A partition is being read (idempotent), in generation `topic_id` if known: from now
    /// on readiness waits for it.
    pub fn reading(&self, topic: &str, partition: i32, topic_id: Option<Arc<str>>) {
        self.0.track(topic, partition, None, topic_id);
    }

    /// See [`Progress::adopt_topic_id`].
    pub fn adopt_topic_id(&self, topic: &str, id: &Arc<str>) {
        self.0.adopt_topic_id(topic, id);
    }

    /// See [`Progress::set_watermarks`].
    pub fn set_watermarks(&self, topic: &str, partition: i32, low: i64, high: i64, at_ms: i64) {
        self.0.set_watermarks(topic, partition, low, high, at_ms);
    }

    /// See [`Progress::mark_truncated`].
    pub fn mark_truncated(&self, topic: &str, partition: i32) -> bool {
        self.0.mark_truncated(topic, partition)
    }

    /// The partitions of `topics` (all when empty) the view holds something from.
    pub fn held(&self, topics: &[String]) -> Vec<PartitionKey> {
        self.0
            .partitions
            .read()
            .keys()
            .filter(|(t, _)| among(topics, t))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_refuses_replays() {
        let p = Progress::default();
        p.track("t", 0, None, None);
        assert!(p.advance("t", 0, 0));
        assert!(p.advance("t", 0, 1));
        assert!(!p.advance("t", 0, 1), "same offset twice is a no-op");
        assert!(!p.advance("t", 0, 0), "an older offset is a no-op");
        assert!(
            p.advance("t", 0, 5),
            "gaps (compaction, transactions) are fine"
        );
        assert_eq!(p.next_offset("t", 0), Some(6));
    }

    #[test]
    fn resumed_partition_skips_what_snapshot_holds() {
        let p = Progress::default();
        p.track("t", 1, Some(10), None);
        assert!(!p.advance("t", 1, 3));
        assert!(p.advance("t", 1, 10));
    }

    #[test]
    fn lag_counts_from_log_start_when_nothing_applied() {
        let mut pp = PartitionProgress::default();
        assert_eq!(pp.lag(), None);
        pp.high_watermark = Some(100);
        pp.low_watermark = Some(40);
        assert_eq!(pp.lag(), Some(60));
        pp.next_offset = Some(90);
        assert_eq!(pp.lag(), Some(10));
        assert!(pp.reached(90) && !pp.reached(91));
    }

    #[test]
    fn reached_all_needs_every_partition() {
        let p = Progress::default();
        p.track("t", 0, Some(5), None);
        p.track("t", 1, Some(2), None);
        let t: Arc<str> = Arc::from("t");
        assert!(p.reached_all(&[(t.clone(), 0, 5), (t.clone(), 1, 2)]));
        assert!(!p.reached_all(&[(t.clone(), 0, 5), (t.clone(), 1, 3)]));
        assert!(
            !p.reached_all(&[(t.clone(), 2, 3)]),
            "an untracked partition is not reached"
        );
        assert!(
            p.reached_all(&[(t, 2, 0)]),
            "an empty partition needs no waiting"
        );
    }

    #[test]
    fn the_consumer_position_covers_markers_and_aborted_records() {
        let p = Progress::default();
        p.track("t", 0, None, None);
        p.advance("t", 0, 4);
        // Offsets 5 (commit marker) and 6..9 (an aborted transaction + its marker) were passed.
        p.advance_to_position("t", 0, 10);
        assert_eq!(p.next_offset("t", 0), Some(10));
        p.advance_to_position("t", 0, 7);
        assert_eq!(p.next_offset("t", 0), Some(10), "never moves back");
        assert!(!p.advance("t", 0, 9), "passed offsets count as applied");
        p.advance_to_position("t", 3, 7);
        assert_eq!(
            p.next_offset("t", 3),
            None,
            "untracked partitions are left alone"
        );
    }

    #[test]
    fn a_recreated_topic_is_reread_until_the_new_log_end() {
        let p = Progress::default();
        let old: Arc<str> = Arc::from("old-id");
        let new: Arc<str> = Arc::from("new-id");
        p.track("t", 0, Some(500), Some(old.clone()));
        p.set_watermarks("t", 0, 0, 500, 1);
        assert!(!p.rereading(&[]));
        p.reset("t", 0, Some(new.clone()));
        let (_, after) = p.snapshot(&[]).remove(0);
        assert_eq!(after.next_offset, None);
        assert_eq!(after.topic_id.as_deref(), Some("new-id"));
        assert_eq!(
            after.high_watermark, None,
            "the old log's watermarks are forgotten"
        );
        assert!(p.rereading(&["t".into()]) && !p.rereading(&["other".into()]));
        p.set_watermarks("t", 0, 0, 3, 2);
        p.advance("t", 0, 0);
        p.advance("t", 0, 1);
        assert!(p.rereading(&[]), "not at the new log end yet");
        p.advance("t", 0, 2);
        assert!(
            !p.rereading(&[]),
            "reached the log end read after the reset"
        );
        assert_eq!(p.topic_id("t").as_deref(), Some("new-id"));
    }

    #[test]
    fn truncation_is_noted_once_and_ends_at_the_log_end() {
        let p = Progress::default();
        p.track("t", 0, Some(10), Some(Arc::from("id")));
        p.set_watermarks("t", 0, 50, 80, 1);
        assert!(p.mark_truncated("t", 0));
        assert!(!p.mark_truncated("t", 0), "noted once");
        assert_eq!(p.truncations(), 1);
        assert_eq!(
            p.next_offset("t", 0),
            Some(10),
            "nothing is purged or reset"
        );
        p.advance("t", 0, 50);
        assert!(p.rereading(&[]));
        p.advance("t", 0, 79);
        assert!(!p.rereading(&[]));
    }

    #[test]
    fn without_a_topic_id_a_first_reading_below_the_restored_offset_means_replaced() {
        let p = Progress::default();
        p.track("t", 0, Some(500), None);
        p.set_watermarks("t", 0, 0, 40, 1);
        assert!(p.snapshot(&[])[0].1.log_replaced);
        let q = Progress::default();
        q.track("t", 0, Some(500), None);
        q.set_watermarks("t", 0, 0, 500, 1);
        assert!(!q.snapshot(&[])[0].1.log_replaced);
        let r = Progress::default();
        r.track("t", 0, Some(500), Some(Arc::from("id")));
        r.set_watermarks("t", 0, 0, 40, 1);
        assert!(
            !r.snapshot(&[])[0].1.log_replaced,
            "with a topic ID, identity decides, not watermarks"
        );
    }

    #[tokio::test]
    async fn subscribers_see_notifications() {
        let p = Progress::default();
        let mut rx = p.subscribe();
        p.notify_applied();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
