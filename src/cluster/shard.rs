//! The shard side of a cluster search, and the node's state: what a node answers on the
//! internal API, from its own view only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{ClusterPartition, PartitionWatermark};
use crate::auth::Access;
use crate::engine::{
    Mode, QueryError, Retrieved, Search, check_ids, embed_query, query_vector, render_hit,
    retrieve, search_pool,
};
use crate::time::now_ms;

use super::Cluster;
use super::wire::{
    Candidate, ChangesAnswer, ChangesQuery, DocumentsAnswer, DocumentsQuery, NodeState,
    ShardAnswer, ShardCollection, ShardQuery, ShardSearch, ShardStats, mode_name,
};

/// This node's state for the other nodes.
pub fn node_state(local: &Search, cluster: &Cluster) -> NodeState {
    let ownership = cluster.ownership();
    NodeState {
        node_id: cluster.config().node_id().to_string(),
        url: cluster.config().advertise_url.clone(),
        replica: cluster.config().replica,
        assigned: ownership.assigned_once(),
        partitions: partition_states(local, ownership.owned().into_iter()),
        partition_counts: ownership.partition_counts(),
    }
}

/// Progress of the given partitions; one not read here yet has unknown offsets.
pub fn partition_states(
    local: &Search,
    keys: impl Iterator<Item = (Arc<str>, i32)>,
) -> Vec<ClusterPartition> {
    let progress: std::collections::HashMap<_, _> = local
        .freshness()
        .progress()
        .snapshot(&[])
        .into_iter()
        .collect();
    // As for single-node answers: lag computed from an old reading proves nothing.
    let fresh_after = now_ms() - (local.config().kafka.watermark_interval_ms as i64 * 3).max(5_000);
    keys.map(|key| match progress.get(&key) {
        Some(p) => {
            let watermark = PartitionWatermark::new(&key, p);
            let caught_up = watermark.lag == Some(0)
                && watermark.rereading.is_none()
                && p.watermarks_read_at_ms.is_some_and(|at| at >= fresh_after);
            ClusterPartition {
                watermark,
                caught_up,
            }
        }
        None => ClusterPartition::unknown(&key.0, key.1),
    })
    .collect()
}

