//! The config sections, their defaults, and what is derived from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::decode::{Format, KeyFormat, Mapping};
use crate::index::{FieldType, FilterSchema, VectorStorage};

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and local files.
    #[serde(default)]
    pub server: ServerConfig,
    /// How to reach Kafka.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The searchable collections, each fed by one or more topics.
    #[serde(default)]
    pub collections: Vec<CollectionConfig>,
    /// Who may call the HTTP endpoint.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Where the audit log goes.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Persistence: on or off, how often checkpoints are written and grown vector graphs
    /// saved.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Where Avro, Protobuf and JSON Schema records' schemas come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Scale-out: partitions shared among nodes (absent: this node holds every partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// `[schema_registry]`: a server speaking the Confluent Schema Registry REST API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081` (a path prefix is kept).
    pub url: String,
    /// Environment variable holding the basic-auth user name.
    #[serde(default)]
    pub username_env: Option<String>,
    /// Environment variable holding the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Environment variable holding a bearer token (instead of basic auth).
    #[serde(default)]
    pub token_env: Option<String>,
    /// PEM file with the CA certificates to trust for `https://` (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM files with a client certificate and its key, for registries that require mTLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Per-request timeout.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a failed request (connection refused, timeout, 5xx, 429) before the
    /// record is poison; the wait doubles from `retry_backoff_ms`.
    #[serde(default = "default_registry_retries")]
    pub retries: u32,
    /// The first wait between retries.
    #[serde(default = "default_registry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// How many parsed schemas are kept (by schema ID); the oldest goes first.
    #[serde(default = "default_registry_cache")]
    pub cache_capacity: usize,
}

fn default_registry_timeout_ms() -> u64 {
    5_000
}
fn default_registry_retries() -> u32 {
    3
}
fn default_registry_backoff_ms() -> u64 {
    200
}
fn default_registry_cache() -> usize {
    1_000
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the streamable HTTP endpoint (`freshet serve`).
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    /// Origins a browser-borne request may come from; anything else is refused (MCP spec: DNS
    /// rebinding protection). `*` as a port matches any port.
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Host names (or host:port) the HTTP endpoint answers to; others are refused, which
    /// guards against DNS rebinding. Add the service's own name when serving other hosts.
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Snapshots, index files and the audit log live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// While catching up at start, log progress (applied, remaining, rate, ETA) this often;
    /// 0 logs only the final `caught up` line.
    #[serde(default = "default_progress_log_interval_ms")]
    pub progress_log_interval_ms: u64,
    /// Upper bound of `max_wait_ms` for `consistency: "head"` searches.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Longest `search` query text, in bytes; longer queries are refused with a tool error.
    #[serde(default = "default_max_query_bytes")]
    pub max_query_bytes: usize,
    /// Most distinct index terms (stemmed words) a `search` query may hold.
    #[serde(default = "default_max_query_terms")]
    pub max_query_terms: usize,
    /// Searches ranked at once on the blocking pool (BM25, vectors, snippets); 0 means one
    /// per CPU core. Others wait their turn (within their deadline), off the async workers.
    #[serde(default)]
    pub search_threads: usize,
    /// Deadline of one tool call's own work; a `head` search gets its `max_wait_ms` on top.
    /// A call past it is answered with a tool error naming this key.
    #[serde(default = "default_tool_timeout_ms")]
    pub tool_timeout_ms: u64,
    /// Where `/metrics` is served without authentication (e.g. `127.0.0.1:9464`); when
    /// unset it is served on `http_addr`, behind the bearer token when `auth.mode = "jwt"`.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Largest request body accepted (413 beyond it).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Largest request head (request line and headers) accepted (431 beyond it).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A connection must send a complete request head within this time, and an idle
    /// keep-alive connection is closed after it.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Open HTTP connections at most; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open MCP sessions (2025-11-25 clients) at most, across all callers.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Open MCP sessions at most per principal (token subject; all anonymous callers count
    /// as one).
    #[serde(default = "default_max_sessions_per_principal")]
    pub max_sessions_per_principal: usize,
    /// A session unused for this long is closed.
    #[serde(default = "default_session_idle_timeout_ms")]
    pub session_idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, keep answering this long with `/readyz` at 503 (and, in a
    /// cluster, after handing this node's partitions to the others) before the listener
    /// closes, so a load balancer stops sending calls first. 0 closes at once.
    #[serde(default)]
    pub shutdown_drain_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: default_http_addr(),
            allowed_origins: default_allowed_origins(),
            allowed_hosts: default_allowed_hosts(),
            data_dir: default_data_dir(),
            progress_log_interval_ms: default_progress_log_interval_ms(),
            max_wait_ms: default_max_wait_ms(),
            max_query_bytes: default_max_query_bytes(),
            max_query_terms: default_max_query_terms(),
            search_threads: 0,
            tool_timeout_ms: default_tool_timeout_ms(),
            metrics_addr: None,
            max_request_bytes: default_max_request_bytes(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            max_connections: default_max_connections(),
            max_sessions: default_max_sessions(),
            max_sessions_per_principal: default_max_sessions_per_principal(),
            session_idle_timeout_ms: default_session_idle_timeout_ms(),
            shutdown_drain_ms: 0,
        }
    }
}

