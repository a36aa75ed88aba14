//! The tools (`search`, `get_document`, `document_freshness`, `changes`,
//! `list_collections`) and the
//! `freshet://{collection}/{id}` resource template.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
    CompleteResult, CompletionInfo, ContentBlock, Icon, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{ChangesResult, CollectionsResult, DocumentResult, FreshnessResult, SearchResult};
use crate::audit::{self, AuditLog, Entry, Outcome, RequestId, ReturnedSlot, Returns, Transport};
use crate::auth::{Access, Caller, Principal};
use crate::cluster::Cluster;
use crate::cluster::wire::{Asker, WireOrigin};
use crate::engine::{
    ChangesRequest, Consistency, Mode, QueryError, Recency, RecencyField, Search, SearchRequest,
};
use crate::time::{now_ms, rfc3339_ms};

use super::notify::{self, SessionLevel};
use super::subscribe::{
    self, CHANGES_TEMPLATE, ListenReceivers, ResourceUri, SessionSubscriptions,
};

/// URI template of the document resource.
pub const DOCUMENT_TEMPLATE: &str = "freshet://{collection}/{id}";

const INSTRUCTIONS: &str = "freshet serves documents kept current from live Kafka streams. \
Call list_collections to see what can be searched, then search (hybrid BM25 + vector by default). \
Every hit carries a freshness stamp (topic/partition/offset, event_time, age_ms) and every answer a \
watermark saying whether the replica is caught up; pass consistency=\"head\" to wait for writes \
made just before the call.";

/// freshet's icon (two waves), for the server and its tools.
const ICON: &str = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCAzMiAzMiI+PHJlY3Qgd2lkdGg9IjMyIiBoZWlnaHQ9IjMyIiByeD0iNiIgZmlsbD0iIzBiNTM5NCIvPjxwYXRoIGQ9Ik00IDIwYzQtNiA4LTYgMTIgMHM4IDYgMTIgMCIgc3Ryb2tlPSIjZmZmIiBzdHJva2Utd2lkdGg9IjMiIGZpbGw9Im5vbmUiLz48cGF0aCBkPSJNNCAxMmM0LTYgOC02IDEyIDBzOCA2IDEyIDAiIHN0cm9rZT0iIzlmYzVlOCIgc3Ryb2tlLXdpZHRoPSIzIiBmaWxsPSJub25lIi8+PC9zdmc+";

fn icons() -> Vec<Icon> {
    vec![
        Icon::new(ICON)
            .with_mime_type("image/svg+xml")
            .with_sizes(vec!["any".into()]),
    ]
}

/// Cache hints for a list or read result (2026-07-28, SEP-2549): how long it may be reused
/// (`ttl_ms`) and by whom; with auth on, answers depend on the caller, so only its own
/// client may cache them. `None` for older protocol versions, which have no such fields.
fn cache_hints(
    context: &RequestContext<RoleServer>,
    auth_on: bool,
    ttl_ms: u64,
) -> Option<(u64, CacheScope)> {
    let modern = context
        .protocol_version()
        .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28);
    let scope = if auth_on {
        CacheScope::Private
    } else {
        CacheScope::Public
    };
    modern.then_some((ttl_ms, scope))
}

/// Retrieval mode argument.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    /// BM25 and vector results fused by reciprocal rank (default).
    #[default]
    Hybrid,
    /// Keyword (BM25) only.
    Bm25,
    /// Vector similarity only.
    Vector,
}

/// Consistency argument.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyArg {
    /// Answer from the view as it is (default).
    #[default]
    Any,
    /// Wait until every event written before the call is applied (bounded by max_wait_ms).
    Head,
}

