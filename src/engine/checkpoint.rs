//! Checkpoints, opening what is on disk at start, and the graph dumps that spare a restart
//! the graph inserts.
//!
//! A batch is searchable as soon as the writer has applied it (the BM25 index's fresh tier
//! and the vector point table are in memory); making it durable is the checkpoint's job, off
//! the writer's path. The writer ends every batch with a [`Cut`]: the number of the last BM25
//! change, every partition's next offset and the vector journal's length, all as of that
//! batch. The checkpoint thread ([`Ingest::checkpoint_due`], every
//! `snapshot.checkpoint_interval_ms`) takes the newest cut, fsyncs the vector journal up to
//! it, and commits the BM25 index (which is also the document store) through the cut's
//! change with a [`Checkpoint`] payload naming those offsets and that journal length: one
//! atomic checkpoint. The cost is in proportion to what changed since the last one. A crash
//! loses nothing: a restart opens the last checkpoint and replays from its offsets.
//!
//! Graph dumps are the one whole-index write; they are only an accelerator (a restart
//! without one inserts the journal's points again), so they are taken only once the graph
//! has grown by a quarter since the last one, in the background, and at shutdown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::index::vector_store::{self, GraphMeta, Journal, JournalSync};
use crate::index::{FilterTerms, IndexError, TextIndex, VectorIndex};
use crate::metrics::ApplyStage;
use crate::store::{Checkpoint, DocRecord, PartitionCheckpoint, VectorCheckpoint};

use super::generation::{self, Frozen, Pending};
use super::{Collection, Ingest};

/// Wait after a failed checkpoint before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A graph dump is worth its cost once this many points were added since the last one.
const MIN_POINTS_FOR_DUMP: usize = 1024;

/// The on-disk side of a persisted collection.
pub(super) struct Persisted {
    /// `<data_dir>/collections/<name>`: every generation's files and the file naming the
    /// serving one (see `generation`).
    pub(super) dir: PathBuf,
    /// Which generation of the collection these files are.
    pub(super) generation: u64,
    /// The last checkpoint committed: what a restart would resume from.
    pub(super) last: Mutex<Checkpoint>,
    /// The newest graph dump of the journal generation in use.
    graph: Mutex<Option<GraphMeta>>,
    /// The next journal generation number.
    next_generation: AtomicU64,
    /// No checkpoint attempt before this after one failed (a full disk is not hammered).
    retry_at: Mutex<Option<Instant>>,
}

impl Persisted {
    /// Sets the settings fingerprint of the (still empty) checkpoint.
    pub(super) fn set_fingerprint(&self, fingerprint: String) {
        self.last.lock().fingerprint = fingerprint;
    }

    /// Which generation of the collection these files are.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    fn vectors_dir(&self) -> PathBuf {
        generation::files_dir(&self.dir, self.generation).join("vectors")
    }
}

/// A directory name for a collection: its name with anything but `[A-Za-z0-9_-]` escaped.
fn dir_name(collection: &str) -> String {
    collection
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c.to_string(),
            other => format!("%{:x}", other as u32),
        })
        .collect()
}

/// Opens (or creates) the BM25 index of a collection's serving generation under `root`.
pub(super) fn open_text(
    root: &Path,
    collection: &str,
    title_boost: f32,
) -> Result<(TextIndex, Persisted), IndexError> {
    let dir = root.join(dir_name(collection));
    let serving = generation::current(&dir);
    open_in(dir, serving, title_boost)
}

/// Opens (or creates) the BM25 index of generation `n` of the collection `p` belongs to.
pub(super) fn open_generation(
    p: &Persisted,
    n: u64,
    title_boost: f32,
) -> Result<(TextIndex, Persisted), IndexError> {
    open_in(p.dir.clone(), n, title_boost)
}

/// Opens (or creates) generation `n`'s BM25 index in the collection directory `dir`. An
/// index that cannot be opened (damaged metadata, another schema) is moved aside and
/// replaced by an empty one: that generation is then rebuilt from the topics.
fn open_in(dir: PathBuf, n: u64, title_boost: f32) -> Result<(TextIndex, Persisted), IndexError> {
    let files = generation::files_dir(&dir, n);
    let text_dir = files.join("text");
    let text = match TextIndex::open_or_create(&text_dir, title_boost) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(
                "cannot open the BM25 index in {} ({e}): rebuilding this collection from its topics",
                text_dir.display()
            );
            let _ = std::fs::remove_dir_all(&text_dir);
            let _ = std::fs::remove_dir_all(files.join("vectors"));
            TextIndex::open_or_create(&text_dir, title_boost)?
        }
    };
    let persisted = Persisted {
        dir,
        generation: n,
        last: Mutex::new(Checkpoint::empty(String::new())),
        graph: Mutex::new(None),
        next_generation: AtomicU64::new(1),
        retry_at: Mutex::new(None),
    };
    Ok((text, persisted))
}

