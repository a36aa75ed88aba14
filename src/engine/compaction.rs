//! Rebuilding a collection's HNSW graph without its dead points.
//!
//! hnsw_rs cannot delete, so superseded and deleted versions stay in the graph, masked.
//! When they pass `hnsw.rebuild_dead_fraction`, the writer exports the live vectors and a
//! background thread builds a fresh graph from them while queries keep using the old one and
//! ingestion goes on. Vector writes made meanwhile are logged; when the build is done, the
//! writer replays the log into the new graph and swaps it in, between two batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::index::{IndexError, VectorIndex};

use super::{Collection, Engine};

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

impl Engine {
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
        for c in &self.collections {
            if rebuilds.iter().any(|r| Arc::ptr_eq(&r.collection, c)) {
                continue;
            }
            let Some(index) = c.vectors() else { continue };
            let (live, dead) = (index.live_points(), index.dead_points());
            let hnsw = &c.config.hnsw;
            if dead < hnsw.rebuild_min_dead
                || (dead as f64) < hnsw.rebuild_dead_fraction * (live + dead) as f64
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
            let spawned = std::thread::Builder::new()
                .name("freshet-rebuild".into())
                .spawn(move || VectorIndex::from_docs(dim, params, exported));
            match spawned {
                Ok(handle) => rebuilds.push(Rebuild {
                    collection: Arc::clone(c),
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
        for op in log {
            let applied = match op {
                VectorOp::Upsert {
                    doc_id,
                    seq,
                    vectors,
                } => fresh.upsert(&doc_id, seq, &vectors),
                VectorOp::Delete { doc_id } => {
                    fresh.delete(&doc_id);
                    Ok(())
                }
            };
            if let Err(e) = applied {
                tracing::error!(collection = c.name(), "replaying into rebuilt index: {e}");
            }
        }
        let live = fresh.live_points();
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