/// Arguments of `search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// What to look for, in words.
    #[serde(default)]
    pub query: String,
    /// Collection to search; every readable collection when absent.
    pub collection: Option<String>,
    /// Number of results, 1 to 100 (default 10).
    #[schemars(range(min = 1, max = 100))]
    pub k: Option<u32>,
    /// hybrid (default), bm25 or vector.
    pub mode: Option<ModeArg>,
    /// Metadata filter, all fields must hold: {field: value | [any of values] | {operator:
    /// operand}}. Operators: eq, in/any (one of a list), all (list field holds every value),
    /// ne, exists (true/false), gt/gte/lt/lte (number and time fields). Built-in time
    /// fields: event_time, indexed_at. Times: RFC 3339, epoch ms, "now", "now-1h".
    /// list_collections shows each collection's field_types.
    #[serde(default)]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<Map<String, Value>>,
    /// Query vector, for collections whose vectors are precomputed upstream.
    pub vector: Option<Vec<f32>>,
    /// any (default) or head (read-your-writes).
    pub consistency: Option<ConsistencyArg>,
    /// Upper bound of the head wait in milliseconds (default 2000).
    pub max_wait_ms: Option<u64>,
    /// Blend a time decay into the ranking, to prefer recent facts.
    pub recency: Option<RecencyArg>,
    /// The `next` of a previous answer to this same search: returns the following page.
    pub cursor: Option<String>,
}

/// Which time `recency` decays.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecencyFieldArg {
    /// When the change happened at the source.
    EventTime,
    /// When the version became searchable.
    IndexedAt,
}

/// `recency` argument of `search`: score = (1 − weight) · relevance (rescaled to 0..1 over
/// the candidates) + weight · 0.5^(age / half_life).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecencyArg {
    /// event_time (default) or indexed_at.
    pub field: Option<RecencyFieldArg>,
    /// Age at which the recency part halves: "30m", "6h", "7d" (units ms, s, m, h, d, w).
    pub half_life: String,
    /// Share of recency in the score, 0 to 1 (default 0.3).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight: Option<f32>,
}

impl SearchArgs {
    /// The engine's request for these arguments; `max_wait_cap` is `server.max_wait_ms`.
    pub fn into_request(self, max_wait_cap: u64) -> Result<SearchRequest, String> {
        let max_wait_ms = self.max_wait_ms.unwrap_or(DEFAULT_MAX_WAIT_MS);
        if max_wait_ms > max_wait_cap {
            return Err(format!(
                "max_wait_ms must be at most {max_wait_cap}, got {max_wait_ms}"
            ));
        }
        Ok(SearchRequest {
            query: self.query,
            collection: self.collection,
            k: self.k.unwrap_or(10) as usize,
            mode: match self.mode.unwrap_or_default() {
                ModeArg::Hybrid => Mode::Hybrid,
                ModeArg::Bm25 => Mode::Bm25,
                ModeArg::Vector => Mode::Vector,
            },
            filter: self.filter,
            vector: self.vector,
            consistency: match self.consistency.unwrap_or_default() {
                ConsistencyArg::Any => Consistency::Any,
                ConsistencyArg::Head => Consistency::Head,
            },
            max_wait: Duration::from_millis(max_wait_ms),
            recency: self
                .recency
                .map(|r| {
                    let field = match r.field.unwrap_or(RecencyFieldArg::EventTime) {
                        RecencyFieldArg::EventTime => RecencyField::EventTime,
                        RecencyFieldArg::IndexedAt => RecencyField::IndexedAt,
                    };
                    Recency::new(field, &r.half_life, r.weight.unwrap_or(0.3))
                })
                .transpose()?,
            cursor: self.cursor,
        })
    }
}

/// The JSON Schema of a `filter` argument, documenting its operators.
fn filter_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let scalar = serde_json::json!({"type": ["string", "number", "boolean"]});
    let list = serde_json::json!({"type": "array", "items": scalar, "minItems": 1});
    let one_or_list = serde_json::json!({"anyOf": [scalar, list]});
    let bound = serde_json::json!({
        "type": ["number", "string"],
        "description": "a number, or for time fields RFC 3339, epoch ms, \"now\" or \"now-<n><ms|s|m|h|d|w>\""
    });
    schemars::json_schema!({
        "type": "object",
        "description": "Metadata filter; every field must hold. A value or a list (any of them) \
            matches by equality; an object applies operators. list_collections shows the \
            filterable fields and their types; event_time and indexed_at are built-in times.",
        "additionalProperties": {
            "anyOf": [
                scalar,
                list,
                {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": false,
                    "properties": {
                        "eq": {"description": "equal to", "anyOf": [scalar]},
                        "in": {"description": "equal to one of", "anyOf": [one_or_list]},
                        "any": {"description": "a list field holds one of", "anyOf": [one_or_list]},
                        "all": {"description": "a list field holds every one of", "anyOf": [one_or_list]},
                        "ne": {"description": "equal to none of", "anyOf": [one_or_list]},
                        "exists": {"type": "boolean", "description": "has a value (true) or none (false)"},
                        "gt": bound, "gte": bound, "lt": bound, "lte": bound
                    }
                }
            ]
        }
    })
}

