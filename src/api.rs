//! The shapes agents see: tool results and their freshness metadata. Field names here are
//! the contract in DESIGN.md (`Hit`, `Stamp`, `Watermark`); keep them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::rfc3339_ms;
use crate::view::{PartitionKey, PartitionProgress, Stamp};

/// Where a fact came from and how fresh it is.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename = "Stamp")]
pub struct StampOut {
    /// Kafka topic of the record this version came from.
    pub topic: String,
    /// Kafka partition of that record.
    pub partition: i32,
    /// Kafka offset of that record.
    pub offset: i64,
    /// When the change happened at the source (RFC 3339 UTC).
    pub event_time: String,
    /// When freshet received the record.
    pub ingested_at: String,
    /// When the record became searchable.
    pub indexed_at: String,
    /// now − event_time, in milliseconds: how old this fact is.
    pub age_ms: i64,
    /// indexed_at − event_time, in milliseconds: how long the pipeline took.
    pub index_delay_ms: i64,
}

impl StampOut {
    /// Renders a stored stamp as seen at `now_ms`.
    pub fn new(stamp: &Stamp, now_ms: i64) -> StampOut {
        StampOut {
            topic: stamp.topic.to_string(),
            partition: stamp.partition,
            offset: stamp.offset,
            event_time: rfc3339_ms(stamp.event_time_ms),
            ingested_at: rfc3339_ms(stamp.ingested_at_ms),
            indexed_at: rfc3339_ms(stamp.indexed_at_ms),
            age_ms: now_ms - stamp.event_time_ms,
            index_delay_ms: stamp.indexed_at_ms - stamp.event_time_ms,
        }
    }
}

/// How far the replica has read one partition.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PartitionWatermark {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Last offset applied to the view (null before the first record).
    pub applied_offset: Option<i64>,
    /// The partition's log end offset (the offset the next record will get) as last read
    /// from the broker, and never below `applied_offset + 1` (null if never read).
    pub high_watermark: Option<i64>,
    /// Records written but not yet applied (null while the high watermark is unknown).
    pub lag: Option<i64>,
    /// Present while the partition is read again from its start, saying why ("topic
    /// recreated", "log truncated by retention"); the partition is not caught up meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rereading: Option<String>,
}

impl PartitionWatermark {
    /// Renders one partition's progress.
    pub fn new(key: &PartitionKey, p: &PartitionProgress) -> PartitionWatermark {
        PartitionWatermark {
            topic: key.0.to_string(),
            partition: key.1,
            applied_offset: p.next_offset.map(|n| n - 1),
            // A reading taken before the last batch was applied is behind it; the log ends at
            // least after what was applied, so show that rather than `applied > high`.
            high_watermark: p
                .high_watermark
                .map(|high| high.max(p.next_offset.unwrap_or(high))),
            lag: p.lag(),
            rereading: p.reread.as_ref().map(|r| r.reason.as_str().to_string()),
        }
    }
}

/// How current the answer is as a whole.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Watermark {
    /// When the answer was formed (RFC 3339 UTC).
    pub as_of: String,
    /// True when every partition had no lag at `as_of` (all known writes applied).
    pub caught_up: bool,
    /// Per-partition progress of the collections involved.
    pub partitions: Vec<PartitionWatermark>,
    /// Which generation of each collection involved answered (absent on answers that
    /// involve no collection's index, e.g. from a cluster's other nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<GenerationInfo>,
}

/// Which generation of a collection's index answered. A settings change (mapping,
/// chunking, embedding model) builds the next generation in the background while the
/// previous one keeps answering, frozen at its last checkpoint; once caught up, it is
/// swapped in.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct GenerationInfo {
    /// The collection.
    pub collection: String,
    /// The generation that answered (1, then one more per settings change).
    pub generation: u64,
    /// While a settings change is applied: the generation being built, which replaces the
    /// one that answered once caught up. The answer's `caught_up` is false meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<u64>,
    /// What the caller should know about this generation's answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One search result: a document, its best-matching passage and its freshness.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// Collection it belongs to.
    pub collection: String,
    /// Relevance score (BM25, cosine similarity, or reciprocal-rank-fusion score by mode).
    pub score: f32,
    /// Document title, if the collection has one.
    pub title: Option<String>,
    /// The best-matching passage, query terms in **bold**.
    pub snippet: String,
    /// The collection's metadata fields for this document.
    pub metadata: Map<String, Value>,
    /// Where this version came from and how fresh it is.
    pub freshness: StampOut,
}