impl ServerConfig {
    /// Threads of the search pool: `search_threads`, or one per core when 0.
    pub fn search_pool_size(&self) -> usize {
        match self.search_threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }
}

fn default_http_addr() -> String {
    "127.0.0.1:8080".into()
}
fn default_allowed_origins() -> Vec<String> {
    vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
    ]
}
fn default_allowed_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_progress_log_interval_ms() -> u64 {
    3_000
}
fn default_max_wait_ms() -> u64 {
    30_000
}
fn default_max_query_bytes() -> usize {
    16 * 1024
}
fn default_max_query_terms() -> usize {
    128
}
fn default_tool_timeout_ms() -> u64 {
    10_000
}
fn default_max_request_bytes() -> usize {
    1024 * 1024
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_sessions() -> usize {
    1000
}
fn default_max_sessions_per_principal() -> usize {
    32
}
fn default_session_idle_timeout_ms() -> u64 {
    5 * 60 * 1000
}

/// `[kafka]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Passed to librdkafka verbatim; wins over freshet's defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// If set, records that cannot be decoded are copied here (key, value and the error in
    /// headers) before they are skipped.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// How long to wait for the broker's metadata before retrying.
    #[serde(default = "default_metadata_timeout_ms")]
    pub metadata_timeout_ms: u64,
    /// How often high watermarks (and so lag) are refreshed in the background.
    #[serde(default = "default_watermark_interval_ms")]
    pub watermark_interval_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            properties: BTreeMap::new(),
            dead_letter_topic: None,
            metadata_timeout_ms: default_metadata_timeout_ms(),
            watermark_interval_ms: default_watermark_interval_ms(),
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_metadata_timeout_ms() -> u64 {
    5_000
}
/// Tuned on SciFact's train queries (docs/BENCHMARKS.md, "Hybrid fusion").
fn default_fusion_bm25_weight() -> f32 {
    0.55
}

/// How hybrid search merges its two rankings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Each retriever's scores min-max normalised over its top candidates, then mixed with
    /// `fusion_bm25_weight`: how far ahead a document is counts, not only its rank.
    #[default]
    Score,
    /// Reciprocal rank fusion (k = 60): ranks only.
    Rrf,
}

fn default_watermark_interval_ms() -> u64 {
    1_000
}

/// One `[[collections]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Name agents use in tool calls.
    pub name: String,
    /// Topics whose records become this collection's documents.
    pub topics: Vec<String>,
    /// `auto` detects the Debezium envelope and the schema registry wire format; `json`,
    /// `debezium`, `avro`, `protobuf` and `json_schema` force one reading.
    #[serde(default)]
    pub format: Format,
    /// How Kafka keys are read: `auto`, `string`, `json`, `avro`, `protobuf`, `json_schema`.
    #[serde(default)]
    pub key_format: KeyFormat,
    /// Field holding the document id; default: the Kafka key.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Field shown as the hit's title (and boosted in BM25).
    #[serde(default)]
    pub title_field: Option<String>,
    /// Weight of a BM25 match in the title, added to its weight in the text. Default: see
    /// [`CollectionConfig::title_boost`].
    #[serde(default)]
    pub title_boost: Option<f32>,
    /// How `hybrid` merges the BM25 and vector rankings.
    #[serde(default)]
    pub fusion: Fusion,
    /// With `fusion = "score"`: the BM25 share of the fused score (the vector's is 1 − it).
    #[serde(default = "default_fusion_bm25_weight")]
    pub fusion_bm25_weight: f32,
    /// Fields whose text is indexed; default: every top-level string field.
    #[serde(default)]
    pub text_fields: Vec<String>,
    /// Fields returned with each hit and usable in `filter`.
    #[serde(default)]
    pub metadata_fields: Vec<String>,
    /// Field holding the tenant; enforced from the caller's tenant claim.
    #[serde(default)]
    pub tenant_field: Option<String>,
    /// Field holding the event time; else Debezium `source.ts_ms`, else the Kafka timestamp.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// Field holding a precomputed embedding.
    #[serde(default)]
    pub vector_field: Option<String>,
    /// Long texts are split into chunks of about this many tokens.
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring chunks, so a sentence cut at a border is found whole.
    #[serde(default = "default_chunk_overlap")]
    pub chunk_overlap: usize,
    /// Records larger than this are refused as poison (counted and skipped).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Where vectors come from.
    #[serde(default)]
    pub embedding: EmbeddingConfig,
    /// HNSW graph parameters.
    #[serde(default)]
    pub hnsw: HnswConfig,
    /// How the vector graph holds vectors: `int8` (default), a quarter of the vector memory,
    /// with each search's candidates scored again exactly from f32 copies kept on disk under
    /// `server.data_dir`, or `f32`, every vector exact in RAM.
    #[serde(default)]
    pub vector_storage: VectorStorage,
    /// Types of metadata fields for filters: `keyword` (default), `number`, `time`, `bool`.
    /// Number and time fields take range operators (`gt`, `gte`, `lt`, `lte`).
    #[serde(default)]
    pub field_types: BTreeMap<String, FieldType>,
    /// How much change history the `changes` tool and subscriptions keep.
    #[serde(default)]
    pub changes: ChangesConfig,
}