/// Arguments of `get_document`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetDocumentArgs {
    /// Collection name.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// The offset of the version you hold (its freshness stamp's `offset`): the answer's
    /// `version` says `current` or `superseded`.
    pub offset: Option<i64>,
    /// The partition of that version (its stamp's `partition`), when `offset` is given.
    pub partition: Option<i32>,
}

/// Arguments of `document_freshness`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessArgs {
    /// Collection name.
    pub collection: String,
    /// Document ids (1 to 1000).
    pub ids: Vec<String>,
}

/// Arguments of `changes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesArgs {
    /// Collection to read.
    pub collection: String,
    /// Where to start: the `next` cursor of a previous answer, or an RFC 3339 time (changes
    /// that became searchable since then). Absent: the oldest change kept.
    pub since: Option<String>,
    /// Most changes to return, 1 to 1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// Only changes whose document version passes this filter (same form as `search`'s).
    #[serde(default)]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<Map<String, Value>>,
    /// Also return each upsert's text (default false).
    pub include_text: Option<bool>,
}

/// Arguments of `list_collections` (none).
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {}

/// Default bound of a `head` wait.
const DEFAULT_MAX_WAIT_MS: u64 = 2000;

/// The MCP server: a cheap handle over the engine, one per session.
#[derive(Clone)]
pub struct Freshet {
    search: Arc<Search>,
    tool_router: ToolRouter<Self>,
    /// Where tool calls are recorded (none in unit tests).
    audit: Option<AuditLog>,
    /// Which transport the audit lines name.
    transport: Transport,
    /// The caller of a request that carries no HTTP parts: the stdio principal. HTTP
    /// requests get theirs from the auth middleware, and without one they may read nothing.
    stdio_caller: Arc<Caller>,
    /// The level this session asked for with `logging/setLevel`.
    log_level: SessionLevel,
    /// This session's `resources/subscribe` subscriptions.
    subscriptions: SessionSubscriptions,
    /// Change receivers of `subscriptions/listen` streams being acknowledged.
    listen_receivers: ListenReceivers,
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn query_error(e: QueryError) -> CallToolResult {
    tool_error(e.to_string())
}

/// Who is calling and what it may read. On HTTP the auth middleware puts an [`Access`] and
/// a [`Principal`] into the request's extensions, which rmcp hands over with the
/// [`http::request::Parts`]; an HTTP request without an `Access` reads nothing (fail closed).
/// Without HTTP parts (stdio) the configured stdio caller applies.
fn caller_of(ctx: &RequestContext<RoleServer>, stdio: &Caller) -> Caller {
    match ctx.extensions.get::<http::request::Parts>() {
        Some(parts) => Caller {
            principal: parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or_default(),
            access: parts
                .extensions
                .get::<Access>()
                .cloned()
                .unwrap_or_else(Access::none),
        },
        None => stdio.clone(),
    }
}

/// The facts of a call the audit line needs, taken before the context is consumed.
struct CallFacts {
    started: Instant,
    time: String,
    request_id: String,
    principal: Option<Principal>,
    client: Option<String>,
}

impl CallFacts {
    fn new(ctx: &RequestContext<RoleServer>, caller: &Caller) -> CallFacts {
        let parts = ctx.extensions.get::<http::request::Parts>();
        let request_id = parts
            .and_then(|p| p.extensions.get::<RequestId>())
            .map(|id| id.0.clone())
            .unwrap_or_else(audit::new_request_id);
        let client = ctx
            .client_info()
            .map(|info| format!("{} {}", info.name, info.version))
            .or_else(|| {
                parts
                    .and_then(|p| p.headers.get(http::header::USER_AGENT))
                    .and_then(|ua| ua.to_str().ok())
                    .map(String::from)
            });
        let principal =
            (caller.principal != Principal::default()).then(|| caller.principal.clone());
        CallFacts {
            started: Instant::now(),
            time: rfc3339_ms(now_ms()),
            request_id,
            principal,
            client,
        }
    }

