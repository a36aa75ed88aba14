//! What nodes send each other on the internal API (JSON over HTTP, authenticated with the
//! shared key).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{ClusterPartition, Hit};
use crate::auth::{Access, TenantScope};
use crate::engine::{Consistency, Mode, SearchRequest};
use crate::index::TermStats;

/// Header carrying the shared key on internal calls.
pub const KEY_HEADER: &str = "x-freshet-cluster-key";

/// `GET /internal/cluster/state`: what a node owns and how far it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    /// The node's `cluster.node_id`.
    pub node_id: String,
    /// Its `cluster.advertise_url`.
    pub url: String,
    /// Its replica group.
    pub replica: u32,
    /// False until the group has assigned it partitions (or none) for the first time.
    pub assigned: bool,
    /// Owned partitions with their progress.
    pub partitions: Vec<ClusterPartition>,
    /// Partition count per topic, as the node last read it from the broker.
    pub partition_counts: BTreeMap<String, i32>,
}

/// The caller's rights, forwarded so that every shard applies them itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireAccess {
    /// Readable collections (`None`: all).
    pub collections: Option<Vec<String>>,
    /// `all`, `none`, or the one tenant the caller sees.
    pub tenant: WireTenant,
    /// Who the call is for, for the shard's audit line.
    #[serde(default)]
    pub origin: WireOrigin,
}

/// Who a shard call is for: the caller as the receiving node authenticated them, and that
/// node's request id, so the audit lines of one call can be joined across nodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WireOrigin {
    /// The caller's token `sub`.
    pub sub: Option<String>,
    /// The caller's token `iss`.
    pub iss: Option<String>,
    /// The receiving node's request id of the call.
    pub request_id: Option<String>,
    /// The receiving node's `cluster.node_id`.
    pub node: String,
}

/// Who a cluster-wide call is for: the caller's rights, which every shard applies, and
/// where the call came from, which every shard audits.
#[derive(Clone, Debug)]
pub struct Asker {
    /// What the caller may read.
    pub access: Access,
    /// Who the caller is and which request this is.
    pub origin: WireOrigin,
}

impl Asker {
    /// The rights and origin as shards receive them.
    pub fn wire(&self) -> WireAccess {
        WireAccess {
            origin: self.origin.clone(),
            ..(&self.access).into()
        }
    }
}

/// [`TenantScope`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireTenant {
    /// Every tenant.
    All,
    /// Only this tenant.
    Only(String),
    /// No tenant's documents.
    NoTenant,
}

impl From<&Access> for WireAccess {
    fn from(a: &Access) -> Self {
        WireAccess {
            collections: a.collections.as_ref().map(|set| {
                let mut names: Vec<String> = set.iter().cloned().collect();
                names.sort();
                names
            }),
            tenant: match &a.tenant {
                TenantScope::All => WireTenant::All,
                TenantScope::Only(t) => WireTenant::Only(t.clone()),
                TenantScope::NoTenant => WireTenant::NoTenant,
            },
            origin: WireOrigin::default(),
        }
    }
}

impl From<WireAccess> for Access {
    fn from(a: WireAccess) -> Self {
        Access {
            collections: a
                .collections
                .map(|names| names.into_iter().collect::<HashSet<_>>()),
            tenant: match a.tenant {
                WireTenant::All => TenantScope::All,
                WireTenant::Only(t) => TenantScope::Only(t),
                WireTenant::NoTenant => TenantScope::NoTenant,
            },
        }
    }
}

/// A search as a shard runs it: the caller's arguments (no consistency wait, no recency:
/// the receiving node does those), the caller's rights, and the partitions to answer for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardQuery {
    /// Query text.
    pub query: String,
    /// Collection, or every readable one.
    pub collection: Option<String>,
    /// Page size.
    pub k: usize,
    /// `hybrid`, `bm25` or `vector`.
    pub mode: String,
    /// Metadata filter.
    pub filter: Option<Map<String, Value>>,
    /// Caller-supplied query vector.
    pub vector: Option<Vec<f32>>,
    /// Results of earlier pages (the receiving node checked the caller's cursor): the
    /// shard ranks down to `offset + k`.
    pub offset: usize,
    /// Who asks.
    pub access: WireAccess,
    /// Only documents of these partitions are returned.
    pub partitions: Vec<(String, i32)>,
    /// `consistency: "head"`: before its statistics, the shard waits (this long at most)
    /// until everything written to its partitions before the call is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_wait_ms: Option<u64>,
}

