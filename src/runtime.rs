//! Wires the pipeline's stages ([`crate::pipeline`]: open → consume → prepare → apply, each
//! on its own thread, and the checkpoint thread behind them), the watermark task and the catch-up
//! progress log, in one place, and stops them in order on shutdown: stop consuming, let
//! prepare and apply drain, write the last checkpoint, save the vector graphs, flush dead
//! letters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, EngineError, Ingest, PreparedBatch, Search};
use crate::freshness::catch_up::Applied;
use crate::pipeline::{Applier, Checkpointer, Consumer, ConsumerLinks, Opener, Preparer};
use crate::source::{
    Batch, DeadLetters, MetaClient, PollOptions, ResetRequest, SourceError, StartOffsets,
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
    /// The pipeline's one cancellation path ([`Ingest::cancellation`]): the consumer, the
    /// watermark and catch-up tasks and the wait for an unavailable embedder end on it.
    cancel: CancellationToken,
    /// Open, consume, prepare and apply threads, in pipeline order.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Told to write the last checkpoint and stop once the apply thread has ended.
    checkpoints: Checkpointer,
    /// The consumer-group member of a cluster node (`[cluster]`), taken by whoever leaves
    /// the group first: the drain at shutdown, or `shutdown` itself.
    membership: Arc<Mutex<Option<crate::cluster::Membership>>>,
    /// What a cluster node owns (emptied when it leaves the group).
    ownership: Option<Arc<crate::cluster::Ownership>>,
    /// `server.shutdown_drain_ms`.
    drain: Duration,
}

/// The first step of a shutdown, while calls are still answered: `/readyz` turns 503 and a
/// cluster node leaves its group (the other nodes take its partitions over), then
/// `server.shutdown_drain_ms` passes so load balancers stop sending calls before the
/// listener closes.
pub struct Drain {
    search: Arc<Search>,
    membership: Arc<Mutex<Option<crate::cluster::Membership>>>,
    ownership: Option<Arc<crate::cluster::Ownership>>,
    period: Duration,
}

impl Drain {
    /// Runs the drain; resolves when the listener may close.
    pub async fn run(self) {
        self.search.freshness().begin_drain();
        leave_group(&self.membership, self.ownership.as_ref()).await;
        if !self.period.is_zero() {
            tracing::info!(
                "draining: answering for {} ms more before closing (server.shutdown_drain_ms)",
                self.period.as_millis()
            );
            tokio::time::sleep(self.period).await;
        }
    }
}

/// Leaves the cluster's consumer group, if still in it, and stops claiming its partitions,
/// so the other nodes' plans stop sending this node work at once.
async fn leave_group(
    membership: &Mutex<Option<crate::cluster::Membership>>,
    ownership: Option<&Arc<crate::cluster::Ownership>>,
) {
    let Some(member) = membership.lock().take() else {
        return;
    };
    // First stop claiming (and dropping) partitions, then leave the group, which hands them
    // to the other nodes at once.
    if let Some(o) = ownership {
        o.leave();
    }
    let _ = tokio::task::spawn_blocking(move || member.stop()).await;
}

impl Runtime {
    /// Builds the engine and starts the pipeline: persisted collections are opened first (the
    /// open stage, while HTTP already answers, not ready), then consuming starts from the
    /// offsets they end at. Must be called inside a tokio runtime.
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
        let (start_tx, start_rx) = std::sync::mpsc::channel::<StartOffsets>();
        let cancel = ingest.cancellation().clone();
        let (membership, ownership) = join_cluster(&config, &engine)?;
        let persisted = store.is_some();
        let topics = engine.catalog().topics();
        let progress = engine.freshness().progress();
        let consumer = Consumer {
            kafka: config.kafka.clone(),
            topics: topics.clone(),
            progress: Arc::clone(progress),
            options: PollOptions {
                ownership: ownership.clone(),
                ..PollOptions::default()
            },
        }
        .spawn(ConsumerLinks {
            start: start_rx,
            batches: tx,
            resets: reset_rx,
            stop: cancel.clone(),
        })?;
        let opener = Opener {
            ingest: Arc::clone(&ingest),
            persisted,
            progress: Arc::clone(progress),
            topics,
        }
        .spawn(start_tx)
        .map_err(thread_error("open thread"))?;
        let preparer = Preparer {
            ingest: Arc::clone(&ingest),
        }
        .spawn(rx, prepared_tx)
        .map_err(thread_error("prepare thread"))?;
        let applier = Applier {
            ingest: Arc::clone(&ingest),
        }
        .spawn(prepared_rx)
        .map_err(thread_error("apply thread"))?;
        let checkpoints = Checkpointer::spawn(Arc::clone(&ingest), persisted)
            .map_err(thread_error("checkpoint thread"))?;
        tokio::spawn(crate::pipeline::watermarks::refresh_watermarks(
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
                    .writers()
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
            cancel,
            threads: vec![opener, consumer, preparer, applier],
            checkpoints,
            membership: Arc::new(Mutex::new(membership)),
            ownership: ownership.map(|(o, _)| o),
            drain: Duration::from_millis(config.server.shutdown_drain_ms),
        })
    }

    /// The drain that begins this runtime's shutdown (see [`Drain`]).
    pub fn drain(&self) -> Drain {
        Drain {
            search: Arc::clone(&self.search),
            membership: Arc::clone(&self.membership),
            ownership: self.ownership.clone(),
            period: self.drain,
        }
    }

    /// Stops consuming, waits for prepare and apply to finish what is queued, for the last
    /// checkpoint and for the vector graphs to be saved, and flushes dead letters.
    pub async fn shutdown(mut self) {
        leave_group(&self.membership, self.ownership.as_ref()).await;
        self.cancel.cancel();
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

fn thread_error(what: &'static str) -> impl Fn(std::io::Error) -> StartError {
    move |source| StartError::Thread { what, source }
}

/// Where persisted collections live, or `None` when `snapshot.interval_ms = 0` keeps
/// everything in memory.
fn store_dir(config: &Config) -> Option<PathBuf> {
    (config.snapshot.interval_ms > 0).then(|| config.server.data_dir.join("collections"))
}
