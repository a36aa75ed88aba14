//! Freshness: where each partition stands (applied offsets, the broker's watermarks),
//! whether the replica is ready, the watermark every answer carries, `consistency: "head"`
//! waits, and catch-up progress at start ([`catch_up`]).
//!
//! It knows collections only by name and topics, so it sits below the engine: the writer
//! advances [`Progress`] and calls [`Freshness::recheck_readiness`]; queries read
//! [`Freshness::watermark`]; the runtime's watermark task calls
//! [`Freshness::refresh_watermarks`].

pub mod catch_up;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::{CatchUpInfo, PartitionWatermark, Watermark};
use crate::source::MetaClient;
use crate::source::meta::{Reading, Watermarks};
use crate::time::{now_ms, rfc3339_ms};
use crate::view::{OffsetTarget, Progress};

pub use catch_up::CatchUp;

/// Progress, watermarks, readiness and catch-up of one running freshet.
pub struct Freshness {
    progress: Arc<Progress>,
    /// Reads watermarks; `None` in unit tests, which then never claim to be caught up.
    meta: Option<MetaClient>,
    /// Every consumed topic, in config order.
    topics: Vec<String>,
    /// How old a watermark reading may be for an answer to claim `caught_up` (ms).
    staleness_ms: i64,
    /// Set once the view has caught up with the watermarks read at start.
    ready: AtomicBool,
    /// Partitions and the high watermarks that must be reached before `ready`.
    startup_targets: Mutex<Option<Vec<OffsetTarget>>>,
    /// Apply-rate samples while catching up at start.
    catch_up: CatchUp,
    /// On a cluster node: the partitions it owns (readiness counts only those).
    ownership: std::sync::OnceLock<Arc<crate::cluster::Ownership>>,
    /// Topics readiness does not wait for: their collection serves a previous generation
    /// while the next one is read from the start (see `engine::generation`).
    not_counted: parking_lot::RwLock<HashSet<String>>,
    /// Shutdown has begun: still answering, no longer ready (`server.shutdown_drain_ms`).
    draining: AtomicBool,
}

impl Freshness {
    /// Freshness of `topics`, read through `meta` every `watermark_interval_ms`.
    pub fn new(
        meta: Option<MetaClient>,
        topics: Vec<String>,
        watermark_interval_ms: u64,
    ) -> Freshness {
        Freshness {
            progress: Arc::new(Progress::default()),
            meta,
            topics,
            staleness_ms: (watermark_interval_ms as i64 * 3).max(5_000),
            ready: AtomicBool::new(false),
            startup_targets: Mutex::new(None),
            catch_up: CatchUp::default(),
            ownership: std::sync::OnceLock::new(),
            not_counted: parking_lot::RwLock::new(HashSet::new()),
            draining: AtomicBool::new(false),
        }
    }

    /// Makes readiness wait for `topics` (`counted`) or not: a collection rebuilt after a
    /// settings change serves its previous generation meanwhile, so its catch-up from the
    /// start does not hold `/readyz` back.
    pub fn count_for_readiness(&self, topics: &[String], counted: bool) {
        let mut set = self.not_counted.write();
        for t in topics {
            if counted {
                set.remove(t);
            } else {
                set.insert(t.clone());
            }
        }
    }

    /// Shutdown has begun: `/readyz` says so from now on, while calls are still answered.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Makes readiness count only the partitions `ownership` says this cluster node owns.
    pub fn follow_ownership(&self, ownership: Arc<crate::cluster::Ownership>) {
        let _ = self.ownership.set(ownership);
    }

    /// Per-partition progress (shared with the source and the writer).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Catch-up rate samples at start (see [`catch_up`]).
    pub fn catch_up(&self) -> &CatchUp {
        &self.catch_up
    }

    /// The watermark of `topics`' partitions right now.
    pub fn watermark(&self, topics: &[String]) -> Watermark {
        let snapshot = self.progress.snapshot(topics);
        let partitions: Vec<PartitionWatermark> = snapshot
            .iter()
            .map(|(k, p)| PartitionWatermark::new(k, p))
            .collect();
        let assigned: HashSet<&str> = partitions.iter().map(|p| p.topic.as_str()).collect();
        // Lag computed from old watermarks (broker unreachable) proves nothing.
        let now = now_ms();
        let fresh_after = now - self.staleness_ms;
        let watermarks_fresh = snapshot
            .iter()
            .all(|(_, p)| p.watermarks_read_at_ms.is_some_and(|at| at >= fresh_after));
        let caught_up = topics.iter().all(|t| assigned.contains(t.as_str()))
            && watermarks_fresh
            && partitions
                .iter()
                .all(|p| p.lag == Some(0) && p.rereading.is_none());
        Watermark {
            as_of: rfc3339_ms(now),
            caught_up,
            partitions,
            generations: Vec::new(),
        }
    }

