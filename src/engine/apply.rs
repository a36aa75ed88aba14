//! Turning Kafka records into view and index changes, in two stages:
//!
//! - [`Ingest::prepare`] decodes, chunks and embeds a batch. It reads no index and runs on
//!   its own thread, ahead of the writer, so embedding (the slowest step by far) overlaps
//!   with Kafka polling and with applying the previous batch. The channels around it are
//!   bounded, so a slow embedder slows the consumer rather than filling memory.
//! - [`Ingest::apply_prepared`] is the single writer. Order of effects per batch, chosen so
//!   readers never see a half-applied change: write both indexes in memory (new entries carry
//!   fresh sequence numbers, and a hit whose number differs from the view's is stale and
//!   dropped), note the checkpoint cut, swap the view entries with their `indexed_at` stamp,
//!   then advance the partition offsets and wake `consistency: "head"` waiters. Nothing on
//!   this path waits for the disk: checkpoints are written behind (see `checkpoint`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Provider;
use crate::decode::{ChangeEvent, DecodeErrorKind, Document, RawRecord};
use crate::embed::{EmbedError, Embedder};
use crate::index::FilterTerms;
use crate::metrics::ApplyStage;
use crate::source::{Batch, PartitionReset, Position, SourceRecord};
use crate::store::DocRecord;
use crate::time::now_ms;
use crate::view::{Stamp, StoredDoc};
use tokio_util::sync::CancellationToken;

use super::changes::Change;
use super::poison::{ApplyError, PoisonKind};
use super::{Collection, Ingest};

/// What one batch did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Documents inserted or replaced.
    pub upserts: usize,
    /// Documents deleted.
    pub deletes: usize,
    /// Records already applied before (replays), ignored.
    pub replays: usize,
    /// Records refused as undecodable.
    pub poison: usize,
    /// Records from topics no collection reads.
    pub unrouted: usize,
}

/// A batch after [`Ingest::prepare`], in the order the writer must apply it.
pub struct PreparedBatch {
    /// Partitions whose documents must go first (their topic was recreated).
    pub resets: Vec<PartitionReset>,
    /// The records.
    pub items: Vec<Prepared>,
    /// Consumer positions reached after the records (offsets passed without a record).
    pub positions: Vec<Position>,
    /// Partitions this node no longer owns (cluster handoff): dropped after the records.
    pub released: Vec<(Arc<str>, i32)>,
}

impl PreparedBatch {
    /// Appends `other` if that keeps the order of effects (it has no resets, and this one
    /// releases no partition). Positions may be applied after later records: they never
    /// move an offset back.
    pub fn absorb(&mut self, other: PreparedBatch) -> Result<(), PreparedBatch> {
        if other.resets.is_empty() && self.released.is_empty() {
            self.released = other.released;
            self.items.extend(other.items);
            self.positions.extend(other.positions);
            Ok(())
        } else {
            Err(other)
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
            && self.resets.is_empty()
            && self.positions.is_empty()
            && self.released.is_empty()
    }
}

/// A record after [`Ingest::prepare`]: where it came from and what it asks for.
pub struct Prepared {
    /// The record (its coordinates, and its bytes for the dead-letter topic).
    pub record: SourceRecord,
    /// What to do, or why not.
    pub change: PreparedChange,
}

/// What a prepared record asks the writer to do.
pub enum PreparedChange {
    /// Insert or replace a document.
    Upsert {
        /// The collection.
        collection: Arc<Collection>,
        /// The decoded document.
        doc: Document,
        /// Byte ranges of `doc.text`, one per chunk.
        chunks: Vec<Range<usize>>,
        /// Vectors to index, by chunk number (empty: none).
        vectors: Vec<(u32, Vec<f32>)>,
    },
    /// Delete a document.
    Delete {
        /// The collection.
        collection: Arc<Collection>,
        /// The document id.
        id: String,
    },
    /// A record that cannot be applied: why, for counters, logs and the DLQ.
    Poison {
        /// The collection.
        collection: Arc<Collection>,
        /// Why.
        error: ApplyError,
    },
    /// From a topic no collection reads.
    Unrouted,
}

enum ViewChange {
    Put(Arc<Collection>, Box<StoredDoc>),
    /// The document, and the stamp of the delete record (for the change feed).
    Remove(Arc<Collection>, String, Stamp),
}

impl Ingest {
    /// Decodes and applies records in one go (both stages on the calling thread).
    pub fn apply(&self, records: &[SourceRecord]) -> ApplyOutcome {
        let prepared = self.prepare(Batch {
            records: records.to_vec(),
            ..Batch::default()
        });
        match prepared {
            Some(prepared) => self.apply_prepared(prepared),
            None => ApplyOutcome::default(),
        }
    }