/// `[collections.changes]`: the bounded change history behind the `changes` tool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    /// Most changes kept (the oldest are dropped first). Each holds the version it wrote,
    /// so memory is bounded by this many document versions.
    #[serde(default = "default_changes_max_entries")]
    pub max_entries: usize,
    /// Changes older than this (by when they became searchable) are dropped.
    #[serde(default = "default_changes_max_age_ms")]
    pub max_age_ms: u64,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            max_entries: default_changes_max_entries(),
            max_age_ms: default_changes_max_age_ms(),
        }
    }
}

fn default_changes_max_entries() -> usize {
    10_000
}
fn default_changes_max_age_ms() -> u64 {
    24 * 3_600_000
}

fn default_chunk_tokens() -> usize {
    256
}
fn default_chunk_overlap() -> usize {
    32
}
fn default_max_record_bytes() -> usize {
    4 * 1024 * 1024
}

/// Where a collection's vectors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// An in-process sentence-transformers model.
    Local,
    /// An OpenAI-compatible `/embeddings` endpoint.
    Openai,
    /// Vectors arrive in each record (`vector_field`); queries pass `vector`.
    Precomputed,
    /// BM25 only.
    None,
}

/// `[collections.embedding]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Default: `precomputed` when `vector_field` is set, `local` when `model_dir` is set,
    /// else `none`.
    #[serde(default)]
    pub provider: Option<Provider>,
    /// sentence-transformers model directory for `local`.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Base URL for `openai` (the server's `/v1`).
    #[serde(default)]
    pub url: Option<String>,
    /// Model name for `openai`.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the API key for `openai`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Vector dimension; checked against every vector. Default: taken from the first vector
    /// (`local`: the model's). For `openai` it is also sent as the request's `dimensions`.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Texts per request for `openai` (default 32).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Timeout of one `openai` request in milliseconds (default 30000); failures are retried.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `[collections.hnsw]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HnswConfig {
    /// Links per node (M).
    #[serde(default = "default_hnsw_m")]
    pub m: usize,
    /// Candidate list size while building.
    #[serde(default = "default_hnsw_ef_construction")]
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to k when k is larger).
    #[serde(default = "default_hnsw_ef_search")]
    pub ef_search: usize,
    /// Rebuild the graph in the background once this share of its points are masked
    /// (superseded or deleted versions).
    #[serde(default = "default_rebuild_dead_fraction")]
    pub rebuild_dead_fraction: f64,
    /// ... and at least this many are, so small indexes are not rebuilt for a few updates.
    #[serde(default = "default_rebuild_min_dead")]
    pub rebuild_min_dead: usize,
    /// Vector searches scan every point exactly while the graph's measured recall@10 is
    /// below this; 0 keeps the graph whatever it measures.
    #[serde(default = "default_min_recall")]
    pub min_recall: f64,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: default_hnsw_m(),
            ef_construction: default_hnsw_ef_construction(),
            ef_search: default_hnsw_ef_search(),
            rebuild_dead_fraction: default_rebuild_dead_fraction(),
            rebuild_min_dead: default_rebuild_min_dead(),
            min_recall: default_min_recall(),
        }
    }
}

