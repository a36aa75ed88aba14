//! Approximate nearest-neighbour search over chunk vectors (our own HNSW graph, `hnsw`),
//! kept current under upserts and deletes.
//!
//! The graph does not remove nodes. So every insert gets a fresh point id (the graph's node
//! id), a point table maps point ids to `(document, chunk, seq)`, and a superseded or deleted
//! point is only marked dead: searches skip it and the graph is rebuilt (see
//! [`VectorIndex::compacted`]) once the dead fraction is high.
//!
//! Filters and masking are applied to an oversampled candidate list from the plain graph
//! search; selective filters get an exact scan instead (a filtered walk that cannot stop
//! early costs more than the scan).
//!
//! The graph's recall is measured on the index's own points each time the graph doubles
//! (from 1024 points, on the insert thread). Vectors without neighbourhood structure
//! (independent random directions) leave any graph far from the true neighbours; below
//! [`HnswParams::min_recall`] searches scan every point exactly instead, slower but correct.
//!
//! Each vector is held once: the point table keeps its own copy only until the point is in
//! the graph, then the graph's is the one (see `Stored`).
//!
//! Vectors are L2-normalised on the way in, so cosine similarity is a dot product; the
//! graph's distance `1 - dot` is clamped and maps NaN to the largest distance, so damaged
//! input can never make it panic.
//!
//! With [`VectorStorage::Int8`] the graph holds int8 copies (a quarter of the bytes, and
//! cheaper distances while inserting and searching); the exact f32 vectors go to a spill
//! file on disk (`spill`), and the best candidates of every search are scored again exactly
//! from it ([`RERANK_FACTOR`]), so scores and the final order are exact.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

mod chunked;
mod graph;
mod hnsw;
mod kernel;
mod points;
mod spill;

use super::IndexError;
use super::vector_store::{self, BasePoint, GraphMeta, Journal, Record};
use graph::{Graph, Neighbour};
use kernel::{dequantise, dot, dot_compact, normalise, quantise};
use points::{Point, PointTable, StagedOp, Stored};
use spill::SpillFile;
pub use spill::set_spill_dir;

/// Once a graph search would need more than 1/this of all points as candidates, an exact
/// scan is cheaper: each candidate costs tens of distance computations in the graph.
const EXACT_SCAN_FRACTION: usize = 32;
/// With int8 storage, a search scores up to this many times `limit` candidates again
/// exactly, as many as the graph walk's beam (`ef_search`) holds anyway: enough that
/// quantisation error does not change which points make the top `limit`, without widening
/// the walk (a wider beam for large limits made hybrid queries 3× slower).
pub const RERANK_FACTOR: usize = 5;

/// How the graph holds vectors (`collections[].vector_storage`).
///
/// int8 is the default: it builds the graph about twice as fast as f32 with a quarter of the
/// vector memory, and measured the same recall (1.000 at 100k, 0.976 against f32's 0.980 at
/// 1M clustered; docs/BENCHMARKS.md), because every search's best candidates are re-ranked
/// exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorStorage {
    /// 4 bytes per component in RAM.
    F32,
    /// 1 byte per component in RAM, plus a scale per vector; the f32 vectors live in a file
    /// on disk and re-rank each search's candidates.
    #[default]
    Int8,
}

impl VectorStorage {
    /// What a graph dump written before the setting existed holds (those graphs were f32).
    pub fn of_older_dumps() -> VectorStorage {
        VectorStorage::F32
    }
}

impl std::fmt::Display for VectorStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VectorStorage::F32 => "f32",
            VectorStorage::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for VectorStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(VectorStorage::F32),
            "int8" => Ok(VectorStorage::Int8),
            other => Err(format!("unknown vector storage {other:?}: f32 or int8")),
        }
    }
}

/// Graph construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node and layer (layer 0 keeps twice as many). Clamped to 2..=255:
    /// more buys no recall and costs 8 bytes per node for each.
    pub m: usize,
    /// Candidate list size while inserting: higher builds a better graph, slower.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to the requested limit when smaller).
    pub ef_search: usize,
    /// How the graph holds vectors.
    pub storage: VectorStorage,
    /// Below this measured recall@10 searches scan every point exactly instead of walking
    /// the graph ([`VectorIndex::recall_estimate`]); 0 keeps the graph whatever it measures.
    #[serde(default = "default_min_recall")]
    pub min_recall: f32,
}

fn default_min_recall() -> f32 {
    DEFAULT_MIN_RECALL
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 100,
            storage: VectorStorage::default(),
            min_recall: DEFAULT_MIN_RECALL,
        }
    }
}

/// One chunk-level result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// The document the chunk belongs to.
    pub doc_id: String,
    /// Position of the chunk within its document, from 0.
    pub chunk_no: u32,
    /// The document version this vector was indexed from.
    pub seq: u64,
    /// Cosine similarity to the query, in `[-1, 1]`.
    pub score: f32,
}

/// All live vectors of one document: what a snapshot stores and what
/// [`VectorIndex::upsert`] takes back on restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocVectors {
    /// The document's id.
    pub doc_id: String,
    /// The document version the vectors were indexed from.
    pub seq: u64,
    /// `(chunk_no, L2-normalised vector)`.
    pub vectors: Vec<(u32, Vec<f32>)>,
}

/// HNSW index of chunk vectors with masking of dead points. `Send + Sync`: one apply task
/// writes, any number of query tasks search.
///
/// A flushed point is searchable at once, before it is in the graph: graph inserts (about a
/// millisecond each) run on a background thread, and until a point's insert is done, searches
/// find it by an exact scan of the few waiting points. So a record's visibility does not wait
/// for the graph, and the writer goes on with the next batch while the graph catches up. At
/// most [`MAX_GRAPH_BACKLOG`] points wait; a flush beyond that blocks until the graph catches
/// up, so a burst slows ingest instead of making every search scan a long list.
pub struct VectorIndex {
    inner: Arc<Inner>,
}

/// What the index and its graph-insert thread share.
struct Inner {
    dim: usize,
    params: HnswParams,
    /// Synchronises internally; `insert` and `search` take `&self`.
    hnsw: Graph,
    /// The exact vectors of an int8 graph's points. `None` with f32 storage, or when the
    /// file could not be created: then int8 points keep their f32 copy in RAM.
    spill: Option<SpillFile>,
    /// Point id (the graph's node id) → what it is and whether it is still live. Held only for
    /// short lookups, never while calling the caller's predicate.
    table: RwLock<PointTable>,
    /// Serialises writers, so reserving the next point ids and publishing them is race-free
    /// even if more than one task ever writes.
    writer: Mutex<()>,
    /// Checked writes waiting for [`flush`](VectorIndex::flush), in order.
    staged: Mutex<Vec<StagedOp>>,
    /// How far the graph has caught up with the table.
    graph: Mutex<GraphProgress>,
    /// Signalled when points are published (the insert thread waits for work) and when
    /// points reach the graph (flushes and [`wait_indexed`](VectorIndex::wait_indexed) wait).
    graph_changed: Condvar,
    /// Whether a large round may use every core. Off while an index is built in the
    /// background (a rebuild), so it does not take the cores from the live index's inserts.
    parallel_inserts: AtomicBool,
    /// Dead points the index already had when it went live (see
    /// [`dead_points_since_live`](VectorIndex::dead_points_since_live)).
    dead_at_live: AtomicUsize,
    /// Where flushed writes are journaled, when the index is persisted.
    journal: Mutex<Option<Journal>>,
    /// Held by each round of graph inserts, and by a graph dump so it sees no insert half
    /// done.
    inserting: Mutex<()>,
    /// The graph's last measured recall and when to measure again (see
    /// [`Inner::recall_probe_due`]).
    recall: Mutex<RecallProbe>,
    /// Set when the graph's measured recall is below [`HnswParams::min_recall`]: searches
    /// scan every live point exactly instead of walking the graph.
    scan_instead: AtomicBool,
}

/// The graph's recall, as measured on the index's own points (see
/// [`VectorIndex::recall_estimate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallEstimate {
    /// Of the graph search's top 10, the fraction as near as the exact top 10.
    pub recall_at_10: f32,
    /// Points in the graph when it was measured.
    pub points: usize,
    /// Probe queries it rests on.
    pub queries: usize,
    /// Whether searches scan exactly because of it.
    pub exact_scan: bool,
    /// How long the measurement took (on the insert thread, whose inserts waited).
    pub took: std::time::Duration,
}

struct RecallProbe {
    last: Option<RecallEstimate>,
    /// Probe again once the graph holds this many points.
    next_at: usize,
}

/// The default [`HnswParams::min_recall`]: vectors with little neighbourhood structure
/// (e.g. independent random directions) leave any graph index far below it (0.07–0.4 in
/// docs/BENCHMARKS.md), while the clustered benchmark corpus measures 1.000, so the
/// threshold sits between with room for the probe's sampling error (±0.02 at 32 queries).
pub const DEFAULT_MIN_RECALL: f32 = 0.9;
/// Graphs smaller than this are not probed: their searches cost little either way.
const PROBE_MIN_POINTS: usize = 1024;
/// Queries per probe: each costs an exact scan of the graph's points (~20 ms per 100k f32
/// points on this project's machine), once per doubling.
const PROBE_QUERIES: usize = 32;
/// Graph and scan scores of the same point may differ by rounding (different kernels).
const SCORE_TOLERANCE: f32 = 1e-5;

/// Point ids are given out in order, so the points still waiting for the graph are exactly
/// the ids `inserted..published`.
#[derive(Default)]
struct GraphProgress {
    /// Ids below this are in the graph (or died before their turn and were skipped).
    inserted: usize,
    /// Ids below this are in the table, searchable.
    published: usize,
    /// No insert thread could be started: flushes insert on their own thread instead.
    inline: bool,
    /// The index was dropped: the insert thread exits.
    stopping: bool,
}

/// Below this many waiting points an insert round runs on the insert thread alone, so a
/// steady trickle of records takes at most one core from queries; a backlog this large (a
/// burst, a catch-up) is inserted on every core.
const PARALLEL_INSERT_MIN: usize = 256;
/// Points the insert thread takes per round. Visibility does not depend on it (waiting
/// points are scanned); larger rounds keep rayon's threads busier.
const INSERT_ROUND: usize = 1024;
/// Most points that may wait for the graph. Scanning this many 384-d vectors costs a search
/// about 0.2 ms; a flush that would leave more waiting blocks until the graph catches up.
pub const MAX_GRAPH_BACKLOG: usize = 4096;

impl Inner {
    /// Inserts the points `start..end` that are still live into the graph.
    fn insert_into_graph(&self, start: usize, end: usize) {
        let _round = self.inserting.lock();
        // Copies, so the table is not locked for the length of the inserts.
        let batch: Vec<(Box<[f32]>, usize)> = {
            let table = self.table.read();
            (start..end)
                .filter_map(|id| {
                    let point = table.points.get(id).filter(|p| p.live)?;
                    match &point.vector {
                        Stored::Own(v) => Some((v.clone(), id)),
                        Stored::Graph => None,
                    }
                })
                .collect()
        };
        if batch.len() >= PARALLEL_INSERT_MIN && self.parallel_inserts.load(Ordering::Relaxed) {
            use rayon::prelude::*;
            batch
                .par_iter()
                .for_each(|(vector, id)| self.hnsw.insert(vector, *id));
        } else {
            for (vector, id) in &batch {
                self.hnsw.insert(vector, *id);
            }
        }
        let ids: Vec<usize> = batch.into_iter().map(|(_, id)| id).collect();
        self.adopt_graph_points(ids);
    }

