//! Starts the pipeline (consumer thread → prepare thread → apply thread), the watermark
//! refresher and the catch-up progress log, and stops them in order on shutdown: stop
//! consuming, let prepare and apply drain, write a final snapshot, flush dead letters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, EngineError, PreparedBatch};
use crate::snapshot;
use crate::source::{
    self, Batch, ConsumerLinks, DeadLetters, MetaClient, PollOptions, ResetRequest, SourceError,
};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A Kafka client could not be created.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The collections could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A thread could not be started.
    #[error("cannot start {what}: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running pipeline. Dropping it without `shutdown` leaves the threads to die with the process.
pub struct Runtime {
    /// The engine queries go to.
    pub engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    cancel: CancellationToken,
    /// Consumer, prepare and apply threads, in pipeline order.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Builds the engine and starts consuming; the newest intact snapshot (if any) is
    /// restored first, on the consumer's thread, while HTTP already answers (not ready).
    /// Must be called inside a tokio runtime.
    pub fn start(config: Arc<Config>) -> Result<Runtime, StartError> {
        let meta = MetaClient::new(&config.kafka)?;
        let dead_letters = DeadLetters::new(&config.kafka)?;
        let engine = Arc::new(Engine::new(Arc::clone(&config), Some(meta), dead_letters)?);
        let snapshots = snapshot_dir(&config);
        // Small bounds: backpressure reaches the consumer (and so the broker) instead of memory.
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let (prepared_tx, prepared_rx) = sync_channel::<PreparedBatch>(4);
        let (reset_tx, reset_rx) = std::sync::mpsc::channel::<ResetRequest>();
        let stop = Arc::new(AtomicBool::new(false));
        let restore_into = Arc::clone(&engine);
        let restore_from = snapshots.clone();
        let consumer = source::spawn_consumer(
            &config.kafka,
            engine.topics(),
            Arc::clone(engine.progress()),
            ConsumerLinks {
                batches: tx,
                resets: reset_rx,
                stop: Arc::clone(&stop),
            },
            PollOptions::default(),
            move || {
                if let Some(dir) = restore_from {
                    restore_newest(&restore_into, &dir);
                }
            },
        )?;
        let preparer = spawn_preparer(Arc::clone(&engine), rx, prepared_tx)?;
        let applier = spawn_applier(Arc::clone(&engine), prepared_rx, snapshots)?;
        let cancel = CancellationToken::new();
        tokio::spawn(refresh_watermarks(
            Arc::clone(&engine),
            Duration::from_millis(config.kafka.watermark_interval_ms.max(50)),
            reset_tx,
            cancel.clone(),
        ));
        tokio::spawn(crate::catch_up::run(
            Arc::clone(&engine),
            Duration::from_millis(config.server.progress_log_interval_ms),
            cancel.clone(),
        ));
        Ok(Runtime {
            engine,
            stop,
            cancel,
            threads: vec![consumer, preparer, applier],
        })
    }

    /// Stops consuming, waits for prepare and apply to finish what is queued and for the
    /// final snapshot, and flushes dead letters.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.threads);
        let engine = Arc::clone(&self.engine);
        let joined = tokio::task::spawn_blocking(move || {
            // Each stage drops its sender when it returns, which ends the next stage's loop
            // after it has drained what was already queued.
            for h in threads {
                let _ = h.join();
            }
            if let Some(dlq) = engine.dead_letters() {
                dlq.flush(Duration::from_secs(5));
            }
        });
        if tokio::time::timeout(Duration::from_secs(120), joined)
            .await
            .is_err()
        {
            tracing::warn!("pipeline did not stop within 120 s; exiting anyway");
        }
    }
}

/// Where snapshots live, or `None` when `snapshot.interval_ms = 0` turns them off.
fn snapshot_dir(config: &Config) -> Option<PathBuf> {
    (config.snapshot.interval_ms > 0).then(|| config.server.data_dir.join("snapshots"))
}