    fn entry(self, transport: Transport, tool: String, arguments: Option<Value>) -> Entry {
        Entry {
            time: self.time,
            request_id: self.request_id,
            transport,
            principal: self.principal,
            client: self.client,
            http: None,
            tool: Some(tool),
            arguments,
            results: Vec::new(),
            latency_ms: audit::millis(self.started.elapsed()),
            outcome: Outcome::Ok,
            error: None,
            status: None,
        }
    }
}

#[tool_router]
impl Freshet {
    /// A server over `search` for stdio, whose caller is unrestricted and unaudited until
    /// [`Freshet::with_stdio_caller`] and [`Freshet::with_audit`] say otherwise.
    pub fn new(search: Arc<Search>) -> Self {
        Freshet {
            search,
            tool_router: Self::tool_router(),
            audit: None,
            transport: Transport::Stdio,
            stdio_caller: Arc::new(Caller::anonymous()),
            log_level: SessionLevel::default(),
            subscriptions: SessionSubscriptions::default(),
            listen_receivers: ListenReceivers::default(),
        }
    }

    /// Records every tool call in `audit`, marked with `transport`.
    pub fn with_audit(mut self, audit: AuditLog, transport: Transport) -> Self {
        self.audit = Some(audit);
        self.transport = transport;
        self
    }

    /// The caller of requests that arrive without HTTP parts (stdio).
    pub fn with_stdio_caller(mut self, caller: Caller) -> Self {
        self.stdio_caller = Arc::new(caller);
        self
    }

    /// True when callers authenticate (answers then depend on who asks).
    fn auth_on(&self) -> bool {
        self.search.config().auth.mode != crate::config::AuthMode::None
    }

    fn access(&self, ctx: &RequestContext<RoleServer>) -> Access {
        caller_of(ctx, &self.stdio_caller).access
    }

    /// The caller of a cluster-wide call, as the shards receive it: rights, identity, and
    /// this node's request id for their audit lines.
    fn asker(&self, ctx: &RequestContext<RoleServer>, cluster: &Cluster) -> Asker {
        let caller = caller_of(ctx, &self.stdio_caller);
        let request_id = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<RequestId>())
            .map(|id| id.0.clone());
        Asker {
            access: caller.access,
            origin: WireOrigin {
                sub: caller.principal.sub,
                iss: caller.principal.iss,
                request_id,
                node: cluster.config().node_id().to_string(),
            },
        }
    }