    /// Points now in the graph (of `ids`) give up their own copies, so each vector is held
    /// once in RAM. An int8 point's exact vector goes to the spill file first; if it cannot,
    /// the point keeps its copy (more memory, same answers).
    fn adopt_graph_points(&self, mut added: Vec<usize>) {
        added.retain(|&id| self.hnsw.contains(id));
        if added.is_empty() {
            return;
        }
        if matches!(self.hnsw, Graph::Int8(_)) {
            let Some(spill) = &self.spill else { return };
            let table = self.table.read();
            let mut failed = None;
            added.retain(|id| {
                let Some(Stored::Own(exact)) = table.points.get(*id).map(|p| &p.vector) else {
                    return false;
                };
                spill
                    .write(*id, exact)
                    .map_err(|e| failed = Some(e))
                    .is_ok()
            });
            if let Some(e) = failed {
                tracing::warn!("cannot write exact vectors to the spill file ({e}); kept in RAM");
            }
        }
        let mut table = self.table.write();
        for id in added {
            if let Some(p) = table.points.get_mut(id)
                && p.live
            {
                p.vector = Stored::Graph;
            }
        }
    }

    /// Point `id`'s exact vector: from RAM, else from the spill file. Should the file fail,
    /// the int8 copy stands in (logged), so an export never loses the point.
    fn exact_vector(&self, id: usize, stored: &Stored) -> Vec<f32> {
        if let Some(v) = self.exact_in_ram(id, stored) {
            return v.to_vec();
        }
        match self.spill.as_ref().map(|s| s.read(id)) {
            Some(Ok(v)) => v,
            other => {
                let e = other.and_then(Result::err);
                tracing::warn!("cannot read point {id}'s exact vector ({e:?}); using int8");
                let v = self.hnsw.compact(id).map(dequantise).unwrap_or_default();
                normalise(&v, self.dim, String::new).unwrap_or(v)
            }
        }
    }

    /// Point `id`'s exact vector when RAM holds it (ours, or an f32 graph's).
    fn exact_in_ram<'a>(&'a self, id: usize, stored: &'a Stored) -> Option<&'a [f32]> {
        match stored {
            Stored::Own(v) => Some(v),
            Stored::Graph => self.hnsw.exact(id),
        }
    }

    /// Exact score of a point against a unit query (reads the spill file for int8 points).
    fn exact_score(&self, query: &Query, id: usize, stored: &Stored) -> f32 {
        match self.exact_in_ram(id, stored) {
            Some(v) => dot(&query.unit, v),
            None => match self.spill.as_ref().map(|s| s.read(id)) {
                Some(Ok(v)) => dot(&query.unit, &v),
                _ => self.cheap_score(query, id, stored),
            },
        }
    }

    /// The score from RAM alone: exact for f32 points, approximate for int8 ones.
    fn cheap_score(&self, query: &Query, id: usize, stored: &Stored) -> f32 {
        if let Some(v) = self.exact_in_ram(id, stored) {
            return dot(&query.unit, v);
        }
        match (self.hnsw.compact(id), &query.compact) {
            (Some(p), Some(q)) => dot_compact(q, p),
            (Some(p), None) => dot(&query.unit, &dequantise(p)),
            (None, _) => 0.0,
        }
    }

    /// Records that `start..end` reached the graph and wakes whoever waits for it.
    fn mark_inserted(&self, end: usize) {
        let mut progress = self.graph.lock();
        progress.inserted = progress.inserted.max(end);
        self.graph_changed.notify_all();
    }

    /// Makes ids below `published` searchable and hands them to the graph.
    fn publish(&self, published: usize) {
        let mut progress = self.graph.lock();
        progress.published = published;
        self.graph_changed.notify_all();
    }

    /// Blocks until at most `backlog` points wait for the graph. Without an insert thread,
    /// does the inserts itself.
    fn wait_for_graph(&self, backlog: usize) {
        let mut progress = self.graph.lock();
        while progress.published - progress.inserted > backlog {
            if progress.inline {
                let (start, end) = (progress.inserted, progress.published);
                drop(progress);
                self.insert_into_graph(start, end);
                self.mark_inserted(end);
                progress = self.graph.lock();
            } else {
                self.graph_changed.wait(&mut progress);
            }
        }
    }

    /// The ids not yet in the graph, as of now.
    fn graph_backlog(&self) -> std::ops::Range<usize> {
        let progress = self.graph.lock();
        progress.inserted..progress.published
    }
}

/// The insert thread: takes published points in rounds and inserts them, until the index is
/// dropped.
fn run_graph_inserts(inner: Arc<Inner>) {
    loop {
        let (start, end) = {
            let mut progress = inner.graph.lock();
            loop {
                if progress.stopping {
                    return;
                }
                if progress.inserted < progress.published {
                    break;
                }
                // Nothing to insert: the moment to measure the graph, costing no ingest.
                let in_graph = progress.inserted;
                if inner.recall_probe_due(in_graph, true) {
                    drop(progress);
                    inner.probe_recall(in_graph);
                    progress = inner.graph.lock();
                    continue;
                }
                inner.graph_changed.wait(&mut progress);
            }
            let start = progress.inserted;
            (start, progress.published.min(start + INSERT_ROUND))
        };
        if inner.recall_probe_due(start, false) {
            inner.probe_recall(start);
        }
        inner.insert_into_graph(start, end);
        inner.mark_inserted(end);
    }
}

impl Drop for VectorIndex {
    fn drop(&mut self) {
        // Not joined: the thread finishes its round and exits; dropping must not block a
        // query task that happened to hold the last reference.
        self.inner.graph.lock().stopping = true;
        self.inner.graph_changed.notify_all();
    }
}

