//! Configuration: the TOML file, `FRESHET_<SECTION>__<KEY>` environment overrides, and the
//! checks that turn a parsed file into a config the rest of freshet can trust.
//!
//! Every error names the key it is about (`collections[0].embedding.provider: ...`), because
//! the person reading it is looking at a config file, not at our types.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::{Format, KeyFormat, Mapping};
use crate::index::{FieldType, FilterSchema, VectorStorage};

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "FRESHET_";

/// A config problem, always naming the key (or the file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The path as given.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A key has the wrong type, an unknown name, or an invalid value.
    #[error("{key}: {message}")]
    Key {
        /// The dotted path of the key, e.g. `collections[0].format`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

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

impl SchemaRegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_http_url("schema_registry.url", &self.url)?;
        let envs = [
            ("schema_registry.username_env", &self.username_env),
            ("schema_registry.password_env", &self.password_env),
            ("schema_registry.token_env", &self.token_env),
        ];
        for (key, name) in envs {
            if name.as_ref().is_some_and(|n| n.trim().is_empty()) {
                return Err(ConfigError::key(key, "must name an environment variable"));
            }
        }
        if self.username_env.is_some() != self.password_env.is_some() {
            let key = if self.username_env.is_some() {
                "schema_registry.password_env"
            } else {
                "schema_registry.username_env"
            };
            return Err(ConfigError::key(
                key,
                "basic auth needs both username_env and password_env",
            ));
        }
        if self.token_env.is_some() && self.username_env.is_some() {
            return Err(ConfigError::key(
                "schema_registry.token_env",
                "use either a bearer token or basic auth (username_env), not both",
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::key(
                "schema_registry.client_cert_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::key(
                "schema_registry.timeout_ms",
                "must be positive",
            ));
        }
        if self.cache_capacity == 0 {
            return Err(ConfigError::key(
                "schema_registry.cache_capacity",
                "must be at least 1",
            ));
        }
        Ok(())
    }
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
    /// How the vector graph holds vectors: `f32` (default) or `int8`, a quarter of the
    /// vector memory, with each search's candidates scored again exactly from f32 copies
    /// kept on disk under `server.data_dir`.
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
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: default_hnsw_m(),
            ef_construction: default_hnsw_ef_construction(),
            ef_search: default_hnsw_ef_search(),
            rebuild_dead_fraction: default_rebuild_dead_fraction(),
            rebuild_min_dead: default_rebuild_min_dead(),
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
    /// Reads `path`, applies `FRESHET_*` overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parses TOML text, applies the given `FRESHET_*` variables, and validates.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        // Before the overrides: a path written in the file is relative to the file, one given
        // in the environment is relative to the working directory, like any shell argument.
        if let Some(base) = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            resolve_relative_paths(&mut table, &base);
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            apply_env_override(&mut table, &name, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                // toml appends its own "in `a.b`" line; the path above is more precise.
                let message = e.into_inner().to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                ConfigError::key(if key == "." { "config".into() } else { key }, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: names, cross-references and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr: SocketAddr = self.server.http_addr.parse().map_err(|_| {
            ConfigError::key(
                "server.http_addr",
                format!("`{}` is not an IP:port address", self.server.http_addr),
            )
        })?;
        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::key(
                    format!("server.allowed_origins[{i}]"),
                    format!("`{origin}` must start with http:// or https://"),
                ));
            }
        }
        if self.auth.mode == AuthMode::None && !addr.ip().is_loopback() {
            return Err(ConfigError::key(
                "auth.mode",
                format!(
                    "`none` is only allowed when server.http_addr is a loopback address, not {addr}; \
                     set auth.mode = \"jwt\" to serve other hosts"
                ),
            ));
        }
        self.validate_auth(addr)?;
        self.validate_server_limits()?;
        if let Some(registry) = &self.schema_registry {
            registry.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.audit.max_bytes < 1024 {
            return Err(ConfigError::key("audit.max_bytes", "must be at least 1024"));
        }
        if let Some(var) = &self.audit.hmac_key_env {
            match std::env::var(var) {
                Ok(key) if key.len() >= 16 => {}
                Ok(_) => {
                    return Err(ConfigError::key(
                        "audit.hmac_key_env",
                        format!("the key in ${var} must be at least 16 bytes"),
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::key(
                        "audit.hmac_key_env",
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
        }
        if self.audit.checkpoint_interval_ms < 100 {
            return Err(ConfigError::key(
                "audit.checkpoint_interval_ms",
                "must be at least 100",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::key("kafka.brokers", "must not be empty"));
        }
        if self.collections.is_empty() {
            return Err(ConfigError::key(
                "collections",
                "at least one [[collections]] entry is needed",
            ));
        }
        let mut names = HashSet::new();
        let mut topics = HashSet::new();
        for (i, c) in self.collections.iter().enumerate() {
            let at = |key: &str| format!("collections[{i}].{key}");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(ConfigError::key(
                    at("name"),
                    format!(
                        "`{}` must be non-empty ASCII letters, digits, `_` or `-`",
                        c.name
                    ),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::key(
                    at("name"),
                    format!("collection `{}` is defined twice", c.name),
                ));
            }
            if c.topics.is_empty() {
                return Err(ConfigError::key(at("topics"), "needs at least one topic"));
            }
            for (j, t) in c.topics.iter().enumerate() {
                if t.is_empty() {
                    return Err(ConfigError::key(
                        format!("collections[{i}].topics[{j}]"),
                        "topic name must not be empty",
                    ));
                }
                if !topics.insert(t.as_str()) {
                    return Err(ConfigError::key(
                        format!("collections[{i}].topics[{j}]"),
                        format!("topic `{t}` already feeds another collection"),
                    ));
                }
            }
            if self.schema_registry.is_none() {
                if let Some(kind) = c.format.schema_kind() {
                    return Err(ConfigError::key(
                        at("format"),
                        format!("`{}` needs [schema_registry] url", kind.label()),
                    ));
                }
                if let Some(kind) = c.key_format.schema_kind() {
                    return Err(ConfigError::key(
                        at("key_format"),
                        format!("`{}` needs [schema_registry] url", kind.label()),
                    ));
                }
            }
            if c.title_boost.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                return Err(ConfigError::key(at("title_boost"), "must be a number ≥ 0"));
            }
            if !(0.0..=1.0).contains(&c.fusion_bm25_weight) {
                return Err(ConfigError::key(
                    at("fusion_bm25_weight"),
                    "must be a number from 0 to 1",
                ));
            }
            if c.chunk_tokens < 16 {
                return Err(ConfigError::key(at("chunk_tokens"), "must be at least 16"));
            }
            if c.chunk_overlap >= c.chunk_tokens {
                return Err(ConfigError::key(
                    at("chunk_overlap"),
                    format!("must be smaller than chunk_tokens ({})", c.chunk_tokens),
                ));
            }
            if let Err(e) = c.mapping().check() {
                let setting = match &e {
                    crate::decode::MappingError::BadPath { setting, .. } => *setting,
                    _ => "max_record_bytes",
                };
                return Err(ConfigError::key(at(setting), e.to_string()));
            }
            if c.max_record_bytes == 0 {
                return Err(ConfigError::key(at("max_record_bytes"), "must be positive"));
            }
            if !(c.hnsw.rebuild_dead_fraction > 0.0 && c.hnsw.rebuild_dead_fraction <= 1.0) {
                return Err(ConfigError::key(
                    at("hnsw.rebuild_dead_fraction"),
                    "must be in (0, 1]",
                ));
            }
            if c.hnsw.m < 2 || c.hnsw.ef_construction == 0 || c.hnsw.ef_search == 0 {
                return Err(ConfigError::key(
                    at("hnsw"),
                    "m must be ≥ 2 and ef_construction, ef_search ≥ 1",
                ));
            }
            for field in c.field_types.keys() {
                if !c.metadata_fields.contains(field) {
                    return Err(ConfigError::key(
                        at(&format!("field_types.{field}")),
                        format!(
                            "`{field}` is not one of metadata_fields [{}]: only metadata fields have types",
                            c.metadata_fields.join(", ")
                        ),
                    ));
                }
            }
            if c.changes.max_entries == 0 {
                return Err(ConfigError::key(
                    at("changes.max_entries"),
                    "must be at least 1",
                ));
            }
            if c.changes.max_age_ms == 0 {
                return Err(ConfigError::key(
                    at("changes.max_age_ms"),
                    "must be positive",
                ));
            }
            if c.embedding.dimensions == Some(0) {
                return Err(ConfigError::key(
                    at("embedding.dimensions"),
                    "must be positive",
                ));
            }
            if c.embedding.batch_size == Some(0) {
                return Err(ConfigError::key(
                    at("embedding.batch_size"),
                    "must be positive",
                ));
            }
            match c.provider() {
                Provider::Precomputed if c.vector_field.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding.provider"),
                        "`precomputed` needs vector_field (the record field holding the vector)",
                    ));
                }
                Provider::Local if c.embedding.model_dir.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding.model_dir"),
                        "`local` needs model_dir (a sentence-transformers directory)",
                    ));
                }
                Provider::Openai if c.embedding.url.is_none() || c.embedding.model.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding"),
                        "`openai` needs url and model",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `[server]` bounds: each must leave room for ordinary use.
    fn validate_server_limits(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::key(
                    format!("server.{key}"),
                    format!("must be at least {min}, got {value}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("max_query_bytes", s.max_query_bytes as u64, 64)?;
        at_least("max_query_terms", s.max_query_terms as u64, 1)?;
        at_least("tool_timeout_ms", s.tool_timeout_ms, 100)?;
        at_least("max_request_bytes", s.max_request_bytes as u64, 4096)?;
        at_least("max_header_bytes", s.max_header_bytes as u64, 1024)?;
        at_least("header_read_timeout_ms", s.header_read_timeout_ms, 100)?;
        at_least("max_connections", s.max_connections as u64, 1)?;
        at_least("max_sessions", s.max_sessions as u64, 1)?;
        at_least(
            "max_sessions_per_principal",
            s.max_sessions_per_principal as u64,
            1,
        )?;
        at_least("session_idle_timeout_ms", s.session_idle_timeout_ms, 1000)?;
        if let Some(addr) = &s.metrics_addr
            && addr.parse::<SocketAddr>().is_err()
        {
            return Err(ConfigError::key(
                "server.metrics_addr",
                format!("`{addr}` is not an IP:port address"),
            ));
        }
        Ok(())
    }

    fn validate_auth(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if let Some(cols) = &auth.stdio.collections {
            for (i, name) in cols.iter().enumerate() {
                if name != "*" && !self.collections.iter().any(|c| &c.name == name) {
                    return Err(ConfigError::key(
                        format!("auth.stdio.collections[{i}]"),
                        format!("no collection is named `{name}`"),
                    ));
                }
            }
        }
        if auth.collections_claim.is_empty() {
            return Err(ConfigError::key(
                "auth.collections_claim",
                "must not be empty",
            ));
        }
        if auth.tenant_claim.is_empty() {
            return Err(ConfigError::key("auth.tenant_claim", "must not be empty"));
        }
        if auth.leeway_secs > 300 {
            return Err(ConfigError::key(
                "auth.leeway_secs",
                "must be at most 300 (a larger skew means a clock to fix)",
            ));
        }
        if let Some(resource) = &auth.resource {
            check_http_url("auth.resource", resource)?;
        }
        for (i, s) in auth.authorization_servers.iter().enumerate() {
            check_http_url(&format!("auth.authorization_servers[{i}]"), s)?;
        }
        if auth.mode != AuthMode::Jwt {
            return Ok(());
        }
        match &auth.issuer {
            None => {
                return Err(ConfigError::key(
                    "auth.issuer",
                    "is required with mode = \"jwt\" (the `iss` every token must carry)",
                ));
            }
            Some(i) if i.is_empty() => {
                return Err(ConfigError::key("auth.issuer", "must not be empty"));
            }
            Some(_) => {}
        }
        if auth.audience.as_deref() == Some("") {
            return Err(ConfigError::key("auth.audience", "must not be empty"));
        }
        if auth.hs256_secret_env.is_none()
            && auth.public_key_pem.is_none()
            && auth.jwks_file.is_none()
        {
            return Err(ConfigError::key(
                "auth",
                "mode = \"jwt\" needs a key: hs256_secret_env, public_key_pem or jwks_file",
            ));
        }
        if auth.resource.is_none() && addr.ip().is_unspecified() {
            return Err(ConfigError::key(
                "auth.resource",
                format!(
                    "is required when server.http_addr is a wildcard address ({addr}): \
                     set the URL clients use, e.g. \"https://freshet.example.com/mcp\""
                ),
            ));
        }
        Ok(())
    }

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

/// Applies one `FRESHET_A__B__C=value` variable to the parsed table.
///
/// Segments are lower-cased; a numeric segment indexes an array (`FRESHET_COLLECTIONS__0__NAME`).
/// The keys that hold file or directory paths, as (section, key); `collections[]` is handled
/// separately (its `embedding.model_dir`).
const PATH_KEYS: &[(&str, &str)] = &[
    ("server", "data_dir"),
    ("audit", "path"),
    ("audit", "checkpoint_path"),
    ("auth", "jwks_file"),
    ("auth", "public_key_pem"),
    ("schema_registry", "ca_file"),
    ("schema_registry", "client_cert_file"),
    ("schema_registry", "client_key_file"),
];

/// Makes the relative paths written in a config file relative to `base` (the file's
/// directory), so that a sidecar started from any working directory finds the same files.
/// `auth.public_key_pem` may hold the PEM text itself, which is left alone; so is anything
/// that is not a string (the type check reports it later, naming the key).
fn resolve_relative_paths(table: &mut toml::Table, base: &Path) {
    fn resolve(value: &mut toml::Value, base: &Path) {
        if let toml::Value::String(s) = value
            && !s.is_empty()
            && !s.trim_start().starts_with("-----BEGIN")
            && Path::new(s.as_str()).is_relative()
        {
            *s = lexically_normal(&base.join(s.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
    for (section, key) in PATH_KEYS {
        if let Some(value) = table
            .get_mut(*section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|t| t.get_mut(*key))
        {
            resolve(value, base);
        }
    }
    let collections = table
        .get_mut("collections")
        .and_then(toml::Value::as_array_mut);
    for collection in collections.into_iter().flatten() {
        if let Some(value) = collection
            .get_mut("embedding")
            .and_then(|e| e.get_mut("model_dir"))
        {
            resolve(value, base);
        }
    }
}

/// `path` without `.` and with each `..` taking away the component before it (as a shell's
/// `cd` does), so that resolved paths read as plainly as they would be written.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The value keeps the type of the key it replaces when there is one (so a numeric-looking
/// string stays a string); a new key is read as a TOML value if it parses as one, else as a
/// string. Keys under `kafka.properties` are always strings, as librdkafka wants.
fn apply_env_override(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let key = path.join(".");
    if path.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::key(
            name,
            "environment override has an empty key segment",
        ));
    }
    let is_property = path.len() == 3 && path[0] == "kafka" && path[1] == "properties";
    let mut node: &mut toml::Value = {
        let first = &path[0];
        if !table.contains_key(first) {
            table.insert(first.clone(), toml::Value::Table(toml::Table::new()));
        }
        table
            .get_mut(first)
            .ok_or_else(|| ConfigError::key(&key, "cannot apply environment override"))?
    };
    for seg in &path[1..] {
        node = match node {
            toml::Value::Table(t) => {
                if !t.contains_key(seg) {
                    t.insert(seg.clone(), toml::Value::Table(toml::Table::new()));
                }
                t.get_mut(seg)
                    .ok_or_else(|| ConfigError::key(&key, "cannot apply environment override"))?
            }
            toml::Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| {
                    ConfigError::key(&key, format!("`{seg}` is not an array index (from {name})"))
                })?;
                let len = a.len();
                a.get_mut(idx).ok_or_else(|| {
                    ConfigError::key(
                        &key,
                        format!("index {idx} is past the {len} entries in the file (from {name})"),
                    )
                })?
            }
            _ => {
                return Err(ConfigError::key(
                    &key,
                    format!("cannot descend into a non-table value (from {name})"),
                ));
            }
        };
    }
    let new_value = match node {
        _ if is_property => toml::Value::String(raw.to_string()),
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Table(t) if t.is_empty() => parse_toml_scalar(raw),
        toml::Value::Table(_) => {
            return Err(ConfigError::key(
                &key,
                format!("is a section; set its keys instead (from {name})"),
            ));
        }
        _ => parse_toml_scalar(raw),
    };
    *node = new_value;
    Ok(())
}

pub(crate) fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(['?', '#']) => {
            Ok(())
        }
        _ => Err(ConfigError::key(
            key,
            format!("`{url}` must be an http:// or https:// URL without query or fragment"),
        )),
    }
}

fn parse_toml_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"

[[collections]]
name = "articles"
topics = ["articles"]
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            text,
            Path::new("test.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn relative_paths_in_the_file_resolve_against_its_directory() {
        let text = format!(
            "{MINIMAL}\n[collections.embedding]\nmodel_dir = \"../models/m\"\n\
             [server]\ndata_dir = \"data\"\n[audit]\ncheckpoint_path = \"/abs/cp.jsonl\"\n\
             [auth]\npublic_key_pem = \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\"\n"
        );
        let c = Config::from_toml_with_env(
            &text,
            Path::new("/etc/freshet/freshet.toml"),
            [(
                "FRESHET_AUDIT__PATH".to_string(),
                "logs/audit.jsonl".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(
            c.collections[0].embedding.model_dir.as_deref(),
            Some(Path::new("/etc/models/m"))
        );
        assert_eq!(c.server.data_dir, Path::new("/etc/freshet/data"));
        // Absolute paths, PEM text and values from the environment are left as they are.
        assert_eq!(
            c.audit.checkpoint_path.as_deref(),
            Some(Path::new("/abs/cp.jsonl"))
        );
        assert!(
            c.auth
                .public_key_pem
                .as_deref()
                .is_some_and(|p| p.starts_with("-----BEGIN"))
        );
        assert_eq!(c.audit.path.as_deref(), Some(Path::new("logs/audit.jsonl")));
    }

    #[test]
    fn the_default_data_dir_stays_relative_to_the_working_directory() {
        let c = Config::from_toml_with_env(
            MINIMAL,
            Path::new("/etc/freshet/freshet.toml"),
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(c.server.data_dir, Path::new("data"));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.server.http_addr, "127.0.0.1:8080");
        assert_eq!(c.collections[0].chunk_tokens, 256);
        assert_eq!(c.collections[0].provider(), Provider::None);
        assert_eq!(c.auth.mode, AuthMode::None);
    }

    #[test]
    fn server_limits_are_checked_and_named() {
        for (key, value) in [
            ("max_query_bytes", "10"),
            ("max_query_terms", "0"),
            ("tool_timeout_ms", "5"),
            ("max_request_bytes", "100"),
            ("max_header_bytes", "100"),
            ("header_read_timeout_ms", "0"),
            ("max_connections", "0"),
            ("max_sessions", "0"),
            ("max_sessions_per_principal", "0"),
            ("session_idle_timeout_ms", "10"),
            ("metrics_addr", "\"localhost\""),
        ] {
            let text = format!("[server]\n{key} = {value}\n{MINIMAL}");
            let err = parse(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("server.{key}")), "{err}");
        }
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.server.max_query_bytes, 16 * 1024);
        assert_eq!(c.audit.on_failure, AuditOnFailure::Refuse);
        let text = format!("[audit]\non_failure = \"ignore\"\n{MINIMAL}");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("audit.on_failure"), "{err}");
        let text = format!("[audit]\nhmac_key_env = \"FRESHET_TEST_SURELY_UNSET\"\n{MINIMAL}");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("audit.hmac_key_env"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let text = format!("{MINIMAL}\nformat = \"json\"\nbogus = 1\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[0]"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let text = format!("{MINIMAL}\nformat = \"xml\"\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[0].format"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = MINIMAL.replace("topics = [\"articles\"]", "topics = \"articles\"");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[0].topics"), "{err}");
    }

    #[test]
    fn env_overrides_keep_types_and_reach_arrays() {
        let c = parse(
            MINIMAL,
            &[
                ("FRESHET_KAFKA__BROKERS", "10.0.0.1:9092"),
                ("FRESHET_SERVER__MAX_WAIT_MS", "500"),
                ("FRESHET_COLLECTIONS__0__CHUNK_TOKENS", "64"),
                ("FRESHET_KAFKA__PROPERTIES__SECURITY.PROTOCOL", "SASL_SSL"),
                ("FRESHET_KAFKA__PROPERTIES__FETCH.WAIT.MAX.MS", "5"),
                ("FRESHET_JWT_SECRET", "ignored: no double underscore"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(c.server.max_wait_ms, 500);
        assert_eq!(c.collections[0].chunk_tokens, 64);
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(c.kafka.properties["fetch.wait.max.ms"], "5");
    }

    #[test]
    fn env_override_of_wrong_type_names_the_key() {
        let err = parse(MINIMAL, &[("FRESHET_SERVER__MAX_WAIT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("server.max_wait_ms"), "{err}");
    }

    #[test]
    fn env_override_past_array_end_is_an_error() {
        let err = parse(MINIMAL, &[("FRESHET_COLLECTIONS__3__NAME", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("collections.3.name"), "{err}");
    }

    #[test]
    fn vector_storage_defaults_to_f32_and_a_bad_value_names_the_key() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.collections[0].vector_storage, VectorStorage::F32);
        let c = parse(&format!("{MINIMAL}vector_storage = \"int8\"\n"), &[]).unwrap();
        assert_eq!(c.collections[0].vector_storage, VectorStorage::Int8);
        let err = parse(&format!("{MINIMAL}vector_storage = \"int4\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("vector_storage"), "{err}");
        assert!(err.contains("int4") && err.contains("int8"), "{err}");
    }

    #[test]
    fn field_types_and_change_history_are_checked_naming_the_key() {
        let ok = format!(
            "{MINIMAL}metadata_fields = [\"price\", \"at\"]\n\
             [collections.field_types]\nprice = \"number\"\nat = \"time\"\n\
             [collections.changes]\nmax_entries = 5\n"
        );
        let c = parse(&ok, &[]).unwrap();
        assert_eq!(c.collections[0].field_types["price"], FieldType::Number);
        assert_eq!(c.collections[0].changes.max_entries, 5);
        assert_eq!(c.collections[0].changes.max_age_ms, 24 * 3_600_000);
        let schema = c.collections[0].filter_schema();
        assert_eq!(
            schema.fields().collect::<Vec<_>>(),
            [
                ("price", FieldType::Number),
                ("at", FieldType::Time),
                ("event_time", FieldType::Time),
                ("indexed_at", FieldType::Time)
            ]
        );

        let text = format!("{MINIMAL}[collections.field_types]\nprice = \"number\"\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[0].field_types.price"), "{err}");
        assert!(err.contains("not one of metadata_fields"), "{err}");
        let text = format!(
            "{MINIMAL}metadata_fields = [\"price\"]\n[collections.field_types]\nprice = \"money\"\n"
        );
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("field_types.price"), "{err}");
        let text = format!("{MINIMAL}[collections.changes]\nmax_entries = 0\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("collections[0].changes.max_entries"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_collection_and_shared_topic_are_refused() {
        let text = format!("{MINIMAL}\n[[collections]]\nname = \"articles\"\ntopics = [\"b\"]\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[1].name"), "{err}");
        let text = format!("{MINIMAL}\n[[collections]]\nname = \"b\"\ntopics = [\"articles\"]\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("collections[1].topics[0]"), "{err}");
    }

    #[test]
    fn schema_registry_settings_are_checked() {
        let registry = "[schema_registry]\nurl = \"http://127.0.0.1:8081\"\n";
        for (format, key) in [
            ("format", "collections[0].format"),
            ("key_format", "collections[0].key_format"),
        ] {
            let text = format!("{MINIMAL}\n{format} = \"avro\"\n");
            let err = parse(&text, &[]).unwrap_err().to_string();
            assert!(
                err.starts_with(key) && err.contains("[schema_registry]"),
                "{err}"
            );
            let ok = parse(&format!("{registry}{MINIMAL}\n{format} = \"avro\"\n"), &[]).unwrap();
            assert!(ok.schema_registry.is_some());
        }
        let ok = parse(
            &format!("{registry}{MINIMAL}\nformat = \"json_schema\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(ok.collections[0].format, Format::JsonSchema);
        let cases = [
            ("url = \"localhost:8081\"", "schema_registry.url"),
            (
                "url = \"http://r\"\nusername_env = \"U\"",
                "schema_registry.password_env",
            ),
            (
                "url = \"http://r\"\npassword_env = \"P\"",
                "schema_registry.username_env",
            ),
            (
                "url = \"http://r\"\nusername_env = \"U\"\npassword_env = \"P\"\ntoken_env = \"T\"",
                "schema_registry.token_env",
            ),
            (
                "url = \"http://r\"\ntoken_env = \" \"",
                "schema_registry.token_env",
            ),
            (
                "url = \"http://r\"\nclient_cert_file = \"c.pem\"",
                "schema_registry.client_cert_file",
            ),
            (
                "url = \"http://r\"\ncache_capacity = 0",
                "schema_registry.cache_capacity",
            ),
            (
                "url = \"http://r\"\ntimeout_ms = 0",
                "schema_registry.timeout_ms",
            ),
            ("url = \"http://r\"\nbogus = 1", "schema_registry"),
        ];
        for (table, key) in cases {
            let text = format!("[schema_registry]\n{table}\n{MINIMAL}");
            let err = parse(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{table}: {err}");
        }
    }

    #[test]
    fn provider_requirements_are_checked() {
        let text = format!("{MINIMAL}\n[collections.embedding]\nprovider = \"precomputed\"\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("collections[0].embedding.provider"),
            "{err}"
        );
        let text = format!("{MINIMAL}\nvector_field = \"embedding\"\n");
        assert_eq!(
            parse(&text, &[]).unwrap().collections[0].provider(),
            Provider::Precomputed
        );
    }

    #[test]
    fn title_boost_defaults_depend_on_the_title_being_text() {
        let with = |extra: &str| {
            parse(&format!("{MINIMAL}{extra}"), &[]).map(|c| c.collections[0].title_boost())
        };
        assert_eq!(with("title_field = \"t\"\n").unwrap(), 0.1);
        assert_eq!(
            with("title_field = \"t\"\ntext_fields = [\"t\", \"b\"]\n").unwrap(),
            0.1
        );
        assert_eq!(
            with("title_field = \"t\"\ntext_fields = [\"b\"]\n").unwrap(),
            2.0
        );
        assert_eq!(
            with("title_field = \"t\"\ntitle_boost = 3.5\n").unwrap(),
            3.5
        );
        let err = with("title_boost = -1.0\n").unwrap_err().to_string();
        assert!(err.starts_with("collections[0].title_boost"), "{err}");
    }

    #[test]
    fn fusion_defaults_to_scores_and_checks_its_weight() {
        let with = |extra: &str| {
            parse(&format!("{MINIMAL}{extra}"), &[])
                .map(|c| (c.collections[0].fusion, c.collections[0].fusion_bm25_weight))
        };
        assert_eq!(with("").unwrap(), (Fusion::Score, 0.55));
        assert_eq!(
            with("fusion = \"rrf\"\nfusion_bm25_weight = 0.3\n").unwrap(),
            (Fusion::Rrf, 0.3)
        );
        let err = with("fusion_bm25_weight = 1.5\n").unwrap_err().to_string();
        assert!(
            err.starts_with("collections[0].fusion_bm25_weight"),
            "{err}"
        );
        let err = with("fusion = \"max\"\n").unwrap_err().to_string();
        assert!(err.contains("fusion"), "{err}");
    }

    #[test]
    fn auth_none_is_refused_off_loopback() {
        let text = format!("[server]\nhttp_addr = \"0.0.0.0:8080\"\n{MINIMAL}");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("auth.mode"), "{err}");
        let text = format!(
            "[server]\nhttp_addr = \"10.1.2.3:8080\"\n[auth]\nmode = \"jwt\"\nissuer = \"https://i\"\n\
             hs256_secret_env = \"S\"\n{MINIMAL}"
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.resource_url(), "http://10.1.2.3:8080/mcp");
        assert_eq!(c.audience(), "http://10.1.2.3:8080/mcp");
        assert_eq!(c.authorization_servers(), ["https://i"]);
    }

    #[test]
    fn jwt_mode_needs_issuer_key_and_a_resource_on_wildcard_addresses() {
        let jwt = |extra: &str| {
            format!(
                "[server]\nhttp_addr = \"0.0.0.0:8080\"\n[auth]\nmode = \"jwt\"\n{extra}\n{MINIMAL}"
            )
        };
        let err = |text: String| parse(&text, &[]).unwrap_err().to_string();
        assert!(err(jwt("hs256_secret_env = \"S\"")).starts_with("auth.issuer"));
        assert!(err(jwt("issuer = \"https://i\"")).starts_with("auth:"));
        let keyed = "issuer = \"https://i\"\nhs256_secret_env = \"S\"";
        assert!(err(jwt(keyed)).starts_with("auth.resource"));
        let bad_url = format!("{keyed}\nresource = \"freshet.example/mcp\"");
        assert!(err(jwt(&bad_url)).starts_with("auth.resource"));
        let good = format!("{keyed}\nresource = \"https://f.example/mcp\"\naudience = \"freshet\"");
        let c = parse(&jwt(&good), &[]).unwrap();
        assert_eq!(c.resource_url(), "https://f.example/mcp");
        assert_eq!(c.audience(), "freshet");
    }

    #[test]
    fn stdio_principal_names_known_collections() {
        let text = format!("{MINIMAL}\n[auth.stdio]\ncollections = [\"articles\", \"nope\"]\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("auth.stdio.collections[1]"), "{err}");
        let c = parse(MINIMAL, &[("FRESHET_AUTH__STDIO__TENANT", "acme")]).unwrap();
        assert_eq!(c.auth.stdio.tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn audit_defaults_to_the_data_dir() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.audit_path(), Path::new("data/audit.jsonl"));
        assert!(!c.audit.redact_query);
        let err = parse(MINIMAL, &[("FRESHET_AUDIT__MAX_BYTES", "10")]).unwrap_err();
        assert!(err.to_string().starts_with("audit.max_bytes"), "{err}");
    }

    #[test]
    fn bad_toml_reports_position() {
        let err = parse("[kafka\nbrokers=1", &[]).unwrap_err().to_string();
        assert!(err.contains("test.toml") && err.contains("line"), "{err}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = parse(MINIMAL, &[]).unwrap();
        let again = parse(&c.to_toml(), &[]).unwrap();
        assert_eq!(again.collections[0].name, "articles");
    }
}