fn default_hnsw_m() -> usize {
    16
}
/// 100, not the 200 some libraries default to: graph inserts are most of the cost of
/// ingesting precomputed vectors, 200 halves the rate freshet keeps up with, and recall@10
/// stays ≥ 0.99 on the benchmark's data (docs/BENCHMARKS.md).
fn default_hnsw_ef_construction() -> usize {
    100
}
fn default_hnsw_ef_search() -> usize {
    100
}
fn default_rebuild_dead_fraction() -> f64 {
    0.3
}
fn default_rebuild_min_dead() -> usize {
    1000
}
fn default_min_recall() -> f64 {
    f64::from(crate::index::vector::DEFAULT_MIN_RECALL)
}

/// How callers are authenticated on HTTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication; only allowed when `server.http_addr` is a loopback address.
    #[default]
    None,
    /// Bearer JWTs.
    Jwt,
}

/// `[auth]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` or `jwt`.
    #[serde(default)]
    pub mode: AuthMode,
    /// Expected `iss` (required for `jwt`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Expected `aud`; default: the resource URL (`auth.resource`), as MCP clients request
    /// tokens for that resource (RFC 8707).
    #[serde(default)]
    pub audience: Option<String>,
    /// Environment variable holding an HS256 secret (at least 32 bytes).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// PEM public key for RS256/ES256: the PEM text itself, or the path of a PEM file.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// A JWKS file (`{"keys": [...]}`) with the accepted public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Claim listing the collections a caller may read.
    #[serde(default = "default_collections_claim")]
    pub collections_claim: String,
    /// Claim naming the caller's tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// This server's resource identifier as clients address it (RFC 9728 `resource`);
    /// default `http://<server.http_addr>/mcp`.
    #[serde(default)]
    pub resource: Option<String>,
    /// Issuers of the authorization servers clients should get tokens from (RFC 9728);
    /// default: `[auth.issuer]`.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Who a `freshet stdio` caller is (stdio has no tokens).
    #[serde(default)]
    pub stdio: StdioPrincipalConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            issuer: None,
            audience: None,
            hs256_secret_env: None,
            public_key_pem: None,
            jwks_file: None,
            collections_claim: default_collections_claim(),
            tenant_claim: default_tenant_claim(),
            resource: None,
            authorization_servers: Vec::new(),
            leeway_secs: default_leeway_secs(),
            stdio: StdioPrincipalConfig::default(),
        }
    }
}

fn default_collections_claim() -> String {
    "collections".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_leeway_secs() -> u64 {
    30
}

/// `[auth.stdio]`: the principal of a stdio session. The process that spawns freshet owns
/// its stdin, so this is configuration, not a credential. Default: unrestricted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioPrincipalConfig {
    /// Name recorded as the audit log's `principal.sub`.
    #[serde(default)]
    pub sub: Option<String>,
    /// Readable collections; default: all. `"*"` also means all.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// The caller's tenant; default: every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `[audit]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines audit file; default `<data_dir>/audit.jsonl`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Write `"[redacted]"` instead of the `query` argument's text.
    #[serde(default)]
    pub redact_query: bool,
    /// The file is rotated (renamed to `<path>.<first seq>`) before it grows past this size.
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
    /// What to do with a call whose audit line cannot be written: refuse it (default) or
    /// serve it anyway (the lost line still shows as a gap in `seq`).
    #[serde(default)]
    pub on_failure: AuditOnFailure,
    /// Env var holding a secret key: the chain's links become HMAC-SHA256 under it, so a
    /// re-hashed chain is detectable by whoever holds the key.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// A second file that gets the chain's head (seq and hash, keyed when a key is set)
    /// every `checkpoint_interval_ms`, for `audit verify --checkpoints` to detect a
    /// truncated tail or a dropped head. Keep it on another disk or host.
    #[serde(default)]
    pub checkpoint_path: Option<PathBuf>,
    /// How often the head is checkpointed (when it moved).
    #[serde(default = "default_audit_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

/// `audit.on_failure`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    /// Answer the call with an error: nothing is served that is not audited.
    #[default]
    Refuse,
    /// Serve the call; the failure is logged, counted and visible as a `seq` gap.
    Serve,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            redact_query: false,
            max_bytes: default_audit_max_bytes(),
            on_failure: AuditOnFailure::default(),
            hmac_key_env: None,
            checkpoint_path: None,
            checkpoint_interval_ms: default_audit_checkpoint_interval_ms(),
        }
    }
}

