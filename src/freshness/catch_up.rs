//! Catch-up progress: until the replica is ready (caught up with the watermarks read at
//! start), how many records each collection has applied since the process started, how
//! many remain, how fast it goes and when it will be done.
//!
//! Both numbers count what is visible to queries: a collection's ingest counters (upserts,
//! deletes, poison) and its partitions' lag, which the writer advances together after each
//! batch. [`run`] is a background task that samples them, logs a progress line per
//! collection every `server.progress_log_interval_ms` and one final `caught up: N records
//! in T s` line; `list_collections` shows the same numbers ([`Freshness::catch_up_info`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::Freshness;
use crate::api::CatchUpInfo;

/// How far back the rate looks: long enough to smooth out batchy applies, short enough to
/// follow a change of pace (a snapshot restore, then a fast replay).
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How often the counters are sampled and readiness is checked (it can also come from a
/// watermark reading, with no batch to wake us).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Samples of the writer's counters, shared by the logging task and `list_collections`.
#[derive(Debug)]
pub struct CatchUp {
    started: Instant,
    /// Per collection: (when, records applied so far), oldest first, spanning about
    /// `RATE_WINDOW`.
    samples: Mutex<BTreeMap<String, VecDeque<(Instant, u64)>>>,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp {
            started: Instant::now(),
            samples: Mutex::new(BTreeMap::new()),
        }
    }
}

impl CatchUp {
    /// Time since the engine was built (the process started consuming).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records one reading of the per-collection counters.
    pub fn sample(&self, applied: &BTreeMap<String, u64>, at: Instant) {
        let mut samples = self.samples.lock();
        for (collection, &n) in applied {
            let s = samples.entry(collection.clone()).or_default();
            s.push_back((at, n));
            // Keep one sample older than the window so the rate spans all of it.
            while s.len() > 2 && s.get(1).is_some_and(|(t, _)| at - *t >= RATE_WINDOW) {
                s.pop_front();
            }
        }
    }

    /// Recent apply rate of a collection, in records per second.
    pub fn rate(&self, collection: &str) -> f64 {
        let samples = self.samples.lock();
        let Some(s) = samples.get(collection) else {
            return 0.0;
        };
        match (s.front(), s.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                n1.saturating_sub(*n0) as f64 / (*t1 - *t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Combines applied, remaining and rate into what agents and logs show.
pub fn estimate(applied: u64, remaining: Option<u64>, rate_per_s: f64) -> CatchUpInfo {
    let eta_s = match remaining {
        Some(0) => Some(0.0),
        Some(r) if rate_per_s > 0.0 => Some(round1(r as f64 / rate_per_s)),
        _ => None,
    };
    CatchUpInfo {
        applied,
        remaining,
        rate_per_s: round1(rate_per_s),
        eta_s,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One collection's line in the catch-up log: its name, topics and records applied since
/// start (every change that reached the view, and the poison records skipped: they move its
/// partitions forward too).
pub struct Applied {
    /// The collection.
    pub collection: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Records applied since start.
    pub applied: u64,
}

/// Samples progress until the replica is ready, logging a line per collection every
/// `log_every` (never when zero), then logs `caught up: N records in T s` and returns.
/// `applied` reads the collections' counters.
pub async fn run(
    freshness: Arc<Freshness>,
    applied: impl Fn() -> Vec<Applied>,
    log_every: Duration,
    cancel: CancellationToken,
) {
    let mut batches = freshness.progress().subscribe();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log = Instant::now();
    loop {
        if freshness.is_ready() {
            let total: u64 = applied().iter().map(|a| a.applied).sum();
            let secs = freshness.catch_up().elapsed().as_secs_f64();
            tracing::info!(
                "caught up: {total} records in {secs:.1} s ({:.0} records/s)",
                total as f64 / secs.max(0.001)
            );
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            // Woken per applied batch, so the final line's time is the time readiness came.
            changed = batches.changed() => if changed.is_err() { return },
            _ = tick.tick() => {
                let now = Instant::now();
                let now_applied = applied();
                let counts = now_applied
                    .iter()
                    .map(|a| (a.collection.clone(), a.applied))
                    .collect();
                freshness.catch_up().sample(&counts, now);
                // While the broker is unreachable nothing is being caught up: that was said
                // once, as "broker unreachable".
                let waiting = crate::source::broker_health().unreachable().is_some();
                if !log_every.is_zero() && now - last_log >= log_every && !waiting {
                    log_progress(&freshness, &now_applied);
                    last_log = now;
                }
            }
        }
    }
}

fn log_progress(freshness: &Freshness, collections: &[Applied]) {
    for c in collections {
        let Some(info) = freshness.catch_up_info(&c.collection, &c.topics, c.applied) else {
            return;
        };
        // Nothing known yet (the broker has not answered): no line that claims progress.
        if info.applied == 0 && info.remaining.is_none() {
            continue;
        }
        let remaining = info
            .remaining
            .map_or("unknown (no watermarks from the broker yet)".into(), |r| {
                r.to_string()
            });
        let eta = info.eta_s.map_or("unknown".into(), |s| format!("{s:.0} s"));
        tracing::info!(
            "catching up {} ({}): {} applied, {remaining} remaining, {:.0} records/s, ETA {eta}",
            c.collection,
            c.topics.join(", "),
            info.applied,
            info.rate_per_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn rate_spans_the_window_per_collection() {
        let c = CatchUp::default();
        let t0 = Instant::now();
        c.sample(&counts(&[("a", 0), ("b", 100)]), t0);
        assert_eq!(c.rate("a"), 0.0, "one sample has no rate");
        let t1 = t0 + Duration::from_secs(1);
        c.sample(&counts(&[("a", 500), ("b", 100)]), t1);
        let t2 = t0 + Duration::from_secs(2);
        c.sample(&counts(&[("a", 1000), ("b", 300)]), t2);
        assert_eq!(c.rate("a"), 500.0);
        assert_eq!(c.rate("b"), 100.0);
        assert_eq!(c.rate("unknown"), 0.0);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let c = CatchUp::default();
        let t0 = Instant::now();
        c.sample(&counts(&[("a", 0)]), t0);
        // A fast start, then a slow stretch longer than the window: the rate follows it.
        c.sample(&counts(&[("a", 10_000)]), t0 + Duration::from_secs(1));
        for s in 2..=20u64 {
            c.sample(
                &counts(&[("a", 10_000 + (s - 1) * 10)]),
                t0 + Duration::from_secs(s),
            );
        }
        let rate = c.rate("a");
        assert!((9.0..=11.0).contains(&rate), "rate {rate}");
    }

    #[test]
    fn estimate_needs_a_rate_and_a_known_remainder() {
        let e = estimate(1000, Some(3000), 1500.0);
        assert_eq!(
            (e.applied, e.remaining, e.eta_s),
            (1000, Some(3000), Some(2.0))
        );
        assert_eq!(estimate(0, Some(10), 0.0).eta_s, None, "no rate yet");
        assert_eq!(estimate(0, None, 50.0).eta_s, None, "watermarks unknown");
        assert_eq!(estimate(5, Some(0), 0.0).eta_s, Some(0.0));
    }
}