    /// Search documents kept current from Kafka. Hybrid (BM25 + vector, fused by reciprocal
    /// rank) by default. Each hit has a snippet, metadata and a freshness stamp; the answer
    /// says whether the replica is caught up with the stream.
    #[tool(
        title = "Search live documents",
        icons = icons(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SearchResult>, CallToolResult> {
        let access = self.access(&ctx);
        let req = args
            .into_request(self.search.config().server.max_wait_ms)
            .map_err(tool_error)?;
        let started = Instant::now();
        let asked = req.mode;
        let result = match self.search.cluster() {
            Some(cluster) => {
                let asker = self.asker(&ctx, cluster);
                crate::cluster::coordinator::search(&self.search, cluster, req, &asker).await
            }
            None => self.search.search(req, &access).await,
        };
        let mode = match &result {
            Ok(r) => r.mode.clone(),
            Err(_) => format!("{asked:?}").to_lowercase(),
        };
        self.search
            .metrics()
            .observe_query("search", &mode, started.elapsed());
        record_returned(&ctx, &result, "");
        result.map(Json).map_err(query_error)
    }

    /// Fetch one document's current version (full text, metadata, freshness stamp). With
    /// `offset` (and `partition`) of a version you hold, also says whether it is still
    /// `current` or was `superseded`.
    #[tool(
        title = "Get a document",
        icons = icons(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_document(
        &self,
        Parameters(args): Parameters<GetDocumentArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DocumentResult>, CallToolResult> {
        let started = Instant::now();
        if args.partition.is_some() && args.offset.is_none() {
            return Err(tool_error(
                "`partition` needs `offset`: the version's stamp has both",
            ));
        }
        let version = args.offset.map(|offset| (args.partition, offset));
        let access = self.access(&ctx);
        let result = match self.search.cluster() {
            Some(cluster) => {
                crate::cluster::coordinator::get_document(
                    &self.search,
                    cluster,
                    &args.collection,
                    &args.id,
                    version,
                    &self.asker(&ctx, cluster),
                )
                .await
            }
            None => self
                .search
                .get_document_version(&args.collection, &args.id, version, &access),
        };
        self.search
            .metrics()
            .observe_query("get_document", "", started.elapsed());
        record_returned(&ctx, &result, "");
        result.map(Json).map_err(query_error)
    }

    /// How fresh given documents are: per id the freshness stamp of its current version, or
    /// `not_found` (never written, or deleted), plus the collection's watermark.
    #[tool(
        title = "Check document freshness",
        icons = icons(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn document_freshness(
        &self,
        Parameters(args): Parameters<FreshnessArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<FreshnessResult>, CallToolResult> {
        let started = Instant::now();
        let access = self.access(&ctx);
        let result = match self.search.cluster() {
            Some(cluster) => {
                crate::cluster::coordinator::document_freshness(
                    &self.search,
                    cluster,
                    &args.collection,
                    &args.ids,
                    &self.asker(&ctx, cluster),
                )
                .await
            }
            None => self
                .search
                .document_freshness(&args.collection, &args.ids, &access),
        };
        self.search
            .metrics()
            .observe_query("document_freshness", "", started.elapsed());
        record_returned(&ctx, &result, &args.collection);
        result.map(Json).map_err(query_error)
    }

    /// What changed in a collection: its upserts and deletes in apply order, each with id,
    /// kind, title, metadata and freshness stamp, and a `next` cursor to pass as `since` to
    /// continue exactly where this answer ended. `since` may also be an RFC 3339 time. The
    /// history is bounded: an expired cursor is an error that says to re-sync, and
    /// `truncated` says when older changes may be missing.
    #[tool(
        title = "What changed",
        icons = icons(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn changes(
        &self,
        Parameters(args): Parameters<ChangesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ChangesResult>, CallToolResult> {
        let started = Instant::now();
        let req = ChangesRequest {
            collection: args.collection,
            since: args.since,
            limit: args.limit.unwrap_or(100) as usize,
            filter: args.filter,
            include_text: args.include_text.unwrap_or(false),
        };
        let access = self.access(&ctx);
        let result = match self.search.cluster() {
            Some(cluster) => {
                let asker = self.asker(&ctx, cluster);
                crate::cluster::coordinator::changes(&self.search, cluster, req, &asker).await
            }
            None => self.search.changes(req, &access),
        };
        self.search
            .metrics()
            .observe_query("changes", "", started.elapsed());
        record_returned(&ctx, &result, "");
        result.map(Json).map_err(query_error)
    }

    /// List the collections: topics, document and chunk counts, embedding model, filterable
    /// fields, ingest counters and lag per partition.
    #[tool(
        title = "List collections",
        icons = icons(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_collections(
        &self,
        Parameters(_args): Parameters<ListArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<CollectionsResult>, CallToolResult> {
        let started = Instant::now();
        let access = self.access(&ctx);
        let result = match self.search.cluster() {
            Some(cluster) => {
                let asker = self.asker(&ctx, cluster);
                crate::cluster::coordinator::list_collections(&self.search, cluster, &asker).await
            }
            None => self.search.list_collections(&access),
        };
        self.search
            .metrics()
            .observe_query("list_collections", "", started.elapsed());
        Ok(Json(result))
    }
}

/// Splits `freshet://{collection}/{id}`; the id may contain `/` and percent-escapes.
pub fn parse_document_uri(uri: &str) -> Option<(String, String)> {
    match ResourceUri::parse(uri) {
        Ok(ResourceUri::Document { collection, id }) => Some((collection, id)),
        _ => None,
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Freshet {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        notify::warn_if_catching_up(
            &self.search,
            &self.log_level,
            &self.access(&context),
            &context,
        )
        .await;
        let Some(log) = &self.audit else {
            return self.call_with_deadline(request, context).await;
        };
        let facts = CallFacts::new(&context, &caller_of(&context, &self.stdio_caller));
        let tool = request.name.to_string();
        let arguments = log.arguments(request.arguments.as_ref());
        let returned = ReturnedSlot::default();
        let mut context = context;
        context.extensions.insert(returned.clone());
        let result = self.call_with_deadline(request, context).await;
        let mut entry = facts.entry(self.transport, tool, arguments);
        match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                entry.outcome = Outcome::ToolError;
                entry.error = Some(first_text(r));
            }
            Ok(CallToolResponse::Complete(_)) => entry.results = returned.take(),
            Ok(_) => {}
            Err(e) => {
                entry.outcome = Outcome::Error;
                entry.error = Some(e.message.to_string());
            }
        }
        audited(log, entry, result).await
    }

    #[allow(deprecated)] // enable_logging: see set_level
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_completions()
                // Only to tell clients that answers come from a replica still catching up.
                .enable_logging()
                .build(),
        )
        .with_server_info(
            Implementation::new("freshet", env!("CARGO_PKG_VERSION"))
                .with_title("freshet: live context from Kafka")
                .with_icons(icons()),
        )
        .with_instructions(INSTRUCTIONS)
    }

    #[allow(deprecated)] // MCP logging (SEP-2577), still what 2025-11-25 clients use
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log_level.set(request.level);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        // Documents are reached through the template; listing millions of them helps no one.
        let mut result = ListResourcesResult::with_all_items(vec![]);
        if let Some((ttl, scope)) = cache_hints(&context, self.auth_on(), 3_600_000) {
            result.ttl_ms = Some(ttl);
            result.cache_scope = Some(scope);
        }
        Ok(result)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let Reference::Resource(template) = &request.r#ref else {
            return Err(McpError::invalid_params(
                "freshet has no prompts; completions are offered for the `collection` argument \
                 of freshet://{collection}/{id} and freshet://{collection}/changes",
                None,
            ));
        };
        if ![DOCUMENT_TEMPLATE, CHANGES_TEMPLATE].contains(&template.uri.as_str()) {
            return Err(McpError::invalid_params(
                format!("no resource template `{}`", template.uri),
                None,
            ));
        }
        let values: Vec<String> = if request.argument.name == "collection" {
            let access = self.access(&context);
            self.search
                .catalog()
                .collections()
                .iter()
                .map(|c| c.name())
                .filter(|name| access.may_read(name) && name.starts_with(&request.argument.value))
                .map(String::from)
                .take(CompletionInfo::MAX_VALUES)
                .collect()
        } else {
            // Ids: a prefix scan over millions of documents per keystroke is not worth it.
            Vec::new()
        };
        let completion =
            CompletionInfo::new(values).map_err(|e| McpError::internal_error(e, None))?;
        Ok(CompleteResult::new(completion))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let mut result = ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(DOCUMENT_TEMPLATE, "document")
                .with_title("A document in a collection")
                .with_description(
                    "The current version of one document with its freshness stamp, as JSON.",
                )
                .with_mime_type("application/json"),
            ResourceTemplate::new(CHANGES_TEMPLATE, "changes")
                .with_title("The change feed of a collection")
                .with_description(
                    "The recent upserts and deletes of a collection, as the `changes` tool \
                     returns them without `since`. Subscribe to be notified of each new batch; \
                     add ?filter=<percent-encoded JSON filter> to hear only about matching \
                     changes.",
                )
                .with_mime_type("application/json"),
        ]);
        if let Some((ttl, scope)) = cache_hints(&context, self.auth_on(), 3_600_000) {
            result.ttl_ms = Some(ttl);
            result.cache_scope = Some(scope);
        }
        Ok(result)
    }

    #[allow(deprecated)] // resources/subscribe: what 2025-11-25 clients use
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let facts = CallFacts::new(&context, &caller_of(&context, &self.stdio_caller));
        let result = ResourceUri::parse(&request.uri)
            .map_err(|e| McpError::invalid_params(e, None))
            .and_then(|resource| {
                resource
                    .watch(&self.search, &self.access(&context))
                    .map_err(|e| resource_error(e, &request.uri))
            })
            .map(|watch| {
                self.subscriptions.add(
                    &self.search,
                    request.uri.clone(),
                    watch,
                    context.peer.clone(),
                )
            });
        self.audit_resource_call(facts, "resources/subscribe", &request.uri, result)
            .await
    }

    #[allow(deprecated)] // resources/unsubscribe: what 2025-11-25 clients use
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let facts = CallFacts::new(&context, &caller_of(&context, &self.stdio_caller));
        // Unsubscribing from what was never subscribed is harmless: the client's intent holds.
        self.subscriptions.remove(&request.uri);
        self.audit_resource_call(facts, "resources/unsubscribe", &request.uri, Ok(()))
            .await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        self.listen_receivers.open(&self.search);
        Some(subscribe::accepted(requested))
    }

    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        let access = self.access(context.request_context());
        subscribe::listen(
            Arc::clone(&self.search),
            context,
            access,
            &self.listen_receivers,
        )
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        notify::warn_if_catching_up(
            &self.search,
            &self.log_level,
            &self.access(&context),
            &context,
        )
        .await;
        let Some(log) = &self.audit else {
            return self.read_document(&request, &context).await;
        };
        let facts = CallFacts::new(&context, &caller_of(&context, &self.stdio_caller));
        let arguments = Some(serde_json::json!({"uri": request.uri}));
        let returned = ReturnedSlot::default();
        let mut context = context;
        context.extensions.insert(returned.clone());
        let result = self.read_document(&request, &context).await;
        let mut entry = facts.entry(self.transport, "resources/read".into(), arguments);
        match &result {
            Ok(ReadResourceResponse::Complete(_)) => entry.results = returned.take(),
            Ok(_) => {}
            Err(e) => {
                entry.outcome = Outcome::Error;
                entry.error = Some(e.message.to_string());
            }
        }
        audited(log, entry, result).await
    }
}