fn default_audit_checkpoint_interval_ms() -> u64 {
    10_000
}

fn default_audit_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// `[snapshot]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Milliseconds between checks whether a vector graph grew enough to be saved (each
    /// batch is checkpointed regardless); 0 keeps every collection in memory only.
    #[serde(default = "default_snapshot_interval_ms")]
    pub interval_ms: u64,
    /// Milliseconds between checkpoints (BM25 commit with the offsets, vector journal
    /// fsync). Records are searchable before their checkpoint; a crash replays the records
    /// after the last one. 0 checkpoints after every applied batch.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            interval_ms: default_snapshot_interval_ms(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
        }
    }
}

fn default_checkpoint_interval_ms() -> u64 {
    1_000
}

fn default_snapshot_interval_ms() -> u64 {
    30_000
}

impl Config {
    /// This server's protected-resource identifier (`auth.resource`, else
    /// `http://<server.http_addr>/mcp`).
    pub fn resource_url(&self) -> String {
        match &self.auth.resource {
            Some(r) => r.clone(),
            None => format!("http://{}/mcp", self.server.http_addr),
        }
    }

    /// The `aud` every token must carry: `auth.audience`, else the resource URL.
    pub fn audience(&self) -> String {
        self.auth
            .audience
            .clone()
            .unwrap_or_else(|| self.resource_url())
    }

    /// The authorization servers advertised to clients: `auth.authorization_servers`, else
    /// the issuer.
    pub fn authorization_servers(&self) -> Vec<String> {
        if self.auth.authorization_servers.is_empty() {
            self.auth.issuer.iter().cloned().collect()
        } else {
            self.auth.authorization_servers.clone()
        }
    }

    /// The audit log file: `audit.path`, else `<data_dir>/audit.jsonl`.
    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("audit.jsonl"))
    }

    /// The collection with this name.
    pub fn collection(&self, name: &str) -> Option<&CollectionConfig> {
        self.collections.iter().find(|c| c.name == name)
    }

    /// The effective config as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl CollectionConfig {
    /// The effective embedding provider (explicit, else inferred from the other keys).
    pub fn provider(&self) -> Provider {
        match self.embedding.provider {
            Some(p) => p,
            None if self.vector_field.is_some() => Provider::Precomputed,
            None if self.embedding.model_dir.is_some() => Provider::Local,
            None => Provider::None,
        }
    }

    /// The effective title boost: `title_boost` if set; else 0.1 when the title is also
    /// indexed as text (listed in `text_fields`, or `text_fields` empty, which takes every
    /// string field), since it is then counted in the text already; else 2.
    ///
    /// Tuned on SciFact's train queries (title in the text): 0 → nDCG@10 0.701, 0.1 → 0.705,
    /// 0.25 → 0.703, 0.5 → 0.691, 1 → 0.667, 2 → 0.612. See docs/BENCHMARKS.md.
    pub fn title_boost(&self) -> f32 {
        if let Some(b) = self.title_boost {
            return b;
        }
        match &self.title_field {
            Some(t) if self.text_fields.is_empty() || self.text_fields.contains(t) => {
                crate::index::text::TITLE_BOOST_WITH_TITLE_IN_TEXT
            }
            _ => crate::index::text::TITLE_BOOST,
        }
    }

    /// The decoder settings for this collection.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            format: self.format,
            key_format: self.key_format,
            id_field: self.id_field.clone(),
            title_field: self.title_field.clone(),
            text_fields: self.text_fields.clone(),
            metadata_fields: self.metadata_fields.clone(),
            tenant_field: self.tenant_field.clone(),
            event_time_field: self.event_time_field.clone(),
            vector_field: self.vector_field.clone(),
            max_record_bytes: self.max_record_bytes,
        }
    }

    /// The fields a `filter` may name with their types: metadata fields (typed by
    /// `field_types`), the tenant field, and the built-in `event_time` and `indexed_at`.
    pub fn filter_schema(&self) -> FilterSchema {
        FilterSchema::new(
            self.metadata_fields.iter().map(|f| {
                (
                    f.as_str(),
                    self.field_types.get(f).copied().unwrap_or_default(),
                )
            }),
            self.tenant_field.as_deref(),
        )
    }

    /// Fields a `filter` may name: metadata fields and the tenant field.
    pub fn filterable_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = self.metadata_fields.iter().map(String::as_str).collect();
        if let Some(t) = &self.tenant_field
            && !fields.contains(&t.as_str())
        {
            fields.push(t);
        }
        fields
    }
}
