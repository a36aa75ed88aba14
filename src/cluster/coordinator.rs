//! A search over the whole cluster, answered by whichever node received it: pick one owner
//! per partition, sum the shards' BM25 statistics, collect every shard's candidate lists
//! scored with them, and fuse globally exactly as a single node fuses its own lists.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use crate::api::{
    ChangesResult, ClusterNode, ClusterPartition, ClusterView, CollectionsResult, DocumentResult,
    FreshnessResult, Hit, IdFreshness, SearchResult, UncoveredPartitions, Watermark,
};
use crate::config::CollectionConfig;
use crate::engine::{
    ChangesRequest, Consistency, Cursor, Mode, QueryError, RecencyField, Search, SearchRequest,
    check_ids, embed_query, fetch_depth, fuse, merge_collections, next_cursor, search_pool,
};
use crate::index::TermStats;
use crate::time::{now_ms, rfc3339_ms};

use super::wire::{
    Asker, Candidate, ChangesAnswer, ChangesQuery, DocumentsAnswer, DocumentsQuery, NodeState,
    ShardAnswer, ShardQuery, ShardSearch, ShardStats, parse_mode,
};
use super::{Cluster, PeerError, shard};

/// Which node answers for which partitions, and what no reachable node holds.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Node URL → the partitions it answers for.
    pub by_node: BTreeMap<String, Vec<(String, i32)>>,
    /// Partitions without a reachable owner.
    pub missing: Vec<(String, i32)>,
}

/// Every node's state by URL, or why it could not be read.
pub type States = Vec<(String, Result<NodeState, PeerError>)>;

/// How old the peers' states a search plans with may be. Reading every peer's state costs
/// each query one more round trip per peer; within this age a search reuses what an
/// earlier one read. A plan made on states this old can send a partition to a node that
/// lost it or died since: the shard says so (or fails), and the search reads the states
/// again and asks the new owner (`search`).
pub const STATE_MAX_AGE: Duration = Duration::from_millis(500);

/// Every node's state now: this node's directly, the others' over the internal API.
pub async fn gather_states(local: &Search, cluster: &Arc<Cluster>) -> States {
    let calls = cluster.peers().into_iter().map(|url| async move {
        if cluster.is_self(&url) {
            let state = shard::node_state(local, cluster);
            return (url, Ok(state));
        }
        let state = cluster
            .call::<NodeState>(&url, "/internal/cluster/state", None::<()>, Duration::ZERO)
            .await;
        if let Err(e) = &state {
            tracing::warn!("cluster: node {url} did not answer: {e}");
        }
        (url, state)
    });
    let states: States = join_all(calls).await;
    *cluster.recent_states.lock() = Some((std::time::Instant::now(), states.clone()));
    states
}

/// Every node's state, the peers' as read at most [`STATE_MAX_AGE`] ago (by this query or
/// an earlier one), this node's as it is now; `true` when the peers' came from that earlier
/// read. An unreachable peer is then also not tried again by every query.
pub async fn recent_states(local: &Search, cluster: &Arc<Cluster>) -> (States, bool) {
    let recent = cluster
        .recent_states
        .lock()
        .as_ref()
        .filter(|(at, _)| at.elapsed() <= STATE_MAX_AGE)
        .map(|(_, states)| states.clone());
    match recent {
        Some(mut states) => {
            for (url, state) in &mut states {
                if cluster.is_self(url) {
                    *state = Ok(shard::node_state(local, cluster));
                }
            }
            (states, true)
        }
        None => (gather_states(local, cluster).await, false),
    }
}

/// Picks one owner for every partition of `topics` (see [`plan_partitions`]).
pub fn plan(
    own: &NodeState,
    states: &[(String, Result<NodeState, PeerError>)],
    topics: &[String],
) -> Plan {
    let partitions = partitions_of(states, topics);
    plan_partitions(own, states, &partitions, |_, _| false)
}

/// Every partition of `topics`, by the largest partition count any reachable node read (a
/// new partition may be seen by one first).
fn partitions_of(
    states: &[(String, Result<NodeState, PeerError>)],
    topics: &[String],
) -> Vec<(String, i32)> {
    let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
    for s in states.iter().filter_map(|(_, s)| s.as_ref().ok()) {
        for (topic, n) in &s.partition_counts {
            let slot = counts.entry(topic.as_str()).or_default();
            *slot = (*slot).max(*n);
        }
        for p in &s.partitions {
            let slot = counts.entry(p.watermark.topic.as_str()).or_default();
            *slot = (*slot).max(p.watermark.partition + 1);
        }
    }
    topics
        .iter()
        .flat_map(|topic| {
            let n = counts.get(topic.as_str()).copied().unwrap_or(0);
            (0..n).map(move |partition| (topic.clone(), partition))
        })
        .collect()
}