impl Freshet {
    /// Runs a tool call within its deadline: `server.tool_timeout_ms`, plus the head wait a
    /// `consistency: "head"` search asked for. Past it the caller gets a tool error naming
    /// the key; work already on the search pool finishes there, within the pool's bound.
    async fn call_with_deadline(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let server = &self.search.config().server;
        let deadline = Duration::from_millis(
            server.tool_timeout_ms + head_wait_ms(request.arguments.as_ref(), server.max_wait_ms),
        );
        let tool = request.name.to_string();
        let tcc = ToolCallContext::new(self, request, context);
        match tokio::time::timeout(deadline, self.tool_router.call(tcc)).await {
            Ok(result) => result,
            Err(_) => {
                self.search
                    .metrics()
                    .count_limit_hit("server.tool_timeout_ms");
                Ok(CallToolResponse::Complete(tool_error(format!(
                    "`{tool}` did not finish within its deadline of {} ms \
                     (server.tool_timeout_ms = {}, plus any head wait): try a narrower query",
                    deadline.as_millis(),
                    server.tool_timeout_ms
                ))))
            }
        }
    }
}

/// The head wait a call asked for (0 unless `consistency` is `head`), capped like the
/// search tool caps it; the deadline allows for it on top of the call's own work.
fn head_wait_ms(arguments: Option<&Map<String, Value>>, cap: u64) -> u64 {
    let Some(args) = arguments else { return 0 };
    if args.get("consistency").and_then(Value::as_str) != Some("head") {
        return 0;
    }
    args.get("max_wait_ms")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_WAIT_MS)
        .min(cap)
}