/// Result of the `search` tool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SearchResult {
    /// Hits, best first, one per document.
    pub results: Vec<Hit>,
    /// Retrieval mode actually used (`hybrid`, `bm25` or `vector`).
    pub mode: String,
    /// Anything the caller should know about how this answer was formed (e.g. a fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Pass as `cursor` (with the same search) for the following page; absent when no
    /// result follows or the depth bound is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How current the collections searched were when answering.
    pub freshness: Watermark,
}

/// A whole document.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename = "Doc")]
pub struct DocOut {
    /// Document id.
    pub id: String,
    /// Collection it belongs to.
    pub collection: String,
    /// Title, if any.
    pub title: Option<String>,
    /// The full indexed text.
    pub text: String,
    /// Metadata fields.
    pub metadata: Map<String, Value>,
    /// Where this version came from and how fresh it is.
    pub freshness: StampOut,
}

/// Result of the `get_document` tool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DocumentResult {
    /// The document.
    pub document: DocOut,
    /// When a version was asked for (`offset`): `current` if the document is still that
    /// version, else `superseded` (and `document` is the current version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How current the collection was when answering.
    pub freshness: Watermark,
}

/// Freshness of one requested id.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct IdFreshness {
    /// The id asked about.
    pub id: String,
    /// `found`, `not_found` (never written, or deleted), or on a cluster `unavailable` (no
    /// reachable node holds some partition, which may hold it).
    pub status: String,
    /// Stamp of the current version when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<StampOut>,
}

/// Result of the `document_freshness` tool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FreshnessResult {
    /// One entry per requested id, in request order.
    pub documents: Vec<IdFreshness>,
    /// How current the collection was when answering.
    pub freshness: Watermark,
}

/// Counters of what a collection's stream delivered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct IngestCounts {
    /// Upserts applied.
    pub upserts: u64,
    /// Deletes applied (tombstones and Debezium `d`).
    pub deletes: u64,
    /// Records skipped because they were already applied (replays).
    pub replays_skipped: u64,
    /// Records refused as undecodable, by kind (`not_json`, `missing_id`, ...).
    pub poison: std::collections::BTreeMap<String, u64>,
}

/// The embedding set-up of a collection.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct EmbeddingInfo {
    /// `local`, `openai`, `precomputed` or `none`.
    pub provider: String,
    /// Model id, when known.
    pub model: Option<String>,
    /// Vector dimension, once known.
    pub dimensions: Option<usize>,
}

/// One collection in `list_collections`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CollectionInfo {
    /// Collection name (use it in `search`, `get_document`, ...).
    pub name: String,
    /// Kafka topics feeding it.
    pub topics: Vec<String>,
    /// Live documents.
    pub documents: usize,
    /// Live indexed chunks.
    pub chunks: usize,
    /// How vectors are produced.
    pub embedding: EmbeddingInfo,
    /// Fields usable in `search`'s `filter`.
    pub filterable_fields: Vec<String>,
    /// The type of every field a filter may name (`keyword`, `number`, `time`, `bool`),
    /// including the built-in times `event_time` and `indexed_at`. Number and time fields
    /// take `gt`/`gte`/`lt`/`lte`.
    pub field_types: std::collections::BTreeMap<String, String>,
    /// Retrieval modes this collection supports.
    pub modes: Vec<String>,
    /// What the stream delivered so far.
    pub ingest: IngestCounts,
    /// Lag per partition.
    pub partitions: Vec<PartitionWatermark>,
    /// True when no partition lags.
    pub caught_up: bool,
    /// While the replica catches up at start (not ready yet): progress and an ETA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpInfo>,
    /// Which generation of the collection's index answers (and the one being built after a
    /// settings change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationInfo>,
    /// While a settings change is applied: how far the generation being built has come
    /// (records applied to it since start, records left to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<CatchUpInfo>,
    /// How well the vector graph finds true neighbours, as freshet measured it on the
    /// collection's own vectors. Absent without vectors or below 1024 of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_recall: Option<VectorRecallInfo>,
}

/// The vector graph's measured recall (see `collections[].hnsw.min_recall`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct VectorRecallInfo {
    /// Of the graph's top 10 for a stored vector, the share as near as the exact top 10.
    pub recall_at_10: f32,
    /// Vectors in the graph when it was measured (measured again each time they double).
    pub measured_at_points: usize,
    /// True when the recall is below `hnsw.min_recall`: vector searches then scan every
    /// vector exactly (exact results, slower on large collections).
    pub exact_scan: bool,
}

/// Catch-up progress of a collection while the replica is not ready.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CatchUpInfo {
    /// Records applied since this process started (after any snapshot it restored).
    pub applied: u64,
    /// Records written to its topics but not applied yet (null until the broker's
    /// watermarks are known).
    pub remaining: Option<u64>,
    /// Recent apply rate, records per second.
    pub rate_per_s: f64,
    /// Estimated seconds until caught up (null while the rate or the remainder is unknown).
    pub eta_s: Option<f64>,
}

