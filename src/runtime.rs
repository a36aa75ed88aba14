//! Starts the pipeline (consumer thread → prepare thread → apply thread, and the checkpoint
//! thread behind them), the watermark refresher and the catch-up progress log, and stops
//! them in order on shutdown: stop consuming, let prepare and apply drain, write the last
//! checkpoint, save the vector graphs, flush dead letters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, EngineError, GraphDump, PreparedBatch};
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
    /// Told to write the last checkpoint and stop once the apply thread has ended.
    checkpoints: Checkpointer,
}

impl Runtime {
    /// Builds the engine and starts consuming; persisted collections are opened first, on
    /// the consumer's thread, while HTTP already answers (not ready). Must be called inside a
    /// tokio runtime.
    pub fn start(config: Arc<Config>) -> Result<Runtime, StartError> {
        let meta = MetaClient::new(&config.kafka)?;
        let dead_letters = DeadLetters::new(&config.kafka)?;
        let store = store_dir(&config);
        // int8 collections keep their exact vectors in files here (unlinked, see
        // index::vector::spill), not in the system's temporary directory, which may be RAM.
        crate::index::vector::set_spill_dir(&config.server.data_dir);
        let engine = Arc::new(Engine::open(
            Arc::clone(&config),
            Some(meta),
            dead_letters,
            store.clone(),
        )?);
        // Small bounds: backpressure reaches the consumer (and so the broker) instead of memory.
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let (prepared_tx, prepared_rx) = sync_channel::<PreparedBatch>(4);
        let (reset_tx, reset_rx) = std::sync::mpsc::channel::<ResetRequest>();
        let stop = Arc::new(AtomicBool::new(false));
        let restore_into = Arc::clone(&engine);
        let persisted = store.is_some();
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
                if persisted {
                    open_persisted(&restore_into);
                }
            },
        )?;
        let preparer = spawn_preparer(Arc::clone(&engine), rx, prepared_tx)?;
        let applier = spawn_applier(Arc::clone(&engine), prepared_rx)?;
        let checkpoints = Checkpointer::spawn(Arc::clone(&engine), persisted)?;
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
            checkpoints,
        })
    }

    /// Stops consuming, waits for prepare and apply to finish what is queued, for the last
    /// checkpoint and for the vector graphs to be saved, and flushes dead letters.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.threads);
        let engine = Arc::clone(&self.engine);
        let checkpoints = self.checkpoints.take();
        let joined = tokio::task::spawn_blocking(move || {
            // Each stage drops its sender when it returns, which ends the next stage's loop
            // after it has drained what was already queued.
            for h in threads {
                let _ = h.join();
            }
            checkpoints.finish();
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

/// Where persisted collections live, or `None` when `snapshot.interval_ms = 0` keeps
/// everything in memory.
fn store_dir(config: &Config) -> Option<PathBuf> {
    (config.snapshot.interval_ms > 0).then(|| config.server.data_dir.join("collections"))
}

fn open_persisted(engine: &Engine) {
    let started = Instant::now();
    let report = engine.open_persisted();
    if report.restored.is_empty() && report.rebuilt.is_empty() {
        tracing::info!("nothing persisted yet: reading every topic from the beginning");
    } else {
        tracing::info!(
            restored = ?report.restored,
            rebuilt = ?report.rebuilt,
            "opened the persisted collections in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Stack of the prepare thread (reserved, not resident until used).
const PREPARE_STACK_BYTES: usize = 16 << 20;

fn spawn_preparer(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Batch>,
    tx: SyncSender<PreparedBatch>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("freshet-prepare".into())
        // Record decoders recurse once per nesting level (bounded: decode::avro::MAX_DEPTH,
        // Protobuf's limit of 100), and unoptimised builds use large frames.
        .stack_size(PREPARE_STACK_BYTES)
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

/// Saves vector graphs in the background, when they have grown enough to be worth it, so
/// the writer never waits on disk.
struct GraphSaver {
    every: Duration,
    last: Instant,
    in_flight: Option<std::thread::JoinHandle<()>>,
}

impl GraphSaver {
    fn tick(&mut self, engine: &Arc<Engine>) {
        if self.last.elapsed() < self.every
            || self.in_flight.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last = Instant::now();
        let dumps = engine.due_graph_dumps(false);
        if dumps.is_empty() {
            return;
        }
        let engine = Arc::clone(engine);
        self.in_flight = std::thread::Builder::new()
            .name("freshet-graph-dump".into())
            .spawn(move || run_dumps(&engine, dumps))
            .map_err(|e| tracing::error!("cannot start graph dump thread: {e}"))
            .ok();
    }

    /// At shutdown: waits for a dump in flight, then saves every graph that grew.
    fn finish(mut self, engine: &Arc<Engine>) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.join();
        }
        run_dumps(engine, engine.due_graph_dumps(true));
    }
}

fn run_dumps(engine: &Engine, dumps: Vec<GraphDump>) {
    for dump in dumps {
        dump.run(engine);
    }
}

/// How often the checkpoint thread looks for due checkpoints (and graph saves) at most.
const CHECKPOINT_TICK: Duration = Duration::from_millis(50);

/// The checkpoint thread: writes each collection's checkpoint every
/// `snapshot.checkpoint_interval_ms` behind the writer, and saves grown vector graphs.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn spawn(engine: Arc<Engine>, persisted: bool) -> Result<Checkpointer, StartError> {
        let stop = Arc::new(AtomicBool::new(false));
        let every = Duration::from_millis(engine.config().snapshot.interval_ms.max(1));
        let mut saver = persisted.then(|| GraphSaver {
            every,
            last: Instant::now(),
            in_flight: None,
        });
        let tick = Duration::from_millis(engine.config().snapshot.checkpoint_interval_ms)
            .clamp(Duration::from_millis(1), CHECKPOINT_TICK);
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("freshet-checkpoint".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    if !engine.checkpoint_due(false) {
                        std::thread::sleep(tick);
                    }
                    if let Some(s) = saver.as_mut() {
                        s.tick(&engine);
                    }
                }
                // The writer has ended: what it applied last is made durable now.
                engine.checkpoint_due(true);
                if let Some(s) = saver {
                    s.finish(&engine);
                }
            })
            .map_err(|source| StartError::Thread {
                what: "checkpoint thread",
                source,
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    fn take(&mut self) -> Checkpointer {
        Checkpointer {
            stop: Arc::clone(&self.stop),
            thread: self.thread.take(),
        }
    }

    /// Writes the last checkpoint and saves the graphs; call once the writer has ended.
    fn finish(self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}

fn spawn_applier(
    engine: Arc<Engine>,
    rx: Receiver<PreparedBatch>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
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
                        // Coalesce whatever else is waiting: one pass for all of it.
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
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                engine.maintain_vector_indexes();
            }
        })
        .map_err(|source| StartError::Thread {
            what: "apply thread",
            source,
        })
}

/// How many times in a row watermarks are re-read after 100 ms while some are unknown.
const FAST_WATERMARK_READS: u32 = 50;

/// Keeps lag current, and asks the consumer to re-read a partition whose applied offset no
/// longer exists in the broker's log (topic recreated, or retention passed it).
async fn refresh_watermarks(
    engine: Arc<Engine>,
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
                let answered = engine.refresh_watermarks(Duration::from_secs(2)).await;
                // Until every partition has a log end, catch-up cannot say what remains and
                // readiness cannot be decided: read again soon rather than in `every` (a
                // catch-up may be over by then). A broker that does not answer is not polled
                // faster than `every`.
                let now_tracked = engine.progress().tracked();
                if now_tracked != tracked {
                    (fast_left, tracked) = (FAST_WATERMARK_READS, now_tracked);
                }
                let known = engine.progress().all_watermarks_known();
                wait = if !known && (answered > 0 || tracked == 0) && fast_left > 0 {
                    fast_left -= 1;
                    Duration::from_millis(100).min(every)
                } else {
                    every
                };
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