impl ShardQuery {
    /// The shard query of `req` for `partitions`.
    pub fn new(
        req: &SearchRequest,
        offset: usize,
        access: WireAccess,
        partitions: Vec<(String, i32)>,
    ) -> Self {
        ShardQuery {
            query: req.query.clone(),
            collection: req.collection.clone(),
            k: req.k,
            mode: mode_name(req.mode).to_string(),
            filter: req.filter.clone(),
            vector: req.vector.clone(),
            offset,
            access,
            partitions,
            head_wait_ms: (req.consistency == Consistency::Head)
                .then(|| u64::try_from(req.max_wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The search request a shard validates and runs (its page starts at 0; `offset` says
    /// how deep to rank).
    pub fn request(&self) -> Result<SearchRequest, String> {
        if self.offset > crate::engine::MAX_SEARCH_DEPTH {
            return Err(format!(
                "offset {} is past the search depth bound",
                self.offset
            ));
        }
        Ok(SearchRequest {
            query: self.query.clone(),
            collection: self.collection.clone(),
            k: self.k,
            mode: parse_mode(&self.mode)?,
            filter: self.filter.clone(),
            vector: self.vector.clone(),
            consistency: Consistency::Any,
            max_wait: std::time::Duration::ZERO,
            recency: None,
            cursor: None,
        })
    }
}

/// The wire name of a mode.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Hybrid => "hybrid",
        Mode::Bm25 => "bm25",
        Mode::Vector => "vector",
    }
}

/// A mode from its wire name.
pub fn parse_mode(name: &str) -> Result<Mode, String> {
    match name {
        "hybrid" => Ok(Mode::Hybrid),
        "bm25" => Ok(Mode::Bm25),
        "vector" => Ok(Mode::Vector),
        other => Err(format!("unknown mode `{other}`")),
    }
}

/// `POST /internal/cluster/stats` answer: BM25 statistics of the query per collection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardStats {
    /// By collection name.
    pub collections: BTreeMap<String, TermStats>,
    /// With `head_wait_ms`: why the head was not reached, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_missed: Option<String>,
}

/// `POST /internal/cluster/search` body: the query and the cluster-wide statistics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardSearch {
    /// The query.
    pub query: ShardQuery,
    /// Summed statistics by collection.
    pub stats: BTreeMap<String, TermStats>,
    /// The query text's embedding (or why it failed) by collection, computed once by the
    /// receiving node; a collection missing here is embedded by the shard itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub embedded: BTreeMap<String, Result<Vec<f32>, String>>,
}

/// One shard's candidates.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardAnswer {
    /// Per collection searched, in the order searched.
    pub collections: Vec<ShardCollection>,
    /// The asked-for partitions this node holds, with their progress.
    pub partitions: Vec<ClusterPartition>,
}

/// One collection's candidates from one shard, each retriever's list best first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardCollection {
    /// Collection name.
    pub name: String,
    /// Mode used.
    pub mode: String,
    /// Notes (fallbacks).
    pub notes: Vec<String>,
    /// BM25 candidates, scored with the cluster-wide statistics.
    pub bm25: Vec<Candidate>,
    /// Vector candidates.
    pub vector: Vec<Candidate>,
}

/// A rendered hit with its raw retriever score, and the times recency ranks by.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    /// The hit as the caller will see it (score: the retriever's raw score).
    pub hit: Hit,
    /// Event time, ms since the epoch.
    pub event_time_ms: i64,
    /// Indexed at, ms since the epoch.
    pub indexed_at_ms: i64,
}

/// `POST /internal/cluster/documents`: look documents up by id in some partitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentsQuery {
    /// Collection.
    pub collection: String,
    /// Ids (1 to 1000).
    pub ids: Vec<String>,
    /// The version the caller holds, `(partition, offset)`, as `get_document` takes it.
    pub version: Option<(Option<i32>, i64)>,
    /// Who asks.
    pub access: WireAccess,
    /// Only documents of these partitions are returned.
    pub partitions: Vec<(String, i32)>,
}

/// The documents of a [`DocumentsQuery`] a shard holds in the asked-for partitions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DocumentsAnswer {
    /// Found documents (their `freshness` is the shard's, replaced by the receiving node).
    pub documents: Vec<crate::api::DocumentResult>,
}

/// `POST /internal/cluster/changes`: the `changes` tool over some partitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesQuery {
    /// Collection.
    pub collection: String,
    /// The caller's `since`, as given (a cursor names every partition; a shard reads only
    /// its own).
    pub since: Option<String>,
    /// Most changes.
    pub limit: usize,
    /// Metadata filter.
    pub filter: Option<Map<String, Value>>,
    /// Return upserts' text.
    pub include_text: bool,
    /// Who asks.
    pub access: WireAccess,
    /// Only changes of these partitions are returned.
    pub partitions: Vec<(String, i32)>,
}

impl ChangesQuery {
    /// The request a shard runs.
    pub fn request(&self) -> crate::engine::ChangesRequest {
        crate::engine::ChangesRequest {
            collection: self.collection.clone(),
            since: self.since.clone(),
            limit: self.limit,
            filter: self.filter.clone(),
            include_text: self.include_text,
        }
    }
}

/// A shard's page of changes, and the state of the asked-for partitions it still owns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesAnswer {
    /// The page over the owned asked-for partitions; its `next` names only them.
    pub page: crate::api::ChangesResult,
    /// Those partitions' progress.
    pub partitions: Vec<ClusterPartition>,
}

/// An error answer of the internal API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireError {
    /// What went wrong, for the caller.
    pub error: String,
    /// True when the request was wrong (the caller's mistake), false when the node failed.
    pub invalid: bool,
}