    /// Stage one: decode and chunk each record, then embed the chunks of every collection
    /// with an embedder (one call per collection, so the model sees large batches). Replays
    /// are recognised by the writer, which alone knows the offsets applied (a partition reset
    /// may be on its way to it).
    ///
    /// `None` when the pipeline was cancelled while waiting for an unavailable embedder:
    /// nothing of the batch may be applied then (its offsets do not move, so a restart reads
    /// its records again).
    pub fn prepare(&self, batch: Batch) -> Option<PreparedBatch> {
        let started = Instant::now();
        let mut items = self.decode_and_chunk(batch.records);
        for c in self.catalog.writers() {
            if let Some(embedder) = &c.embedder {
                embed_collection(&c, embedder.as_ref(), &mut items, &self.cancel).ok()?;
            }
        }
        self.metrics
            .observe_apply_stage(ApplyStage::Prepare, started.elapsed());
        Some(PreparedBatch {
            resets: batch.resets,
            items,
            positions: batch.positions,
            released: batch.released,
        })
    }

    /// The pipeline's one cancellation token: shutdown cancels it; every stage and task,
    /// and the wait for an unavailable embedder, end on it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    fn decode_and_chunk(&self, records: Vec<SourceRecord>) -> Vec<Prepared> {
        records
            .into_iter()
            .map(|record| {
                let change = match self.catalog.for_topic(&record.topic) {
                    None => PreparedChange::Unrouted,
                    Some(c) => prepare_record(&c, &record),
                };
                Prepared { record, change }
            })
            .collect()
    }