    /// Reads all partitions' watermarks from the broker and stores them; returns how many
    /// partitions answered. (Retention passing unapplied records is noticed by the consumer,
    /// which the broker tells exactly: a log start above applied offsets here may only mean
    /// that the records are still on their way to the view.)
    pub async fn refresh_watermarks(&self, timeout: Duration) -> usize {
        let Some(meta) = &self.meta else { return 0 };
        let partitions: Vec<(String, i32)> = self
            .progress
            .snapshot(&[])
            .into_iter()
            .map(|((t, p), _)| (t.to_string(), p))
            .collect();
        let reading = self.read_watermarks(meta, partitions, timeout).await;
        if !reading.marks.is_empty() {
            crate::source::broker_health().mark_up();
        } else if let Some((_, reason)) = reading.failed.first() {
            crate::source::broker_health().mark_down(reason);
        }
        self.update_readiness(&reading.marks);
        reading.marks.len()
    }

    /// Reads `partitions`' watermarks from the broker and stores those that answered.
    async fn read_watermarks(
        &self,
        meta: &MetaClient,
        partitions: Vec<(String, i32)>,
        timeout: Duration,
    ) -> Reading {
        let reading = meta.watermarks(partitions, timeout).await;
        let at = now_ms();
        for w in &reading.marks {
            self.progress
                .set_watermarks(&w.topic, w.partition, w.low, w.high, at);
        }
        reading
    }