/// Picks one owner for each of `partitions` among the reachable nodes, except where
/// `skip(url, partition)` says not to ask that node for that partition: a
/// caught-up owner before one that is behind (a node that just took a partition over is
/// still replaying it while another replica group has it whole); among those, this node,
/// then an owner of this node's replica group.
pub fn plan_partitions(
    own: &NodeState,
    states: &[(String, Result<NodeState, PeerError>)],
    partitions: &[(String, i32)],
    skip: impl Fn(&str, &(String, i32)) -> bool,
) -> Plan {
    let reachable: Vec<(&String, &NodeState)> = states
        .iter()
        .filter_map(|(url, s)| s.as_ref().ok().map(|s| (url, s)))
        .collect();
    let mut out = Plan::default();
    for key @ (topic, partition) in partitions {
        let owner = reachable
            .iter()
            .filter(|(url, _)| !skip(url, key))
            .filter_map(|(url, s)| {
                let held = s
                    .partitions
                    .iter()
                    .find(|p| p.watermark.topic == *topic && p.watermark.partition == *partition)?;
                let preference = (
                    held.caught_up,
                    s.node_id == own.node_id,
                    s.replica == own.replica,
                );
                Some((preference, *url))
            })
            // Highest preference; among equals the first URL, so choices are stable.
            .max_by(|(a, ua), (b, ub)| a.cmp(b).then(ub.cmp(ua)))
            .map(|(_, url)| url.clone());
        match owner {
            Some(url) => out.by_node.entry(url).or_default().push(key.clone()),
            None => out.missing.push(key.clone()),
        }
    }
    out
}

/// How many times a phase of a query is sent again for the partitions whose node failed
/// (or no longer owned them), each time to another owner: enough for a node stopping and
/// one more failing in the same query.
const FAILOVER_ROUNDS: usize = 3;

/// [`fan_out`] over every partition of `topics`, planned on the nodes' states read now
/// (lookups and the change feed do not reuse an earlier query's); returns those states too.
async fn fan_out_fresh<T, F, Fut>(
    local: &Search,
    cluster: &Arc<Cluster>,
    topics: &[String],
    call: F,
) -> Result<
    (
        States,
        Vec<(String, Vec<(String, i32)>, T)>,
        BTreeSet<(String, i32)>,
    ),
    QueryError,
>
where
    F: Fn(String, Vec<(String, i32)>) -> Fut,
    Fut: std::future::Future<Output = Result<(T, Vec<(String, i32)>), PeerError>>,
{
    let states = gather_states(local, cluster).await;
    let own = shard::node_state(local, cluster);
    let partitions = partitions_of(&states, topics);
    let (answers, missing) = fan_out(&own, &states, partitions, &mut BTreeSet::new(), call).await?;
    Ok((states, answers, missing))
}

/// What each node answered for which partitions, and the partitions nobody answered for.
type FannedOut<T> = (
    Vec<(String, Vec<(String, i32)>, T)>,
    BTreeSet<(String, i32)>,
);

/// Calls `call(url, partitions)` on one owner of each of `partitions`, all at once. A node
/// that fails is excluded for the rest of the query (`excluded`) and its partitions go to
/// another owner, as do partitions a node answered without owning them any more (the second
/// item of `call`'s answer); whatever has no owner left is returned as missing. A caller's
/// mistake (`PeerError::Invalid`) ends the query.
async fn fan_out<T, F, Fut>(
    own: &NodeState,
    states: &[(String, Result<NodeState, PeerError>)],
    partitions: Vec<(String, i32)>,
    excluded: &mut BTreeSet<String>,
    call: F,
) -> Result<FannedOut<T>, QueryError>
where
    F: Fn(String, Vec<(String, i32)>) -> Fut,
    Fut: std::future::Future<Output = Result<(T, Vec<(String, i32)>), PeerError>>,
{
    let mut done = Vec::new();
    let mut missing = BTreeSet::new();
    // (node, partition): the node said it no longer owns the partition.
    let mut disowned: BTreeSet<(String, (String, i32))> = BTreeSet::new();
    let mut pending = partitions;
    for _ in 0..FAILOVER_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let plan = plan_partitions(own, states, &pending, |url, key| {
            excluded.contains(url) || disowned.contains(&(url.to_string(), key.clone()))
        });
        missing.extend(plan.missing);
        let calls = plan.by_node.into_iter().map(|(url, partitions)| {
            let answer = call(url.clone(), partitions.clone());
            async move { (url, partitions, answer.await) }
        });
        pending = Vec::new();
        for (url, partitions, answer) in join_all(calls).await {
            match answer {
                Ok((value, not_owned)) => {
                    if !not_owned.is_empty() {
                        tracing::debug!(
                            "cluster: {url} no longer owns {}; asking another owner",
                            partition_names(&not_owned)
                        );
                    }
                    let served = partitions
                        .into_iter()
                        .filter(|p| !not_owned.contains(p))
                        .collect();
                    disowned.extend(not_owned.iter().map(|p| (url.clone(), p.clone())));
                    pending.extend(not_owned);
                    done.push((url, served, value));
                }
                Err(PeerError::Invalid(message)) => {
                    return Err(QueryError::InvalidArgument(message));
                }
                Err(e) => {
                    tracing::warn!("cluster: {url} failed: {e}; asking another owner");
                    excluded.insert(url);
                    pending.extend(partitions);
                }
            }
        }
    }
    missing.extend(pending);
    Ok((done, missing))
}

