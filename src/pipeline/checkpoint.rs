//! The checkpoint stage: behind the writer, makes what it applied durable and saves the
//! vector graphs that grew.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::{GraphDump, Ingest};

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
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; `persisted` says whether the collections live on disk (vector
    /// graphs are then saved too).
    pub fn spawn(engine: Arc<Ingest>, persisted: bool) -> std::io::Result<Checkpointer> {
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
                    // A rebuilt generation serves once a checkpoint covers its catch-up.
                    engine.swap_caught_up_generations();
                    if let Some(s) = saver.as_mut() {
                        s.tick(&engine);
                    }
                }
                // The writer has ended: what it applied last is made durable now.
                engine.checkpoint_due(true);
                if let Some(s) = saver {
                    s.finish(&engine);
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Moves the thread handle out (for the shutdown task), leaving a handle to nothing.
    pub fn take(&mut self) -> Checkpointer {
        Checkpointer {
            stop: Arc::clone(&self.stop),
            thread: self.thread.take(),
        }
    }

    /// Writes the last checkpoint and saves the graphs; call once the writer has ended.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}
