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
use crate::engine::{Engine, EngineError, GraphDump, Ingest, PreparedBatch, Search};
use crate::freshness::Freshness;
use crate::freshness::catch_up::Applied;
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
    /// The cluster part could not be set up.
    #[error("{0}")]
    Cluster(String),
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
    /// The reading side, which the MCP tools query.
    pub search: Arc<Search>,
    /// The writing side (prepare, apply, checkpoints).
    ingest: Arc<Ingest>,
    stop: Arc<AtomicBool>,
    cancel: CancellationToken,
    /// Consumer, prepare and apply threads, in pipeline order.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Told to write the last checkpoint and stop once the apply thread has ended.
    checkpoints: Checkpointer,
    /// The consumer-group member of a cluster node (`[cluster]`).
    membership: Option<crate::cluster::Membership>,
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
        let engine = Engine::open(Arc::clone(&config), Some(meta), dead_letters, store.clone())?;
        let ingest = Arc::clone(engine.ingest());
        // Small bounds: backpressure reaches the consumer (and so the broker) instead of memory.
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let (prepared_tx, prepared_rx) = sync_channel::<PreparedBatch>(4);
        let (reset_tx, reset_rx) = std::sync::mpsc::channel::<ResetRequest>();
        let stop = Arc::new(AtomicBool::new(false));
        let (membership, ownership) = join_cluster(&config, &engine)?;
        let restore_into = Arc::clone(&ingest);
        let persisted = store.is_some();
        let consumer = source::spawn_consumer(
            &config.kafka,
            engine.catalog().topics(),
            Arc::clone(engine.freshness().progress()),
            ConsumerLinks {
                batches: tx,
                resets: reset_rx,
                stop: Arc::clone(&stop),
            },
            PollOptions {
                ownership,
                ..PollOptions::default()
            },
            move || {
                if persisted {
                    open_persisted(&restore_into);
                }
            },
        )?;
        let preparer = spawn_preparer(Arc::clone(&ingest), rx, prepared_tx)?;
        let applier = spawn_applier(Arc::clone(&ingest), prepared_rx)?;
        let checkpoints = Checkpointer::spawn(Arc::clone(&ingest), persisted)?;
        let cancel = CancellationToken::new();
        tokio::spawn(refresh_watermarks(
            Arc::clone(engine.freshness()),
            Duration::from_millis(config.kafka.watermark_interval_ms.max(50)),
            reset_tx,
            cancel.clone(),
        ));
        let catalog = Arc::clone(engine.catalog());
        tokio::spawn(crate::freshness::catch_up::run(
            Arc::clone(engine.freshness()),
            move || {
                catalog
                    .collections()
                    .iter()
                    .map(|c| Applied {
                        collection: c.name().to_string(),
                        topics: c.config.topics.clone(),
                        applied: c.applied_records(),
                    })
                    .collect()
            },
            Duration::from_millis(config.server.progress_log_interval_ms),
            cancel.clone(),
        ));
        Ok(Runtime {
            search: Arc::clone(engine.search()),
            ingest,
            stop,
            cancel,
            threads: vec![consumer, preparer, applier],
            checkpoints,
            membership,
        })
    }

    /// Stops consuming, waits for prepare and apply to finish what is queued, for the last
    /// checkpoint and for the vector graphs to be saved, and flushes dead letters.
    pub async fn shutdown(mut self) {
        if let Some(membership) = self.membership.take() {
            // Leaving the group first hands the partitions to the other nodes at once.
            let _ = tokio::task::spawn_blocking(move || membership.stop()).await;
        }
        self.cancel.cancel();
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.threads);
        let ingest = Arc::clone(&self.ingest);
        let checkpoints = self.checkpoints.take();
        let joined = tokio::task::spawn_blocking(move || {
            // Each stage drops its sender when it returns, which ends the next stage's loop
            // after it has drained what was already queued.
            for h in threads {
                let _ = h.join();
            }
            checkpoints.finish();
            if let Some(dlq) = ingest.dead_letters() {
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

/// A cluster node's group member, and its ownership with the handoff grace for the consumer.
type Joined = (
    Option<crate::cluster::Membership>,
    Option<(Arc<crate::cluster::Ownership>, Duration)>,
);

/// In a cluster: joins this node's consumer group and makes the engine a cluster node.
/// Returns the member (left at shutdown) and what the consumer needs to follow ownership.
fn join_cluster(config: &Config, engine: &Engine) -> Result<Joined, StartError> {
    let Some(settings) = &config.cluster else {
        return Ok((None, None));
    };
    let ownership = Arc::new(crate::cluster::Ownership::default());
    let Some(cluster) = crate::cluster::Cluster::new(settings.clone(), Arc::clone(&ownership))
    else {
        return Err(StartError::Cluster(format!(
            "cluster.key_env: environment variable {} is not set",
            settings.key_env
        )));
    };
    engine.search().join_cluster(Arc::new(cluster));
    engine.freshness().follow_ownership(Arc::clone(&ownership));
    let membership = crate::cluster::Membership::start(
        &config.kafka,
        settings,
        engine.catalog().topics(),
        Arc::clone(&ownership),
    )?;
    tracing::info!(
        node = settings.node_id(),
        group = settings.group_id(),
        "cluster: joined the consumer group; reading only the partitions it assigns here"
    );
    let grace = Duration::from_millis(settings.handoff_grace_ms);
    Ok((Some(membership), Some((ownership, grace))))
}

/// Where persisted collections live, or `None` when `snapshot.interval_ms = 0` keeps
/// everything in memory.
fn store_dir(config: &Config) -> Option<PathBuf> {
    (config.snapshot.interval_ms > 0).then(|| config.server.data_dir.join("collections"))
}

fn open_persisted(engine: &Ingest) {
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
    engine: Arc<Ingest>,
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
    fn tick(&mut self, engine: &Arc<Ingest>) {
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
    fn finish(mut self, engine: &Arc<Ingest>) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.join();
        }
        run_dumps(engine, engine.due_graph_dumps(true));
    }
}

fn run_dumps(engine: &Ingest, dumps: Vec<GraphDump>) {
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
    fn spawn(engine: Arc<Ingest>, persisted: bool) -> Result<Checkpointer, StartError> {
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
    engine: Arc<Ingest>,
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