/// The `list_collections` tool on a cluster node: this node's collections, plus every
/// node's owned partitions (of the caller's collections) and what each replica group lacks.
pub async fn list_collections(
    local: &Search,
    cluster: &Arc<Cluster>,
    asker: &Asker,
) -> CollectionsResult {
    let mut result = local.list_collections(&asker.access);
    let topics: Vec<String> = result
        .collections
        .iter()
        .flat_map(|c| c.topics.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let states = gather_states(local, cluster).await;
    let own = shard::node_state(local, cluster);
    let nodes = states
        .iter()
        .map(|(url, state)| match state {
            Ok(s) => ClusterNode {
                url: url.clone(),
                reachable: true,
                error: None,
                node_id: Some(s.node_id.clone()),
                replica: Some(s.replica),
                partitions: s
                    .partitions
                    .iter()
                    // Only the caller's collections' topics: no peeking at others' topics.
                    .filter(|p| topics.contains(&p.watermark.topic))
                    .map(|p| ClusterPartition {
                        watermark: p.watermark.clone(),
                        caught_up: p.caught_up,
                    })
                    .collect(),
            },
            Err(e) => ClusterNode {
                url: url.clone(),
                reachable: false,
                error: Some(e.to_string()),
                node_id: None,
                replica: None,
                partitions: Vec::new(),
            },
        })
        .collect();
    let uncovered = (0..cluster.config().replicas)
        .map(|replica| {
            // What would be missing if the group answered alone: other groups' nodes own
            // nothing here, but still say how many partitions each topic has (a group whose
            // members are all down must list every partition, not none).
            let members: Vec<(String, Result<NodeState, PeerError>)> = states
                .iter()
                .filter_map(|(url, s)| {
                    let mut s = s.as_ref().ok()?.clone();
                    if s.replica != replica {
                        s.partitions.clear();
                    }
                    Some((url.clone(), Ok(s)))
                })
                .collect();
            UncoveredPartitions {
                replica,
                partitions: plan(&own, &members, &topics)
                    .missing
                    .into_iter()
                    .map(|(t, p)| format!("{t}/{p}"))
                    .collect(),
            }
        })
        .collect();
    result.cluster = Some(ClusterView {
        node_id: own.node_id,
        nodes,
        uncovered,
    });
    result
}

/// The `search` tool on a cluster node.
pub async fn search(
    local: &Arc<Search>,
    cluster: &Arc<Cluster>,
    req: SearchRequest,
    asker: &Asker,
) -> Result<SearchResult, QueryError> {
    // The caller's mistakes are reported before any node is asked.
    let (targets, _, offset) = local.validate_search(&req, &asker.access)?;
    let configs: Vec<CollectionConfig> = targets.iter().map(|c| c.config.clone()).collect();
    let topics: Vec<String> = configs.iter().flat_map(|c| c.topics.clone()).collect();
    let mut notes = Vec::new();
    let mut caught_up = true;
    let head_wait = match req.consistency {
        Consistency::Head => req.max_wait,
        Consistency::Any => Duration::ZERO,
    };

    let (mut states, cached) = recent_states(local, cluster).await;
    let own = shard::node_state(local, cluster);
    let mut excluded = BTreeSet::new();

    // Statistics phase.
    let stats_call = |url: String, partitions: Vec<(String, i32)>| {
        let q = ShardQuery::new(&req, offset, asker.wire(), partitions);
        async move {
            let here = |q: ShardQuery| async move { shard::stats(local, &q).await };
            let stats: ShardStats =
                ask(cluster, &url, "/internal/cluster/stats", q, head_wait, here).await?;
            Ok((stats, Vec::new()))
        }
    };
    let partitions = partitions_of(&states, &topics);
    // The query is embedded once, here, while the shards gather their statistics (each
    // shard would otherwise run the model itself).
    let text = req.query.trim().to_string();
    let embedding = async {
        embed_query(search_pool(local.config()), &targets, &req, &text)
            .await
            .into_iter()
            .zip(&targets)
            .filter_map(|(e, c)| Some((c.name().to_string(), e?)))
            .collect::<BTreeMap<_, _>>()
    };
    let (stats_phase, embedded) = tokio::join!(
        fan_out(&own, &states, partitions, &mut excluded, &stats_call),
        embedding
    );
    let (mut stats, mut missing) = stats_phase?;
    if cached && (!missing.is_empty() || !excluded.is_empty()) {
        // Planned on states read by an earlier query: something moved or went away since.
        // Read them now and ask again for what no node answered.
        states = gather_states(local, cluster).await;
        let retry: Vec<(String, i32)> = missing.into_iter().collect();
        let (more, still) = fan_out(&own, &states, retry, &mut excluded, &stats_call).await?;
        stats.extend(more);
        missing = still;
    }
    let mut summed: BTreeMap<String, TermStats> = BTreeMap::new();
    let mut counted = Vec::new();
    for (url, partitions, stats) in stats {
        if let Some(why) = stats.head_missed {
            caught_up = false;
            notes.push(format!(
                "consistency \"head\" on {url}: {why}: answering from its view as it is"
            ));
        }
        for (name, s) in stats.collections {
            summed.entry(name).or_default().add(&s);
        }
        counted.extend(partitions);
    }

    // Search phase, every shard with the same statistics; a node that fails now is replaced
    // by another owner of its partitions, scoring with the statistics already summed.
    let search_call = |url: String, partitions: Vec<(String, i32)>| {
        let body = ShardSearch {
            query: ShardQuery::new(&req, offset, asker.wire(), partitions.clone()),
            stats: summed.clone(),
            embedded: embedded.clone(),
        };
        async move {
            let here = |body| shard::search(local, body);
            let answer: ShardAnswer = ask(
                cluster,
                &url,
                "/internal/cluster/search",
                body,
                Duration::ZERO,
                here,
            )
            .await?;
            let not_owned = not_answered_for(&partitions, &answer.partitions);
            Ok((answer, not_owned))
        }
    };
    let (mut answers, mut lost) =
        fan_out(&own, &states, counted, &mut excluded, &search_call).await?;
    if cached && !lost.is_empty() {
        // As above: the states may be older than a handoff that happened meanwhile.
        states = gather_states(local, cluster).await;
        let retry: Vec<(String, i32)> = lost.into_iter().collect();
        let (more, still) = fan_out(&own, &states, retry, &mut excluded, &search_call).await?;
        answers.extend(more);
        lost = still;
    }
    missing.extend(lost);
    let answers: Vec<ShardAnswer> = answers.into_iter().map(|(_, _, a)| a).collect();

    let partitions: Vec<ClusterPartition> = answers
        .iter()
        .flat_map(|a| a.partitions.iter().cloned())
        .collect();
    let missing: Vec<(String, i32)> = missing.into_iter().collect();
    if !missing.is_empty() {
        notes.push(format!(
            "no reachable node holds partition(s) {}: their documents are missing from this answer",
            partition_names(&missing)
        ));
    }
    let mut freshness = cluster_watermark(partitions, &missing);
    freshness.caught_up &= caught_up;

    let (results, modes, next) = fuse_answers(&req, &configs, answers, offset, &mut notes)?;
    let mode = match modes.len() {
        1 => modes.into_iter().next().unwrap_or_default(),
        0 => super::wire::mode_name(req.mode).to_string(),
        _ => "mixed".to_string(),
    };
    Ok(SearchResult {
        results,
        mode,
        notes,
        next,
        freshness,
    })
}

/// The documents with these ids, wherever in the cluster they are, with the watermark of
/// every partition of the collection and the partitions no reachable node holds.
async fn lookup(
    local: &Arc<Search>,
    cluster: &Arc<Cluster>,
    collection: &str,
    ids: &[String],
    version: Option<(Option<i32>, i64)>,
    asker: &Asker,
) -> Result<(Vec<DocumentResult>, Watermark, Vec<(String, i32)>), QueryError> {
    let topics = local
        .resolve(collection, &asker.access)?
        .config
        .topics
        .clone();
    let (states, answers, missing) = fan_out_fresh(local, cluster, &topics, |url, partitions| {
        let q = DocumentsQuery {
            collection: collection.to_string(),
            ids: ids.to_vec(),
            version,
            access: asker.wire(),
            partitions,
        };
        async move {
            let here = |q: DocumentsQuery| async move { shard::documents(local, &q) };
            let path = "/internal/cluster/documents";
            let answer: DocumentsAnswer = ask(cluster, &url, path, q, Duration::ZERO, here).await?;
            Ok((answer, Vec::new()))
        }
    })
    .await?;
    let mut documents = Vec::new();
    let mut answered: Vec<ClusterPartition> = Vec::new();
    for (url, partitions, answer) in answers {
        documents.extend(answer.documents);
        let state = states
            .iter()
            .find(|(u, _)| *u == url)
            .and_then(|(_, s)| s.as_ref().ok());
        answered.extend(partitions.iter().filter_map(|(t, p)| {
            state?
                .partitions
                .iter()
                .find(|o| o.watermark.topic == *t && o.watermark.partition == *p)
                .cloned()
        }));
    }
    let missing: Vec<(String, i32)> = missing.into_iter().collect();
    let watermark = cluster_watermark(answered, &missing);
    Ok((documents, watermark, missing))
}

/// The partitions of `asked` a shard's answer holds no state for: it no longer owns them.
fn not_answered_for(asked: &[(String, i32)], answered: &[ClusterPartition]) -> Vec<(String, i32)> {
    asked
        .iter()
        .filter(|(t, p)| {
            !answered
                .iter()
                .any(|a| a.watermark.topic == *t && a.watermark.partition == *p)
        })
        .cloned()
        .collect()
}

/// One watermark over answered and missing partitions: caught up only when every partition
/// answered and is caught up.
fn cluster_watermark(
    mut partitions: Vec<ClusterPartition>,
    missing: &[(String, i32)],
) -> Watermark {
    partitions.extend(
        missing
            .iter()
            .map(|(topic, partition)| ClusterPartition::unknown(topic, *partition)),
    );
    partitions.sort_by(|a, b| {
        (&a.watermark.topic, a.watermark.partition)
            .cmp(&(&b.watermark.topic, b.watermark.partition))
    });
    Watermark {
        as_of: rfc3339_ms(now_ms()),
        caught_up: !partitions.is_empty() && partitions.iter().all(|p| p.caught_up),
        partitions: partitions.into_iter().map(|p| p.watermark).collect(),
        generations: Vec::new(),
    }
}

fn partition_names(partitions: &[(String, i32)]) -> String {
    partitions
        .iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `get_document` tool on a cluster node: the document from whichever node owns its
/// partition.
pub async fn get_document(
    local: &Arc<Search>,
    cluster: &Arc<Cluster>,
    collection: &str,
    id: &str,
    version: Option<(Option<i32>, i64)>,
    asker: &Asker,
) -> Result<DocumentResult, QueryError> {
    let ids = [id.to_string()];
    let (documents, watermark, missing) =
        lookup(local, cluster, collection, &ids, version, asker).await?;
    match documents.into_iter().next() {
        Some(mut found) => {
            found.freshness = watermark;
            Ok(found)
        }
        None if missing.is_empty() => Err(QueryError::NotFound {
            collection: collection.to_string(),
            id: id.to_string(),
        }),
        None => Err(QueryError::Unavailable(format!(
            "document `{id}` is not in the reachable part of collection `{collection}`; no \
             reachable node holds partition(s) {}, so it may be there: try again shortly",
            partition_names(&missing)
        ))),
    }
}

/// The `document_freshness` tool on a cluster node. An id not found while some partition
/// has no reachable owner is `unavailable`, not `not_found`.
pub async fn document_freshness(
    local: &Arc<Search>,
    cluster: &Arc<Cluster>,
    collection: &str,
    ids: &[String],
    asker: &Asker,
) -> Result<FreshnessResult, QueryError> {
    check_ids(ids)?;
    let (documents, watermark, missing) =
        lookup(local, cluster, collection, ids, None, asker).await?;
    let mut found: HashMap<String, DocumentResult> = documents
        .into_iter()
        .map(|d| (d.document.id.clone(), d))
        .collect();
    let absent = if missing.is_empty() {
        "not_found"
    } else {
        "unavailable"
    };
    let documents = ids
        .iter()
        .map(|id| match found.remove(id) {
            Some(d) => IdFreshness {
                id: id.clone(),
                status: "found".into(),
                freshness: Some(d.document.freshness),
            },
            None => IdFreshness {
                id: id.clone(),
                status: absent.into(),
                freshness: None,
            },
        })
        .collect();
    Ok(FreshnessResult {
        documents,
        freshness: watermark,
    })
}

/// The `changes` tool on a cluster node: every partition's changes from one owner, merged in
/// the order they became searchable, cut at `limit`, with one cursor whose position per
/// partition is exactly what this answer covered (the shards' cursors where their whole page
/// made it in, just before the first change left out otherwise).
pub async fn changes(
    local: &Arc<Search>,
    cluster: &Arc<Cluster>,
    req: ChangesRequest,
    asker: &Asker,
) -> Result<ChangesResult, QueryError> {
    // The caller's mistakes (limit, collection, filter, cursor) are reported by this node:
    // the same checks over no partition.
    let checked = local.changes_in(req.clone(), &asker.access, Some(&HashSet::new()))?;
    let collection = checked.collection;
    let topics = local
        .resolve(&collection, &asker.access)?
        .config
        .topics
        .clone();
    let mut next = match req.since.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() && chrono::DateTime::parse_from_rfc3339(text).is_err() => {
            Cursor::decode(text, &collection)
                .map_err(|e| QueryError::InvalidArgument(e.to_string()))?
        }
        _ => Cursor::default(),
    };
    let (_, answers, missing) = fan_out_fresh(local, cluster, &topics, |url, partitions| {
        let q = ChangesQuery {
            collection: collection.clone(),
            since: req.since.clone(),
            limit: req.limit,
            filter: req.filter.clone(),
            include_text: req.include_text,
            access: asker.wire(),
            partitions: partitions.clone(),
        };
        async move {
            let here = |q: ChangesQuery| async move { shard::changes(local, &q) };
            let path = "/internal/cluster/changes";
            let answer: ChangesAnswer = ask(cluster, &url, path, q, Duration::ZERO, here).await?;
            let not_owned = not_answered_for(&partitions, &answer.partitions);
            Ok((answer, not_owned))
        }
    })
    .await?;

    let mut merged: Vec<(usize, crate::api::ChangeOut)> = answers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, a))| a.page.changes.iter().cloned().map(move |c| (i, c)))
        .collect();
    // Stable: within a partition (one shard) apply order is kept.
    merged.sort_by(|(_, a), (_, b)| a.freshness.indexed_at.cmp(&b.freshness.indexed_at));
    let cut = merged.len() > req.limit;
    let left_out = merged.split_off(req.limit.min(merged.len()));
    let mut first_left_out: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (_, c) in &left_out {
        let key = (c.freshness.topic.clone(), c.freshness.partition);
        let slot = first_left_out.entry(key).or_insert(c.freshness.offset);
        *slot = (*slot).min(c.freshness.offset);
    }
    let mut partitions = Vec::new();
    let (mut more, mut truncated, mut kept_since) = (cut, false, String::new());
    for (_, served, answer) in &answers {
        let shard_next =
            Cursor::decode(&answer.page.next, &collection).map_err(|_| QueryError::Internal)?;
        next.adopt_topic_ids(&shard_next);
        for (topic, partition) in served {
            match first_left_out.get(&(topic.clone(), *partition)) {
                Some(offset) => next.advance_to(topic, *partition, offset - 1),
                None => {
                    if let Some(seen) = shard_next.position(topic, *partition) {
                        next.advance_to(topic, *partition, seen);
                    }
                }
            }
        }
        more |= answer.page.more;
        truncated |= answer.page.truncated;
        // The latest of the shards' limits is what the whole answer guarantees.
        kept_since = kept_since.max(answer.page.kept_since.clone());
        partitions.extend(answer.partitions.iter().cloned());
    }
    let missing: Vec<(String, i32)> = missing.into_iter().collect();
    let mut notes = Vec::new();
    if truncated {
        notes.push(format!(
            "truncated: the history keeps the changes since {kept_since} (changes.max_entries \
             / max_age_ms, and what each node applied since it started or took the partition \
             over); older ones may be missing: use search or get_document for the current state"
        ));
    }
    if more {
        notes.push("more changes follow: call again with since = next".to_string());
    }
    if !missing.is_empty() {
        notes.push(format!(
            "no reachable node holds partition(s) {}: their changes are missing from this \
             answer, and `next` stays where it was for them",
            partition_names(&missing)
        ));
    }
    Ok(ChangesResult {
        changes: merged.into_iter().map(|(_, c)| c).collect(),
        next: next.encode(&collection),
        more,
        truncated,
        kept_since: if kept_since.is_empty() {
            checked.kept_since
        } else {
            kept_since
        },
        notes,
        freshness: cluster_watermark(partitions, &missing),
        collection,
    })
}

