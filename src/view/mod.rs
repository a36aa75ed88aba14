//! The materialized view: the current version of every document, keyed by (collection, id),
//! with the stamps that say where each came from and when it became searchable.
//!
//! Only the apply task writes here. Readers get `Arc<StoredDoc>` clones, so no map guard ever
//! outlives a method call (and none crosses an `.await`).

pub mod progress;

use std::ops::Range;
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{Map, Value};

use crate::index::{Candidate, FilterTerms};

pub use progress::{BrokerFacts, OffsetTarget, PartitionKey, PartitionProgress, Progress};

/// Where a document version came from and when it moved through freshet (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Kafka topic of the record.
    pub topic: Arc<str>,
    /// Kafka partition of the record.
    pub partition: i32,
    /// Kafka offset of the record.
    pub offset: i64,
    /// When the change happened at the source (event-time field, Debezium `ts_ms`, or the
    /// Kafka timestamp).
    pub event_time_ms: i64,
    /// When freshet's consumer received the record.
    pub ingested_at_ms: i64,
    /// When the record became visible to searches.
    pub indexed_at_ms: i64,
}

/// One document as the view holds it.
#[derive(Clone, Debug)]
pub struct StoredDoc {
    /// Document id, unique in its collection.
    pub id: String,
    /// Title, if the collection maps one.
    pub title: Option<String>,
    /// The indexed text.
    pub text: String,
    /// Metadata fields, returned with hits and used by filters.
    pub metadata: Map<String, Value>,
    /// Tenant, if the collection maps one.
    pub tenant: Option<String>,
    /// Filter terms precomputed from metadata and tenant.
    pub terms: FilterTerms,
    /// Byte ranges of `text` that were indexed as chunks, in order.
    pub chunks: Vec<Range<usize>>,
    /// Apply sequence number of this version; index entries carrying another one are stale.
    pub seq: u64,
    /// Freshness stamp of this version.
    pub stamp: Stamp,
}

impl StoredDoc {
    /// What filter conditions see of this version.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            metadata: &self.metadata,
            tenant: self.tenant.as_deref(),
            event_time_ms: self.stamp.event_time_ms,
            indexed_at_ms: self.stamp.indexed_at_ms,
        }
    }

    /// The text of chunk `n` (the whole text when out of range).
    pub fn chunk_text(&self, n: u32) -> &str {
        self.chunks
            .get(n as usize)
            .and_then(|r| self.text.get(r.clone()))
            .unwrap_or(&self.text)
    }
}

/// The documents of one collection.
#[derive(Debug, Default)]
pub struct View {
    docs: DashMap<String, Arc<StoredDoc>>,
    /// The same current versions by apply sequence number, for filters evaluated inside
    /// the BM25 search, which knows a hit's sequence number but not its document.
    by_seq: DashMap<u64, Arc<StoredDoc>>,
}

impl View {
    /// The current version of a document.
    pub fn get(&self, id: &str) -> Option<Arc<StoredDoc>> {
        self.docs.get(id).map(|d| Arc::clone(d.value()))
    }

    /// The current version, only if it is still version `seq`.
    pub fn get_version(&self, id: &str, seq: u64) -> Option<Arc<StoredDoc>> {
        self.get(id).filter(|d| d.seq == seq)
    }

    /// The current version whose apply sequence number is `seq`, if it is still current.
    pub fn get_by_seq(&self, seq: u64) -> Option<Arc<StoredDoc>> {
        self.by_seq.get(&seq).map(|d| Arc::clone(d.value()))
    }

    /// Inserts or replaces a document.
    pub fn put(&self, doc: StoredDoc) {
        self.insert(doc);
    }

    /// Inserts or replaces a document and returns the shared handle now in the view.
    pub fn insert(&self, doc: StoredDoc) -> Arc<StoredDoc> {
        let doc = Arc::new(doc);
        self.by_seq.insert(doc.seq, Arc::clone(&doc));
        if let Some(old) = self.docs.insert(doc.id.clone(), Arc::clone(&doc))
            && old.seq != doc.seq
        {
            self.by_seq.remove(&old.seq);
        }
        doc
    }

    /// Removes a document; returns whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.take(id).is_some()
    }

    /// Removes a document and returns the version that was current.
    pub fn take(&self, id: &str) -> Option<Arc<StoredDoc>> {
        let (_, old) = self.docs.remove(id)?;
        self.by_seq.remove(&old.seq);
        Some(old)
    }

    /// Removes every document.
    pub fn clear(&self) {
        self.docs.clear();
        self.by_seq.clear();
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when the view holds no documents.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Number of indexed chunks over all documents.
    pub fn chunk_count(&self) -> usize {
        self.docs.iter().map(|d| d.chunks.len().max(1)).sum()
    }

    /// All documents (a point-in-time copy of the handles).
    pub fn all(&self) -> Vec<Arc<StoredDoc>> {
        self.docs.iter().map(|d| Arc::clone(d.value())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, seq: u64) -> StoredDoc {
        StoredDoc {
            id: id.into(),
            title: None,
            text: "alpha beta gamma".into(),
            metadata: Map::new(),
            tenant: None,
            terms: FilterTerms::from_metadata(&Map::new(), &[]),
            chunks: vec![0..10, 6..16],
            seq,
            stamp: Stamp {
                topic: Arc::from("t"),
                partition: 0,
                offset: seq as i64,
                event_time_ms: 0,
                ingested_at_ms: 0,
                indexed_at_ms: 0,
            },
        }
    }

    #[test]
    fn versions_replace_and_stale_seq_is_hidden() {
        let v = View::default();
        v.put(doc("a", 1));
        v.put(doc("a", 2));
        assert_eq!(v.len(), 1);
        assert!(v.get_version("a", 1).is_none());
        assert_eq!(v.get_version("a", 2).unwrap().seq, 2);
        assert!(
            v.get_by_seq(1).is_none(),
            "a replaced version leaves the seq index"
        );
        assert_eq!(v.get_by_seq(2).unwrap().id, "a");
        assert_eq!(v.take("a").map(|d| d.seq), Some(2));
        assert!(v.get_by_seq(2).is_none());
        v.put(doc("a", 3));
        assert!(v.remove("a"));
        assert!(!v.remove("a"));
        assert!(v.is_empty());
    }

    #[test]
    fn chunk_text_falls_back_to_whole_text() {
        let d = doc("a", 1);
        assert_eq!(d.chunk_text(0), "alpha beta");
        assert_eq!(d.chunk_text(1), "beta gamma");
        assert_eq!(d.chunk_text(9), "alpha beta gamma");
    }
}