fn restore_newest(engine: &Engine, dir: &std::path::Path) {
    let started = Instant::now();
    let removed = snapshot::remove_temp_files(dir);
    if removed > 0 {
        tracing::info!(
            "removed {removed} unfinished snapshot file(s) left by an earlier run in {}",
            dir.display()
        );
    }
    match snapshot::read_newest(dir) {
        Some((path, data)) => {
            let report = engine.restore(data);
            tracing::info!(
                snapshot = %path.display(),
                restored = ?report.restored,
                rebuilt = ?report.rebuilt,
                "restored snapshot in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        None => tracing::info!(
            "no snapshot in {}: reading every topic from the beginning",
            dir.display()
        ),
    }
}

fn spawn_preparer(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Batch>,
    tx: SyncSender<PreparedBatch>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("freshet-prepare".into())
        .spawn(move || {
            while let Some(batch) = rx.blocking_recv() {
                if tx.send(engine.prepare(batch)).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| StartError::Thread {
            what: "prepare thread",
            source,
        })
}

/// Writes snapshots in the background so the writer never waits on disk.
struct Snapshotter {
    dir: PathBuf,
    every: Duration,
    last: Instant,
    /// Something was applied since the last snapshot.
    dirty: bool,
    in_flight: Option<std::thread::JoinHandle<()>>,
}

impl Snapshotter {
    fn due(&self) -> bool {
        self.dirty
            && self.last.elapsed() >= self.every
            && self.in_flight.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Takes the cut now (consistent: we are between batches) and writes it elsewhere.
    fn start(&mut self, engine: &Arc<Engine>) {
        let cut = engine.snapshot_cut();
        let dir = self.dir.clone();
        let engine = Arc::clone(engine);
        self.in_flight = std::thread::Builder::new()
            .name("freshet-snapshot".into())
            .spawn(move || write_snapshot(&engine, &dir, cut))
            .map_err(|e| tracing::error!("cannot start snapshot thread: {e}"))
            .ok();
        self.dirty = false;
        self.last = Instant::now();
    }

    /// At shutdown: waits for a write in flight, then writes the final cut on this thread.
    fn finish(mut self, engine: &Arc<Engine>) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.join();
        }
        if self.dirty {
            write_snapshot(engine, &self.dir, engine.snapshot_cut());
        }
    }
}

fn write_snapshot(engine: &Engine, dir: &std::path::Path, cut: crate::engine::SnapshotCut) {
    let started = Instant::now();
    let metrics = engine.metrics();
    match snapshot::write(dir, &cut.into_data()) {
        Ok(path) => {
            metrics.snapshots_written.fetch_add(1, Ordering::Relaxed);
            if let Some(ended) = metrics.storage.succeeded() {
                tracing::warn!(
                    failed_attempts = ended.attempts,
                    "snapshots are written again after failing: {}",
                    ended.error
                );
            }
            tracing::info!(
                "wrote snapshot {} in {:.2} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
            let disk_full = e.is_disk_full();
            // Once per run of failures: the gauges and /readyz say it is still going on.
            if metrics.storage.failed(e.to_string(), disk_full) {
                if disk_full {
                    tracing::error!(
                        "snapshot failed, the disk is full: {e}; serving continues, a restart will replay more of the topics until space is freed"
                    );
                } else {
                    tracing::error!("snapshot failed: {e}");
                }
            } else {
                tracing::debug!("snapshot failed again: {e}");
            }
        }
    }
}

fn spawn_applier(
    engine: Arc<Engine>,
    rx: Receiver<PreparedBatch>,
    snapshots: Option<PathBuf>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    let every = Duration::from_millis(engine.config().snapshot.interval_ms.max(1));
    let mut snapshotter = snapshots.map(|dir| Snapshotter {
        dir,
        every,
        last: Instant::now(),
        dirty: false,
        in_flight: None,
    });
    std::thread::Builder::new()
        .name("freshet-apply".into())
        .spawn(move || {
            // A batch with partition resets must not be merged into an earlier one.
            let mut held: Option<PreparedBatch> = None;
            loop {
                let next = match held.take() {
                    Some(batch) => Ok(batch),
                    None => rx.recv_timeout(Duration::from_millis(200)),
                };
                match next {
                    Ok(mut merged) => {
                        // Coalesce whatever else is waiting: one commit for all of it.
                        while merged.len() < 8192 {
                            match rx.try_recv() {
                                Ok(more) => {
                                    if let Err(more) = merged.absorb(more) {
                                        held = Some(more);
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        let records = merged.len();
                        let outcome = engine.apply_prepared(merged);
                        tracing::debug!(records, ?outcome, "applied batch");
                        if let Some(s) = snapshotter.as_mut() {
                            s.dirty = true;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                engine.maintain_vector_indexes();
                if let Some(s) = snapshotter.as_mut()
                    && s.due()
                {
                    s.start(&engine);
                }
            }
            if let Some(s) = snapshotter {
                s.finish(&engine);
            }
        })
        .map_err(|source| StartError::Thread {
            what: "apply thread",
            source,
        })
}

/// Keeps lag current, and asks the consumer to re-read a partition whose applied offset no
/// longer exists in the broker's log (topic recreated, or retention passed it).
async fn refresh_watermarks(
    engine: Arc<Engine>,
    every: Duration,
    resets: std::sync::mpsc::Sender<ResetRequest>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requested: std::collections::HashMap<ResetRequest, Instant> = Default::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                engine.refresh_watermarks(Duration::from_secs(2)).await;
                for (topic, partition, reason) in engine.partitions_to_reset() {
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