    /// Forgets everything a partition contributed: its documents leave the view and both
    /// indexes, and its offsets start over in the topic's new generation. Used when the topic
    /// was recreated.
    fn purge_partition(&self, reset: &PartitionReset) -> usize {
        let (topic, partition) = (&*reset.topic, reset.partition);
        let reset_progress = || {
            self.freshness
                .progress()
                .reset(topic, partition, reset.topic_id.clone())
        };
        let Some(c) = self.catalog.for_topic(topic) else {
            reset_progress();
            return 0;
        };
        let removed = self.drop_partition(&c, topic, partition, reset_progress);
        self.metrics
            .partition_resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            collection = c.name(),
            topic,
            partition,
            removed,
            "topic recreated: removed the old topic's documents of this partition, reading the new one from its start"
        );
        removed
    }

    /// Drops a partition another node owns now (cluster handoff): its documents, change
    /// feed entries and progress go, as if it had never been read here.
    fn release_partition(&self, topic: &str, partition: i32) {
        let untrack = || self.freshness.progress().untrack(topic, partition);
        let Some(c) = self.catalog.for_topic(topic) else {
            untrack();
            return;
        };
        let removed = self.drop_partition(&c, topic, partition, untrack);
        tracing::info!(
            collection = c.name(),
            topic,
            partition,
            removed,
            "cluster: dropped a partition another node owns now"
        );
    }

    /// Removes a partition's documents from the view, both indexes and the change feed;
    /// `progress` changes its offsets before the checkpoint cut records them. Returns how
    /// many documents went.
    fn drop_partition(
        &self,
        c: &Arc<Collection>,
        topic: &str,
        partition: i32,
        progress: impl FnOnce(),
    ) -> usize {
        let mut removed = 0;
        for doc in c.view.all() {
            if &*doc.stamp.topic == topic && doc.stamp.partition == partition {
                if let Err(e) = self.write_delete(c, &doc.id) {
                    tracing::error!(collection = c.name(), "purging {}: {}", doc.id, e.message);
                }
                c.view.remove(&doc.id);
                removed += 1;
            }
        }
        c.flush_vectors();
        progress();
        c.changes.reset_partition(topic, partition);
        self.cut(c, &HashMap::new());
        removed
    }

    /// Stage two, the single writer. Never fails: a record that cannot be applied is
    /// counted, logged with its coordinates, dead-lettered if configured, and skipped.
    pub fn apply_prepared(&self, batch: PreparedBatch) -> ApplyOutcome {
        for reset in &batch.resets {
            self.purge_partition(reset);
        }
        let released = batch.released;
        let positions = batch.positions;
        let batch = batch.items;
        let mut outcome = ApplyOutcome::default();
        let mut changes: Vec<ViewChange> = Vec::with_capacity(batch.len());
        // Next offset per partition within this batch, so a record repeated inside one batch
        // is recognised as a replay too.
        let mut next_in_batch: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        let mut touched: Vec<Arc<Collection>> = Vec::new();
        let writing = Instant::now();

        for Prepared {
            record: rec,
            change,
        } in batch
        {
            let key = (Arc::clone(&rec.topic), rec.partition);
            let next = next_in_batch.get(&key).copied().or_else(|| {
                self.freshness
                    .progress()
                    .next_offset(&rec.topic, rec.partition)
            });
            if next.is_some_and(|n| rec.offset < n) {
                outcome.replays += 1;
                self.metrics.count_records(&rec.topic, "replay", 1);
                if let Some(c) = self.catalog.for_topic(&rec.topic) {
                    c.counts.lock().replays_skipped += 1;
                }
                continue;
            }
            next_in_batch.insert(key, rec.offset + 1);
            let result = match change {
                PreparedChange::Unrouted => {
                    outcome.unrouted += 1;
                    self.metrics.count_records(&rec.topic, "unrouted", 1);
                    continue;
                }
                PreparedChange::Poison { collection, error } => Err((collection, error)),
                PreparedChange::Delete { collection, id } => self
                    .write_delete(&collection, &id)
                    .map(|()| ViewChange::Remove(Arc::clone(&collection), id, delete_stamp(&rec)))
                    .map_err(|e| (collection, e)),
                PreparedChange::Upsert {
                    collection,
                    doc,
                    chunks,
                    vectors,
                } => self
                    .write_upsert(&collection, &rec, doc, chunks, vectors)
                    .map_err(|e| (collection, e)),
            };
            match result {
                Ok(change) => {
                    let collection = match &change {
                        ViewChange::Put(c, _) => {
                            outcome.upserts += 1;
                            c
                        }
                        ViewChange::Remove(c, ..) => {
                            outcome.deletes += 1;
                            c
                        }
                    };
                    self.metrics.count_records(&rec.topic, "applied", 1);
                    if !touched.iter().any(|c| Arc::ptr_eq(c, collection)) {
                        touched.push(Arc::clone(collection));
                    }
                    changes.push(change);
                }
                Err((collection, error)) => {
                    outcome.poison += 1;
                    self.metrics.count_records(&rec.topic, "poison", 1);
                    self.reject(&collection, &rec, &error);
                }
            }
        }

        if !touched.is_empty() {
            self.metrics
                .observe_apply_stage(ApplyStage::Write, writing.elapsed());
        }
        // A persisted collection checkpoints whenever its offsets moved (even for poison
        // records only), so a restart does not read them again.
        for (topic, _) in next_in_batch.keys() {
            if let Some(c) = self.catalog.for_topic(topic)
                && c.persisted.is_some()
                && !touched.iter().any(|t| Arc::ptr_eq(t, &c))
            {
                touched.push(c);
            }
        }
        let flushing = Instant::now();
        for c in &touched {
            c.flush_vectors();
        }
        let publishing = Instant::now();
        for c in &touched {
            self.cut(c, &next_in_batch);
        }
        let indexed_at = now_ms();
        let mut feed = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                ViewChange::Put(c, mut doc) => {
                    doc.stamp.indexed_at_ms = indexed_at;
                    self.metrics
                        .observe_index_delay(c.name(), indexed_at - doc.stamp.event_time_ms);
                    let doc = c.view.insert(*doc);
                    c.counts.lock().upserts += 1;
                    // A generation being built replays what the serving one showed.
                    if !c.is_building() {
                        feed.push((c, Change::upsert(doc)));
                    }
                }
                ViewChange::Remove(c, id, mut stamp) => {
                    let removed = c.view.take(&id);
                    c.counts.lock().deletes += 1;
                    stamp.indexed_at_ms = indexed_at;
                    // Deleting what was never there changes nothing anyone could have seen.
                    if let Some(doc) = removed
                        && !c.is_building()
                    {
                        feed.push((c, Change::delete(doc, stamp)));
                    }
                }
            }
        }
        // Before the offsets move: see `changes` for why.
        self.publish_changes(feed);
        for ((topic, partition), next) in next_in_batch {
            self.freshness
                .progress()
                .advance(&topic, partition, next - 1);
        }
        for p in positions {
            self.freshness
                .progress()
                .advance_to_position(&p.topic, p.partition, p.next_offset);
        }
        for (topic, partition) in released {
            self.release_partition(&topic, partition);
        }
        self.freshness.progress().notify_applied();
        if !touched.is_empty() {
            self.metrics
                .observe_apply_stage(ApplyStage::VectorFlush, publishing - flushing);
            self.metrics
                .observe_apply_stage(ApplyStage::Publish, publishing.elapsed());
        }
        self.freshness.recheck_readiness();
        outcome
    }

    fn reject(&self, collection: &Collection, rec: &SourceRecord, error: &ApplyError) {
        *collection
            .counts
            .lock()
            .poison
            .entry(error.kind)
            .or_default() += 1;
        let (kind, message) = (error.kind.label(), &error.message);
        tracing::warn!(
            collection = collection.name(),
            topic = %rec.topic,
            partition = rec.partition,
            offset = rec.offset,
            kind,
            "skipping record: {message}"
        );
        if let Some(dlq) = &self.dead_letters {
            dlq.send(collection.name(), rec, message, kind);
        }
    }

    fn write_delete(&self, collection: &Collection, id: &str) -> Result<(), ApplyError> {
        collection
            .text
            .delete(id)
            .map_err(|e| ApplyError::new(PoisonKind::Index, e.to_string()))?;
        collection.delete_vectors(id);
        Ok(())
    }

    fn write_upsert(
        &self,
        collection: &Arc<Collection>,
        rec: &SourceRecord,
        doc: Document,
        chunks: Vec<Range<usize>>,
        vectors: Vec<(u32, Vec<f32>)>,
    ) -> Result<ViewChange, ApplyError> {
        let config = &collection.config;
        // Check vectors before touching any index, so a bad one leaves no partial update.
        let expected = collection
            .vectors()
            .map(|i| i.dim())
            .or(config.embedding.dimensions);
        if let Some(dim) = expected
            && let Some((_, v)) = vectors.iter().find(|(_, v)| v.len() != dim)
        {
            return Err(ApplyError::new(
                BAD_VECTOR,
                format!(
                    "vector has {} dimensions, the collection has {dim}",
                    v.len()
                ),
            ));
        }
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let (Some(field), Some(tenant)) = (&config.tenant_field, &doc.tenant) {
            extra.push((field.as_str(), tenant.as_str()));
        }
        let terms = FilterTerms::from_metadata(&doc.metadata, &extra);
        let seq = self.next_seq();
        let event_time_ms = doc
            .event_time_ms
            .or(rec.timestamp_ms)
            .unwrap_or(rec.ingested_at_ms);
        let stored = StoredDoc {
            id: doc.id,
            title: doc.title,
            text: doc.text,
            metadata: doc.metadata,
            tenant: doc.tenant,
            terms,
            chunks,
            seq,
            stamp: Stamp {
                topic: Arc::clone(&rec.topic),
                partition: rec.partition,
                offset: rec.offset,
                event_time_ms,
                ingested_at_ms: rec.ingested_at_ms,
                indexed_at_ms: 0,
            },
        };
        let chunk_texts: Vec<&str> = stored
            .chunks
            .iter()
            .map(|r| stored.text.get(r.clone()).unwrap_or(""))
            .collect();
        let title = stored.title.as_deref().unwrap_or("");
        let written = match &collection.persisted {
            // The BM25 index is also the document store: the document goes with chunk 0.
            Some(_) => collection.text.upsert_stored(
                &stored.id,
                seq,
                title,
                &chunk_texts,
                &stored.terms,
                Some(&DocRecord::of(&stored).encode()),
            ),
            None => collection
                .text
                .upsert(&stored.id, seq, title, &chunk_texts, &stored.terms),
        };
        written.map_err(|e| ApplyError::new(PoisonKind::Index, e.to_string()))?;
        collection
            .upsert_vectors(&stored.id, seq, &vectors)
            .map_err(|e| ApplyError::new(BAD_VECTOR, e.to_string()))?;
        Ok(ViewChange::Put(Arc::clone(collection), Box::new(stored)))
    }
}