/// Documents by id, from the asked-for partitions only (a partition handed over but not yet
/// dropped is not answered for).
pub fn documents(local: &Search, q: &DocumentsQuery) -> Result<DocumentsAnswer, QueryError> {
    check_ids(&q.ids)?;
    let access: Access = q.access.clone().into();
    let wanted: HashSet<(&str, i32)> = q.partitions.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let mut out = DocumentsAnswer::default();
    for id in &q.ids {
        match local.get_document_version(&q.collection, id, q.version, &access) {
            Ok(found) => {
                let stamp = &found.document.freshness;
                if wanted.contains(&(stamp.topic.as_str(), stamp.partition)) {
                    out.documents.push(found);
                }
            }
            Err(QueryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// True if this node still owns the partition (always, outside a cluster): a shard answers
/// only for those, so the asking node takes partitions handed over since it planned to
/// their new owner.
fn owns_here(local: &Search, topic: &str, partition: i32) -> bool {
    local
        .cluster()
        .is_none_or(|c| c.ownership().owns(topic, partition))
}

/// A page of changes of the asked-for partitions this node still owns.
pub fn changes(local: &Search, q: &ChangesQuery) -> Result<ChangesAnswer, QueryError> {
    let access: Access = q.access.clone().into();
    let owned: HashSet<(String, i32)> = q
        .partitions
        .iter()
        .filter(|(t, p)| owns_here(local, t, *p))
        .cloned()
        .collect();
    let page = local.changes_in(q.request(), &access, Some(&owned))?;
    let mut held: Vec<(Arc<str>, i32)> = owned
        .into_iter()
        .map(|(t, p)| (Arc::from(t.as_str()), p))
        .collect();
    held.sort();
    Ok(ChangesAnswer {
        page,
        partitions: partition_states(local, held.into_iter()),
    })
}

/// The statistics phase: with `consistency: "head"` first the wait for the partitions'
/// ends, then this shard's BM25 statistics of the query, per collection searched.
pub async fn stats(local: &Search, q: &ShardQuery) -> Result<ShardStats, QueryError> {
    let req = q.request().map_err(QueryError::InvalidArgument)?;
    let access: Access = q.access.clone().into();
    let targets = local.validate_search(&req, &access)?.0;
    let mut out = ShardStats::default();
    if let Some(ms) = q.head_wait_ms {
        let deadline = Instant::now() + Duration::from_millis(ms);
        if let Err(why) = local
            .freshness()
            .wait_for_partitions(q.partitions.clone(), deadline)
            .await
        {
            out.head_missed = Some(why);
        }
    }
    let query = req.query.trim();
    if req.mode == Mode::Vector || query.is_empty() {
        return Ok(out);
    }
    for c in targets {
        let stats = c.text.term_stats(query).map_err(|e| {
            tracing::error!(collection = c.name(), "BM25 statistics failed: {e}");
            QueryError::Internal
        })?;
        out.collections.insert(c.name().to_string(), stats);
    }
    Ok(out)
}

/// The search phase: each retriever's candidates from the asked-for partitions, BM25 scored
/// with the cluster-wide statistics, rendered as hits.
pub async fn search(local: &Search, body: ShardSearch) -> Result<ShardAnswer, QueryError> {
    let ShardSearch {
        query: q,
        stats,
        embedded: given,
    } = body;
    let req = q.request().map_err(QueryError::InvalidArgument)?;
    let access: Access = q.access.clone().into();
    let (targets, filters, _) = local.validate_search(&req, &access)?;
    let depth = q.offset + req.k;
    let text = req.query.trim().to_string();
    let pool = search_pool(local.config());
    let embedded = if given.is_empty() {
        embed_query(pool, &targets, &req, &text).await
    } else {
        targets
            .iter()
            .map(|c| given.get(c.name()).cloned())
            .collect()
    };
    let keep: HashSet<(Arc<str>, i32)> = q
        .partitions
        .iter()
        .map(|(t, p)| (Arc::from(t.as_str()), *p))
        .collect();
    let wanted = keep.clone();
    let collections = pool
        .run(move || -> Result<Vec<ShardCollection>, QueryError> {
            let now = now_ms();
            let mut out = Vec::with_capacity(targets.len());
            for ((c, filter), embedded) in targets.iter().zip(&filters).zip(&embedded) {
                let vector_query = query_vector(c, &req, &text, embedded.as_ref())?;
                let mut notes = Vec::new();
                let Retrieved { bm25, vector, mode } = retrieve(
                    c,
                    &req,
                    depth,
                    (&text, vector_query),
                    filter,
                    &mut notes,
                    stats.get(c.name()),
                )?;
                let render = |list: Vec<crate::engine::Candidate>| -> Vec<Candidate> {
                    list.into_iter()
                        .filter(|(d, _, _)| {
                            wanted.contains(&(Arc::clone(&d.stamp.topic), d.stamp.partition))
                        })
                        .map(|(d, chunk, score)| Candidate {
                            hit: render_hit(c, &d, chunk, score, &text, now),
                            event_time_ms: d.stamp.event_time_ms,
                            indexed_at_ms: d.stamp.indexed_at_ms,
                        })
                        .collect()
                };
                out.push(ShardCollection {
                    name: c.name().to_string(),
                    mode: mode_name(mode).to_string(),
                    notes,
                    bm25: render(bm25),
                    vector: render(vector),
                });
            }
            Ok(out)
        })
        .await??;
    // Partitions handed over since the asking node planned are left out, so it asks their
    // new owner (their documents may already be dropped here).
    let mut held: Vec<(Arc<str>, i32)> = keep
        .into_iter()
        .filter(|(t, p)| owns_here(local, t, *p))
        .collect();
    held.sort();
    Ok(ShardAnswer {
        collections,
        partitions: partition_states(local, held.into_iter()),
    })
}