/// Result of the `list_collections` tool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CollectionsResult {
    /// The collections this caller may read.
    pub collections: Vec<CollectionInfo>,
    /// When this was read (RFC 3339 UTC).
    pub as_of: String,
    /// On a cluster node: which node owns which partition, how far each is, and what no
    /// reachable node of a replica group owns. Absent on a single node. (The collections'
    /// counts and partitions above are the receiving node's own.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// The cluster part of `list_collections`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ClusterView {
    /// The node that answered (`cluster.node_id`).
    pub node_id: String,
    /// Every configured peer, as it answered or did not.
    pub nodes: Vec<ClusterNode>,
    /// Per replica group, the partitions of the caller's collections that no reachable node
    /// of the group owns (empty lists: every group covers everything).
    pub uncovered: Vec<UncoveredPartitions>,
}

/// One node in [`ClusterView`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ClusterNode {
    /// Its advertised URL (as configured in `cluster.peers`).
    pub url: String,
    /// Whether it answered the state request in time.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// Its `cluster.node_id` (when reachable).
    pub node_id: Option<String>,
    /// Its replica group (when reachable).
    pub replica: Option<u32>,
    /// The partitions of the caller's collections it owns, with lag.
    pub partitions: Vec<ClusterPartition>,
}

/// One owned partition of a node (in [`ClusterNode`] and on the internal API).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ClusterPartition {
    /// Progress, as in answers' watermarks.
    #[serde(flatten)]
    pub watermark: PartitionWatermark,
    /// Applied up to the last high watermark read, with a recent reading.
    pub caught_up: bool,
}

impl ClusterPartition {
    /// A partition nothing is known about yet (not read here, or no reachable owner).
    pub fn unknown(topic: &str, partition: i32) -> ClusterPartition {
        ClusterPartition {
            watermark: PartitionWatermark {
                topic: topic.to_string(),
                partition,
                applied_offset: None,
                high_watermark: None,
                lag: None,
                rereading: None,
            },
            caught_up: false,
        }
    }
}

/// Partitions one replica group does not cover.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct UncoveredPartitions {
    /// The replica group.
    pub replica: u32,
    /// `topic/partition` of each partition without a reachable owner in the group.
    pub partitions: Vec<String>,
}

/// One change in `changes`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ChangeOut {
    /// Document id.
    pub id: String,
    /// Collection.
    pub collection: String,
    /// `upsert` or `delete`.
    pub kind: String,
    /// Title of the version written (upsert) or removed (delete).
    pub title: Option<String>,
    /// Metadata of that version.
    pub metadata: Map<String, Value>,
    /// The version's text, with `include_text` (upserts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// True while the document is still as this change left it (not superseded since).
    pub current: bool,
    /// Where the change came from and when it became searchable.
    pub freshness: StampOut,
}

/// Result of `changes`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ChangesResult {
    /// Collection read.
    pub collection: String,
    /// Upserts and deletes in apply order.
    pub changes: Vec<ChangeOut>,
    /// Cursor to pass as `since` for the changes after these.
    pub next: String,
    /// More changes are waiting: call again with `since` = `next`.
    pub more: bool,
    /// The history does not reach back as far as asked: older changes may be missing.
    pub truncated: bool,
    /// Every change that became searchable since this time is kept.
    pub kept_since: String,
    /// What the caller should know about this answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Watermark of the collection.
    pub freshness: Watermark,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// (applied_offset, high_watermark, lag) shown for a partition's progress.
    fn shown(next_offset: Option<i64>, high_watermark: Option<i64>) -> [Option<i64>; 3] {
        let progress = PartitionProgress {
            next_offset,
            high_watermark,
            ..PartitionProgress::default()
        };
        let w = PartitionWatermark::new(&(Arc::from("t"), 0), &progress);
        [w.applied_offset, w.high_watermark, w.lag]
    }

    #[test]
    fn a_stale_log_end_is_never_shown_below_what_was_applied() {
        // The watermark was read (281) before the batch ending at offset 282 was applied.
        assert_eq!(shown(Some(283), Some(281)), [Some(282), Some(283), Some(0)]);
    }

    #[test]
    fn a_partition_behind_shows_its_lag_against_the_log_end() {
        assert_eq!(shown(Some(10), Some(15)), [Some(9), Some(15), Some(5)]);
        assert_eq!(shown(None, None), [None, None, None]);
        assert_eq!(shown(None, Some(3)), [None, Some(3), Some(3)]);
    }
}
