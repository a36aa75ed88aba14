//! The watermark task: keeps lag and readiness current, and asks the consumer to re-read
//! partitions whose log was replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::freshness::Freshness;
use crate::source::ResetRequest;

/// How many times in a row watermarks are re-read after 100 ms while some are unknown.
const FAST_WATERMARK_READS: u32 = 50;

/// Keeps lag current, and asks the consumer to re-read a partition whose applied offset no
/// longer exists in the broker's log (topic recreated, or retention passed it).
pub async fn refresh_watermarks(
    freshness: Arc<Freshness>,
    every: Duration,
    resets: std::sync::mpsc::Sender<ResetRequest>,
    cancel: CancellationToken,
) {
    let mut requested: std::collections::HashMap<ResetRequest, Instant> = Default::default();
    let mut wait = Duration::ZERO;
    // Fast re-reads left since the set of partitions last changed (bounded: a partition
    // without a leader must not make this poll the broker ten times a second for ever).
    let (mut fast_left, mut tracked) = (FAST_WATERMARK_READS, 0);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {
                let answered = freshness.refresh_watermarks(Duration::from_secs(2)).await;
                // Until every partition has a log end, catch-up cannot say what remains and
                // readiness cannot be decided: read again soon rather than in `every` (a
                // catch-up may be over by then). A broker that does not answer is not polled
                // faster than `every`.
                let now_tracked = freshness.progress().tracked();
                if now_tracked != tracked {
                    (fast_left, tracked) = (FAST_WATERMARK_READS, now_tracked);
                }
                let known = freshness.progress().all_watermarks_known();
                wait = if !known && (answered > 0 || tracked == 0) && fast_left > 0 {
                    fast_left -= 1;
                    Duration::from_millis(100).min(every)
                } else {
                    every
                };
                for (topic, partition, reason) in freshness.partitions_to_reset() {
                    let key = (topic, partition);
                    // One request per partition until the writer has acted on it.
                    if requested.get(&key).is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
                        continue;
                    }
                    tracing::warn!(topic = key.0, partition = key.1, "{reason}");
                    if resets.send(key.clone()).is_err() {
                        return;
                    }
                    requested.insert(key, Instant::now());
                }
            }
        }
    }
}