/// Writes the audit line of a call and waits for it; when it cannot be written and
/// `audit.on_failure = "refuse"`, the caller gets an error instead of `result`.
async fn audited<T>(
    log: &AuditLog,
    entry: Entry,
    result: Result<T, McpError>,
) -> Result<T, McpError> {
    match log.record_durable(entry).await {
        Ok(_) => result,
        Err(failure) if log.refuses_on_failure() => {
            log.count_refused_call();
            Err(McpError::internal_error(
                format!(
                    "refused: the audit line of this call could not be written ({}); \
                     nothing is served unaudited (audit.on_failure = \"refuse\")",
                    failure.reason
                ),
                None,
            ))
        }
        Err(_) => result,
    }
}

/// Notes what an answer returned in the call's [`ReturnedSlot`], for its audit line (there
/// is none when the audit log is off).
fn record_returned<T: Returns>(
    ctx: &RequestContext<RoleServer>,
    answer: &Result<T, QueryError>,
    collection: &str,
) {
    if let (Ok(answer), Some(slot)) = (answer, ctx.extensions.get::<ReturnedSlot>()) {
        slot.record(answer, collection);
    }
}

fn first_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_default()
}

impl Freshet {
    /// `resources/read` of `freshet://{collection}/{id}` or `freshet://{collection}/changes`.
    async fn read_document(
        &self,
        request: &ReadResourceRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let resource =
            ResourceUri::parse(&request.uri).map_err(|e| McpError::invalid_params(e, None))?;
        let access = self.access(context);
        let cluster = self.search.cluster();
        let answer = match resource {
            ResourceUri::Document { collection, id } => {
                let found = match cluster {
                    Some(cluster) => {
                        crate::cluster::coordinator::get_document(
                            &self.search,
                            cluster,
                            &collection,
                            &id,
                            None,
                            &self.asker(context, cluster),
                        )
                        .await
                    }
                    None => self.search.get_document(&collection, &id, &access),
                };
                record_returned(context, &found, "");
                found.and_then(|doc| serde_json::to_value(doc).map_err(|_| QueryError::Internal))
            }
            ResourceUri::Changes { collection, filter } => {
                let req = ChangesRequest {
                    collection,
                    since: None,
                    limit: 100,
                    filter,
                    include_text: false,
                };
                let page = match cluster {
                    Some(cluster) => {
                        let asker = self.asker(context, cluster);
                        crate::cluster::coordinator::changes(&self.search, cluster, req, &asker)
                            .await
                    }
                    None => self.search.changes(req, &access),
                };
                record_returned(context, &page, "");
                page.and_then(|page| serde_json::to_value(page).map_err(|_| QueryError::Internal))
            }
        };
        match answer {
            Ok(doc) => {
                let json = serde_json::to_string(&doc).map_err(|e| {
                    tracing::error!("rendering document: {e}");
                    McpError::internal_error("internal error while answering", None)
                })?;
                let mut result = ReadResourceResult::new(vec![
                    ResourceContents::text(json, request.uri.clone())
                        .with_mime_type("application/json"),
                ]);
                // Documents change at the stream's pace: never reuse an answer.
                if let Some((ttl, scope)) = cache_hints(context, self.auth_on(), 0) {
                    result.ttl_ms = Some(ttl);
                    result.cache_scope = Some(scope);
                }
                Ok(result.into())
            }
            Err(e) => Err(resource_error(e, &request.uri)),
        }
    }

