//! The single writer: turns a batch of Kafka records into view and index changes.
//!
//! Order of effects per batch, chosen so readers never see a half-applied change: decode and
//! write both indexes (new index entries carry the batch's sequence numbers, and a hit whose
//! number differs from the view's is stale and dropped), commit BM25, then swap the view
//! entries with their `indexed_at` stamp, then advance the partition offsets and wake
//! `consistency: "head"` waiters.

use std::collections::HashMap;
use std::sync::Arc;

use crate::chunk::chunk_spans;
use crate::decode::{ChangeEvent, Document, RawRecord};
use crate::index::FilterTerms;
use crate::source::SourceRecord;
use crate::time::now_ms;
use crate::view::{Stamp, StoredDoc};

use super::{Collection, Engine};

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

enum ViewChange {
    Put(Arc<Collection>, Box<StoredDoc>),
    Remove(Arc<Collection>, String),
}

impl Engine {
    /// Applies a batch of records in order. Never fails: a record that cannot be applied is
    /// counted, logged with its coordinates, dead-lettered if configured, and skipped.
    pub fn apply(&self, batch: &[SourceRecord]) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        let mut changes: Vec<ViewChange> = Vec::with_capacity(batch.len());
        // Next offset per partition within this batch, so a record repeated inside one batch
        // is recognised as a replay too.
        let mut next_in_batch: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        let mut touched: Vec<Arc<Collection>> = Vec::new();

        for rec in batch {
            let key = (Arc::clone(&rec.topic), rec.partition);
            let next = next_in_batch
                .get(&key)
                .copied()
                .or_else(|| self.progress.next_offset(&rec.topic, rec.partition));
            if next.is_some_and(|n| rec.offset < n) {
                outcome.replays += 1;
                if let Some(c) = self.collection_for_topic(&rec.topic) {
                    c.counts.lock().replays_skipped += 1;
                }
                continue;
            }
            next_in_batch.insert(key, rec.offset + 1);
            let Some(collection) = self.collection_for_topic(&rec.topic).cloned() else {
                outcome.unrouted += 1;
                continue;
            };
            match self.apply_record(&collection, rec) {
                Ok(change) => {
                    match &change {
                        ViewChange::Put(..) => outcome.upserts += 1,
                        ViewChange::Remove(..) => outcome.deletes += 1,
                    }
                    if !touched.iter().any(|c| Arc::ptr_eq(c, &collection)) {
                        touched.push(Arc::clone(&collection));
                    }
                    changes.push(change);
                }
                Err((kind, message)) => {
                    outcome.poison += 1;
                    *collection
                        .counts
                        .lock()
                        .poison
                        .entry(kind.to_string())
                        .or_default() += 1;
                    tracing::warn!(
                        collection = collection.name(),
                        topic = %rec.topic,
                        partition = rec.partition,
                        offset = rec.offset,
                        kind,
                        "skipping record: {message}"
                    );
                    if let Some(dlq) = &self.dead_letters {
                        dlq.send(collection.name(), rec, &message, kind);
                    }
                }
            }
        }

        for c in &touched {
            if let Err(e) = c.text.commit() {
                // The writer keeps the operations; the next commit retries them.
                tracing::error!(collection = c.name(), "BM25 commit failed: {e}");
            }
        }
        let indexed_at = now_ms();
        for change in changes {
            match change {
                ViewChange::Put(c, mut doc) => {
                    doc.stamp.indexed_at_ms = indexed_at;
                    c.view.put(*doc);
                    c.counts.lock().upserts += 1;
                }
                ViewChange::Remove(c, id) => {
                    c.view.remove(&id);
                    c.counts.lock().deletes += 1;
                }
            }
        }
        for ((topic, partition), next) in next_in_batch {
            self.progress.advance(&topic, partition, next - 1);
        }
        self.progress.notify_applied();
        self.recheck_readiness();
        outcome
    }

    /// Decodes one record and writes it to the indexes; the view change is returned to be
    /// made visible after the commit. `Err` carries (kind, message) of a poison record.
    fn apply_record(
        &self,
        collection: &Arc<Collection>,
        rec: &SourceRecord,
    ) -> Result<ViewChange, (&'static str, String)> {
        let raw = RawRecord {
            topic: &rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            timestamp_ms: rec.timestamp_ms,
        };
        let event = collection
            .mapping
            .decode(&raw)
            .map_err(|e| (e.kind(), e.to_string()))?;
        match event {
            ChangeEvent::Upsert(doc) => self.index_document(collection, rec, doc),
            ChangeEvent::Delete { id, .. } => {
                collection
                    .text
                    .delete(&id)
                    .map_err(|e| ("index_error", e.to_string()))?;
                if let Some(v) = collection.vectors() {
                    v.delete(&id);
                }
                Ok(ViewChange::Remove(Arc::clone(collection), id))
            }
        }
    }

    fn index_document(
        &self,
        collection: &Arc<Collection>,
        rec: &SourceRecord,
        doc: Document,
    ) -> Result<ViewChange, (&'static str, String)> {
        let config = &collection.config;
        let use_vectors = collection.provider() == crate::config::Provider::Precomputed;
        // Check the vector before touching any index, so a bad one leaves no partial update.
        if use_vectors && let Some(v) = &doc.vector {
            let expected = collection
                .vectors()
                .map(|i| i.dim())
                .or(config.embedding.dimensions);
            if let Some(dim) = expected
                && v.len() != dim
            {
                return Err((
                    "bad_vector",
                    format!(
                        "field `{}` has {} dimensions, the collection has {dim}",
                        config.vector_field.as_deref().unwrap_or("vector"),
                        v.len()
                    ),
                ));
            }
        }
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let (Some(field), Some(tenant)) = (&config.tenant_field, &doc.tenant) {
            extra.push((field.as_str(), tenant.as_str()));
        }
        let terms = FilterTerms::from_metadata(&doc.metadata, &extra);
        let chunks = chunk_spans(&doc.text, config.chunk_tokens, config.chunk_overlap);
        let chunk_texts: Vec<&str> = chunks
            .iter()
            .map(|r| doc.text.get(r.clone()).unwrap_or(""))
            .collect();
        let seq = self.next_seq();
        let title = doc.title.as_deref().unwrap_or("");
        collection
            .text
            .upsert(&doc.id, seq, title, &chunk_texts, &terms)
            .map_err(|e| ("index_error", e.to_string()))?;
        match (&doc.vector, use_vectors) {
            (Some(v), true) => {
                // A precomputed vector describes the whole document: it is chunk 0's point.
                collection
                    .vectors_for(v.len())
                    .upsert(&doc.id, seq, &[(0, v.clone())])
                    .map_err(|e| ("bad_vector", e.to_string()))?;
            }
            _ => {
                if let Some(v) = collection.vectors() {
                    v.delete(&doc.id);
                }
            }
        }
        let event_time_ms = doc
            .event_time_ms
            .or(rec.timestamp_ms)
            .unwrap_or(rec.ingested_at_ms);
        Ok(ViewChange::Put(
            Arc::clone(collection),
            Box::new(StoredDoc {
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
            }),
        ))
    }
}
