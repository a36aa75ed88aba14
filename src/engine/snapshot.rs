//! Taking a consistent cut of the engine for a snapshot, and restoring one at start.
//!
//! The cut is taken by the writer between batches, so documents, vectors and offsets belong
//! to the same moment; documents are captured as shared handles and turned into their stored
//! form later, off the writer's thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Map;

use crate::index::{DocVectors, FilterTerms};
use crate::snapshot::{CollectionSnapshot, DocSnapshot, SnapshotData};
use crate::time::now_ms;
use crate::view::{Stamp, StoredDoc};

use super::{Collection, Engine};

/// A cut of the engine, cheap to take; [`SnapshotCut::into_data`] does the copying.
pub struct SnapshotCut {
    created_at_ms: i64,
    collections: Vec<CutCollection>,
}

struct CutCollection {
    name: String,
    fingerprint: String,
    partitions: Vec<(String, i32, i64)>,
    topic_ids: Vec<(String, String)>,
    docs: Vec<Arc<StoredDoc>>,
    vectors: Vec<DocVectors>,
}

impl SnapshotCut {
    /// The stored form (copies every document's text).
    pub fn into_data(self) -> SnapshotData {
        SnapshotData {
            created_at_ms: self.created_at_ms,
            collections: self
                .collections
                .into_iter()
                .map(|c| CollectionSnapshot {
                    name: c.name,
                    fingerprint: c.fingerprint,
                    partitions: c.partitions,
                    docs: c.docs.iter().map(|d| doc_snapshot(d)).collect(),
                    vectors: c.vectors,
                    topic_ids: c.topic_ids,
                })
                .collect(),
        }
    }
}

fn doc_snapshot(d: &StoredDoc) -> DocSnapshot {
    DocSnapshot {
        id: d.id.clone(),
        title: d.title.clone(),
        text: d.text.clone(),
        metadata_json: serde_json::Value::Object(d.metadata.clone()).to_string(),
        tenant: d.tenant.clone(),
        chunks: d
            .chunks
            .iter()
            .map(|r| (r.start as u64, r.end as u64))
            .collect(),
        seq: d.seq,
        topic: d.stamp.topic.to_string(),
        partition: d.stamp.partition,
        offset: d.stamp.offset,
        event_time_ms: d.stamp.event_time_ms,
        ingested_at_ms: d.stamp.ingested_at_ms,
        indexed_at_ms: d.stamp.indexed_at_ms,
    }
}

/// What a restore did, per collection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Collections restored, with their document counts.
    pub restored: Vec<(String, usize)>,
    /// Collections whose settings changed since the snapshot: rebuilt from their topics.
    pub rebuilt: Vec<String>,
}

impl Engine {
    /// Takes a consistent cut. Call only from the writer (between batches) or before the
    /// pipeline starts.
    pub fn snapshot_cut(&self) -> SnapshotCut {
        let progress = self.progress.snapshot(&[]);
        let collections = self
            .collections
            .iter()
            .map(|c| CutCollection {
                name: c.name().to_string(),
                fingerprint: c.fingerprint(),
                partitions: progress
                    .iter()
                    .filter(|((t, _), _)| c.config.topics.iter().any(|x| x.as_str() == &**t))
                    .filter_map(|((t, p), pp)| pp.next_offset.map(|n| (t.to_string(), *p, n)))
                    .collect(),
                topic_ids: c
                    .config
                    .topics
                    .iter()
                    .filter_map(|t| {
                        self.progress
                            .topic_id(t)
                            .map(|id| (t.clone(), id.to_string()))
                    })
                    .collect(),
                docs: c.view.all(),
                vectors: c.vectors().map(|v| v.export()).unwrap_or_default(),
            })
            .collect();
        SnapshotCut {
            created_at_ms: now_ms(),
            collections,
        }
    }