/// A vector that does not fit the collection is refused as the record's own fault, with
/// the same label as a vector field that does not decode.
const BAD_VECTOR: PoisonKind = PoisonKind::Record(DecodeErrorKind::BadVector);

/// The stamp of a delete record: where it came from and when it happened.
fn delete_stamp(rec: &SourceRecord) -> Stamp {
    Stamp {
        topic: Arc::clone(&rec.topic),
        partition: rec.partition,
        offset: rec.offset,
        event_time_ms: rec.timestamp_ms.unwrap_or(rec.ingested_at_ms),
        ingested_at_ms: rec.ingested_at_ms,
        indexed_at_ms: 0,
    }
}

/// Decodes one record and works out its chunks and vectors.
fn prepare_record(collection: &Arc<Collection>, rec: &SourceRecord) -> PreparedChange {
    let raw = RawRecord {
        topic: &rec.topic,
        partition: rec.partition,
        offset: rec.offset,
        key: rec.key.as_deref(),
        value: rec.value.as_deref(),
        timestamp_ms: rec.timestamp_ms,
    };
    // Wire-format records may fetch their schema here: this is the prepare thread, never
    // the async runtime nor the writer.
    let event = match collection
        .mapping
        .decode_with(&raw, collection.schemas.as_deref())
    {
        Ok(event) => event,
        Err(e) => {
            return PreparedChange::Poison {
                collection: Arc::clone(collection),
                error: e.into(),
            };
        }
    };
    match event {
        ChangeEvent::Delete { id, .. } => PreparedChange::Delete {
            collection: Arc::clone(collection),
            id,
        },
        ChangeEvent::Upsert(mut doc) => {
            let chunks = collection.chunker.spans(&doc.text);
            let vectors = match (collection.provider(), doc.vector.take()) {
                // A precomputed vector describes the whole document: it is chunk 0's point.
                (Provider::Precomputed, Some(v)) => vec![(0, v)],
                _ => Vec::new(),
            };
            PreparedChange::Upsert {
                collection: Arc::clone(collection),
                doc,
                chunks,
                vectors,
            }
        }
    }
}

