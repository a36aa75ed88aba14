//! Starts the pipeline (consumer thread → prepare thread → apply thread) and the watermark refresher, and
//! stops them in order on shutdown: stop consuming, let apply drain, flush dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, EngineError, Prepared};
use crate::source::{self, Batch, DeadLetters, MetaClient, PollOptions, SourceError};

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
    /// Builds the engine and starts consuming. Must be called inside a tokio runtime.
    pub fn start(config: Arc<Config>) -> Result<Runtime, StartError> {
        let meta = MetaClient::new(&config.kafka)?;
        let dead_letters = DeadLetters::new(&config.kafka)?;
        let engine = Arc::new(Engine::new(Arc::clone(&config), Some(meta), dead_letters)?);
        // Small bound: backpressure reaches the consumer (and so the broker) instead of memory.
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = source::spawn_consumer(
            &config.kafka,
            engine.topics(),
            Arc::clone(engine.progress()),
            tx,
            Arc::clone(&stop),
            PollOptions::default(),
        )?;
        let (prepared_tx, prepared_rx) = mpsc::channel::<Vec<Prepared>>(4);
        let preparer = spawn_preparer(Arc::clone(&engine), rx, prepared_tx)?;
        let applier = spawn_applier(Arc::clone(&engine), prepared_rx)?;
        let cancel = CancellationToken::new();
        tokio::spawn(refresh_watermarks(
            Arc::clone(&engine),
            Duration::from_millis(config.kafka.watermark_interval_ms.max(50)),
            cancel.clone(),
        ));
        Ok(Runtime {
            engine,
            stop,
            cancel,
            threads: vec![consumer, preparer, applier],
        })
    }

    /// Stops consuming, waits for the apply thread to finish its last batch, and flushes
    /// dead letters.
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
        if tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .is_err()
        {
            tracing::warn!("pipeline did not stop within 10 s; exiting anyway");
        }
    }
}

fn spawn_preparer(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Vec<Prepared>>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("freshet-prepare".into())
        .spawn(move || {
            while let Some(batch) = rx.blocking_recv() {
                if tx.blocking_send(engine.prepare(batch)).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| StartError::Thread {
            what: "prepare thread",
            source,
        })
}

fn spawn_applier(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Vec<Prepared>>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("freshet-apply".into())
        .spawn(move || {
            while let Some(mut merged) = rx.blocking_recv() {
                // Coalesce whatever else is waiting: one commit for all of it.
                while merged.len() < 8192 {
                    match rx.try_recv() {
                        Ok(more) => merged.extend(more),
                        Err(_) => break,
                    }
                }
                let records = merged.len();
                let outcome = engine.apply_prepared(merged);
                tracing::debug!(records, ?outcome, "applied batch");
            }
        })
        .map_err(|source| StartError::Thread {
            what: "apply thread",
            source,
        })
}

async fn refresh_watermarks(engine: Arc<Engine>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                engine.refresh_watermarks(Duration::from_secs(2)).await;
            }
        }
    }
}