    /// Writes the audit line of a resource call that returns no documents.
    async fn audit_resource_call(
        &self,
        facts: CallFacts,
        method: &str,
        uri: &str,
        result: Result<(), McpError>,
    ) -> Result<(), McpError> {
        let Some(log) = &self.audit else {
            return result;
        };
        let mut entry = facts.entry(
            self.transport,
            method.to_string(),
            Some(serde_json::json!({"uri": uri})),
        );
        if let Err(e) = &result {
            entry.outcome = Outcome::Error;
            entry.error = Some(e.message.to_string());
        }
        audited(log, entry, result).await
    }
}

/// The MCP error of a failed resource call: not found for unknown documents and
/// collections, invalid params otherwise.
fn resource_error(e: QueryError, uri: &str) -> McpError {
    match e {
        QueryError::NotFound { .. } | QueryError::UnknownCollection { .. } => {
            McpError::resource_not_found(e.to_string(), Some(serde_json::json!({"uri": uri})))
        }
        QueryError::Internal => McpError::internal_error("internal error while answering", None),
        e => McpError::invalid_params(e.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_uris_parse_with_slashes_and_escapes() {
        assert_eq!(
            parse_document_uri("freshet://articles/a/b%20c"),
            Some(("articles".into(), "a/b c".into()))
        );
        assert_eq!(parse_document_uri("freshet://articles/"), None);
        assert_eq!(parse_document_uri("freshet://articles"), None);
        assert_eq!(parse_document_uri("http://articles/x"), None);
        assert_eq!(parse_document_uri("freshet://a/%zz"), None);
        assert_eq!(
            parse_document_uri("freshet://a/%e2%82"),
            None,
            "invalid UTF-8"
        );
    }
}