/// Longest wait between attempts while an embedding server is unavailable.
const MAX_EMBED_BACKOFF: Duration = Duration::from_secs(30);

/// The pipeline was cancelled while a batch waited for its embedder.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cancelled;

/// Why embedding a set of records stopped.
#[derive(Debug)]
enum EmbedStop {
    /// The embedder refused them (or answered something unusable).
    Failed(EmbedError),
    /// The pipeline was cancelled while the embedder was unavailable.
    Cancelled,
}

/// Embeds every chunk of `collection`'s upserts in `batch` and attaches the vectors.
///
/// A transient failure (server down, rate limited) is retried until it succeeds or
/// `cancel` fires: the records stay in this stage, the bounded channels fill, and the
/// consumer stops polling, so nothing is dropped and nothing is applied out of order. A
/// permanent failure (the server refuses the input, wrong dimension) is narrowed down to the
/// records that cause it, which become poison (`embed_error`); the rest of the batch goes on.
pub(super) fn embed_collection(
    collection: &Arc<Collection>,
    embedder: &dyn Embedder,
    batch: &mut [Prepared],
    cancel: &CancellationToken,
) -> Result<(), Cancelled> {
    let members: Vec<usize> = batch
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            matches!(&p.change, PreparedChange::Upsert { collection: c, .. } if Arc::ptr_eq(c, collection))
        })
        .map(|(i, _)| i)
        .collect();
    if members.is_empty() {
        return Ok(());
    }
    match embed_records(collection, embedder, batch, &members, cancel) {
        Ok(()) => {}
        Err(EmbedStop::Cancelled) => return Err(Cancelled),
        Err(EmbedStop::Failed(e)) if members.len() > 1 => {
            tracing::warn!(
                collection = collection.name(),
                records = members.len(),
                "embedding the batch failed ({e}); retrying record by record"
            );
            for &i in &members {
                match embed_records(collection, embedder, batch, &[i], cancel) {
                    Ok(()) => {}
                    Err(EmbedStop::Cancelled) => return Err(Cancelled),
                    Err(EmbedStop::Failed(e)) => poison_for_embedding(collection, &mut batch[i], e),
                }
            }
        }
        Err(EmbedStop::Failed(e)) => poison_for_embedding(collection, &mut batch[members[0]], e),
    }
    Ok(())
}

