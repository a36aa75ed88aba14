//! The internal API between nodes: state, statistics and shard search. Every call must carry
//! the shared key (`x-freshet-cluster-key`), compared in constant time; these routes are
//! for nodes, not for MCP clients, and answer 401 to anything else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::wire::{ChangesQuery, DocumentsQuery, KEY_HEADER, ShardQuery, ShardSearch, WireError};
use super::{Cluster, shard};
use crate::engine::{QueryError, Search};

#[derive(Clone)]
struct Node {
    local: Arc<Search>,
    cluster: Arc<Cluster>,
}

/// The internal routes under `/internal/cluster/`.
pub fn routes(local: Arc<Search>, cluster: Arc<Cluster>) -> Router {
    let node = Node { local, cluster };
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
    match shard::documents(&node.local, &q) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => query_error(e),
    }
}

async fn changes(State(node): State<Node>, Json(q): Json<ChangesQuery>) -> Response {
    match shard::changes(&node.local, &q) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => query_error(e),
    }
}

async fn search(State(node): State<Node>, Json(body): Json<ShardSearch>) -> Response {
    match shard::search(&node.local, body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => query_error(e),
    }
}
