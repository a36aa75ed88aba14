//! Per-partition progress: what has been applied, what the broker has, and a signal that
//! wakes `consistency: "head"` readers when the apply task moves forward.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

/// Where one partition stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Next offset to apply (last applied + 1); `None` before the first record.
    pub next_offset: Option<i64>,
    /// Log end offset last read from the broker.
    pub high_watermark: Option<i64>,
    /// Log start offset last read from the broker (records below it are gone).
    pub low_watermark: Option<i64>,
    /// When the broker's watermarks were last read (ms since the epoch).
    pub watermarks_read_at_ms: Option<i64>,
    /// Highest log end offset seen in this process (a log's end never moves back).
    pub max_high_watermark: Option<i64>,
    /// The broker's log for this partition is not the one applied from: its end moved back
    /// (topic recreated), or at the first reading it was already below the next offset to
    /// apply (recreated while freshet was down). Sticky until [`Progress::reset`].
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

/// Progress of every assigned partition, shared by the source, the apply task and readers.
#[derive(Debug)]
pub struct Progress {
    partitions: RwLock<BTreeMap<PartitionKey, PartitionProgress>>,
    /// Bumped after each applied batch so waiters re-check their targets.
    applied: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            partitions: RwLock::new(BTreeMap::new()),
            applied: watch::channel(0).0,
        }
    }
}

impl Progress {
    /// Starts tracking a partition (idempotent), resuming after `next_offset` if known.
    pub fn track(&self, topic: &str, partition: i32, next_offset: Option<i64>) {
        let mut map = self.partitions.write();
        map.entry((Arc::from(topic), partition))
            .or_insert_with(|| PartitionProgress {
                next_offset,
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

    /// Marks `offset` of a partition applied. Returns false (and changes nothing) when it
    /// was applied before, which is what makes replays idempotent.
    pub fn advance(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let mut map = self.partitions.write();
        let entry = map.entry((Arc::from(topic), partition)).or_default();
        if entry.next_offset.is_some_and(|next| offset < next) {
            return false;
        }
        entry.next_offset = Some(offset + 1);
        true
    }

    /// Forgets what was applied from a partition (its log was replaced).
    pub fn reset(&self, topic: &str, partition: i32) {
        if let Some(p) = self
            .partitions
            .write()
            .get_mut(&(Arc::from(topic), partition))
        {
            p.next_offset = None;
            p.log_replaced = false;
            p.max_high_watermark = p.high_watermark;
        }
    }

    /// True if `offset` of a partition is already applied.
    pub fn is_applied(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.next_offset(topic, partition)
            .is_some_and(|next| offset < next)
    }

    /// Stores watermarks just read from the broker.
    pub fn set_watermarks(&self, topic: &str, partition: i32, low: i64, high: i64, at_ms: i64) {
        let mut map = self.partitions.write();
        let entry = map.entry((Arc::from(topic), partition)).or_default();
        let replaced = match entry.max_high_watermark {
            Some(max) => high < max,
            None => entry.next_offset.is_some_and(|next| high < next),
        };
        entry.log_replaced |= replaced;
        entry.max_high_watermark = Some(entry.max_high_watermark.map_or(high, |m| m.max(high)));
        entry.low_watermark = Some(low);
        entry.high_watermark = Some(high);
        entry.watermarks_read_at_ms = Some(at_ms);
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
            .filter(|((t, _), _)| topics.is_empty() || topics.iter().any(|x| x.as_str() == &**t))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_refuses_replays() {
        let p = Progress::default();
        p.track("t", 0, None);
        assert!(p.advance("t", 0, 0));
        assert!(p.advance("t", 0, 1));
        assert!(!p.advance("t", 0, 1), "same offset twice is a no-op");
        assert!(!p.advance("t", 0, 0), "an older offset is a no-op");
        assert!(
            p.advance("t", 0, 5),
            "gaps (compaction, transactions) are fine"
        );
        assert_eq!(p.next_offset("t", 0), Some(6));
        assert!(p.is_applied("t", 0, 5));
        assert!(!p.is_applied("t", 0, 6));
    }

    #[test]
    fn resumed_partition_skips_what_snapshot_holds() {
        let p = Progress::default();
        p.track("t", 1, Some(10));
        assert!(p.is_applied("t", 1, 9));
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
        p.track("t", 0, Some(5));
        p.track("t", 1, Some(2));
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
    fn a_log_end_moving_back_means_the_log_was_replaced() {
        let p = Progress::default();
        p.track("t", 0, None);
        p.advance("t", 0, 9);
        p.set_watermarks("t", 0, 0, 10, 1);
        p.set_watermarks("t", 0, 0, 12, 2);
        assert!(!p.snapshot(&[])[0].1.log_replaced);
        p.set_watermarks("t", 0, 0, 3, 3);
        assert!(
            p.snapshot(&[])[0].1.log_replaced,
            "end moved back: recreated"
        );
        p.set_watermarks("t", 0, 0, 20, 4);
        assert!(p.snapshot(&[])[0].1.log_replaced, "sticky until reset");
        p.reset("t", 0);
        let (_, after) = p.snapshot(&[]).remove(0);
        assert!(!after.log_replaced && after.next_offset.is_none());
        p.set_watermarks("t", 0, 0, 21, 5);
        assert!(!p.snapshot(&[])[0].1.log_replaced);
    }

    #[test]
    fn first_reading_below_a_restored_offset_means_replaced() {
        let p = Progress::default();
        p.track("t", 0, Some(500));
        p.set_watermarks("t", 0, 0, 40, 1);
        assert!(p.snapshot(&[])[0].1.log_replaced);
        let q = Progress::default();
        q.track("t", 0, Some(500));
        q.set_watermarks("t", 0, 0, 500, 1);
        assert!(!q.snapshot(&[])[0].1.log_replaced);
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
