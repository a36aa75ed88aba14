//! Rebuilding a collection's HNSW graph without its dead points.
//!
//! The HNSW graph cannot delete, so superseded and deleted versions stay in the graph, masked.
//! When they pass `hnsw.rebuild_dead_fraction`, the writer exports the live vectors and a
//! background thread builds a fresh graph from them while queries keep using the old one and
//! ingestion goes on. Vector writes made meanwhile are logged; the build thread replays the
//! log into the new graph until little is left, and the writer replays the rest and swaps it
//! in, between two batches (so a swap costs the writer only the last few writes).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::index::{IndexError, VectorIndex};

use super::{Collection, Ingest};

/// A vector write made while a rebuild was running.
pub(super) enum VectorOp {
    /// Replace a document's vectors.
    Upsert {
        doc_id: String,
        seq: u64,
        vectors: Vec<(u32, Vec<f32>)>,
    },
    /// Mask a document's vectors.
    Delete { doc_id: String },
}

/// A rebuild in progress.
pub(super) struct Rebuild {
    collection: Arc<Collection>,
    started: Instant,
    handle: JoinHandle<Result<VectorIndex, IndexError>>,
}

impl Ingest {
    /// Starts rebuilds that are due and swaps in those that are done. Called by the writer
    /// between batches (and when idle).
    pub fn maintain_vector_indexes(&self) {
        let mut rebuilds = self.rebuilds.lock();
        let mut still_running = Vec::new();
        for job in rebuilds.drain(..) {
            if job.handle.is_finished() {
                self.finish_rebuild(job);
            } else {
                still_running.push(job);
            }
        }
        *rebuilds = still_running;
        for c in self.catalog.writers() {
            if rebuilds.iter().any(|r| Arc::ptr_eq(&r.collection, &c)) {
                continue;
            }
            let Some(index) = c.vectors() else { continue };
            let (live, dead) = (index.live_points(), index.dead_points());
            // Only dead points a rebuild can remove count: those replayed into the last
            // rebuild are in this graph too, and would start the next rebuild at once.
            let removable = index.dead_points_since_live();
            let hnsw = &c.config.hnsw;
            if removable < hnsw.rebuild_min_dead
                || (removable as f64) < hnsw.rebuild_dead_fraction * (live + dead) as f64
            {
                continue;
            }
            // Export and start logging in the same writer step: the log holds exactly the
            // writes the export does not.
            let exported = index.export();
            *c.rebuild_log.lock() = Some(Vec::new());
            let (dim, params) = (index.dim(), index.params());
            tracing::info!(
                collection = c.name(),
                live,
                dead,
                "rebuilding the vector index without its dead points"
            );
            let collection = Arc::clone(&c);
            let spawned = std::thread::Builder::new()
                .name("freshet-rebuild".into())
                .spawn(move || {
                    let fresh = VectorIndex::from_docs(dim, params, exported)?;
                    catch_up(&collection, &fresh);
                    Ok(fresh)
                });
            match spawned {
                Ok(handle) => rebuilds.push(Rebuild {
                    collection: Arc::clone(&c),
                    started: Instant::now(),
                    handle,
                }),
                Err(e) => {
                    *c.rebuild_log.lock() = None;
                    tracing::error!(collection = c.name(), "cannot start rebuild thread: {e}");
                }
            }
        }
    }

    /// Waits for every running rebuild and swaps it in (tests and shutdown).
    pub fn finish_vector_rebuilds(&self) {
        let jobs: Vec<Rebuild> = self.rebuilds.lock().drain(..).collect();
        for job in jobs {
            self.finish_rebuild(job);
        }
    }

    fn finish_rebuild(&self, job: Rebuild) {
        let c = &job.collection;
        let log = c.rebuild_log.lock().take().unwrap_or_default();
        let fresh = match job.handle.join() {
            Ok(Ok(fresh)) => fresh,
            Ok(Err(e)) => {
                tracing::error!(collection = c.name(), "vector rebuild failed: {e}");
                return;
            }
            Err(_) => {
                tracing::error!(collection = c.name(), "vector rebuild thread panicked");
                return;
            }
        };
        let replayed = log.len();
        // The last writes are inserted on every core: they are the live stream's backlog now.
        fresh.mark_live();
        replay(c, &fresh, log);
        let live = fresh.live_points();
        fresh.mark_live();
        *c.vectors.write() = Some(Arc::new(fresh));
        self.metrics.vector_rebuilds.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            collection = c.name(),
            live,
            replayed,
            "swapped in the rebuilt vector index after {:.1} s",
            job.started.elapsed().as_secs_f64()
        );
    }
}

/// Below this many logged writes, the build thread leaves the rest to the writer's swap.
const SWAP_TAIL: usize = 256;

/// On the build thread: replays the writes logged since the export into `fresh`, round after
/// round, until a round is short; then waits for the graph. The writer keeps logging
/// meanwhile and replays what is left when it swaps.
fn catch_up(c: &Collection, fresh: &VectorIndex) {
    loop {
        let ops = match c.rebuild_log.lock().as_mut() {
            Some(log) => std::mem::take(log),
            None => return,
        };
        let short = ops.len() < SWAP_TAIL;
        replay(c, fresh, ops);
        fresh.wait_indexed();
        if short {
            return;
        }
    }
}

/// Applies logged vector writes to `fresh`, in order.
fn replay(c: &Collection, fresh: &VectorIndex, ops: Vec<VectorOp>) {
    for op in ops {
        match op {
            VectorOp::Upsert {
                doc_id,
                seq,
                vectors,
            } => {
                if let Err(e) = fresh.stage_upsert(&doc_id, seq, &vectors) {
                    tracing::error!(collection = c.name(), "replaying into rebuilt index: {e}");
                }
            }
            VectorOp::Delete { doc_id } => fresh.stage_delete(&doc_id),
        }
    }
    fresh.flush();
}
