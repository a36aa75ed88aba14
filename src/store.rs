//! What a persisted collection's checkpoint says, and how documents are stored in it.
//!
//! Each collection lives in `<data_dir>/collections/<name>/`: `text/` is its tantivy index
//! (memory-mapped; also the document store the view is loaded from) and `vectors/` its vector
//! journal and graph dumps (see [`crate::index::vector_store`]). Every applied batch ends
//! with one tantivy commit whose payload is a [`Checkpoint`]: the next offset of each
//! partition, the settings fingerprint, the apply sequence, and the length of the vector
//! journal written (and fsynced) before the commit. tantivy writes a commit's metadata last
//! and atomically, so the payload names a consistent cut of all three pieces: a crash at any
//! moment leaves the previous commit, whose offsets the consumer resumes from. The payload is
//! checksummed; a damaged one makes the collection rebuild from its topics.

use serde::{Deserialize, Serialize};

use crate::view::{Stamp, StoredDoc};

/// Version of the payload format.
pub const FORMAT: u32 = 1;

/// A collection's checkpoint, stored as its BM25 index's commit payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Payload format version.
    pub format: u32,
    /// The settings the documents and vectors were made with (see
    /// `Collection::fingerprint`); another value means the collection is rebuilt.
    pub fingerprint: String,
    /// Highest apply sequence number given out so far.
    pub seq: u64,
    /// When the commit was made (ms since the epoch).
    pub created_at_ms: i64,
    /// Where to resume each partition.
    pub partitions: Vec<PartitionCheckpoint>,
    /// The vector journal's part of the cut; `None` when the collection has no vectors yet.
    pub vectors: Option<VectorCheckpoint>,
}

/// One partition's resume point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Next offset to apply.
    pub next_offset: i64,
    /// The topic's Kafka topic ID when known: a topic recreated under the same name has
    /// another one, so its offsets do not carry over.
    #[serde(default)]
    pub topic_id: Option<String>,
}

/// The vector journal's part of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorCheckpoint {
    /// Journal generation.
    pub generation: u64,
    /// Bytes of the journal that belong to the checkpoint.
    pub journal_len: u64,
}

impl Checkpoint {
    /// A checkpoint with nothing applied yet.
    pub fn empty(fingerprint: String) -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            fingerprint,
            seq: 0,
            created_at_ms: crate::time::now_ms(),
            partitions: Vec::new(),
            vectors: None,
        }
    }

    /// The payload text: CRC-32 (8 hex digits), a space, then JSON.
    pub fn encode(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{:08x} {json}", crc32fast::hash(json.as_bytes()))
    }

    /// Parses and verifies a payload.
    pub fn decode(payload: &str) -> Result<Checkpoint, String> {
        let (crc, json) = payload
            .split_once(' ')
            .ok_or_else(|| "no checksum".to_string())?;
        let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field".to_string())?;
        if crc32fast::hash(json.as_bytes()) != crc {
            return Err("checksum mismatch".into());
        }
        let checkpoint: Checkpoint =
            serde_json::from_str(json).map_err(|e| format!("cannot decode: {e}"))?;
        if checkpoint.format != FORMAT {
            return Err(format!(
                "format {}, this build reads {FORMAT}",
                checkpoint.format
            ));
        }
        if let Some(p) = checkpoint.partitions.iter().find(|p| p.next_offset < 0) {
            return Err(format!(
                "next offset {} of {}/{}",
                p.next_offset, p.topic, p.partition
            ));
        }
        Ok(checkpoint)
    }
}

/// A document as the document store keeps it (bincode, on chunk 0 in the BM25 index).
/// Filter terms are derived from metadata and tenant again when loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// Document id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Indexed text.
    pub text: String,
    /// Metadata as JSON text (bincode cannot carry arbitrary JSON values).
    pub metadata_json: String,
    /// Tenant.
    pub tenant: Option<String>,
    /// Chunk byte ranges of `text`.
    pub chunks: Vec<(u64, u64)>,
    /// Apply sequence number of this version.
    pub seq: u64,
    /// Stamp: topic.
    pub topic: String,
    /// Stamp: partition.
    pub partition: i32,
    /// Stamp: offset.
    pub offset: i64,
    /// Stamp: event time (ms).
    pub event_time_ms: i64,
    /// Stamp: ingested at (ms).
    pub ingested_at_ms: i64,
    /// Stamp: indexed at (ms): when the document was written, just before the commit that
    /// made it visible.
    pub indexed_at_ms: i64,
}

fn encoding() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

