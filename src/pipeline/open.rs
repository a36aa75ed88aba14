//! The open stage: before anything is consumed, opens what is persisted (each collection's
//! checkpoint, BM25 index, vector graph and documents) and gives the consume stage the
//! offsets to start from. HTTP already answers meanwhile (not ready).

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::engine::Ingest;
use crate::source::StartOffsets;
use crate::view::Progress;

/// The open stage.
pub struct Opener {
    /// Whose collections are opened.
    pub ingest: Arc<Ingest>,
    /// False when `snapshot.interval_ms = 0` keeps everything in memory: nothing to open.
    pub persisted: bool,
    /// Where opening leaves each partition's applied offsets.
    pub progress: Arc<Progress>,
    /// Every topic a collection reads.
    pub topics: Vec<String>,
}

impl Opener {
    /// Starts the thread; it ends once the start offsets are sent.
    pub fn spawn(
        self,
        start: Sender<StartOffsets>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("freshet-open".into())
            .spawn(move || {
                if self.persisted {
                    open_persisted(&self.ingest);
                    release_freed_memory();
                }
                let offsets = StartOffsets::of(&self.progress, &self.topics);
                // The consumer is gone only when the pipeline stopped before it started.
                let _ = start.send(offsets);
            })
    }
}

fn open_persisted(ingest: &Ingest) {
    let started = Instant::now();
    let report = ingest.open_persisted();
    if report.restored.is_empty() && report.rebuilt.is_empty() && report.rebuilding.is_empty() {
        tracing::info!("nothing persisted yet: reading every topic from the beginning");
    } else {
        tracing::info!(
            restored = ?report.restored,
            rebuilt = ?report.rebuilt,
            rebuilding = ?report.rebuilding,
            "opened the persisted collections in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Gives the allocator's free pages back to the system. Opening a collection replays its
/// vector journal (a copy of every vector) before the graph dump's vectors replace those
/// copies; glibc keeps such small freed blocks, which at 1M documents left resident memory
/// ~1.5 KiB per document above the first catch-up's (docs/BENCHMARKS.md).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists and releases unused
    // pages; it takes no pointer and may run at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
