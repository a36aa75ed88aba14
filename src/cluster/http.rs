//! The internal API between nodes: state, statistics, shard search, documents and changes.
//! Every node audits the shard calls it serves (the receiving node's request id and caller
//! on the line, tool `cluster/<route>`). Every call must carry
//! the shared key (`x-freshet-cluster-key`), compared in constant time; these routes are
//! for nodes, not for MCP clients, and answer 401 to anything else.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use serde_json::Value;

use super::wire::{
    ChangesAnswer, ChangesQuery, DocumentsAnswer, DocumentsQuery, KEY_HEADER, ShardAnswer,
    ShardQuery, ShardSearch, WireAccess, WireError,
};
use super::{Cluster, shard};
use crate::audit::{self, AuditLog, Entry, Outcome, Returned, Transport};
use crate::auth::Principal;
use crate::engine::{QueryError, Search};
use crate::time::{now_ms, rfc3339_ms};

#[derive(Clone)]
struct Node {
    local: Arc<Search>,
    cluster: Arc<Cluster>,
    /// Where the shard calls this node serves are audited.
    audit: AuditLog,
}

/// The internal routes under `/internal/cluster/`.
pub fn routes(local: Arc<Search>, cluster: Arc<Cluster>, audit: AuditLog) -> Router {
    let node = Node {
        local,
        cluster,
        audit,
    };
    Router::new()
        .route("/internal/cluster/state", get(state))
        .route("/internal/cluster/stats", post(stats))
        .route("/internal/cluster/search", post(search))
        .route("/internal/cluster/documents", post(documents))
        .route("/internal/cluster/changes", post(changes))
        .layer(middleware::from_fn_with_state(node.clone(), require_key))
        .with_state(node)
}

async fn require_key(State(node): State<Node>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !node.cluster.key_matches(given) {
        tracing::warn!(
            "cluster: refused an internal call to {} without the shared key",
            req.uri().path()
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "the cluster key is missing or wrong",
            false,
        );
    }
    next.run(req).await
}

fn error(status: StatusCode, message: &str, invalid: bool) -> Response {
    let body = WireError {
        error: message.to_string(),
        invalid,
    };
    (status, Json(body)).into_response()
}

fn query_error(e: QueryError) -> Response {
    match e {
        QueryError::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), false),
        other => error(StatusCode::BAD_REQUEST, &other.to_string(), true),
    }
}

async fn state(State(node): State<Node>) -> Response {
    Json(shard::node_state(&node.local, &node.cluster)).into_response()
}

async fn stats(State(node): State<Node>, Json(q): Json<ShardQuery>) -> Response {
    match shard::stats(&node.local, &q).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => query_error(e),
    }
}

async fn documents(State(node): State<Node>, Json(q): Json<DocumentsQuery>) -> Response {
    let arrived = Arrival::now();
    let answer = shard::documents(&node.local, &q);
    let returned = |a: &DocumentsAnswer| -> Vec<Returned> {
        a.documents
            .iter()
            .map(|d| {
                Returned::of(
                    &d.document.collection,
                    &d.document.id,
                    &d.document.freshness,
                )
            })
            .collect()
    };
    let args =
        serde_json::json!({"collection": q.collection, "ids": q.ids, "partitions": q.partitions});
    respond(
        &node,
        "cluster/documents",
        &q.access,
        args,
        arrived,
        answer,
        returned,
    )
    .await
}

async fn changes(State(node): State<Node>, Json(q): Json<ChangesQuery>) -> Response {
    let arrived = Arrival::now();
    let answer = shard::changes(&node.local, &q);
    let returned = |a: &ChangesAnswer| -> Vec<Returned> {
        a.page
            .changes
            .iter()
            .map(|c| Returned::of(&c.collection, &c.id, &c.freshness))
            .collect()
    };
    let args = serde_json::json!({
        "collection": q.collection, "since": q.since, "limit": q.limit, "filter": q.filter,
        "partitions": q.partitions,
    });
    respond(
        &node,
        "cluster/changes",
        &q.access,
        args,
        arrived,
        answer,
        returned,
    )
    .await
}

async fn search(State(node): State<Node>, Json(body): Json<ShardSearch>) -> Response {
    let arrived = Arrival::now();
    let q = body.query.clone();
    let answer = shard::search(&node.local, body).await;
    let returned = |a: &ShardAnswer| -> Vec<Returned> {
        let mut seen = std::collections::HashSet::new();
        a.collections
            .iter()
            .flat_map(|c| c.bm25.iter().chain(&c.vector))
            .filter(|c| seen.insert((c.hit.collection.clone(), c.hit.id.clone())))
            .map(|c| Returned::of(&c.hit.collection, &c.hit.id, &c.hit.freshness))
            .collect()
    };
    let args = serde_json::json!({
        "query": q.query, "collection": q.collection, "k": q.k, "mode": q.mode,
        "filter": q.filter, "vector": q.vector, "offset": q.offset, "partitions": q.partitions,
    });
    respond(
        &node,
        "cluster/search",
        &q.access,
        args,
        arrived,
        answer,
        returned,
    )
    .await
}

/// When an internal call arrived.
struct Arrival {
    started: Instant,
    time: String,
}

impl Arrival {
    fn now() -> Arrival {
        Arrival {
            started: Instant::now(),
            time: rfc3339_ms(now_ms()),
        }
    }
}

/// Audits what this shard served (every node audits what it served; the line carries the
/// receiving node's request id and the caller it authenticated), then answers. With
/// `audit.on_failure = "refuse"` an answer whose line could not be written is not sent:
/// the receiving node then asks another owner or names the partitions as missing.
async fn respond<T: serde::Serialize>(
    node: &Node,
    tool: &str,
    access: &WireAccess,
    arguments: Value,
    arrived: Arrival,
    answer: Result<T, QueryError>,
    returned: impl Fn(&T) -> Vec<Returned>,
) -> Response {
    {
        let log = &node.audit;
        let origin = &access.origin;
        let principal = Principal {
            sub: origin.sub.clone(),
            iss: origin.iss.clone(),
        };
        let (results, outcome, failed) = match &answer {
            Ok(a) => (returned(a), Outcome::Ok, None),
            Err(QueryError::Internal) => {
                (Vec::new(), Outcome::Error, Some("internal error".into()))
            }
            Err(e) => (Vec::new(), Outcome::ToolError, Some(e.to_string())),
        };
        let entry = Entry {
            time: arrived.time,
            request_id: origin
                .request_id
                .clone()
                .unwrap_or_else(audit::new_request_id),
            transport: Transport::Http,
            principal: (principal != Principal::default()).then_some(principal),
            client: Some(format!("freshet cluster node {}", origin.node)),
            http: None,
            tool: Some(tool.to_string()),
            arguments: log.arguments(arguments.as_object()),
            results,
            latency_ms: audit::millis(arrived.started.elapsed()),
            outcome,
            error: failed,
            status: None,
        };
        if let Err(failure) = log.record_durable(entry).await
            && log.refuses_on_failure()
        {
            log.count_refused_call();
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "refused: this node's audit line could not be written ({})",
                    failure.reason
                ),
                false,
            );
        }
    }
    match answer {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => query_error(e),
    }
}