impl DocRecord {
    /// The stored form of a document about to be applied.
    pub fn of(doc: &StoredDoc) -> DocRecord {
        DocRecord {
            id: doc.id.clone(),
            title: doc.title.clone(),
            text: doc.text.clone(),
            metadata_json: serde_json::Value::Object(doc.metadata.clone()).to_string(),
            tenant: doc.tenant.clone(),
            chunks: doc
                .chunks
                .iter()
                .map(|r| (r.start as u64, r.end as u64))
                .collect(),
            seq: doc.seq,
            topic: doc.stamp.topic.to_string(),
            partition: doc.stamp.partition,
            offset: doc.stamp.offset,
            event_time_ms: doc.stamp.event_time_ms,
            ingested_at_ms: doc.stamp.ingested_at_ms,
            indexed_at_ms: crate::time::now_ms(),
        }
    }

    /// Bytes for the document store.
    pub fn encode(&self) -> Vec<u8> {
        use bincode::Options;
        // Strings and numbers only: cannot fail.
        encoding().serialize(self).unwrap_or_default()
    }

    /// Decodes stored bytes (with their length as the size limit) and checks what decoding
    /// cannot: chunk ranges inside the text, metadata a JSON object.
    pub fn decode(bytes: &[u8]) -> Result<DocRecord, String> {
        use bincode::Options;
        let doc: DocRecord = encoding()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|e| format!("cannot decode a stored document: {e}"))?;
        for &(start, end) in &doc.chunks {
            let inside = match (usize::try_from(start), usize::try_from(end)) {
                (Ok(a), Ok(b)) => a <= b && doc.text.get(a..b).is_some(),
                _ => false,
            };
            if !inside {
                return Err(format!(
                    "document {:?}: chunk {start}..{end} outside its text",
                    doc.id
                ));
            }
        }
        if !matches!(
            serde_json::from_str::<serde_json::Value>(&doc.metadata_json),
            Ok(serde_json::Value::Object(_))
        ) {
            return Err(format!(
                "document {:?}: metadata is not a JSON object",
                doc.id
            ));
        }
        Ok(doc)
    }

    /// Back to the view's form; `terms` are derived by the caller's collection settings.
    pub fn into_stored(self, terms: crate::index::FilterTerms) -> StoredDoc {
        let metadata = match serde_json::from_str(&self.metadata_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        StoredDoc {
            id: self.id,
            title: self.title,
            text: self.text,
            metadata,
            tenant: self.tenant,
            terms,
            chunks: self
                .chunks
                .iter()
                .map(|&(a, b)| a as usize..b as usize)
                .collect(),
            seq: self.seq,
            stamp: Stamp {
                topic: std::sync::Arc::from(self.topic.as_str()),
                partition: self.partition,
                offset: self.offset,
                event_time_ms: self.event_time_ms,
                ingested_at_ms: self.ingested_at_ms,
                indexed_at_ms: self.indexed_at_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_damage() {
        let mut c = Checkpoint::empty("fp".into());
        c.partitions.push(PartitionCheckpoint {
            topic: "t".into(),
            partition: 1,
            next_offset: 42,
            topic_id: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
        });
        c.vectors = Some(VectorCheckpoint {
            generation: 3,
            journal_len: 1000,
        });
        let text = c.encode();
        assert_eq!(Checkpoint::decode(&text).unwrap(), c);
        let tampered = text.replace("42", "43");
        assert_eq!(
            Checkpoint::decode(&tampered).unwrap_err(),
            "checksum mismatch"
        );
        assert!(Checkpoint::decode("{}").is_err());
        assert!(Checkpoint::decode("zz {}").is_err());
    }

    #[test]
    fn stored_documents_round_trip_and_garbage_is_an_error() {
        let doc = DocRecord {
            id: "a".into(),
            title: Some("T".into()),
            text: "hello world".into(),
            metadata_json: r#"{"k":1}"#.into(),
            tenant: None,
            chunks: vec![(0, 5), (6, 11)],
            seq: 9,
            topic: "t".into(),
            partition: 0,
            offset: 4,
            event_time_ms: 1,
            ingested_at_ms: 2,
            indexed_at_ms: 3,
        };
        let bytes = doc.encode();
        assert_eq!(DocRecord::decode(&bytes).unwrap(), doc);
        // A string length of 2^63: refused by the size limit, no allocation attempted.
        let mut garbage = (1u64 << 63).to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0xab; 40]);
        assert!(
            DocRecord::decode(&garbage)
                .unwrap_err()
                .contains("cannot decode")
        );
        let mut outside = doc.clone();
        outside.chunks.push((3, 99));
        assert!(
            DocRecord::decode(&outside.encode())
                .unwrap_err()
                .contains("outside")
        );
        let mut not_object = doc;
        not_object.metadata_json = "[]".into();
        assert!(DocRecord::decode(&not_object.encode()).is_err());
    }
}