/// Embeds the chunks of the upserts at `members` in one call and stores the vectors.
fn embed_records(
    collection: &Collection,
    embedder: &dyn Embedder,
    batch: &mut [Prepared],
    members: &[usize],
    cancel: &CancellationToken,
) -> Result<(), EmbedStop> {
    let vectors = {
        let mut texts: Vec<&str> = Vec::new();
        for &i in members {
            if let PreparedChange::Upsert { doc, chunks, .. } = &batch[i].change {
                texts.extend(chunks.iter().map(|r| doc.text.get(r.clone()).unwrap_or("")));
            }
        }
        embed_until_available(collection, embedder, &texts, cancel)?
    };
    let mut vectors = vectors.into_iter();
    for &i in members {
        if let PreparedChange::Upsert {
            chunks,
            vectors: out,
            ..
        } = &mut batch[i].change
        {
            *out = (0..chunks.len() as u32).zip(vectors.by_ref()).collect();
        }
    }
    Ok(())
}

/// Calls the embedder, waiting out transient failures with capped exponential backoff
/// until `cancel` fires.
fn embed_until_available(
    collection: &Collection,
    embedder: &dyn Embedder,
    texts: &[&str],
    cancel: &CancellationToken,
) -> Result<Vec<Vec<f32>>, EmbedStop> {
    let mut wait = Duration::from_millis(500);
    loop {
        match embedder.embed_cancellable(texts, cancel) {
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    collection = collection.name(),
                    texts = texts.len(),
                    wait_ms = wait.as_millis() as u64,
                    "embedder unavailable, ingestion paused: {e}"
                );
                if crate::embed::cancelled_within(wait, cancel) {
                    tracing::info!(
                        collection = collection.name(),
                        "stopping while the embedder is unavailable: the waiting records are read again at the next start"
                    );
                    return Err(EmbedStop::Cancelled);
                }
                wait = (wait * 2).min(MAX_EMBED_BACKOFF);
            }
            Ok(vectors) if vectors.len() != texts.len() => {
                return Err(EmbedStop::Failed(EmbedError::Model(format!(
                    "{} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ))));
            }
            other => return other.map_err(EmbedStop::Failed),
        }
    }
}

fn poison_for_embedding(collection: &Arc<Collection>, prepared: &mut Prepared, error: EmbedError) {
    prepared.change = PreparedChange::Poison {
        collection: Arc::clone(collection),
        error: ApplyError::new(
            PoisonKind::Embed,
            format!("cannot embed the document: {error}"),
        ),
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::embed::EmbedderIdentity;

    /// An embedding server that is down for its first `down_for` calls.
    struct Flaky {
        down_for: usize,
        calls: AtomicUsize,
    }

    impl Embedder for Flaky {
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.down_for {
                return Err(EmbedError::Unavailable("connection refused".into()));
            }
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        }

        fn identity(&self) -> EmbedderIdentity {
            EmbedderIdentity {
                provider: "openai",
                model: "flaky".into(),
                dimensions: Some(2),
                fingerprint: String::new(),
            }
        }
    }

    fn collection() -> Arc<Collection> {
        let config = crate::config::Config::from_toml_with_env(
            "[[collections]]\nname = \"docs\"\ntopics = [\"docs\"]\n",
            std::path::Path::new("t.toml"),
            Vec::new(),
        )
        .unwrap();
        let engine = super::super::Engine::new(Arc::new(config), None, None).unwrap();
        engine.catalog().collection("docs").unwrap()
    }

    #[test]
    fn an_unavailable_embedder_is_waited_for_until_it_answers() {
        let flaky = Flaky {
            down_for: 1,
            calls: AtomicUsize::new(0),
        };
        let vectors = embed_until_available(
            &collection(),
            &flaky,
            &["a", "b"],
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cancelling_the_pipeline_ends_the_wait_for_an_unavailable_embedder() {
        let cancel = CancellationToken::new();
        let (done_tx, done) = mpsc::channel();
        let waiting = cancel.clone();
        std::thread::spawn(move || {
            let down = Flaky {
                down_for: usize::MAX,
                calls: AtomicUsize::new(0),
            };
            let result = embed_until_available(&collection(), &down, &["a"], &waiting);
            let _ = done_tx.send(matches!(result, Err(EmbedStop::Cancelled)));
        });
        assert!(
            done.recv_timeout(Duration::from_millis(700)).is_err(),
            "still waiting for the embedder"
        );
        cancel.cancel();
        // Without the cancellation the wait goes on for ever (backoff up to 30 s per round).
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(true));
    }
}