/// One shard call: answered in-process by `here` when `url` is this node, else by the peer
/// over the internal API at `path` (bounded by `cluster.request_timeout_ms` plus `extra`).
async fn ask<B, T, F, Fut>(
    cluster: &Arc<Cluster>,
    url: &str,
    path: &'static str,
    body: B,
    extra: Duration,
    here: F,
) -> Result<T, PeerError>
where
    B: serde::Serialize + Send + 'static,
    T: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(B) -> Fut,
    Fut: std::future::Future<Output = Result<T, QueryError>>,
{
    if cluster.is_self(url) {
        here(body).await.map_err(local_error)
    } else {
        cluster.call::<T>(url, path, Some(body), extra).await
    }
}

fn local_error(e: QueryError) -> PeerError {
    match e {
        QueryError::Internal => PeerError::Unreachable {
            url: "this node".into(),
            reason: e.to_string(),
        },
        other => PeerError::Invalid(other.to_string()),
    }
}

/// Hits of the page, the modes used, and the next page's cursor.
type Fused = (Vec<Hit>, BTreeSet<String>, Option<String>);

/// Merges the shards' lists per collection and retriever, fuses them as a single node does,
/// then merges collections and cuts the page.
pub fn fuse_answers(
    req: &SearchRequest,
    configs: &[CollectionConfig],
    answers: Vec<ShardAnswer>,
    offset: usize,
    notes: &mut Vec<String>,
) -> Result<Fused, QueryError> {
    let depth = offset + req.k;
    let fetch = fetch_depth(req.mode, depth);
    let mut per_collection: HashMap<String, Gathered> = HashMap::new();
    for answer in answers {
        for c in answer.collections {
            let slot = per_collection.entry(c.name).or_default();
            slot.mode.get_or_insert(c.mode);
            slot.bm25.extend(c.bm25);
            slot.vector.extend(c.vector);
            for note in c.notes {
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    let mut modes = BTreeSet::new();
    let mut lists: Vec<Vec<Candidate>> = Vec::new();
    // In the order a single node searches them: config order.
    for config in configs {
        let Some(Gathered { mode, bm25, vector }) = per_collection.remove(&config.name) else {
            continue;
        };
        let mode_name = mode.unwrap_or_else(|| super::wire::mode_name(req.mode).to_string());
        let mode = parse_mode(&mode_name).map_err(QueryError::InvalidArgument)?;
        modes.insert(mode_name);
        let (bm25, vector) = (best_first(bm25, fetch), best_first(vector, fetch));
        let mut ranked = match mode {
            Mode::Bm25 => bm25,
            Mode::Vector => vector,
            Mode::Hybrid => {
                let scored = |list: &[Candidate]| -> Vec<(String, f32)> {
                    list.iter()
                        .map(|c| (c.hit.id.clone(), c.hit.score))
                        .collect()
                };
                let fused = fuse(config, &scored(&bm25), &scored(&vector));
                // The passage shown is the best BM25 chunk when there is one.
                let mut best: HashMap<String, Candidate> = HashMap::new();
                for c in vector.into_iter().chain(bm25) {
                    best.insert(c.hit.id.clone(), c);
                }
                fused
                    .into_iter()
                    .filter_map(|(id, score)| {
                        best.remove(&id).map(|mut c| {
                            c.hit.score = score;
                            c
                        })
                    })
                    .collect()
            }
        };
        if let Some(recency) = &req.recency {
            recency.rerank(
                &mut ranked,
                |c| c.hit.score,
                |c| match recency.field {
                    RecencyField::EventTime => c.event_time_ms,
                    RecencyField::IndexedAt => c.indexed_at_ms,
                },
                |c, score| c.hit.score = score,
                now_ms(),
            );
        }
        lists.push(ranked);
    }
    let mut ranked = merge_collections(
        lists,
        depth + 1,
        |c| c.hit.score,
        |c, score| c.hit.score = score,
    );
    let next = next_cursor(req, depth, ranked.len() > depth);
    ranked.truncate(depth);
    let results = ranked.into_iter().skip(offset).map(|c| c.hit).collect();
    Ok((results, modes, next))
}

/// One collection's candidates from every shard.
#[derive(Default)]
struct Gathered {
    /// The mode the first shard used.
    mode: Option<String>,
    bm25: Vec<Candidate>,
    vector: Vec<Candidate>,
}

/// One list from several shards' lists: best score first (ties by id, so every node
/// orders alike), one entry per document, at most `limit`.
fn best_first(mut list: Vec<Candidate>, limit: usize) -> Vec<Candidate> {
    list.sort_by(|a, b| {
        b.hit
            .score
            .total_cmp(&a.hit.score)
            .then_with(|| a.hit.id.cmp(&b.hit.id))
    });
    let mut seen = std::collections::HashSet::new();
    list.retain(|c| seen.insert(c.hit.id.clone()));
    list.truncate(limit);
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PartitionWatermark, StampOut};
    use crate::cluster::wire::ShardCollection;

    fn owned(partition: i32, caught_up: bool) -> ClusterPartition {
        ClusterPartition {
            watermark: PartitionWatermark {
                topic: "t".into(),
                partition,
                applied_offset: Some(9),
                high_watermark: Some(10),
                lag: Some(if caught_up { 0 } else { 5 }),
                rereading: None,
            },
            caught_up,
        }
    }

    fn node(id: &str, replica: u32, partitions: Vec<ClusterPartition>) -> NodeState {
        NodeState {
            node_id: id.into(),
            url: id.into(),
            replica,
            assigned: true,
            partitions,
            partition_counts: [("t".to_string(), 5)].into(),
        }
    }

    fn unreachable(url: &str) -> Result<NodeState, PeerError> {
        Err(PeerError::Unreachable {
            url: url.into(),
            reason: "refused".into(),
        })
    }

    fn t(partitions: &[i32]) -> Vec<(String, i32)> {
        partitions.iter().map(|p| ("t".to_string(), *p)).collect()
    }

    #[test]
    fn the_plan_covers_each_partition_once_preferring_caught_up_then_self() {
        let me = node("a", 0, vec![owned(0, false), owned(1, true)]);
        let states = vec![
            ("a".to_string(), Ok(me.clone())),
            // Replica group 1 holds everything; only some of it caught up.
            (
                "b".to_string(),
                Ok(node(
                    "b",
                    1,
                    vec![owned(0, true), owned(1, true), owned(2, false)],
                )),
            ),
            ("c".to_string(), Ok(node("c", 0, vec![owned(2, true)]))),
            ("d".to_string(), unreachable("d")),
        ];
        let plan = plan(&me, &states, &["t".to_string()]);
        let expected: BTreeMap<String, Vec<(String, i32)>> = [
            // 0: this node is still replaying it; b has it whole.
            ("b".to_string(), t(&[0])),
            // 1: both caught up; this node answers itself.
            ("a".to_string(), t(&[1])),
            ("c".to_string(), t(&[2])),
        ]
        .into();
        assert_eq!(plan.by_node, expected);
        // 3 and 4 have no reachable owner (d is down), and say so.
        assert_eq!(plan.missing, t(&[3, 4]));
    }

    #[tokio::test]
    async fn a_failing_node_or_a_moved_partition_goes_to_another_owner() {
        let me = node("a", 0, vec![owned(0, true)]);
        let states = vec![
            ("a".to_string(), Ok(me.clone())),
            (
                "b".to_string(),
                Ok(node("b", 0, vec![owned(1, true), owned(2, true)])),
            ),
            (
                "c".to_string(),
                Ok(node("c", 1, (0..4).map(|p| owned(p, false)).collect())),
            ),
        ];
        let mut excluded = BTreeSet::new();
        let (done, missing) = fan_out(&me, &states, t(&[0, 1, 2, 3]), &mut excluded, |url, ps| {
            async move {
                match url.as_str() {
                    // b went down between the plan and the call.
                    "b" => Err(PeerError::Unreachable {
                        url,
                        reason: "connection refused".into(),
                    }),
                    // a handed partition 0 over meanwhile.
                    "a" => Ok(((), ps.into_iter().filter(|(_, p)| *p == 0).collect())),
                    _ => Ok(((), Vec::new())),
                }
            }
        })
        .await
        .expect("no caller mistake");
        // c answers in two rounds: 3 at once, then what a and b could not.
        let mut served: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        for (url, ps, ()) in done {
            served.entry(url).or_default().extend(ps);
        }
        served.values_mut().for_each(|ps| ps.sort());
        let expected: BTreeMap<String, Vec<(String, i32)>> = [
            ("a".to_string(), Vec::new()),
            ("c".to_string(), t(&[0, 1, 2, 3])),
        ]
        .into();
        assert_eq!(served, expected);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(excluded, BTreeSet::from(["b".to_string()]));

        // With every owner of a partition gone, it is reported missing, not dropped.
        let (_, missing) = fan_out(
            &me,
            &states,
            t(&[1]),
            &mut BTreeSet::new(),
            |url, _| async move {
                Err::<((), Vec<(String, i32)>), _>(PeerError::Unreachable {
                    url,
                    reason: "timeout".into(),
                })
            },
        )
        .await
        .expect("no caller mistake");
        assert_eq!(missing, BTreeSet::from([("t".to_string(), 1)]));
    }

    fn candidate(id: &str, score: f32) -> Candidate {
        Candidate {
            hit: Hit {
                id: id.into(),
                collection: "docs".into(),
                score,
                title: None,
                snippet: String::new(),
                metadata: Default::default(),
                freshness: StampOut {
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                    event_time: String::new(),
                    ingested_at: String::new(),
                    indexed_at: String::new(),
                    age_ms: 0,
                    index_delay_ms: 0,
                },
            },
            event_time_ms: 0,
            indexed_at_ms: 0,
        }
    }

    fn answer(bm25: Vec<Candidate>) -> ShardAnswer {
        ShardAnswer {
            collections: vec![ShardCollection {
                name: "docs".into(),
                mode: "bm25".into(),
                notes: vec!["a note".into()],
                bm25,
                vector: Vec::new(),
            }],
            partitions: Vec::new(),
        }
    }

    #[test]
    fn shards_lists_merge_by_score_and_page_like_one_list() {
        let config: crate::config::Config = crate::config::Config::from_toml_with_env(
            "[[collections]]\nname = \"docs\"\ntopics = [\"t\"]\n",
            std::path::Path::new("t.toml"),
            Vec::new(),
        )
        .expect("valid");
        let req = SearchRequest {
            query: "q".into(),
            collection: Some("docs".into()),
            k: 2,
            mode: Mode::Bm25,
            filter: None,
            vector: None,
            consistency: Consistency::Any,
            max_wait: Duration::ZERO,
            recency: None,
            cursor: None,
        };
        let answers = vec![
            answer(vec![candidate("a", 3.0), candidate("c", 1.0)]),
            answer(vec![candidate("b", 2.0), candidate("d", 0.5)]),
        ];
        let mut notes = Vec::new();
        let (hits, modes, next) =
            fuse_answers(&req, &config.collections, answers, 0, &mut notes).expect("fused");
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(hits[1].score, 2.0);
        assert!(next.is_some(), "two more results follow");
        assert_eq!(modes.into_iter().collect::<Vec<_>>(), ["bm25"]);
        assert_eq!(notes, ["a note"], "a note repeated by shards is said once");
    }
}