/// What opening the persisted collections did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Collections opened from disk, with their document counts.
    pub restored: Vec<(String, usize)>,
    /// Collections rebuilt from their topics in place, with nothing to serve meanwhile:
    /// what was on disk was damaged.
    pub rebuilt: Vec<String>,
    /// Collections whose settings changed: their previous generation (with this many
    /// documents) serves, frozen, while the next one is built beside it.
    pub rebuilding: Vec<(String, usize)>,
}

impl Ingest {
    /// Opens what the persisted collections hold on disk, before consuming starts: loads each
    /// view from the document store, the vector index from its journal and newest graph dump,
    /// and resumes each partition at the checkpoint's offsets. Nothing is indexed again. A
    /// collection whose settings changed serves its previous generation, frozen, while the
    /// next one is built (see `generation`); one whose files are damaged is emptied and
    /// rebuilt from its topics.
    pub fn open_persisted(&self) -> RestoreReport {
        let mut report = RestoreReport::default();
        for c in self.catalog.collections() {
            let Some(p) = &c.persisted else { continue };
            // Leftovers of writes a crash interrupted, before anything else takes space.
            vector_store::remove_temp_files(&p.vectors_dir());
            let started = Instant::now();
            let opened = self
                .read_checkpoint(&c)
                .and_then(|checkpoint| match checkpoint {
                    None => Ok(None),
                    Some(checkpoint) if checkpoint.fingerprint == c.fingerprint() => {
                        self.load(&c, p, checkpoint, None).map(Some)
                    }
                    Some(checkpoint) => {
                        let Some(next) = self.next_generation(&c) else {
                            return Err("settings changed since the checkpoint".into());
                        };
                        let frozen = Frozen::of(&c, &checkpoint, next.generation());
                        let docs = self.load(&c, p, checkpoint, Some(frozen))?;
                        self.begin_rebuild(&c, next, docs);
                        report.rebuilding.push((c.name().to_string(), docs));
                        Ok(None)
                    }
                });
            match opened {
                Ok(None) => {}
                Ok(Some(docs)) => {
                    tracing::info!(
                        collection = c.name(),
                        documents = docs,
                        "opened the persisted collection in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    report.restored.push((c.name().to_string(), docs));
                }
                Err(reason) => {
                    tracing::warn!(
                        collection = c.name(),
                        "{reason}: rebuilding this collection from its topics"
                    );
                    self.wipe(&c, p);
                    report.rebuilt.push(c.name().to_string());
                }
            }
            if self.catalog.rebuild_of(c.name()).is_none() {
                // Leftovers of a rebuild given up, or of a swap a crash interrupted.
                generation::remove_others(&p.dir, &[p.generation]);
            }
        }
        report
    }

    /// The collection's checkpoint; `Ok(None)`: nothing on disk yet.
    fn read_checkpoint(&self, c: &Collection) -> Result<Option<Checkpoint>, String> {
        let payload = c
            .text
            .commit_payload()
            .map_err(|e| format!("cannot read the checkpoint: {e}"))?;
        let Some(payload) = payload else {
            if c.text.num_chunks() > 0 {
                return Err("the BM25 index has documents but no checkpoint".into());
            }
            return Ok(None);
        };
        Checkpoint::decode(&payload)
            .map(Some)
            .map_err(|e| format!("damaged checkpoint: {e}"))
    }

    /// The next generation of `c`, opened: resumed from its own checkpoint when a crash
    /// interrupted an earlier rebuild under the same settings, else empty. `None` (logged)
    /// when its files cannot be created.
    fn next_generation(&self, c: &Collection) -> Option<Collection> {
        let next = match c.next_generation() {
            Ok(next) => next?,
            Err(e) => {
                tracing::error!(
                    collection = c.name(),
                    "cannot create the next generation's index: {e}"
                );
                return None;
            }
        };
        let p = next.persisted.as_ref()?;
        generation::remove_others(&p.dir, &[p.generation - 1, p.generation]);
        vector_store::remove_temp_files(&p.vectors_dir());
        let resumed = match self.read_checkpoint(&next) {
            Ok(Some(checkpoint)) if checkpoint.fingerprint == next.fingerprint() => {
                self.load(&next, p, checkpoint, None)
            }
            Ok(Some(_)) => Err("another rebuild's files".to_string()),
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        };
        match resumed {
            Ok(0) => {}
            Ok(docs) => tracing::info!(
                collection = c.name(),
                generation = p.generation,
                documents = docs,
                "resuming the rebuild from its checkpoint"
            ),
            Err(reason) => {
                tracing::info!(
                    collection = c.name(),
                    generation = p.generation,
                    "starting the rebuild afresh ({reason})"
                );
                self.wipe(&next, p);
            }
        }
        Some(next)
    }

    /// Hands `next` to the writer while `c` (frozen, with `docs` documents) serves.
    fn begin_rebuild(&self, c: &Collection, next: Collection, docs: usize) {
        tracing::warn!(
            collection = c.name(),
            serving = c.generation(),
            building = next.generation(),
            documents = docs,
            "settings changed since the checkpoint: serving the previous generation while the next is built from the topics"
        );
        self.freshness.count_for_readiness(&c.config.topics, false);
        self.catalog.begin_rebuild(c.name(), Arc::new(next));
        self.generations.lock().push(Pending::new(c.name()));
    }

    /// Loads a checkpoint's documents and vectors into `c`. A generation that resumes
    /// (`frozen` is `None`) also resumes its partitions at the checkpoint's offsets and
    /// writes on; a frozen one is only read, and its vectors are not loaded when they cannot
    /// answer the current settings' queries. Returns the number of documents.
    fn load(
        &self,
        c: &Collection,
        p: &Persisted,
        checkpoint: Checkpoint,
        frozen: Option<Frozen>,
    ) -> Result<usize, String> {
        let stored = c
            .text
            .stored_docs()
            .map_err(|e| format!("cannot read the document store: {e}"))?;
        let mut docs = Vec::with_capacity(stored.len());
        for bytes in &stored {
            docs.push(DocRecord::decode(bytes)?);
        }
        let skip_vectors = frozen
            .as_ref()
            .is_some_and(|f| f.vectors_unusable.is_some());
        if skip_vectors {
            *c.vectors.write() = None;
        } else if let Some(v) = checkpoint.vectors {
            let dir = p.vectors_dir();
            let records = vector_store::read_journal(&dir, v.generation, v.journal_len)?;
            let graph = vector_store::newest_graph(&dir, v.generation, usize::MAX);
            let index = VectorIndex::restore(hnsw_params(c), records, &dir, graph.as_ref())?;
            tracing::info!(
                collection = c.name(),
                points = index.live_points() + index.dead_points(),
                in_graph = index.points_in_graph(),
                "opened the vector index (points after the graph dump are inserted again in the background)"
            );
            // A frozen generation's files stay as they are: nothing is written to them.
            if frozen.is_none() {
                let journal = Journal::reopen(&dir, v.generation, v.journal_len)
                    .map_err(|e| format!("cannot reopen the vector journal: {e}"))?;
                vector_store::remove_stale(
                    &dir,
                    v.generation,
                    graph.as_ref().map(|g| g.basename.as_str()),
                );
                index.attach_journal(journal);
                p.next_generation.store(v.generation + 1, Ordering::Relaxed);
            }
            *c.vectors.write() = Some(Arc::new(index));
            *p.graph.lock() = graph;
        }
        let count = docs.len();
        for doc in docs {
            let metadata = match serde_json::from_str(&doc.metadata_json) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
            let mut extra: Vec<(&str, &str)> = Vec::new();
            if let (Some(field), Some(tenant)) = (&c.config.tenant_field, &doc.tenant) {
                extra.push((field.as_str(), tenant.as_str()));
            }
            let terms = FilterTerms::from_metadata(&metadata, &extra);
            c.view.put(doc.into_stored(terms));
        }
        match frozen {
            Some(frozen) => {
                let _ = c.frozen.set(frozen);
            }
            None => {
                for part in &checkpoint.partitions {
                    self.freshness.progress().track(
                        &part.topic,
                        part.partition,
                        Some(part.next_offset),
                        part.topic_id.as_deref().map(Arc::from),
                    );
                    tracing::info!(
                        collection = c.name(),
                        topic = part.topic,
                        partition = part.partition,
                        "resuming at offset {}",
                        part.next_offset
                    );
                }
            }
        }
        self.seq.fetch_max(checkpoint.seq, Ordering::Relaxed);
        *p.last.lock() = checkpoint;
        Ok(count)
    }

    /// Empties a collection on disk and in memory (before consuming starts).
    fn wipe(&self, c: &Collection, p: &Persisted) {
        c.view.clear();
        let fresh = Checkpoint::empty(c.fingerprint());
        if let Err(e) = c.text.clear(&fresh.encode()) {
            tracing::error!(collection = c.name(), "cannot empty the BM25 index: {e}");
        }
        let _ = std::fs::remove_dir_all(p.vectors_dir());
        if let Some(v) = c.vectors() {
            *c.vectors.write() = Some(Arc::new(VectorIndex::new(v.dim(), v.params())));
        }
        *p.graph.lock() = None;
        *p.last.lock() = fresh;
    }

    /// The writer's end of a batch: notes what a checkpoint of `c` would cover now (see
    /// [`Cut`]), replacing the cut of an earlier batch. `next_in_batch` holds the offsets
    /// this batch moved.
    pub(super) fn cut(&self, c: &Collection, next_in_batch: &HashMap<(Arc<str>, i32), i64>) {
        let text_op = c.text.last_op();
        let (checkpoint, journal) = match &c.persisted {
            None => (None, None),
            Some(p) => match self.checkpoint(c, p, next_in_batch) {
                Ok((checkpoint, journal)) => (Some(Ok(checkpoint)), journal),
                Err(e) => (Some(Err(e)), None),
            },
        };
        *c.cut.lock() = Some(Cut {
            text_op,
            checkpoint,
            journal,
        });
    }

    /// The checkpoint thread's round: commits the newest cut of every collection whose last
    /// checkpoint is `snapshot.checkpoint_interval_ms` old (all of them with `force`: at
    /// shutdown, and in tests). Returns whether any was written.
    pub fn checkpoint_due(&self, force: bool) -> bool {
        let every = Duration::from_millis(self.config.snapshot.checkpoint_interval_ms);
        let mut wrote = false;
        for c in self.catalog.writers() {
            if !force
                && (c.checkpointed_at.lock().elapsed() < every
                    || c.persisted
                        .as_ref()
                        .is_some_and(|p| p.retry_at.lock().is_some_and(|at| Instant::now() < at)))
            {
                continue;
            }
            let Some(cut) = c.cut.lock().take() else {
                continue;
            };
            let started = Instant::now();
            wrote |= self.commit_cut(&c, cut);
            *c.checkpointed_at.lock() = Instant::now();
            self.metrics
                .observe_apply_stage(ApplyStage::Checkpoint, started.elapsed());
        }
        wrote
    }

    /// Commits `c`'s BM25 index through the cut's last change. A persisted collection's
    /// commit carries the cut's checkpoint once the vector journal is durable up to it; if
    /// it is not (or the cut has no checkpoint: the journal could not be written), the
    /// commit carries the previous checkpoint, so a restart resumes from offsets the files
    /// on disk cover (and replays the rest). A failed commit keeps its changes queued and
    /// the cut pending, for the next attempt. Returns whether the commit succeeded.
    fn commit_cut(&self, c: &Collection, cut: Cut) -> bool {
        let Some(p) = &c.persisted else {
            return match c.text.commit_through(cut.text_op, None) {
                Ok(()) => true,
                Err(e) => {
                    // In memory only: nothing but a bug makes this fail.
                    tracing::error!(collection = c.name(), "BM25 commit failed: {e}");
                    false
                }
            };
        };
        let mut fresh = cut.checkpoint.clone().unwrap_or_else(|| Err(String::new()));
        if let (Ok(_), Some(journal)) = (&fresh, &cut.journal)
            && let Err(e) = journal.sync()
        {
            if let Some(index) = c.vectors() {
                index.fail_journal(journal.generation, e.clone());
            }
            fresh = Err(e);
        }
        let payload = match &fresh {
            Ok(checkpoint) => checkpoint.encode(),
            Err(e) => {
                if !e.is_empty() {
                    self.storage_failed(c, e, is_disk_full(e));
                }
                p.last.lock().encode()
            }
        };
        match c.text.commit_through(cut.text_op, Some(&payload)) {
            Ok(()) => {
                if let Ok(checkpoint) = fresh {
                    let old = std::mem::replace(&mut *p.last.lock(), checkpoint.clone());
                    if let Some(v) = checkpoint.vectors
                        && old.vectors.is_none_or(|o| o.generation != v.generation)
                    {
                        // The new generation is committed: older ones are garbage now.
                        vector_store::remove_stale(&p.vectors_dir(), v.generation, None);
                        *p.graph.lock() = None;
                    }
                    *p.retry_at.lock() = None;
                    self.storage_ok();
                }
                true
            }
            Err(e) => {
                *p.retry_at.lock() = Some(Instant::now() + RETRY_AFTER);
                // Unless a newer batch left a newer cut, this one is tried again (its journal
                // part is durable by now, or failed and is not named any more).
                c.cut.lock().get_or_insert(Cut {
                    text_op: cut.text_op,
                    checkpoint: Some(fresh),
                    journal: None,
                });
                let e = e.to_string();
                self.storage_failed(c, &format!("BM25 commit: {e}"), is_disk_full(&e));
                false
            }
        }
    }

    /// The checkpoint as of this batch, and the journal file to make durable up to it.
    fn checkpoint(
        &self,
        c: &Collection,
        p: &Persisted,
        next_in_batch: &HashMap<(Arc<str>, i32), i64>,
    ) -> Result<(Checkpoint, Option<JournalSync>), String> {
        let (vectors, journal) = match c.vectors() {
            None => (None, None),
            Some(index) => {
                let journal = self.cut_vectors(c, p, &index)?;
                let v = VectorCheckpoint {
                    generation: journal.generation,
                    journal_len: journal.len,
                };
                (Some(v), Some(journal))
            }
        };
        let snapshot = self.freshness.progress().snapshot(&c.config.topics);
        let mut partitions: Vec<PartitionCheckpoint> = snapshot
            .iter()
            .filter_map(|((topic, partition), progress)| {
                let next = next_in_batch
                    .get(&(Arc::clone(topic), *partition))
                    .copied()
                    .or(progress.next_offset)?;
                Some(PartitionCheckpoint {
                    topic: topic.to_string(),
                    partition: *partition,
                    next_offset: next,
                    topic_id: progress.topic_id.as_deref().map(str::to_owned),
                })
            })
            .collect();
        // A partition this batch applied first (not tracked yet when the consumer was not
        // told about it, e.g. records applied directly).
        for ((topic, partition), next) in next_in_batch {
            if c.config.topics.iter().any(|t| **t == **topic)
                && !snapshot
                    .iter()
                    .any(|((t, p), _)| t == topic && p == partition)
            {
                partitions.push(PartitionCheckpoint {
                    topic: topic.to_string(),
                    partition: *partition,
                    next_offset: *next,
                    topic_id: None,
                });
            }
        }
        let checkpoint = Checkpoint {
            partitions,
            vectors,
            seq: self.seq.load(Ordering::Relaxed),
            created_at_ms: crate::time::now_ms(),
            ..Checkpoint::empty(c.fingerprint())
        };
        Ok((checkpoint, journal))
    }

    /// The vector journal's cut, starting a new generation (with the whole point table as
    /// its base, durable at once) when the index has none yet: a new index, one swapped in
    /// by a rebuild, or one whose journal missed a write.
    fn cut_vectors(
        &self,
        c: &Collection,
        p: &Persisted,
        index: &VectorIndex,
    ) -> Result<JournalSync, String> {
        if let Some(Ok(journal)) = index.journal_cut() {
            return Ok(journal);
        }
        let generation = p.next_generation.fetch_add(1, Ordering::Relaxed);
        let dir = p.vectors_dir();
        let journal = Journal::create(&dir, generation, &index.base_record()).map_err(|e| {
            format!(
                "{}: {e}",
                vector_store::journal_path(&dir, generation).display()
            )
        })?;
        index.attach_journal(journal);
        tracing::debug!(
            collection = c.name(),
            generation,
            "new vector journal generation"
        );
        match index.journal_cut() {
            Some(cut) => cut,
            None => Err("the vector journal is gone".into()),
        }
    }

    fn storage_failed(&self, c: &Collection, error: &str, disk_full: bool) {
        let metrics = &self.metrics;
        metrics.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        if metrics.storage.failed(error.to_string(), disk_full) {
            if disk_full {
                tracing::error!(
                    collection = c.name(),
                    "checkpoint failed, the disk is full: {error}; serving continues from memory, a restart replays from the last checkpoint"
                );
            } else {
                tracing::error!(collection = c.name(), "checkpoint failed: {error}");
            }
        } else {
            tracing::debug!(collection = c.name(), "checkpoint failed again: {error}");
        }
    }

    fn storage_ok(&self) {
        self.metrics
            .checkpoints_written
            .fetch_add(1, Ordering::Relaxed);
        if let Some(ended) = self.metrics.storage.succeeded() {
            tracing::warn!(
                failed_attempts = ended.attempts,
                "checkpoints are written again after failing: {}",
                ended.error
            );
        }
    }

    /// Graph dumps worth taking now: collections whose graph grew by a quarter (and at least
    /// [`MIN_POINTS_FOR_DUMP`] points) since their last dump, or, with `all`, by anything
    /// (shutdown). Returns the work, to run off the writer's thread.
    pub fn due_graph_dumps(&self, all: bool) -> Vec<GraphDump> {
        self.catalog
            .writers()
            .iter()
            .filter_map(|c| {
                let p = c.persisted.as_ref()?;
                let index = c.vectors()?;
                // Only the generation of this very index's journal, once committed: a dump
                // labelled with another generation would pair a graph with another table.
                let generation = index.journal_generation()?;
                if p.last.lock().vectors?.generation != generation {
                    return None;
                }
                let dumped = p
                    .graph
                    .lock()
                    .as_ref()
                    .filter(|g| g.generation == generation)
                    .map_or(0, |g| g.points);
                let now = index.points_in_graph();
                let grown = now.saturating_sub(dumped);
                let due = if all {
                    grown > 0
                } else {
                    grown >= MIN_POINTS_FOR_DUMP.max(dumped / 4)
                };
                due.then(|| GraphDump {
                    collection: Arc::clone(c),
                    index,
                    generation,
                })
            })
            .collect()
    }
}

/// What a checkpoint of a collection would cover, as of the end of the writer's last batch.
pub(super) struct Cut {
    /// BM25 changes up to this number.
    text_op: u64,
    /// Persisted collections: the checkpoint to commit, or why there is none.
    checkpoint: Option<Result<Checkpoint, String>>,
    /// The vector journal, to make durable up to the checkpoint's length before the commit.
    journal: Option<JournalSync>,
}

/// One graph dump to take (see [`Ingest::due_graph_dumps`]).
pub struct GraphDump {
    collection: Arc<Collection>,
    index: Arc<VectorIndex>,
    generation: u64,
}

impl GraphDump {
    /// Writes the dump and makes it the collection's newest; removes the one it replaces.
    pub fn run(self, engine: &Ingest) {
        let c = &self.collection;
        let Some(p) = &c.persisted else { return };
        let dir = p.vectors_dir();
        let started = Instant::now();
        match self.index.dump_graph(&dir, self.generation) {
            Ok(meta) => {
                tracing::info!(
                    collection = c.name(),
                    points = meta.points,
                    "saved the vector graph in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                // Older dumps of the committed generation are no longer needed; a dump of a
                // generation not (yet) committed must not remove the committed one's.
                let committed = p.last.lock().vectors.map(|v| v.generation);
                if committed == Some(self.generation) {
                    vector_store::remove_stale(&dir, self.generation, Some(&meta.basename));
                }
                *p.graph.lock() = Some(meta);
                engine.storage_ok();
            }
            Err(e) => {
                let e = format!("saving the vector graph in {}: {e}", dir.display());
                engine.storage_failed(c, &e, is_disk_full(&e));
                // Half-written dump files have no `.meta`: never loaded; removed here.
                vector_store::remove_stale(
                    &dir,
                    self.generation,
                    p.graph.lock().as_ref().map(|g| g.basename.as_str()),
                );
            }
        }
    }
}

fn hnsw_params(c: &Collection) -> crate::index::HnswParams {
    super::collection::hnsw_params(&c.config)
}

/// Whether an error message is the OS saying the disk (or quota) is full.
fn is_disk_full(error: &str) -> bool {
    error.contains("No space left on device") || error.contains("Disk quota exceeded")
}