impl VectorIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, params: HnswParams) -> VectorIndex {
        VectorIndex::with_insert_thread(dim, params, true)
    }

    /// `insert_thread: false` makes flushes do the graph inserts themselves, once the backlog
    /// limit is passed (the fallback when no thread can be started; tests use it to hold
    /// points in the backlog).
    fn with_insert_thread(dim: usize, params: HnswParams, insert_thread: bool) -> VectorIndex {
        let params = clamped(params);
        let hnsw = Graph::new(&params, dim);
        Self::with_graph(dim, params, hnsw, PointTable::default(), 0, insert_thread)
    }

    /// An index over `table` whose graph already holds the points below `in_graph`; the
    /// insert thread adds the others.
    fn with_graph(
        dim: usize,
        params: HnswParams,
        hnsw: Graph,
        table: PointTable,
        in_graph: usize,
        insert_thread: bool,
    ) -> VectorIndex {
        let published = table.points.len();
        let spill = match params.storage {
            VectorStorage::F32 => None,
            VectorStorage::Int8 => SpillFile::create(dim)
                .inspect_err(|e| {
                    tracing::warn!(
                        "cannot create a file for exact vectors ({e}); the int8 index keeps \
                         them in RAM"
                    );
                })
                .ok(),
        };
        let inner = Arc::new(Inner {
            dim,
            params,
            hnsw,
            spill,
            table: RwLock::new(table),
            writer: Mutex::new(()),
            staged: Mutex::new(Vec::new()),
            graph: Mutex::new(GraphProgress {
                inserted: in_graph.min(published),
                published,
                ..GraphProgress::default()
            }),
            graph_changed: Condvar::new(),
            parallel_inserts: AtomicBool::new(true),
            dead_at_live: AtomicUsize::new(0),
            journal: Mutex::new(None),
            inserting: Mutex::new(()),
            recall: Mutex::new(RecallProbe {
                last: None,
                // A restored graph is measured once its missing points are in.
                next_at: in_graph.max(PROBE_MIN_POINTS),
            }),
            scan_instead: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&inner);
        let started = insert_thread.then(|| {
            std::thread::Builder::new()
                .name("freshet-hnsw".into())
                .spawn(move || run_graph_inserts(for_thread))
        });
        match started {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!("cannot start the HNSW insert thread ({e}); inserting on flush");
                inner.graph.lock().inline = true;
            }
            None => inner.graph.lock().inline = true,
        }
        VectorIndex { inner }
    }

    /// The dimension every vector must have.
    pub fn dim(&self) -> usize {
        self.inner.dim
    }

    /// The parameters in effect (after clamping).
    pub fn params(&self) -> HnswParams {
        self.inner.params
    }

    /// Replace every point of `doc_id` with these chunk vectors; the old points are masked
    /// dead. All vectors are checked before anything changes, so a bad vector leaves the
    /// document as it was. An empty slice leaves the document with no vectors.
    pub fn upsert(
        &self,
        doc_id: &str,
        seq: u64,
        vectors: &[(u32, Vec<f32>)],
    ) -> Result<(), IndexError> {
        self.stage_upsert(doc_id, seq, vectors)?;
        self.flush();
        Ok(())
    }

    /// Mask every point of `doc_id`. Unknown ids are a no-op (deletes may be replayed).
    pub fn delete(&self, doc_id: &str) {
        self.stage_delete(doc_id);
        self.flush();
    }

    /// Like [`upsert`](Self::upsert), but only checks and queues the write: nothing is
    /// visible until [`flush`](Self::flush). An error means nothing was queued.
    pub fn stage_upsert(
        &self,
        doc_id: &str,
        seq: u64,
        vectors: &[(u32, Vec<f32>)],
    ) -> Result<(), IndexError> {
        let normalised = vectors
            .iter()
            .map(|(chunk_no, vector)| {
                let what = || format!("vector for chunk {chunk_no} of document {doc_id:?}");
                normalise(vector, self.inner.dim, what).map(|v| (*chunk_no, v))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.staged.lock().push(StagedOp::Upsert {
            doc: Arc::from(doc_id),
            seq,
            vectors: normalised,
        });
        Ok(())
    }

    /// Queues masking every point of `doc_id`, ordered after the writes queued before it.
    pub fn stage_delete(&self, doc_id: &str) {
        self.inner
            .staged
            .lock()
            .push(StagedOp::Delete(Arc::from(doc_id)));
    }

    /// Applies the queued writes in order and makes them searchable. Each document's new
    /// version replaces its old one in a single table update, so a search never sees a
    /// document with neither. Graph inserts happen behind (see [`VectorIndex`]); this blocks
    /// only while more than [`MAX_GRAPH_BACKLOG`] points wait for them.
    pub fn flush(&self) {
        self.flush_with_backlog(MAX_GRAPH_BACKLOG);
    }

    fn flush_with_backlog(&self, backlog: usize) {
        let inner = &self.inner;
        // The writer lock first: two flushes must publish their batches in staging order.
        let _writer = inner.writer.lock();
        let ops = std::mem::take(&mut *inner.staged.lock());
        if ops.is_empty() {
            return;
        }
        if let Some(journal) = inner.journal.lock().as_mut() {
            for op in &ops {
                journal.append(&match op {
                    StagedOp::Upsert { doc, seq, vectors } => Record::Upsert {
                        doc: doc.to_string(),
                        seq: *seq,
                        vectors: vectors.clone(),
                    },
                    StagedOp::Delete(doc) => Record::Delete {
                        doc: doc.to_string(),
                    },
                });
            }
        }
        let mut table = inner.table.write();
        let mut published = table.points.len();
        for op in ops {
            table.apply(op);
            if table.points.len() - published >= backlog {
                // A big batch (a restore, a burst): let the graph catch up part way.
                published = table.points.len();
                drop(table);
                inner.publish(published);
                inner.wait_for_graph(backlog);
                table = inner.table.write();
            }
        }
        published = table.points.len();
        drop(table);
        inner.publish(published);
        inner.wait_for_graph(backlog);
    }

    /// Blocks until every flushed point is in the graph (rebuilds, benchmarks and tests;
    /// searches never need it).
    pub fn wait_indexed(&self) {
        self.inner.wait_for_graph(0);
    }

    /// Points flushed and searchable but not yet in the graph (found by exact scan).
    pub fn graph_backlog(&self) -> usize {
        self.inner.graph_backlog().len()
    }

    /// The top `limit` live points nearest to `query` whose document passes `accept`, best
    /// first.
    ///
    /// Masked points and rejected documents never take a place in the top `limit`: the graph
    /// is asked for more candidates than needed (in proportion to the dead fraction), and for
    /// more again, in proportion to the pass rate seen, while too few pass. Points still
    /// waiting for the graph are scanned exactly and merged in. When the index is small, the
    /// graph runs out, or the filter is so selective that a large part of the graph would
    /// have to be walked, the answer comes from an exact scan of the accepted documents' live
    /// points instead: correct results beat speed; so does an index whose measured recall is
    /// below [`HnswParams::min_recall`] (see [`recall_estimate`](Self::recall_estimate)). `accept`
    /// is called at most once per document and never while an index lock is held.
    pub fn search(
        &self,
        query: &[f32],
        limit: usize,
        accept: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<VectorHit>, IndexError> {
        let unit = normalise(query, self.inner.dim, || "query vector".to_owned())?;
        let query = self.inner.query(unit);
        if limit == 0 || self.live_points() == 0 {
            return Ok(Vec::new());
        }
        let mut verdicts = Verdicts::new(accept);
        if self.inner.scan_instead.load(Ordering::Relaxed) {
            return Ok(self.inner.scan_all(&query, limit, &mut verdicts));
        }
        if let Some(hits) = self.inner.approximate_search(&query, limit, &mut verdicts) {
            return Ok(hits);
        }
        Ok(self.inner.exact_search(&query, limit, &mut verdicts))
    }

    /// The graph walk's answer alone: no points waiting for the graph, no exact fallback,
    /// whatever the graph's measured recall. For benchmarks and diagnostics that compare the
    /// walk with an exact scan; `None` when the walk cannot fill `limit`.
    pub fn search_graph(
        &self,
        query: &[f32],
        limit: usize,
    ) -> Result<Option<Vec<VectorHit>>, IndexError> {
        let unit = normalise(query, self.inner.dim, || "query vector".to_owned())?;
        let query = self.inner.query(unit);
        let all = |_: &str| true;
        Ok(self
            .inner
            .graph_search(&query, limit, &mut Verdicts::new(&all)))
    }

    /// The graph's last measured recall, once it has held enough points to measure
    /// (1024 points). Measured again each time the graph doubles (see
    /// `Inner::recall_probe_due`); below [`HnswParams::min_recall`] searches scan exactly.
    pub fn recall_estimate(&self) -> Option<RecallEstimate> {
        self.inner.recall.lock().last
    }

    /// Number of points a search can return.
    pub fn live_points(&self) -> usize {
        self.inner.table.read().live
    }

    /// Number of masked points still in the graph, for the dead-fraction metric and rebuilds.
    pub fn dead_points(&self) -> usize {
        let table = self.inner.table.read();
        table.points.len() - table.live
    }

    /// Dead points added since [`mark_live`](Self::mark_live): what a rebuild could remove
    /// that the last one could not.
    pub fn dead_points_since_live(&self) -> usize {
        self.dead_points()
            .saturating_sub(self.inner.dead_at_live.load(Ordering::Relaxed))
    }

    /// Marks a rebuilt index as the live one: its graph inserts may use every core again,
    /// and the dead points it was born with (writes replayed into it) are its baseline, so
    /// an update-heavy stream does not start a new rebuild the moment one is swapped in.
    pub fn mark_live(&self) {
        self.inner.parallel_inserts.store(true, Ordering::Relaxed);
        self.inner
            .dead_at_live
            .store(self.dead_points(), Ordering::Relaxed);
    }

    /// Every live vector grouped per document (sorted by id): what a snapshot stores.
    pub fn export(&self) -> Vec<DocVectors> {
        let table = self.inner.table.read();
        let mut docs: Vec<DocVectors> = table
            .by_doc
            .iter()
            .map(|(doc, ids)| DocVectors {
                doc_id: doc.to_string(),
                seq: table.points[ids[0]].seq,
                vectors: ids
                    .iter()
                    .map(|&id| {
                        let point = &table.points[id];
                        (point.chunk_no, self.inner.exact_vector(id, &point.vector))
                    })
                    .collect(),
            })
            .collect();
        drop(table);
        docs.sort_unstable_by(|a, b| a.doc_id.cmp(&b.doc_id));
        docs
    }

    /// A fresh index holding only the live points, with no dead ones. Meant for a background
    /// rebuild: the caller must replay writes made after the call before swapping it in.
    pub fn compacted(&self) -> Result<VectorIndex, IndexError> {
        VectorIndex::from_docs(self.inner.dim, self.inner.params, self.export())
    }

    /// A new index holding these documents' vectors, all in its graph (what a rebuild does
    /// with an [`export`](Self::export)). Built on one core, in the background: call
    /// [`mark_live`](Self::mark_live) when it replaces the live index.
    pub fn from_docs(
        dim: usize,
        params: HnswParams,
        docs: Vec<DocVectors>,
    ) -> Result<VectorIndex, IndexError> {
        let fresh = VectorIndex::new(dim, params);
        fresh.inner.parallel_inserts.store(false, Ordering::Relaxed);
        for doc in docs {
            fresh.stage_upsert(&doc.doc_id, doc.seq, &doc.vectors)?;
        }
        // Nobody searches it yet, so no backlog limit: one long insert run.
        fresh.flush_with_backlog(usize::MAX);
        fresh.wait_indexed();
        Ok(fresh)
    }

    /// The whole point table as a journal's base record.
    pub fn base_record(&self) -> Record {
        let table = self.inner.table.read();
        Record::Base {
            dim: self.inner.dim,
            points: table
                .points
                .iter()
                .enumerate()
                .map(|(id, p)| BasePoint {
                    doc: p.doc.to_string(),
                    chunk_no: p.chunk_no,
                    seq: p.seq,
                    vector: p.live.then(|| self.inner.exact_vector(id, &p.vector)),
                })
                .collect(),
        }
    }

    /// Journals every write flushed from now on. Call from the writer, between flushes.
    pub fn attach_journal(&self, journal: Journal) {
        *self.inner.journal.lock() = Some(journal);
    }

    /// Makes the journaled writes durable: `(generation, length)` to name in a checkpoint.
    /// `None` when the index is not journaled.
    pub fn sync_journal(&self) -> Option<Result<(u64, u64), String>> {
        let mut journal = self.inner.journal.lock();
        let j = journal.as_mut()?;
        Some(j.sync().map(|len| (j.generation(), len)))
    }

    /// The journal's state for a checkpoint, to be made durable with
    /// [`JournalSync::sync`](vector_store::JournalSync::sync) off the writer's path. `None`
    /// when the index is not journaled.
    pub fn journal_cut(&self) -> Option<Result<vector_store::JournalSync, String>> {
        self.inner.journal.lock().as_mut().map(Journal::cut)
    }

    /// Marks generation `generation` of the journal failed, if it is still the one in use.
    pub fn fail_journal(&self, generation: u64, reason: String) {
        if let Some(j) = self.inner.journal.lock().as_mut()
            && j.generation() == generation
        {
            j.fail(reason);
        }
    }

    /// The generation of the journal this index writes to, if any.
    pub fn journal_generation(&self) -> Option<u64> {
        self.inner.journal.lock().as_ref().map(Journal::generation)
    }

    /// True when the journal missed a write (it must be replaced by a new generation), and
    /// whether that was for lack of space.
    pub fn journal_failed(&self) -> Option<bool> {
        let journal = self.inner.journal.lock();
        journal
            .as_ref()
            .filter(|j| j.is_failed())
            .map(|j| j.failed_for_space())
    }

    /// Points in the graph now (ids below this), for deciding whether a dump is worth it.
    pub fn points_in_graph(&self) -> usize {
        self.inner.graph.lock().inserted
    }

    /// Writes the graph of the points inserted so far to `dir` as generation `generation`'s
    /// dump, with its `.meta` last. Graph inserts pause meanwhile (searches do not).
    pub fn dump_graph(&self, dir: &Path, generation: u64) -> std::io::Result<GraphMeta> {
        let _paused = self.inner.inserting.lock();
        let points = self.inner.graph.lock().inserted;
        let basename = format!("graph-{generation:010}-{points:012}");
        self.inner.hnsw.dump(dir, &basename, points)?;
        // The files were synced as they were closed.
        let crc = |ext: &str| vector_store::file_crc(&dir.join(format!("{basename}.{ext}")), false);
        let meta = GraphMeta {
            generation,
            points,
            graph_crc: crc(vector_store::LINKS_EXT)?,
            data_crc: crc(vector_store::VECTORS_EXT)?,
            basename,
            storage: self.inner.params.storage,
            format: vector_store::GRAPH_FORMAT,
        };
        vector_store::write_graph_meta(dir, &meta)?;
        Ok(meta)
    }

    /// The index a journal describes: its records replayed into the point table (same point
    /// ids as when they were written) and, when `graph` names an intact dump of this
    /// generation, the graph loaded from it; points after the dump are inserted again in the
    /// background, searchable by exact scan meanwhile.
    pub fn restore(
        params: HnswParams,
        records: Vec<Record>,
        dir: &Path,
        graph: Option<&GraphMeta>,
    ) -> Result<VectorIndex, String> {
        let params = clamped(params);
        let mut records = records.into_iter();
        let Some(Record::Base { dim, points }) = records.next() else {
            return Err("the journal does not start with a base record".into());
        };
        let mut table = PointTable::default();
        for p in points {
            let doc: Arc<str> = Arc::from(p.doc);
            let live = p.vector.is_some();
            let id = table.points.len();
            table.points.push(Point {
                doc: Arc::clone(&doc),
                chunk_no: p.chunk_no,
                seq: p.seq,
                vector: Stored::Own(p.vector.unwrap_or_default().into_boxed_slice()),
                live,
            });
            if live {
                table.by_doc.entry(doc).or_default().push(id);
                table.live += 1;
            }
        }
        for record in records {
            match record {
                Record::Upsert { doc, seq, vectors } => {
                    if vectors.iter().any(|(_, v)| v.len() != dim) {
                        return Err(format!("document {doc:?}: vector of another dimension"));
                    }
                    table.apply(StagedOp::Upsert {
                        doc: Arc::from(doc),
                        seq,
                        vectors,
                    })
                }
                Record::Delete { doc } => table.apply(StagedOp::Delete(Arc::from(doc))),
                Record::Base { .. } => return Err("a second base record".into()),
            }
        }
        // A dump in the other storage (the setting changed) is not used: the journal holds
        // every exact vector, so the graph is built again from it.
        let loaded = graph
            .filter(|m| m.points <= table.points.len())
            .filter(|m| {
                let same = m.storage == params.storage;
                if !same {
                    tracing::info!(
                        "graph dump {} holds {} vectors, the collection now {}: building the \
                         graph again",
                        m.basename,
                        m.storage,
                        params.storage
                    );
                }
                same
            })
            .and_then(|m| match Graph::load(dir, &m.basename, dim, &params) {
                Ok(hnsw) => Some((hnsw, m.points)),
                Err(e) => {
                    tracing::warn!(
                        "cannot load graph dump {}: {e}; inserting its points again",
                        m.basename
                    );
                    None
                }
            });
        let (hnsw, in_graph) = loaded.unwrap_or_else(|| (Graph::new(&params, dim), 0));
        let index = Self::with_graph(dim, params, hnsw, table, in_graph, true);
        if in_graph > 0 {
            // The dump's points replace the journal's copies.
            index.inner.adopt_graph_points((0..in_graph).collect());
        }
        Ok(index)
    }
}

/// Searching, shared by the index and its graph-insert thread (which estimates recall).
impl Inner {
    /// The graph's answer, with the points still waiting for the graph scanned and merged
    /// in; `None` when the graph cannot answer well (too small, too far behind, or a filter
    /// too selective).
    fn approximate_search(
        &self,
        query: &Query,
        limit: usize,
        verdicts: &mut Verdicts<'_>,
    ) -> Option<Vec<VectorHit>> {
        let live = self.table.read().live;
        // Read before the graph walk: whatever is below it is in the graph the walk sees.
        let backlog = self.graph_backlog();
        let enough = 2 * self.params.ef_search.max(limit);
        if live < enough || backlog.start < enough {
            return None;
        }
        let mut hits = self.graph_search(query, limit, verdicts)?;
        if !backlog.is_empty() {
            let waiting = self.backlog_search(query, limit, backlog, verdicts);
            merge_hits(&mut hits, waiting, limit);
        }
        Some(hits)
    }

    /// Whether the graph, holding `in_graph` points, should be measured now: when the insert
    /// thread is idle, once it has doubled since the last measurement; while it is busy (a
    /// catch-up), only once it has quadrupled, so a long catch-up is measured along the way
    /// but most measurements wait for a moment that costs ingest nothing.
    fn recall_probe_due(&self, in_graph: usize, idle: bool) -> bool {
        let next = self.recall.lock().next_at;
        in_graph >= next && (idle || in_graph >= next.saturating_mul(2))
    }

    /// Measures the recall of the graph (holding `in_graph` points) and switches searches
    /// to exact scans when the graph cannot find most true neighbours, or back.
    ///
    /// The probe queries are the graph's own points (spread over its ids), each answered by
    /// the search path queries take and by an exact scan, the point itself left out: a
    /// graph hit counts when it is at least as near as the exact 10th (ties count, so
    /// duplicate vectors do not read as misses).
    fn probe_recall(&self, in_graph: usize) {
        let started = std::time::Instant::now();
        let measured = self.measure_recall(in_graph);
        let took = started.elapsed();
        let mut probe = self.recall.lock();
        probe.next_at = in_graph.saturating_mul(2);
        let Some((recall_at_10, queries)) = measured else {
            return;
        };
        let floor = self.params.min_recall;
        let exact_scan = recall_at_10 < floor;
        let was_scanning = self.scan_instead.swap(exact_scan, Ordering::Relaxed);
        probe.last = Some(RecallEstimate {
            recall_at_10,
            points: in_graph,
            queries,
            exact_scan,
            took,
        });
        drop(probe);
        if exact_scan && !was_scanning {
            tracing::warn!(
                "the vector graph finds {:.0}% of the true 10 nearest neighbours at {in_graph} \
                 points (below hnsw.min_recall {floor}): these vectors have little \
                 neighbourhood structure (yet), so vector searches scan every point exactly \
                 (slower, correct) until the graph, measured again each time it doubles, \
                 finds enough",
                recall_at_10 * 100.0,
            );
        } else if !exact_scan && was_scanning {
            tracing::info!(
                "the vector graph's recall@10 is {recall_at_10:.3} at {in_graph} points: \
                 vector searches use the graph again"
            );
        } else {
            tracing::debug!(
                "vector graph recall@10 {recall_at_10:.3} at {in_graph} points (measured in {} ms)",
                took.as_millis()
            );
        }
    }

    /// `(recall@10, queries)` of the current graph over [`PROBE_QUERIES`] of its points;
    /// `None` when too few live points answer.
    fn measure_recall(&self, in_graph: usize) -> Option<(f32, usize)> {
        const K: usize = 10;
        let probes: Vec<(Arc<str>, u32, Vec<f32>)> = {
            let table = self.table.read();
            let step = (in_graph / PROBE_QUERIES).max(1);
            (0..PROBE_QUERIES)
                .filter_map(|k| {
                    // The first live point at or after each step.
                    (k * step..((k + 1) * step).min(in_graph)).find_map(|id| {
                        let p = table.points.get(id).filter(|p| p.live)?;
                        let exact = self.exact_vector(id, &p.vector);
                        Some((Arc::clone(&p.doc), p.chunk_no, exact))
                    })
                })
                .collect()
        };
        let all = |_: &str| true;
        let (mut found, mut wanted, mut queries) = (0usize, 0usize, 0usize);
        for (doc, chunk_no, vector) in probes {
            let query = self.query(vector);
            let not_itself = |hits: Vec<VectorHit>| -> Vec<VectorHit> {
                let mut hits: Vec<VectorHit> = hits
                    .into_iter()
                    .filter(|h| !(*h.doc_id == *doc && h.chunk_no == chunk_no))
                    .collect();
                hits.truncate(K);
                hits
            };
            let Some(approximate) =
                self.approximate_search(&query, K + 1, &mut Verdicts::new(&all))
            else {
                continue;
            };
            let exact = not_itself(self.scan_all(&query, K + 1, &mut Verdicts::new(&all)));
            let Some(tenth) = exact.get(K - 1).map(|h| h.score) else {
                continue;
            };
            // Scores are exact on both sides (int8 candidates are re-ranked), so an equally
            // near point scores the same, up to the kernels' rounding.
            found += not_itself(approximate)
                .iter()
                .filter(|h| h.score >= tenth - SCORE_TOLERANCE)
                .count();
            wanted += K;
            queries += 1;
        }
        (wanted > 0).then(|| (found as f32 / wanted as f32, queries))
    }

    /// A unit query as this index's searches use it.
    fn query(&self, unit: Vec<f32>) -> Query {
        let compact = (self.params.storage == VectorStorage::Int8).then(|| quantise(&unit));
        Query { unit, compact }
    }

    /// Approximate search through the graph, widening the candidate list while too few
    /// candidates pass. `None` when the graph cannot fill `limit` cheaply. With int8
    /// storage, up to `limit * RERANK_FACTOR` accepted candidates (see [`RERANK_FACTOR`]) are
    /// scored again exactly before the best `limit` are chosen.
    fn graph_search(
        &self,
        query: &Query,
        limit: usize,
        verdicts: &mut Verdicts<'_>,
    ) -> Option<Vec<VectorHit>> {
        let (live, total) = {
            let table = self.table.read();
            (table.live, table.points.len())
        };
        let ef_search = self.params.ef_search;
        let rerank = match query.compact {
            Some(_) => ef_search.min(limit * RERANK_FACTOR).max(limit),
            None => limit,
        };
        // Enough candidates that, at the current dead fraction, `rerank` live ones come back.
        let mut wanted = (rerank * total).div_ceil(live.max(1)).max(rerank);
        loop {
            let neighbours = self.hnsw.search(&query.unit, wanted, ef_search.max(wanted));
            let exhausted = neighbours.len() < wanted;
            let mut hits = self.accepted(&neighbours, verdicts);
            if hits.len() >= limit {
                hits.truncate(rerank);
                return Some(self.best_exact(query, hits, limit));
            }
            // Widen in proportion to the pass rate seen so far, with some slack.
            wanted = match hits.len() {
                0 => wanted * 8,
                got => (wanted * limit * 3).div_ceil(got * 2),
            };
            if exhausted || wanted > total / EXACT_SCAN_FRACTION {
                return None;
            }
        }
    }

    /// The best `limit` of `candidates` (`(point id, hit)`, best first by a cheap score),
    /// scored exactly.
    fn best_exact(
        &self,
        query: &Query,
        mut candidates: Vec<(usize, VectorHit)>,
        limit: usize,
    ) -> Vec<VectorHit> {
        if query.compact.is_some() {
            let mut scored: Vec<(f32, usize)> = candidates
                .iter()
                .enumerate()
                .map(|(at, (_, hit))| (hit.score, at))
                .collect();
            let ids: Vec<usize> = candidates.iter().map(|(id, _)| *id).collect();
            let table = self.table.read();
            for (score, at) in &mut scored {
                if let Some(p) = table.points.get(ids[*at]) {
                    *score = self.exact_score(query, ids[*at], &p.vector);
                }
            }
            drop(table);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut slots: Vec<Option<(usize, VectorHit)>> =
                candidates.into_iter().map(Some).collect();
            candidates = scored
                .into_iter()
                .filter_map(|(score, at)| {
                    let (id, mut hit) = slots[at].take()?;
                    hit.score = score.clamp(-1.0, 1.0);
                    Some((id, hit))
                })
                .collect();
        }
        candidates.truncate(limit);
        candidates.into_iter().map(|(_, hit)| hit).collect()
    }

    /// The live, accepted points among graph neighbours, in the graph's (best-first) order,
    /// with their point ids.
    fn accepted(
        &self,
        neighbours: &[Neighbour],
        verdicts: &mut Verdicts<'_>,
    ) -> Vec<(usize, VectorHit)> {
        // Copy what we need under the lock; the predicate runs after it is released.
        let candidates: Vec<(usize, Arc<str>, u32, u64, f32)> = {
            let table = self.table.read();
            neighbours
                .iter()
                .filter_map(|n| {
                    let point = table.points.get(n.id).filter(|p| p.live)?;
                    Some((
                        n.id,
                        Arc::clone(&point.doc),
                        point.chunk_no,
                        point.seq,
                        n.distance,
                    ))
                })
                .collect()
        };
        candidates
            .into_iter()
            .filter(|(_, doc, ..)| verdicts.accepts(doc))
            .map(|(id, doc, chunk_no, seq, distance)| {
                let hit = VectorHit {
                    doc_id: doc.to_string(),
                    chunk_no,
                    seq,
                    score: 1.0 - distance,
                };
                (id, hit)
            })
            .collect()
    }

    /// Exact scan of the live points in `ids` (the graph's backlog): the best `limit` whose
    /// document passes, best first.
    fn backlog_search(
        &self,
        query: &Query,
        limit: usize,
        ids: std::ops::Range<usize>,
        verdicts: &mut Verdicts<'_>,
    ) -> Vec<VectorHit> {
        let scored = self.score_range(query, ids);
        self.best_of_scan(query, scored, limit, verdicts)
    }

    /// Exact scan of every live point, for an index whose graph is not trusted: all are
    /// scored first (int8 points by their int8 copy), then documents are checked best first
    /// until `limit` pass, so an unfiltered search asks `accept` about a few documents only.
    fn scan_all(&self, query: &Query, limit: usize, verdicts: &mut Verdicts<'_>) -> Vec<VectorHit> {
        let scored = self.score_range(query, 0..usize::MAX);
        self.best_of_scan(query, scored, limit, verdicts)
    }

    /// `(cheap score, point id)` of the live points in `ids` (cut at the table's end). The
    /// table is locked a block at a time, so a writer never waits for a whole scan.
    fn score_range(&self, query: &Query, ids: std::ops::Range<usize>) -> Vec<(f32, usize)> {
        const BLOCK: usize = 4096;
        let mut scored = Vec::new();
        let mut start = ids.start;
        loop {
            let table = self.table.read();
            let end = ids
                .end
                .min(start.saturating_add(BLOCK))
                .min(table.points.len());
            if start >= end {
                return scored;
            }
            scored.extend(
                (start..end)
                    .filter(|&id| table.points[id].live)
                    .map(|id| (self.cheap_score(query, id, &table.points[id].vector), id)),
            );
            start = end;
        }
    }

    /// Exact scan of the live points of accepted documents (int8 points are ranked by their
    /// int8 copy, and the best `limit * RERANK_FACTOR` of them scored again exactly).
    fn exact_search(
        &self,
        query: &Query,
        limit: usize,
        verdicts: &mut Verdicts<'_>,
    ) -> Vec<VectorHit> {
        let docs: Vec<Arc<str>> = self.table.read().by_doc.keys().cloned().collect();
        // Each document is seen once here, so known verdicts are reused but not recorded.
        let accepted: Vec<Arc<str>> = docs.into_iter().filter(|doc| verdicts.peek(doc)).collect();
        let scored: Vec<(f32, usize)> = {
            let table = self.table.read();
            accepted
                .iter()
                .filter_map(|doc| table.by_doc.get(doc))
                .flatten()
                .map(|&id| (self.cheap_score(query, id, &table.points[id].vector), id))
                .collect()
        };
        let all = |_: &str| true;
        self.best_of_scan(query, scored, limit, &mut Verdicts::new(&all))
    }

    /// The best `limit` of scanned points (`(cheap score, point id)`) whose document
    /// passes, best first, scored exactly; ties by point id so results are deterministic.
    fn best_of_scan(
        &self,
        query: &Query,
        mut scored: Vec<(f32, usize)>,
        limit: usize,
        verdicts: &mut Verdicts<'_>,
    ) -> Vec<VectorHit> {
        let by_score = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let keep = match query.compact {
            Some(_) => limit.saturating_mul(RERANK_FACTOR),
            None => limit,
        };
        let window = keep.max(64);
        // Only a head is put in order up front: a scan of every point (an index whose graph
        // is not trusted) needs the best few of a million, and sorting them all would cost
        // more than scoring them. The rest is sorted only if the filter rejects the head.
        let mut in_order = (4 * window).min(scored.len());
        if in_order < scored.len() {
            scored.select_nth_unstable_by(in_order, by_score);
        }
        scored[..in_order].sort_unstable_by(by_score);
        // In windows, so a long scan copies only as many points as it needs, and the
        // predicate runs with no lock held.
        let mut hits: Vec<(usize, VectorHit)> = Vec::new();
        let mut at = 0;
        while hits.len() < keep && at < scored.len() {
            if at == in_order {
                scored[in_order..].sort_unstable_by(by_score);
                in_order = scored.len();
            }
            let end = (at + window).min(in_order);
            let candidates: Vec<(usize, Arc<str>, u32, u64, f32)> = {
                let table = self.table.read();
                scored[at..end]
                    .iter()
                    .filter_map(|&(score, id)| {
                        let p = table.points.get(id).filter(|p| p.live)?;
                        Some((id, Arc::clone(&p.doc), p.chunk_no, p.seq, score))
                    })
                    .collect()
            };
            for (id, doc, chunk_no, seq, score) in candidates {
                if hits.len() == keep {
                    break;
                }
                if verdicts.accepts(&doc) {
                    let hit = VectorHit {
                        doc_id: doc.to_string(),
                        chunk_no,
                        seq,
                        score: score.clamp(-1.0, 1.0),
                    };
                    hits.push((id, hit));
                }
            }
            at = end;
        }
        self.best_exact(query, hits, limit)
    }
}

/// The parameters as used (see [`HnswParams::m`]).
fn clamped(params: HnswParams) -> HnswParams {
    HnswParams {
        m: params.m.clamp(2, 255),
        ef_construction: params.ef_construction.max(1),
        ef_search: params.ef_search.max(1),
        storage: params.storage,
        // NaN (never from a validated config) compares false: the graph is kept.
        min_recall: params.min_recall.clamp(0.0, 1.0),
    }
}

/// A unit query, with its int8 form when the index stores int8 vectors.
struct Query {
    unit: Vec<f32>,
    compact: Option<Vec<i8>>,
}

/// Merges graph hits with backlog hits into the best `limit`, best first. A point can be in
/// both when its insert finished during the search; it is kept once.
fn merge_hits(hits: &mut Vec<VectorHit>, waiting: Vec<VectorHit>, limit: usize) {
    for hit in waiting {
        let seen = hits
            .iter()
            .any(|h| h.doc_id == hit.doc_id && h.chunk_no == hit.chunk_no && h.seq == hit.seq);
        if !seen {
            hits.push(hit);
        }
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(limit);
}

/// The caller's predicate, memoised per document for the length of one search.
struct Verdicts<'a> {
    accept: &'a dyn Fn(&str) -> bool,
    known: HashMap<Arc<str>, bool>,
}

impl<'a> Verdicts<'a> {
    fn new(accept: &'a dyn Fn(&str) -> bool) -> Self {
        Verdicts {
            accept,
            known: HashMap::new(),
        }
    }

    /// Like `accepts`, without remembering a new verdict.
    fn peek(&self, doc: &str) -> bool {
        self.known
            .get(doc)
            .copied()
            .unwrap_or_else(|| (self.accept)(doc))
    }

    fn accepts(&mut self, doc: &Arc<str>) -> bool {
        if let Some(&verdict) = self.known.get(doc) {
            return verdict;
        }
        let verdict = (self.accept)(doc);
        self.known.insert(Arc::clone(doc), verdict);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::kernel::dot_portable;
    use super::*;

    #[test]
    fn dot_matches_the_portable_loop_at_every_length() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 64, 383, 384, 385] {
            let a: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-4, "n = {n}");
            assert!(
                (f64::from(dot_portable(&a, &b)) - exact).abs() < 1e-4,
                "n = {n}"
            );
        }
    }

    #[test]
    fn staged_writes_apply_in_order_at_flush() {
        let index = VectorIndex::new(4, HnswParams::default());
        let v = |x: f32| vec![(0u32, vec![x, 1.0, 0.0, 0.0])];
        for i in 0..20 {
            index
                .stage_upsert(&format!("d{i}"), i, &v(i as f32))
                .unwrap();
        }
        index.stage_upsert("d3", 100, &v(-1.0)).unwrap();
        index.stage_delete("d4");
        index.stage_upsert("d4", 101, &v(2.0)).unwrap();
        index.stage_delete("d5");
        assert_eq!(
            index
                .search(&[1.0, 0.0, 0.0, 0.0], 5, &|_| true)
                .unwrap()
                .len(),
            0,
            "visible before flush"
        );
        index.flush();
        let hits = index.search(&[0.0, 1.0, 0.0, 0.0], 50, &|_| true).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids.len(), 19, "20 documents, d5 deleted: {ids:?}");
        assert!(!ids.contains(&"d5"));
        let seq_of = |id: &str| hits.iter().find(|h| h.doc_id == id).map(|h| h.seq);
        assert_eq!(seq_of("d3"), Some(100), "the later upsert wins");
        assert_eq!(seq_of("d4"), Some(101), "an upsert after a delete stands");
        assert!(index.stage_upsert("bad", 1, &[(0, vec![1.0; 3])]).is_err());
        index.flush();
        assert_eq!(
            index
                .search(&[0.0, 1.0, 0.0, 0.0], 50, &|_| true)
                .unwrap()
                .len(),
            19
        );
    }

    /// Deterministic xorshift, so tests need no extra crates and failures reproduce (the
    /// graph's tests use it too).
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        pub(super) fn vector(&mut self, dim: usize) -> Vec<f32> {
            (0..dim).map(|_| self.next_f32()).collect()
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    /// An index of `n` random `dim`-d vectors, upserted as `d0`, `d1`, … (version 1, one
    /// chunk each) and all in the graph; returns the vectors too.
    fn random_index(rng: &mut Rng, n: usize, dim: usize) -> (VectorIndex, Vec<Vec<f32>>) {
        random_index_with(rng, n, dim, HnswParams::default())
    }

    fn random_index_with(
        rng: &mut Rng,
        n: usize,
        dim: usize,
        params: HnswParams,
    ) -> (VectorIndex, Vec<Vec<f32>>) {
        let index = VectorIndex::new(dim, params);
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.vector(dim)).collect();
        for (i, v) in vectors.iter().enumerate() {
            index
                .upsert(&format!("d{i}"), 1, &[(0, v.clone())])
                .unwrap();
        }
        index.wait_indexed();
        (index, vectors)
    }

    /// The ids (`d<i>`) of the 10 unit vectors nearest to `q`, by brute force.
    fn exact_top_10(unit: &[Vec<f32>], q: &[f32]) -> Vec<String> {
        let mut exact: Vec<(f32, usize)> = unit
            .iter()
            .enumerate()
            .map(|(i, v)| (dot(v, q), i))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        exact[..10].iter().map(|(_, i)| format!("d{i}")).collect()
    }

    fn unit(dim: usize, axis: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[axis] = 1.0;
        v
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<VectorIndex>();
    }

    #[test]
    fn distance_never_negative_or_nan() {
        use super::kernel::unit_distance;
        let v = [0.6f32, 0.8];
        assert!(unit_distance(&v, &v) >= 0.0); // rounding can push dot above 1
        assert_eq!(unit_distance(&[1.0, 0.0], &[-1.0, 0.0]), 2.0);
        assert_eq!(unit_distance(&[f32::NAN, 0.0], &[1.0, 0.0]), 2.0);
        let long: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = long.iter().map(|x| x * x).sum();
        assert_eq!(dot(&long, &long), expected);
    }

    #[test]
    fn nearest_neighbour_is_correct() {
        let index = VectorIndex::new(4, HnswParams::default());
        for axis in 0..4 {
            index
                .upsert(&format!("d{axis}"), 1, &[(0, unit(4, axis))])
                .unwrap();
        }
        // Not normalised on purpose: the index normalises queries.
        let hits = index.search(&[0.1, 3.0, 0.2, 0.0], 2, &all).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].doc_id, "d1");
        assert!(hits[0].score > 0.99 && hits[0].score <= 1.0);
        assert_eq!(hits[1].doc_id, "d2");
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn upsert_masks_old_points() {
        let index = VectorIndex::new(3, HnswParams::default());
        index
            .upsert(
                "a",
                1,
                &[(0, vec![1.0, 0.0, 0.0]), (1, vec![0.9, 0.1, 0.0])],
            )
            .unwrap();
        index.upsert("b", 1, &[(0, vec![0.0, 0.0, 1.0])]).unwrap();
        index.upsert("a", 2, &[(0, vec![0.0, 1.0, 0.0])]).unwrap();
        assert_eq!(index.live_points(), 2);
        assert_eq!(index.dead_points(), 2);

        let hits = index.search(&[1.0, 0.0, 0.0], 10, &all).unwrap();
        assert_eq!(hits.len(), 2);
        assert!(
            hits.iter().all(|h| h.doc_id != "a" || h.seq == 2),
            "{hits:?}"
        );
        let a = hits.iter().find(|h| h.doc_id == "a").unwrap();
        assert_eq!(a.chunk_no, 0);
        assert!(a.score.abs() < 1e-6, "old vector must not be scored: {a:?}");
    }

    #[test]
    fn graph_walk_masks_superseded_and_deleted_points() {
        // Enough points that `search` walks the graph instead of scanning.
        let mut rng = Rng(7);
        let (index, vectors) = random_index(&mut rng, 300, 8);
        let flipped: Vec<f32> = vectors[0].iter().map(|x| -x).collect();
        index.upsert("d0", 2, &[(0, flipped)]).unwrap();
        index.delete("d1");
        index.wait_indexed();
        for (query, gone) in [(&vectors[0], "d0"), (&vectors[1], "d1")] {
            for hits in [
                index
                    .inner
                    .graph_search(
                        &index.inner.query(normalise(query, 8, String::new).unwrap()),
                        10,
                        &mut Verdicts::new(&all),
                    )
                    .unwrap(),
                index.search(query, 10, &all).unwrap(),
            ] {
                assert_eq!(hits.len(), 10);
                assert!(
                    hits.iter().all(|h| h.doc_id != gone),
                    "{gone} returned: {hits:?}"
                );
            }
        }
        // The new version of d0 is found from its own direction.
        let flipped: Vec<f32> = vectors[0].iter().map(|x| -x).collect();
        let hits = index.search(&flipped, 1, &all).unwrap();
        assert_eq!((hits[0].doc_id.as_str(), hits[0].seq), ("d0", 2));
        assert_eq!((index.live_points(), index.dead_points()), (299, 2));
    }

    #[test]
    fn delete_masks_and_is_idempotent() {
        let index = VectorIndex::new(2, HnswParams::default());
        index.upsert("a", 1, &[(0, vec![1.0, 0.0])]).unwrap();
        index.upsert("b", 1, &[(0, vec![0.0, 1.0])]).unwrap();
        index.delete("a");
        index.delete("a");
        index.delete("never-seen");
        let hits = index.search(&[1.0, 0.0], 5, &all).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.doc_id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!((index.live_points(), index.dead_points()), (1, 1));
    }

    #[test]
    fn bad_vectors_error_without_panicking() {
        let index = VectorIndex::new(3, HnswParams::default());
        index.upsert("a", 1, &[(0, vec![1.0, 0.0, 0.0])]).unwrap();

        let err = index.upsert("b", 1, &[(0, vec![1.0, 0.0])]).unwrap_err();
        assert!(matches!(
            err,
            IndexError::DimensionMismatch {
                expected: 3,
                got: 2
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("2 dimensions") && message.contains("3-dimensional"),
            "{message}"
        );
        assert!(index.search(&[1.0; 4], 1, &all).is_err());

        let err = index.search(&[f32::NAN, 0.0, 0.0], 1, &all).unwrap_err();
        assert!(matches!(err, IndexError::NonFiniteVector { .. }));
        let err = index.search(&[0.0; 3], 1, &all).unwrap_err();
        assert!(matches!(err, IndexError::ZeroVector { .. }));
        assert!(err.to_string().contains("query vector"));

        // A bad chunk rejects the whole upsert and leaves the old version live.
        let err = index
            .upsert(
                "a",
                2,
                &[(0, vec![0.0, 1.0, 0.0]), (1, vec![f32::INFINITY, 0.0, 0.0])],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("chunk 1 of document \"a\""),
            "{err}"
        );
        let hits = index.search(&[1.0, 0.0, 0.0], 1, &all).unwrap();
        assert_eq!(hits[0].seq, 1);
        assert_eq!((index.live_points(), index.dead_points()), (1, 0));
    }

    #[test]
    fn filter_gets_full_top_k_when_few_docs_pass() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (index, vectors) = random_index(&mut rng, 2000, 16);
        let passing = ["d7", "d300", "d999", "d1500", "d1999"];
        let accept = |doc: &str| passing.contains(&doc);
        let query = rng.vector(16);

        let hits = index.search(&query, 5, &accept).unwrap();
        assert_eq!(hits.len(), 5);
        let mut expected: Vec<(f32, &str)> = passing
            .iter()
            .map(|d| {
                let i: usize = d[1..].parse().unwrap();
                let v = normalise(&vectors[i], 16, String::new).unwrap();
                let q = normalise(&query, 16, String::new).unwrap();
                (dot(&v, &q), *d)
            })
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got: Vec<&str> = hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(got, expected.iter().map(|e| e.1).collect::<Vec<_>>());

        // Asking for more than pass returns all that pass, none that don't, and asks about
        // each document at most once.
        let calls = std::cell::Cell::new(0);
        let counting = |doc: &str| {
            calls.set(calls.get() + 1);
            accept(doc)
        };
        let hits = index.search(&query, 10, &counting).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| accept(&h.doc_id)));
        assert!(calls.get() <= 2000, "{} predicate calls", calls.get());

        // A filter passing half the documents is served by the graph with a full top-k.
        let even = |doc: &str| doc[1..].parse::<usize>().unwrap() % 2 == 0;
        let q = normalise(&query, 16, String::new).unwrap();
        let hits = index
            .inner
            .graph_search(&index.inner.query(q.clone()), 10, &mut Verdicts::new(&even))
            .unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| even(&h.doc_id)));
        let exact =
            index
                .inner
                .exact_search(&index.inner.query(q.clone()), 10, &mut Verdicts::new(&even));
        let overlap = hits.iter().filter(|h| exact.contains(h)).count();
        assert!(overlap >= 9, "graph and exact share {overlap} of 10");
    }

    #[test]
    fn recall_at_10_against_brute_force() {
        let dim = 32;
        let mut rng = Rng(42);
        let (index, vectors) = random_index(&mut rng, 2000, dim);
        let unit: Vec<Vec<f32>> = vectors
            .iter()
            .map(|v| normalise(v, dim, String::new).unwrap())
            .collect();
        let queries = 50;
        let mut found = 0;
        for _ in 0..queries {
            let query = rng.vector(dim);
            let q = normalise(&query, dim, String::new).unwrap();
            let truth = exact_top_10(&unit, &q);
            // The graph walk itself, not the exact fallback `search` may take.
            let hits = index
                .inner
                .graph_search(&index.inner.query(q.clone()), 10, &mut Verdicts::new(&all))
                .unwrap();
            assert_eq!(hits.len(), 10);
            assert_eq!(index.search(&query, 10, &all).unwrap().len(), 10);
            found += hits.iter().filter(|h| truth.contains(&h.doc_id)).count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        eprintln!("recall@10 = {recall}");
        assert!(recall >= 0.95, "recall@10 = {recall}");
    }

    /// A deliberately thin graph: on independent random directions in many dimensions its
    /// walk finds few of the true 10 nearest.
    const THIN: HnswParams = HnswParams {
        m: 4,
        ef_construction: 8,
        ef_search: 10,
        storage: VectorStorage::F32,
        min_recall: DEFAULT_MIN_RECALL,
    };

    /// The ids of `index.search`'s top 10, best first.
    fn top_10_ids(
        index: &VectorIndex,
        query: &[f32],
        accept: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let hits = index.search(query, 10, accept).unwrap();
        hits.into_iter().map(|h| h.doc_id).collect()
    }

    fn normalised(vectors: &[Vec<f32>], dim: usize) -> Vec<Vec<f32>> {
        vectors
            .iter()
            .map(|v| normalise(v, dim, String::new).unwrap())
            .collect()
    }

    /// The insert thread's measurement once the graph holds `points` or more (waits up to
    /// a minute: it runs between insert rounds).
    fn measured_recall(index: &VectorIndex, points: usize) -> RecallEstimate {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(estimate) = index.recall_estimate().filter(|r| r.points >= points) {
                return estimate;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no recall measured at {points} points: {:?}",
                index.recall_estimate()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_graph_that_misses_neighbours_is_measured_and_searches_scan_exactly() {
        let dim = 256;
        let mut rng = Rng(5);
        let (index, vectors) = random_index_with(&mut rng, 1500, dim, THIN);
        let estimate = measured_recall(&index, PROBE_MIN_POINTS);
        assert!(
            estimate.recall_at_10 < DEFAULT_MIN_RECALL && estimate.exact_scan,
            "{estimate:?}"
        );
        assert_eq!(estimate.queries, PROBE_QUERIES);
        let unit = normalised(&vectors, dim);
        let (mut walk_found, queries) = (0, 20);
        for _ in 0..queries {
            let query = rng.vector(dim);
            let q = normalise(&query, dim, String::new).unwrap();
            let truth = exact_top_10(&unit, &q);
            // The measurement is right about the walk...
            let walk = index
                .inner
                .graph_search(&index.inner.query(q), 10, &mut Verdicts::new(&all))
                .unwrap();
            walk_found += walk.iter().filter(|h| truth.contains(&h.doc_id)).count();
            // ...and searches no longer take it.
            assert_eq!(top_10_ids(&index, &query, &all), truth);
        }
        let walk_recall = walk_found as f32 / (10 * queries) as f32;
        assert!(
            walk_recall < DEFAULT_MIN_RECALL,
            "walk recall@10 {walk_recall}"
        );
        // A selective filter: few of the best-scored points pass, so the scan goes on past
        // the head it put in order first.
        let rare = |doc: &str| doc[1..].parse::<usize>().unwrap() % 97 == 0;
        let query = rng.vector(dim);
        let q = normalise(&query, dim, String::new).unwrap();
        let mut truth: Vec<(f32, usize)> = unit
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 97 == 0)
            .map(|(i, v)| (dot(v, &q), i))
            .collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: Vec<String> = truth[..10].iter().map(|(_, i)| format!("d{i}")).collect();
        assert_eq!(top_10_ids(&index, &query, &rare), truth);
    }

    #[test]
    fn min_recall_zero_keeps_the_graph_whatever_it_measures() {
        let params = HnswParams {
            min_recall: 0.0,
            ..THIN
        };
        let (index, _) = random_index_with(&mut Rng(5), 1500, 256, params);
        let estimate = measured_recall(&index, PROBE_MIN_POINTS);
        assert!(
            estimate.recall_at_10 < DEFAULT_MIN_RECALL && !estimate.exact_scan,
            "{estimate:?}"
        );
    }

    #[test]
    fn a_good_graph_is_kept_and_duplicate_vectors_are_not_misses() {
        // 32 dimensions: the default graph finds the true neighbours (see
        // `recall_at_10_against_brute_force`). Every vector four times over: a walk that
        // returns other copies than the scan did is just as near.
        let dim = 32;
        let mut rng = Rng(8);
        let index = VectorIndex::new(dim, HnswParams::default());
        let distinct: Vec<Vec<f32>> = (0..400).map(|_| rng.vector(dim)).collect();
        for copy in 0..4 {
            for (i, v) in distinct.iter().enumerate() {
                let doc = format!("d{i}c{copy}");
                index.upsert(&doc, 1, &[(0, v.clone())]).unwrap();
            }
        }
        index.wait_indexed();
        let estimate = measured_recall(&index, PROBE_MIN_POINTS);
        assert!(
            estimate.recall_at_10 >= 0.95 && !estimate.exact_scan,
            "{estimate:?}"
        );
        assert!(!index.inner.scan_instead.load(Ordering::Relaxed));
    }

    #[test]
    fn recall_is_measured_again_when_the_graph_doubles() {
        let dim = 16;
        let mut rng = Rng(21);
        let (index, _) = random_index(&mut rng, PROBE_MIN_POINTS, dim);
        let first = measured_recall(&index, PROBE_MIN_POINTS);
        for i in 0..first.points + 10 {
            let doc = format!("more{i}");
            index.upsert(&doc, 1, &[(0, rng.vector(dim))]).unwrap();
        }
        index.wait_indexed();
        let second = measured_recall(&index, 2 * first.points);
        assert!(
            second.points >= 2 * first.points,
            "{first:?} then {second:?}"
        );
    }

    #[test]
    fn points_waiting_for_the_graph_are_searchable() {
        let mut rng = Rng(11);
        let index = VectorIndex::with_insert_thread(8, HnswParams::default(), false);
        let vectors: Vec<Vec<f32>> = (0..400).map(|_| rng.vector(8)).collect();
        for (i, v) in vectors.iter().enumerate().take(300) {
            index
                .stage_upsert(&format!("d{i}"), 1, &[(0, v.clone())])
                .unwrap();
        }
        index.flush();
        index.wait_indexed();
        assert_eq!(index.graph_backlog(), 0);
        // 100 new documents and a new version of d0 that points the other way, held back
        // from the graph.
        for (i, v) in vectors.iter().enumerate().skip(300) {
            index
                .stage_upsert(&format!("d{i}"), 1, &[(0, v.clone())])
                .unwrap();
        }
        let flipped: Vec<f32> = vectors[0].iter().map(|x| -x).collect();
        index
            .stage_upsert("d0", 2, &[(0, flipped.clone())])
            .unwrap();
        index.flush_with_backlog(usize::MAX);
        assert_eq!(index.graph_backlog(), 101);

        let exact = |query: &[f32]| {
            let mut all: Vec<(f32, String)> = (1..400)
                .map(|i| (&vectors[i], format!("d{i}")))
                .chain([(&flipped, "d0".to_owned())])
                .map(|(v, id)| {
                    let q = normalise(query, 8, String::new).unwrap();
                    (dot(&normalise(v, 8, String::new).unwrap(), &q), id)
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.truncate(10);
            all.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        };
        for query in [&vectors[350], &vectors[0], &flipped, &vectors[5]] {
            let hits = index.search(query, 10, &all).unwrap();
            let ids: Vec<String> = hits.iter().map(|h| h.doc_id.clone()).collect();
            let truth = exact(query);
            // A waiting point that is the nearest is always found (it is scanned exactly).
            assert_eq!(ids[0], truth[0], "{ids:?} vs {truth:?}");
            let overlap = ids.iter().filter(|id| truth.contains(id)).count();
            assert!(overlap >= 9, "{ids:?} vs {truth:?}");
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            assert!(
                hits.iter().all(|h| h.doc_id != "d0" || h.seq == 2),
                "{hits:?}"
            );
            let unique: std::collections::HashSet<&str> =
                hits.iter().map(|h| h.doc_id.as_str()).collect();
            assert_eq!(unique.len(), hits.len(), "a point returned twice: {hits:?}");
        }
        let before = index.search(&vectors[350], 10, &all).unwrap();
        index.wait_indexed();
        assert_eq!(index.graph_backlog(), 0);
        let after = index.search(&vectors[350], 10, &all).unwrap();
        assert_eq!(
            (&before[0].doc_id, before[0].seq),
            (&after[0].doc_id, after[0].seq),
            "the same nearest point, now from the graph"
        );
    }

    #[test]
    fn a_flush_leaves_at_most_the_backlog_limit_waiting() {
        let mut rng = Rng(3);
        let index = VectorIndex::new(4, HnswParams::default());
        let n = MAX_GRAPH_BACKLOG * 2 + 100;
        for i in 0..n {
            index
                .stage_upsert(&format!("d{i}"), 1, &[(0, rng.vector(4))])
                .unwrap();
        }
        index.flush();
        assert!(index.graph_backlog() <= MAX_GRAPH_BACKLOG);
        assert_eq!(index.live_points(), n);
        index.wait_indexed();
        assert_eq!(index.graph_backlog(), 0);
        // Every point reached the graph: a graph walk finds the exact nearest.
        let query = rng.vector(4);
        let q = normalise(&query, 4, String::new).unwrap();
        let graph = index
            .inner
            .graph_search(&index.inner.query(q.clone()), 5, &mut Verdicts::new(&all))
            .unwrap();
        let exact =
            index
                .inner
                .exact_search(&index.inner.query(q.clone()), 1, &mut Verdicts::new(&all));
        assert!(
            graph.iter().any(|h| h.doc_id == exact[0].doc_id),
            "{graph:?}"
        );
    }

    #[test]
    fn dead_points_count_from_when_the_index_went_live() {
        let index = VectorIndex::new(2, HnswParams::default());
        for seq in 1..=3 {
            index.upsert("a", seq, &[(0, vec![1.0, 0.0])]).unwrap();
        }
        assert_eq!(index.dead_points_since_live(), 2);
        index.mark_live();
        assert_eq!(index.dead_points_since_live(), 0);
        index.upsert("a", 4, &[(0, vec![0.0, 1.0])]).unwrap();
        assert_eq!(
            (index.dead_points(), index.dead_points_since_live()),
            (3, 1)
        );
    }

    #[test]
    fn export_and_compact_keep_only_live_points() {
        let index = VectorIndex::new(2, HnswParams::default());
        index.upsert("a", 1, &[(0, vec![3.0, 4.0])]).unwrap();
        index
            .upsert("a", 2, &[(0, vec![0.0, 2.0]), (1, vec![1.0, 0.0])])
            .unwrap();
        index.upsert("b", 5, &[(0, vec![1.0, 1.0])]).unwrap();
        index.delete("b");
        let exported = index.export();
        assert_eq!(
            exported,
            vec![DocVectors {
                doc_id: "a".into(),
                seq: 2,
                vectors: vec![(0, vec![0.0, 1.0]), (1, vec![1.0, 0.0])],
            }]
        );
        let fresh = index.compacted().unwrap();
        assert_eq!((fresh.live_points(), fresh.dead_points()), (2, 0));
        assert_eq!(fresh.export(), exported);
    }

    #[test]
    fn journal_and_graph_dump_restore_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(7);
        let dim = 16;
        let index = VectorIndex::new(dim, HnswParams::default());
        index.upsert("old", 1, &[(0, rng.vector(dim))]).unwrap();
        // Persistence starts on an index that already holds points: the base carries them.
        index.attach_journal(Journal::create(dir.path(), 1, &index.base_record()).unwrap());
        for i in 0..300 {
            index
                .upsert(&format!("d{i}"), 10 + i as u64, &[(0, rng.vector(dim))])
                .unwrap();
        }
        index.wait_indexed();
        let meta = index.dump_graph(dir.path(), 1).unwrap();
        assert_eq!(meta.points, 301);
        // After the dump: replacements, deletes and new documents.
        for i in 0..50 {
            index
                .upsert(&format!("d{i}"), 1000 + i as u64, &[(0, rng.vector(dim))])
                .unwrap();
        }
        index.delete("d299");
        index.delete("old");
        index.upsert("new", 2000, &[(0, rng.vector(dim))]).unwrap();
        let (generation, len) = index.sync_journal().unwrap().unwrap();
        assert_eq!(generation, 1);

        let records = vector_store::read_journal(dir.path(), 1, len).unwrap();
        let graph = vector_store::newest_graph(dir.path(), 1, usize::MAX);
        assert_eq!(graph.as_ref(), Some(&meta));
        let restored =
            VectorIndex::restore(HnswParams::default(), records, dir.path(), graph.as_ref())
                .unwrap();
        assert_eq!(restored.export(), index.export());
        assert_eq!(restored.dead_points(), index.dead_points());
        assert_eq!(
            restored.points_in_graph(),
            301,
            "the dump's points are not inserted again"
        );
        let (graph, _) = held_by_graph(&restored);
        assert!(
            graph >= 249,
            "the dump's live points use the graph's vectors: {graph}"
        );
        restored.wait_indexed();
        assert_eq!(held_by_graph(&restored), (300, 0));
        for _ in 0..20 {
            let q = rng.vector(dim);
            let a = index.search(&q, 5, &all).unwrap();
            let b = restored.search(&q, 5, &all).unwrap();
            let ids = |h: &[VectorHit]| {
                h.iter()
                    .map(|h| (h.doc_id.clone(), h.seq))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b));
        }

        // A damaged dump is skipped: everything is inserted again, same answers.
        let data = dir.path().join(format!("{}.vectors", meta.basename));
        let mut bytes = std::fs::read(&data).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        std::fs::write(&data, bytes).unwrap();
        assert_eq!(vector_store::newest_graph(dir.path(), 1, usize::MAX), None);
        let records = vector_store::read_journal(dir.path(), 1, len).unwrap();
        let rebuilt =
            VectorIndex::restore(HnswParams::default(), records, dir.path(), None).unwrap();
        assert_eq!(rebuilt.export(), index.export());
    }

    #[test]
    fn a_restored_thin_graph_is_measured_again_and_scans_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (dim, mut rng) = (256, Rng(5));
        let index = VectorIndex::new(dim, THIN);
        index.attach_journal(Journal::create(dir.path(), 1, &index.base_record()).unwrap());
        let vectors: Vec<Vec<f32>> = (0..1500).map(|_| rng.vector(dim)).collect();
        for (i, v) in vectors.iter().enumerate() {
            index
                .upsert(&format!("d{i}"), 1, &[(0, v.clone())])
                .unwrap();
        }
        index.wait_indexed();
        let before = measured_recall(&index, PROBE_MIN_POINTS);
        assert!(before.exact_scan, "{before:?}");
        let meta = index.dump_graph(dir.path(), 1).unwrap();
        let (_, len) = index.sync_journal().unwrap().unwrap();
        let records = vector_store::read_journal(dir.path(), 1, len).unwrap();
        let restored = VectorIndex::restore(THIN, records, dir.path(), Some(&meta)).unwrap();
        // Measured on the restored graph itself, not carried over.
        let after = measured_recall(&restored, 1500);
        assert!(after.exact_scan && after.points == 1500, "{after:?}");
        let query = rng.vector(dim);
        let truth = exact_top_10(
            &normalised(&vectors, dim),
            &normalise(&query, dim, String::new).unwrap(),
        );
        assert_eq!(top_10_ids(&restored, &query, &all), truth);
    }

    #[test]
    fn an_hnsw_rs_dump_is_not_read_and_the_graph_is_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(21);
        let dim = 16;
        let index = VectorIndex::new(dim, HnswParams::default());
        index.attach_journal(Journal::create(dir.path(), 1, &index.base_record()).unwrap());
        for i in 0..200 {
            index
                .upsert(&format!("d{i}"), i as u64, &[(0, rng.vector(dim))])
                .unwrap();
        }
        index.wait_indexed();
        let (_, len) = index.sync_journal().unwrap().unwrap();
        // What the hnsw_rs version left: intact files under its names, a meta without a
        // format.
        let basename = "graph-0000000001-000000000200";
        for (ext, body) in [
            ("hnsw.graph", &b"hnsw_rs graph"[..]),
            ("hnsw.data", b"data"),
        ] {
            std::fs::write(dir.path().join(format!("{basename}.{ext}")), body).unwrap();
        }
        let old = GraphMeta {
            generation: 1,
            points: 200,
            basename: basename.into(),
            graph_crc: crc32fast::hash(b"hnsw_rs graph"),
            data_crc: crc32fast::hash(b"data"),
            storage: VectorStorage::F32,
            format: 0,
        };
        vector_store::write_graph_meta(dir.path(), &old).unwrap();
        let graph = vector_store::newest_graph(dir.path(), 1, usize::MAX);
        assert_eq!(graph, None, "treated as absent");
        let records = vector_store::read_journal(dir.path(), 1, len).unwrap();
        let restored =
            VectorIndex::restore(HnswParams::default(), records, dir.path(), graph.as_ref())
                .unwrap();
        assert_eq!(restored.export(), index.export(), "every point is back");
        restored.wait_indexed();
        assert_eq!(restored.points_in_graph(), 200, "in the graph again");
        assert_eq!(held_by_graph(&restored), (200, 0));
        for _ in 0..10 {
            let q = rng.vector(dim);
            let ids = |h: Vec<VectorHit>| h.into_iter().map(|h| h.doc_id).collect::<Vec<_>>();
            assert_eq!(
                ids(index.search(&q, 5, &all).unwrap()),
                ids(restored.search(&q, 5, &all).unwrap())
            );
        }
    }

    /// (live points whose vector is the graph's, live points holding a copy of their own).
    fn held_by_graph(index: &VectorIndex) -> (usize, usize) {
        let table = index.inner.table.read();
        let live = table.points.iter().filter(|p| p.live);
        let graph = live
            .clone()
            .filter(|p| matches!(p.vector, Stored::Graph))
            .count();
        (graph, live.count() - graph)
    }

    #[test]
    fn vectors_in_the_graph_are_held_once() {
        let mut rng = Rng(11);
        let index = VectorIndex::new(8, HnswParams::default());
        for i in 0..600 {
            index
                .upsert(&format!("d{i}"), i, &[(0, rng.vector(8))])
                .unwrap();
        }
        index.wait_indexed();
        assert_eq!(held_by_graph(&index), (600, 0));
        // What searches and exports read is the graph's copy: still the same vectors.
        let exported = index.export();
        let q = exported[17].vectors[0].1.clone();
        let hits = index.search(&q, 1, &all).unwrap();
        assert_eq!(hits[0].doc_id, exported[17].doc_id);
        assert!((hits[0].score - 1.0).abs() < 1e-5);
    }

    const INT8: HnswParams = HnswParams {
        m: 16,
        ef_construction: 100,
        ef_search: 100,
        storage: VectorStorage::Int8,
        min_recall: DEFAULT_MIN_RECALL,
    };

    #[test]
    fn int8_kernel_matches_the_portable_loop_and_approximates_f32() {
        use super::kernel::{compact_distance, dot_i8, dot_i8_portable};
        let mut rng = Rng(5);
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 383, 384, 385] {
            let a: Vec<i8> = (0..n).map(|_| (rng.next_f32() * 127.0) as i8).collect();
            let b: Vec<i8> = (0..n).map(|_| (rng.next_f32() * 127.0) as i8).collect();
            assert_eq!(dot_i8(&a, &b), dot_i8_portable(&a, &b), "n = {n}");
        }
        for _ in 0..50 {
            let a = normalise(&rng.vector(384), 384, String::new).unwrap();
            let b = normalise(&rng.vector(384), 384, String::new).unwrap();
            let approx = dot_compact(&quantise(&a), &quantise(&b));
            assert!(
                (approx - dot(&a, &b)).abs() < 0.01,
                "{approx} vs {}",
                dot(&a, &b)
            );
            let back = dequantise(&quantise(&a));
            assert!(a.iter().zip(&back).all(|(x, y)| (x - y).abs() < 0.01));
        }
        // Damaged input (a bad dump): never NaN, never negative, never a panic.
        let mut nan_scale = quantise(&[1.0, 0.0]);
        let at = nan_scale.len() - 4;
        for (i, b) in f32::NAN.to_le_bytes().into_iter().enumerate() {
            nan_scale[at + i] = b as i8;
        }
        for (x, y) in [
            (nan_scale.as_slice(), quantise(&[1.0, 0.0]).as_slice()),
            (&[1i8, 2][..], &[3i8][..]),
            (&[][..], &[][..]),
        ] {
            let distance = compact_distance(x, y);
            assert!((0.0..=2.0).contains(&distance), "{distance}");
        }
    }

    #[test]
    fn int8_storage_finds_the_same_neighbours_with_exact_scores() {
        let dim = 32;
        let mut rng = Rng(42);
        let (index, vectors) = random_index_with(&mut rng, 2000, dim, INT8);
        assert_eq!(
            held_by_graph(&index),
            (2000, 0),
            "RAM holds only int8 copies"
        );
        let unit: Vec<Vec<f32>> = vectors
            .iter()
            .map(|v| normalise(v, dim, String::new).unwrap())
            .collect();
        let (queries, mut found) = (50, 0);
        for _ in 0..queries {
            let q = normalise(&rng.vector(dim), dim, String::new).unwrap();
            let truth = exact_top_10(&unit, &q);
            let hits = index
                .inner
                .graph_search(&index.inner.query(q.clone()), 10, &mut Verdicts::new(&all))
                .unwrap();
            assert_eq!(hits.len(), 10);
            for hit in &hits {
                let i: usize = hit.doc_id[1..].parse().unwrap();
                assert!((hit.score - dot(&unit[i], &q)).abs() < 1e-5, "{hit:?}");
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            found += hits.iter().filter(|h| truth.contains(&h.doc_id)).count();
            // The exact scan ranks by int8 and re-ranks: the true best comes first.
            let scan = index.inner.exact_search(
                &index.inner.query(q.clone()),
                10,
                &mut Verdicts::new(&all),
            );
            assert_eq!(scan[0].doc_id, truth[0]);
        }
        let recall = found as f64 / (queries * 10) as f64;
        assert!(recall >= 0.95, "recall@10 = {recall}");
        // Exports (rebuilds, journal bases) read the exact vectors back from disk.
        let exported = index.export();
        assert_eq!(exported.len(), 2000);
        for doc in exported.iter().take(100) {
            let i: usize = doc.doc_id[1..].parse().unwrap();
            assert_eq!(doc.vectors[0].1, unit[i]);
        }
        let fresh = index.compacted().unwrap();
        assert_eq!(fresh.params().storage, VectorStorage::Int8);
        assert_eq!(fresh.export(), exported);
        // Bad vectors are refused as with f32 storage.
        assert!(index.upsert("x", 1, &[(0, vec![f32::NAN; dim])]).is_err());
        assert!(index.search(&vec![f32::INFINITY; dim], 3, &all).is_err());
    }

    #[test]
    fn int8_journal_and_graph_dump_restore_and_a_storage_change_rebuilds_the_graph() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(9);
        let dim = 16;
        let index = VectorIndex::new(dim, INT8);
        index.attach_journal(Journal::create(dir.path(), 1, &index.base_record()).unwrap());
        for i in 0..300 {
            index
                .upsert(&format!("d{i}"), i as u64, &[(0, rng.vector(dim))])
                .unwrap();
        }
        index.wait_indexed();
        let meta = index.dump_graph(dir.path(), 1).unwrap();
        assert_eq!(meta.storage, VectorStorage::Int8);
        index.delete("d7");
        index.upsert("new", 999, &[(0, rng.vector(dim))]).unwrap();
        let (_, len) = index.sync_journal().unwrap().unwrap();
        let ids = |h: &[VectorHit]| {
            h.iter()
                .map(|h| (h.doc_id.clone(), h.seq))
                .collect::<Vec<_>>()
        };
        let graph = vector_store::newest_graph(dir.path(), 1, usize::MAX);
        for (params, from_dump) in [(INT8, 300), (HnswParams::default(), 0)] {
            let records = vector_store::read_journal(dir.path(), 1, len).unwrap();
            let restored =
                VectorIndex::restore(params, records, dir.path(), graph.as_ref()).unwrap();
            // The int8 dump is loaded by an int8 index; an f32 index builds its graph
            // again from the journal's exact vectors instead of reading it.
            assert!(restored.points_in_graph() >= from_dump);
            assert_eq!(restored.params().storage, params.storage);
            assert_eq!(restored.export(), index.export());
            restored.wait_indexed();
            assert_eq!(held_by_graph(&restored), (300, 0));
            for _ in 0..10 {
                let q = rng.vector(dim);
                let a = index.search(&q, 5, &all).unwrap();
                let b = restored.search(&q, 5, &all).unwrap();
                assert_eq!(ids(&a), ids(&b));
            }
        }
    }
}