    /// Waits until every record written to `topics`' partitions before the call is
    /// applied, at most `max_wait`. `Err` says why it was not reached (the bound was hit,
    /// or the broker could not be asked), for the answer's notes.
    pub async fn wait_for_head(&self, topics: &[String], max_wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + max_wait;
        if self.meta.is_none() {
            return Err("no broker to ask for the partitions' ends".into());
        }
        // Right after start the consumer may not have assigned every topic yet.
        let partitions: Vec<(String, i32)> = loop {
            let snapshot = self.progress.snapshot(topics);
            let assigned: HashSet<&str> = snapshot.iter().map(|((t, _), _)| &**t).collect();
            if topics.iter().all(|t| assigned.contains(t.as_str())) {
                break snapshot
                    .iter()
                    .map(|((t, p), _)| (t.to_string(), *p))
                    .collect();
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not every topic is being read yet (waited {} ms)",
                    max_wait.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.wait_for_partitions(partitions, deadline).await
    }

    /// Waits until every record written to `partitions` before the call is applied, until
    /// `deadline` at most (the part of [`Self::wait_for_head`] a cluster shard runs for the
    /// partitions it answers for).
    pub async fn wait_for_partitions(
        &self,
        partitions: Vec<(String, i32)>,
        deadline: Instant,
    ) -> Result<(), String> {
        let Some(meta) = &self.meta else {
            return Err("no broker to ask for the partitions' ends".into());
        };
        let max_wait = deadline.saturating_duration_since(Instant::now());
        let reading = self.read_watermarks(meta, partitions, max_wait).await;
        if let Some(((topic, partition), reason)) = reading.failed.first() {
            return Err(format!(
                "could not read the end of {} partition(s) from the broker (e.g. {topic}/{partition}: {reason})",
                reading.failed.len()
            ));
        }
        let targets: Vec<OffsetTarget> = reading
            .marks
            .iter()
            .map(|w| (Arc::from(w.topic.as_str()), w.partition, w.high))
            .collect();
        let mut applied = self.progress.subscribe();
        loop {
            if self.progress.reached_all(&targets) {
                return Ok(());
            }
            let timed_out = tokio::select! {
                changed = applied.changed() => changed.is_err(),
                _ = tokio::time::sleep_until(deadline.into()) => true,
            };
            if timed_out {
                if self.progress.reached_all(&targets) {
                    return Ok(());
                }
                return Err(format!("not reached within {} ms", max_wait.as_millis()));
            }
        }
    }

    /// Partitions restored without a topic ID (a snapshot of an older freshet) whose log
    /// ended below the restored offset at the first reading: not the log the offsets came
    /// from, so they are read again from the start, their documents removed first.
    pub fn partitions_to_reset(&self) -> Vec<(String, i32, String)> {
        self.progress
            .snapshot(&[])
            .into_iter()
            .filter(|(_, p)| p.log_replaced)
            .filter_map(|((topic, partition), p)| {
                let next = p.next_offset?;
                let high = p.high_watermark?;
                Some((
                    topic.to_string(),
                    partition,
                    format!(
                        "log end offset {high} is behind what was applied (next offset {next}) and the snapshot has no topic ID: the topic was recreated"
                    ),
                ))
            })
            .collect()
    }

    /// True once the view has caught up with the watermarks first read at start, and no
    /// partition is being read again from its start (recreated topic, truncated log).
    pub fn is_ready(&self) -> bool {
        self.caught_up_at_start() && !self.progress.rereading(&[])
    }

    /// True once the first catch-up after start is done (re-reads aside).
    fn caught_up_at_start(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn update_readiness(&self, marks: &[Watermarks]) {
        if self.caught_up_at_start() {
            return;
        }
        let mut targets = self.startup_targets.lock();
        if targets.is_none() {
            // The first complete reading (every topic assigned and answered) fixes the target.
            let seen: HashSet<&str> = marks.iter().map(|w| w.topic.as_str()).collect();
            let assigned = self.progress.snapshot(&[]).len();
            // A cluster node reads only the partitions its group gave it, maybe none of a
            // topic, maybe none at all (then it has nothing to catch up with).
            let not_counted = self.not_counted.read();
            let (topics_covered, owns_nothing) = match self.ownership.get() {
                Some(o) => (o.assigned_once(), o.assigned_once() && o.owned().is_empty()),
                None => (
                    self.topics
                        .iter()
                        .all(|t| not_counted.contains(t) || seen.contains(t.as_str())),
                    false,
                ),
            };
            if owns_nothing {
                *targets = Some(Vec::new());
            } else if assigned == 0 || marks.len() < assigned || !topics_covered {
                return;
            } else {
                *targets = Some(
                    marks
                        .iter()
                        .filter(|w| !not_counted.contains(&w.topic))
                        .map(|w| (Arc::from(w.topic.as_str()), w.partition, w.high))
                        .collect(),
                );
            }
            drop(not_counted);
        }
        self.mark_ready_if_reached(targets.as_deref());
    }

    /// Re-checks readiness against the start-up targets (after each applied batch).
    pub fn recheck_readiness(&self) {
        if self.caught_up_at_start() {
            return;
        }
        self.mark_ready_if_reached(self.startup_targets.lock().as_deref());
    }

    fn mark_ready_if_reached(&self, targets: Option<&[OffsetTarget]>) {
        let Some(t) = targets else { return };
        if self.progress.reached_all(&self.still_owned(t)) {
            self.ready.store(true, Ordering::Release);
            tracing::info!("caught up with the stream: ready");
        }
    }

    /// The targets of partitions this node still reads: on a cluster node, partitions handed
    /// to another node since no longer count.
    pub fn still_owned(&self, targets: &[OffsetTarget]) -> Vec<OffsetTarget> {
        match self.ownership.get() {
            Some(o) => targets
                .iter()
                .filter(|(topic, partition, _)| o.owns(topic, *partition))
                .cloned()
                .collect(),
            None => targets.to_vec(),
        }
    }

    /// What a collection reading `topics` must reach to be caught up, by the rule readiness
    /// uses: the high watermarks of its partitions (on a cluster node, those assigned to it),
    /// once every one has been read; `None` until then.
    pub fn catch_up_target(&self, topics: &[String]) -> Option<Vec<OffsetTarget>> {
        let snapshot = self.progress.snapshot(topics);
        let covered = match self.ownership.get() {
            Some(o) => o.assigned_once(),
            None => topics
                .iter()
                .all(|t| snapshot.iter().any(|((topic, _), _)| **topic == **t)),
        };
        if !covered {
            return None;
        }
        snapshot
            .into_iter()
            .map(|((topic, partition), p)| Some((topic, partition, p.high_watermark?)))
            .collect()
    }

    /// Catch-up numbers of a collection reading `topics`, which has applied `applied`
    /// records since start, while the replica is not ready; `None` once it is.
    pub fn catch_up_info(
        &self,
        collection: &str,
        topics: &[String],
        applied: u64,
    ) -> Option<CatchUpInfo> {
        if self.is_ready() {
            return None;
        }
        Some(self.progress_of(collection, topics, applied))
    }

    /// Catch-up numbers of a collection reading `topics`, which has applied `applied`
    /// records since start (used for a generation being rebuilt, which catches up after
    /// the replica is ready).
    pub fn progress_of(&self, collection: &str, topics: &[String], applied: u64) -> CatchUpInfo {
        catch_up::estimate(
            applied,
            self.remaining(topics),
            self.catch_up.rate(collection),
        )
    }

    /// Records of `topics` not applied yet; `None` until every topic's partitions are
    /// assigned and their high watermarks read.
    fn remaining(&self, topics: &[String]) -> Option<u64> {
        let partitions = self.progress.snapshot(topics);
        let mut total = 0u64;
        for topic in topics {
            let mut seen = false;
            for ((t, _), p) in &partitions {
                if &**t == topic.as_str() {
                    seen = true;
                    total += u64::try_from(p.lag()?).unwrap_or(0);
                }
            }
            if !seen {
                return None;
            }
        }
        Some(total)
    }
}