    /// Loads a snapshot into an empty engine before consuming starts. A collection whose
    /// settings differ from the snapshot's is left empty, so it is rebuilt from its topics
    /// rather than mixing old and new document shapes (or vector spaces).
    pub fn restore(&self, data: SnapshotData) -> RestoreReport {
        let mut report = RestoreReport::default();
        let mut max_seq = 0;
        let saved: HashMap<String, CollectionSnapshot> = data
            .collections
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        for c in &self.collections {
            let Some(snap) = saved.get(c.name()) else {
                continue;
            };
            if snap.fingerprint != c.fingerprint() {
                tracing::warn!(
                    collection = c.name(),
                    "settings changed since the snapshot: rebuilding this collection from its topics"
                );
                report.rebuilt.push(c.name().to_string());
                continue;
            }
            max_seq = max_seq.max(restore_collection(c, snap));
            for (topic, partition, next) in &snap.partitions {
                let topic_id = snap
                    .topic_ids
                    .iter()
                    .find(|(t, _)| t == topic)
                    .map(|(_, id)| Arc::from(id.as_str()));
                self.progress
                    .track(topic, *partition, Some(*next), topic_id);
                tracing::info!(
                    collection = c.name(),
                    topic,
                    partition,
                    "resuming at offset {next}"
                );
            }
            report
                .restored
                .push((c.name().to_string(), snap.docs.len()));
        }
        self.seq.fetch_max(max_seq, Ordering::Relaxed);
        report
    }
}

/// Re-creates one collection's view and indexes; returns the highest sequence number seen.
fn restore_collection(c: &Collection, snap: &CollectionSnapshot) -> u64 {
    let mut max_seq = 0;
    for d in &snap.docs {
        let metadata: Map<String, serde_json::Value> =
            serde_json::from_str(&d.metadata_json).unwrap_or_default();
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let (Some(field), Some(tenant)) = (&c.config.tenant_field, &d.tenant) {
            extra.push((field.as_str(), tenant.as_str()));
        }
        let terms = FilterTerms::from_metadata(&metadata, &extra);
        let chunks: Vec<std::ops::Range<usize>> = d
            .chunks
            .iter()
            .map(|&(a, b)| a as usize..b as usize)
            .collect();
        let chunk_texts: Vec<&str> = chunks
            .iter()
            .map(|r| d.text.get(r.clone()).unwrap_or(""))
            .collect();
        if let Err(e) = c.text.upsert(
            &d.id,
            d.seq,
            d.title.as_deref().unwrap_or(""),
            &chunk_texts,
            &terms,
        ) {
            tracing::error!(
                collection = c.name(),
                id = d.id,
                "restoring BM25 entry: {e}"
            );
        }
        max_seq = max_seq.max(d.seq);
        c.view.put(StoredDoc {
            id: d.id.clone(),
            title: d.title.clone(),
            text: d.text.clone(),
            metadata,
            tenant: d.tenant.clone(),
            terms,
            chunks,
            seq: d.seq,
            stamp: Stamp {
                topic: Arc::from(d.topic.as_str()),
                partition: d.partition,
                offset: d.offset,
                event_time_ms: d.event_time_ms,
                ingested_at_ms: d.ingested_at_ms,
                indexed_at_ms: d.indexed_at_ms,
            },
        });
    }
    for v in &snap.vectors {
        let Some(dim) = v.vectors.first().map(|(_, x)| x.len()) else {
            continue;
        };
        if let Err(e) = c
            .vectors_for(dim)
            .stage_upsert(&v.doc_id, v.seq, &v.vectors)
        {
            tracing::error!(
                collection = c.name(),
                id = v.doc_id,
                "restoring vectors: {e}"
            );
        }
    }
    // Every restored vector in one parallel insert.
    c.flush_vectors();
    if let Err(e) = c.text.commit() {
        tracing::error!(collection = c.name(), "committing restored BM25 index: {e}");
    }
    max_seq
}
