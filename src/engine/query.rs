//! Read-only queries: hybrid search, document lookups, freshness, and the collection list.
//! Each answer carries the watermark of the collections it read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::{
    CollectionInfo, CollectionsResult, DocOut, DocumentResult, FreshnessResult, Hit, IdFreshness,
    SearchResult, StampOut, VectorRecallInfo,
};
use crate::auth::{Access, TenantScope};
use crate::config::Fusion;
use crate::config::Provider;
use crate::index::{
    Filter, SCORE_FUSION_DEPTH, SeqPredicate, best_chunk_per_doc, rrf, score_fusion,
};
use crate::time::{now_ms, rfc3339_ms};
use crate::view::StoredDoc;

use super::ranking::{self, Recency, RecencyField};
use super::{Collection, Search, topics_of};

/// Reciprocal-rank-fusion constant (the usual 60).
const RRF_K: f32 = 60.0;

/// Retrieval mode of a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// BM25 and vectors fused by reciprocal rank.
    Hybrid,
    /// BM25 only.
    Bm25,
    /// Vectors only.
    Vector,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Bm25 => "bm25",
            Mode::Vector => "vector",
        }
    }
}

/// Read consistency of a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Answer from the view as it is.
    Any,
    /// First wait until everything written before the call is applied (bounded).
    Head,
}

/// A validated `search` call.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    /// Query text (may be empty for a pure vector search).
    pub query: String,
    /// Collection to search; `None` searches every collection the caller may read.
    pub collection: Option<String>,
    /// Number of results.
    pub k: usize,
    /// Retrieval mode.
    pub mode: Mode,
    /// Metadata filter.
    pub filter: Option<Map<String, Value>>,
    /// Query vector for collections with precomputed vectors.
    pub vector: Option<Vec<f32>>,
    /// Read consistency.
    pub consistency: Consistency,
    /// Bound on the `head` wait.
    pub max_wait: Duration,
    /// A time decay blended into the ranking.
    pub recency: Option<Recency>,
    /// The `next` of a previous page of this same search.
    pub cursor: Option<String>,
}

/// Why a query could not be answered. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such collection (or not readable by this caller).
    #[error("unknown collection `{name}`; available: {available}")]
    UnknownCollection {
        /// The name asked for.
        name: String,
        /// The names the caller may use.
        available: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
    /// No document with that id.
    #[error("document `{id}` not found in collection `{collection}`")]
    NotFound {
        /// Collection searched.
        collection: String,
        /// Id asked for.
        id: String,
    },
    /// Part of the data needed is on cluster nodes that cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside; details are in the server log.
    #[error("internal error while answering; see the server log")]
    Internal,
}

/// One collection's ranked documents before rendering.
struct Ranked {
    collection: Arc<Collection>,
    doc: Arc<StoredDoc>,
    chunk_no: u32,
    score: f32,
}

impl Search {
    fn readable(&self, access: &Access) -> Vec<Arc<Collection>> {
        self.catalog
            .collections()
            .into_iter()
            .filter(|c| access.may_read(c.name()))
            .collect()
    }

    pub(crate) fn resolve(
        &self,
        name: &str,
        access: &Access,
    ) -> Result<Arc<Collection>, QueryError> {
        self.catalog
            .collection(name)
            .filter(|c| access.may_read(c.name()))
            .ok_or_else(|| QueryError::UnknownCollection {
                name: name.to_string(),
                available: self
                    .readable(access)
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The `search` tool.
    pub async fn search(
        &self,
        req: SearchRequest,
        access: &Access,
    ) -> Result<SearchResult, QueryError> {
        let (targets, filters, offset) = self.validate_search(&req, access)?;
        let query = req.query.trim();
        let refs: Vec<&Collection> = targets.iter().map(|c| c.as_ref()).collect();
        let mut notes: Vec<String> = refs
            .iter()
            .filter_map(|c| c.frozen().map(|f| f.note(c.generation())))
            .collect();
        let mut head_missed = false;
        // A frozen generation cannot reach the head: it is not updated until the swap.
        let live: Vec<&Collection> = refs
            .iter()
            .copied()
            .filter(|c| c.frozen().is_none())
            .collect();
        if req.consistency == Consistency::Head && live.len() < refs.len() {
            head_missed = true;
            notes.push(
                "consistency \"head\" is not possible on a collection being rebuilt: answering from the generation that serves"
                    .into(),
            );
        }
        if req.consistency == Consistency::Head
            && !live.is_empty()
            && let Err(why) = self
                .freshness
                .wait_for_head(&topics_of(&live), req.max_wait)
                .await
        {
            head_missed = true;
            notes.push(format!(
                "consistency \"head\" {why}: answering from the view as it is"
            ));
        }

        let pool = search_pool(self.config());
        let embedded = embed_query(pool, &targets, &req, query).await;
        let job = RankJob {
            targets: targets.clone(),
            filters,
            embedded,
            query: query.to_string(),
            req: req.clone(),
            notes,
            offset,
        };
        let (results, modes_used, notes, next) =
            search_pool(self.config()).run(move || job.run()).await??;
        let mode = if modes_used.len() == 1 {
            modes_used.into_iter().next().unwrap_or(req.mode).name()
        } else {
            "mixed"
        };
        let mut freshness = self.watermark(&refs);
        freshness.caught_up &= !head_missed;
        Ok(SearchResult {
            results,
            mode: mode.to_string(),
            notes,
            next,
            freshness,
        })
    }

    /// Checks a search before anything runs: bounds, collections, the query, filters (with
    /// the caller's tenant clause). Returns the collections searched, one filter each, and
    /// the page's offset.
    pub(crate) fn validate_search(
        &self,
        req: &SearchRequest,
        access: &Access,
    ) -> Result<Validated, QueryError> {
        let max_bytes = self.config().server.max_query_bytes;
        if req.query.len() > max_bytes {
            self.metrics().count_limit_hit("server.max_query_bytes");
            return Err(QueryError::InvalidArgument(format!(
                "query is {} bytes, more than the limit of {max_bytes} (server.max_query_bytes): \
                 shorten it to the words that matter",
                req.query.len()
            )));
        }
        if req.k == 0 || req.k > 100 {
            return Err(QueryError::InvalidArgument(format!(
                "k must be between 1 and 100, got {}",
                req.k
            )));
        }
        let offset = ranking::page_offset(req)?;
        let targets: Vec<Arc<Collection>> = match &req.collection {
            Some(name) => vec![self.resolve(name, access)?],
            None => self.readable(access),
        };
        if targets.is_empty() {
            return Err(QueryError::InvalidArgument(
                "no collection is readable with these credentials".into(),
            ));
        }
        let query = req.query.trim();
        if query.is_empty() && req.vector.is_none() {
            return Err(QueryError::InvalidArgument(
                "query is empty: pass query text (or a `vector` with mode \"vector\")".into(),
            ));
        }
        self.check_query_bounds(query, &targets)?;
        check_filter_size(req.filter.as_ref())?;
        // Validate filters against every target before waiting on anything.
        let mut filters = Vec::with_capacity(targets.len());
        for c in &targets {
            filters.push(build_filter(c, req.filter.as_ref(), access)?);
        }
        Ok((targets, filters, offset))
    }

    /// Refuses a query with more distinct terms than `server.max_query_terms` in any of
    /// the collections it searches (analysis is linear, and the text is already bounded).
    fn check_query_bounds(
        &self,
        query: &str,
        targets: &[Arc<Collection>],
    ) -> Result<(), QueryError> {
        let max_terms = self.config().server.max_query_terms;
        for c in targets {
            let terms = c.text.analyze(query).len();
            if terms > max_terms {
                self.metrics().count_limit_hit("server.max_query_terms");
                return Err(QueryError::InvalidArgument(format!(
                    "query has {terms} distinct terms, more than the limit of {max_terms} \
                     (server.max_query_terms): shorten it to the words that matter"
                )));
            }
        }
        Ok(())
    }
}

/// A checked search: the collections searched, one filter each, and the page's offset.
pub(crate) type Validated = (Vec<Arc<Collection>>, Vec<Filter>, usize);

/// Refuses an id list `document_freshness` cannot take (empty, or more than 1000 ids).
pub(crate) fn check_ids(ids: &[String]) -> Result<(), QueryError> {
    if ids.is_empty() || ids.len() > 1000 {
        return Err(QueryError::InvalidArgument(format!(
            "ids must hold 1 to 1000 ids, got {}",
            ids.len()
        )));
    }
    Ok(())
}

/// Most values a `filter` may list across its fields.
pub const MAX_FILTER_VALUES: usize = 1024;

fn check_filter_size(filter: Option<&Map<String, Value>>) -> Result<(), QueryError> {
    fn count(value: &Value) -> usize {
        match value {
            Value::Array(items) => items.iter().map(count).sum::<usize>().max(1),
            Value::Object(ops) => ops.values().map(count).sum::<usize>().max(1),
            _ => 1,
        }
    }
    let values: usize = filter.into_iter().flat_map(|f| f.values()).map(count).sum();
    if values > MAX_FILTER_VALUES {
        return Err(QueryError::InvalidArgument(format!(
            "filter lists {values} values, more than the limit of {MAX_FILTER_VALUES}"
        )));
    }
    Ok(())
}

/// Bounds the CPU-heavy part of searches (query embedding, BM25, vector search, snippets):
/// it runs on tokio's blocking threads, never on the async workers that answer `/healthz`
/// and accept connections, and at most `server.search_pool_size()` jobs run at once; later
/// ones wait (asynchronously, inside their tool-call deadline) for a permit. A job whose
/// caller gave up still finishes and holds its permit until then, so abandoned work
/// cannot pile up past the bound.
pub(crate) struct SearchPool {
    permits: Arc<tokio::sync::Semaphore>,
}

/// One pool per process, sized from the first engine's config (a process serves one).
static SEARCH_POOL: std::sync::OnceLock<SearchPool> = std::sync::OnceLock::new();

pub(crate) fn search_pool(config: &crate::config::Config) -> &'static SearchPool {
    SEARCH_POOL.get_or_init(|| SearchPool {
        permits: Arc::new(tokio::sync::Semaphore::new(
            config.server.search_pool_size(),
        )),
    })
}

impl SearchPool {
    /// Runs `job` on a blocking thread once a permit is free.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, QueryError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| QueryError::Internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| {
            tracing::error!("a search job failed: {e}");
            QueryError::Internal
        })
    }
}

/// What the search pool needs to rank and render one search, owned so it can move there.
struct RankJob {
    targets: Vec<Arc<Collection>>,
    filters: Vec<Filter>,
    embedded: Vec<Option<Result<Vec<f32>, String>>>,
    query: String,
    req: SearchRequest,
    notes: Vec<String>,
    /// Results already returned on earlier pages.
    offset: usize,
}

/// Hits, modes used, notes, and the next page's cursor.
type Ranked3 = (Vec<Hit>, HashSet<Mode>, Vec<String>, Option<String>);

impl RankJob {
    /// Ranks every target, merges and renders the hits; also returns the modes used and
    /// the notes.
    fn run(mut self) -> Result<Ranked3, QueryError> {
        let (req, query) = (&self.req, self.query.as_str());
        let mut per_collection: Vec<Vec<Ranked>> = Vec::new();
        let mut modes_used = HashSet::new();
        let depth = self.offset + req.k;
        for ((c, filter), embedded) in self.targets.iter().zip(&self.filters).zip(&self.embedded) {
            let vector_query = query_vector(c, req, query, embedded.as_ref())?;
            let (ranked, mode) =
                search_collection(c, req, depth, query, vector_query, filter, &mut self.notes)?;
            modes_used.insert(mode);
            per_collection.push(ranked);
        }
        // One more than the page needs: whether it exists decides if there is a next page.
        let mut ranked =
            merge_collections(per_collection, depth + 1, |r| r.score, |r, s| r.score = s);
        let next = ranking::next_cursor(req, depth, ranked.len() > depth);
        ranked.truncate(depth);
        let now = now_ms();
        let results = ranked
            .into_iter()
            .skip(self.offset)
            .map(|r| render_hit(&r.collection, &r.doc, r.chunk_no, r.score, query, now))
            .collect();
        Ok((results, modes_used, self.notes, next))
    }
}

/// A document as a hit: its best chunk's snippet for `query`, its metadata and stamp.
pub(crate) fn render_hit(
    c: &Collection,
    doc: &StoredDoc,
    chunk_no: u32,
    score: f32,
    query: &str,
    now: i64,
) -> Hit {
    Hit {
        id: doc.id.clone(),
        collection: c.name().to_string(),
        score,
        title: doc.title.clone(),
        snippet: c.text.snippet(query, doc.chunk_text(chunk_no)),
        metadata: doc.metadata.clone(),
        freshness: StampOut::new(&doc.stamp, now),
    }
}

/// Ranks one collection's documents; returns them best first with the mode actually used.
fn search_collection(
    c: &Arc<Collection>,
    req: &SearchRequest,
    depth: usize,
    query: &str,
    vector_query: QueryVector,
    filter: &Filter,
    notes: &mut Vec<String>,
) -> Result<(Vec<Ranked>, Mode), QueryError> {
    let Retrieved { bm25, vector, mode } =
        retrieve(c, req, depth, (query, vector_query), filter, notes, None)?;
    let mut ranked: Vec<Ranked> = match mode {
        Mode::Bm25 => to_ranked(c, bm25),
        Mode::Vector => to_ranked(c, vector),
        Mode::Hybrid => {
            let scored = |hits: &[(Arc<StoredDoc>, u32, f32)]| -> Vec<(String, f32)> {
                hits.iter().map(|(d, _, s)| (d.id.clone(), *s)).collect()
            };
            let fused = fuse(&c.config, &scored(&bm25), &scored(&vector));
            // The passage shown is the best BM25 chunk when there is one: it holds the words.
            let mut best: HashMap<String, (Arc<StoredDoc>, u32)> = HashMap::new();
            for (d, chunk, _) in vector.into_iter().chain(bm25) {
                best.insert(d.id.clone(), (d, chunk));
            }
            fused
                .into_iter()
                .filter_map(|(id, score)| {
                    best.remove(&id).map(|(doc, chunk_no)| Ranked {
                        collection: Arc::clone(c),
                        doc,
                        chunk_no,
                        score,
                    })
                })
                .collect()
        }
    };
    if let Some(recency) = &req.recency {
        recency.rerank(
            &mut ranked,
            |r| r.score,
            |r| match recency.field {
                RecencyField::EventTime => r.doc.stamp.event_time_ms,
                RecencyField::IndexedAt => r.doc.stamp.indexed_at_ms,
            },
            |r, score| r.score = score,
            now_ms(),
        );
    }
    Ok((ranked, mode))
}

/// How many candidates each retriever fetches for a page ending at `depth`.
pub(crate) fn fetch_depth(mode: Mode, depth: usize) -> usize {
    // Over-fetch: several chunks of one document may rank, and stale entries are dropped.
    // Hybrid score fusion normalises over a fixed depth, so it always fetches that much.
    if mode == Mode::Hybrid {
        (depth * 4).max(SCORE_FUSION_DEPTH)
    } else {
        (depth * 4).max(50)
    }
}

/// A document version found by one retriever: the document, its best chunk, the score.
pub(crate) type Candidate = (Arc<StoredDoc>, u32, f32);

/// What the two retrievers found in one collection, each best first, before fusion.
pub(crate) struct Retrieved {
    /// BM25 candidates (empty in vector mode).
    pub bm25: Vec<Candidate>,
    /// Vector candidates (empty in BM25 mode).
    pub vector: Vec<Candidate>,
    /// The mode actually used.
    pub mode: Mode,
}

/// The hybrid fusion of one collection's two candidate lists, `(id, score)` best first,
/// as the collection's `fusion` setting says.
pub(crate) fn fuse(
    config: &crate::config::CollectionConfig,
    bm25: &[(String, f32)],
    vector: &[(String, f32)],
) -> Vec<(String, f32)> {
    match config.fusion {
        Fusion::Score => score_fusion(bm25, vector, config.fusion_bm25_weight),
        Fusion::Rrf => {
            let ids = |hits: &[(String, f32)]| -> Vec<String> {
                hits.iter().map(|(id, _)| id.clone()).collect()
            };
            rrf(&[&ids(bm25), &ids(vector)], RRF_K)
        }
    }
}

/// Runs the retrievers of one collection for a page ending at `depth`; BM25 scores with
/// `stats` when given (a cluster's summed statistics) instead of the index's own.
pub(crate) fn retrieve(
    c: &Arc<Collection>,
    req: &SearchRequest,
    depth: usize,
    (query, vector_query): (&str, QueryVector),
    filter: &Filter,
    notes: &mut Vec<String>,
    stats: Option<&crate::index::TermStats>,
) -> Result<Retrieved, QueryError> {
    let name = c.name();
    let fetch = fetch_depth(req.mode, depth);
    // A generation serving while the next is built may hold vectors of other settings:
    // BM25 answers correctly, its vectors would not.
    let requested = match c.frozen().and_then(|f| f.vectors_unusable.as_deref()) {
        Some(why) if req.mode != Mode::Bm25 && !query.is_empty() => {
            notes.push(format!(
                "{} fell back to bm25 on collection `{name}`: it is being rebuilt and vector search is off until then ({why})",
                req.mode.name()
            ));
            Mode::Bm25
        }
        _ => req.mode,
    };
    let mode = match (requested, &vector_query) {
        (Mode::Vector, QueryVector::Missing(reason)) => {
            return Err(QueryError::InvalidArgument(format!(
                "mode \"vector\" is not possible on collection `{name}`: {reason}"
            )));
        }
        (Mode::Hybrid, QueryVector::Missing(reason)) => {
            notes.push(format!(
                "hybrid fell back to bm25 on collection `{name}`: {reason}"
            ));
            Mode::Bm25
        }
        (Mode::Hybrid, QueryVector::Ready(_)) if query.is_empty() => Mode::Vector,
        (Mode::Bm25, _) if query.is_empty() => {
            return Err(QueryError::InvalidArgument(
                "mode \"bm25\" needs query text".into(),
            ));
        }
        (mode, _) => mode,
    };

    let bm25 = if mode == Mode::Vector {
        Vec::new()
    } else {
        let hits = c
            .text
            .search_with_stats(query, filter, fetch, seq_predicate(c, filter), stats)
            .map_err(|e| {
                tracing::error!(collection = name, "BM25 search failed: {e}");
                QueryError::Internal
            })?;
        // A hit's document is the current version with its sequence number: one lookup
        // that also drops chunks of superseded versions.
        let live = hits
            .into_iter()
            .filter_map(|h| c.view.get_by_seq(h.seq).map(|d| (d, h.chunk_no, h.score)))
            .collect();
        best_chunk_per_doc(live, |(d, _, _)| d.id.as_str())
    };
    let vector = match (&vector_query, mode) {
        (QueryVector::Ready(q), Mode::Vector | Mode::Hybrid) => match c.vectors() {
            None => Vec::new(),
            Some(_) if filter.rejects_everything() => Vec::new(),
            Some(index) => {
                let accept = |doc_id: &str| {
                    c.view
                        .get(doc_id)
                        .is_some_and(|d| filter.accepts(&d.terms, &d.candidate()))
                };
                let hits = index.search(q, fetch, &accept).map_err(|e| {
                    QueryError::InvalidArgument(format!("vector search on `{name}`: {e}"))
                })?;
                current_best(
                    c,
                    hits.into_iter()
                        .map(|h| (h.doc_id, h.seq, h.chunk_no, h.score)),
                )
            }
        },
        _ => Vec::new(),
    };

    Ok(Retrieved { bm25, vector, mode })
}

/// A collection's query vector, or why it has none (which a hybrid search notes and a
/// vector search reports).
pub(crate) enum QueryVector {
    Ready(Vec<f32>),
    Missing(String),
}

/// The query vector for a collection, or why there is none; `Err` only for a caller's
/// vector that does not fit the collection. `embedded` is the query text's vector from the
/// collection's embedder, when [`embed_query`] made one.
pub(crate) fn query_vector(
    c: &Collection,
    req: &SearchRequest,
    query: &str,
    embedded: Option<&Result<Vec<f32>, String>>,
) -> Result<QueryVector, QueryError> {
    if let Some(why) = c.frozen().and_then(|f| f.vectors_unusable.as_deref()) {
        return Ok(QueryVector::Missing(format!(
            "it is being rebuilt and the generation answering has no usable vectors ({why})"
        )));
    }
    if let Some(v) = &req.vector
        && c.provider() != Provider::None
    {
        return check_query_vector(c, v).map(QueryVector::Ready);
    }
    let missing = match c.provider() {
        Provider::None => "it has no vectors (embedding.provider = \"none\")".to_string(),
        Provider::Precomputed => format!(
            "its vectors are precomputed upstream, so pass the query's vector in `vector`{}",
            c.vectors()
                .map(|v| format!(" ({} numbers)", v.dim()))
                .unwrap_or_default()
        ),
        Provider::Local | Provider::Openai => match embedded {
            Some(Ok(v)) => return Ok(QueryVector::Ready(v.clone())),
            Some(Err(e)) => format!("the query could not be embedded: {e}"),
            None if query.is_empty() => "pass query text to embed".to_string(),
            None => "the query was not embedded".to_string(),
        },
    };
    Ok(QueryVector::Missing(missing))
}

impl Search {
    /// The `get_document` tool (and the resource template).
    pub fn get_document(
        &self,
        collection: &str,
        id: &str,
        access: &Access,
    ) -> Result<DocumentResult, QueryError> {
        self.get_document_version(collection, id, None, access)
    }

    /// `get_document` with the version the caller holds, `(partition, offset)` of its stamp
    /// (partition optional): the answer says whether that version is still current.
    pub fn get_document_version(
        &self,
        collection: &str,
        id: &str,
        version: Option<(Option<i32>, i64)>,
        access: &Access,
    ) -> Result<DocumentResult, QueryError> {
        let c = self.resolve(collection, access)?;
        let doc = c
            .view
            .get(id)
            .filter(|d| tenant_allows(&c, d, access))
            .ok_or_else(|| QueryError::NotFound {
                collection: collection.to_string(),
                id: id.to_string(),
            })?;
        let version = version.map(|(partition, offset)| {
            let same =
                doc.stamp.offset == offset && partition.is_none_or(|p| p == doc.stamp.partition);
            if same { "current" } else { "superseded" }.to_string()
        });
        Ok(DocumentResult {
            version,
            document: DocOut {
                id: doc.id.clone(),
                collection: c.name().to_string(),
                title: doc.title.clone(),
                text: doc.text.clone(),
                metadata: doc.metadata.clone(),
                freshness: StampOut::new(&doc.stamp, now_ms()),
            },
            freshness: self.watermark(&[c.as_ref()]),
        })
    }

    /// The `document_freshness` tool.
    pub fn document_freshness(
        &self,
        collection: &str,
        ids: &[String],
        access: &Access,
    ) -> Result<FreshnessResult, QueryError> {
        check_ids(ids)?;
        let c = self.resolve(collection, access)?;
        let now = now_ms();
        let documents = ids
            .iter()
            .map(
                |id| match c.view.get(id).filter(|d| tenant_allows(&c, d, access)) {
                    Some(d) => IdFreshness {
                        id: id.clone(),
                        status: "found".into(),
                        freshness: Some(StampOut::new(&d.stamp, now)),
                    },
                    None => IdFreshness {
                        id: id.clone(),
                        status: "not_found".into(),
                        freshness: None,
                    },
                },
            )
            .collect();
        Ok(FreshnessResult {
            documents,
            freshness: self.watermark(&[c.as_ref()]),
        })
    }

    /// The `list_collections` tool.
    pub fn list_collections(&self, access: &Access) -> CollectionsResult {
        let collections = self
            .readable(access)
            .into_iter()
            .map(|c| {
                let wm = self.watermark(&[c.as_ref()]);
                let mut modes = vec!["bm25".to_string()];
                if c.provider() != Provider::None {
                    modes.insert(0, "hybrid".into());
                    modes.push("vector".into());
                }
                CollectionInfo {
                    name: c.name().to_string(),
                    topics: c.config.topics.clone(),
                    documents: c.view.len(),
                    chunks: c.view.chunk_count(),
                    embedding: c.embedding_info(),
                    filterable_fields: c
                        .config
                        .filterable_fields()
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    field_types: c
                        .config
                        .filter_schema()
                        .fields()
                        .map(|(name, kind)| (name.to_string(), kind.name().to_string()))
                        .collect(),
                    modes,
                    ingest: c.counts(),
                    partitions: wm.partitions,
                    caught_up: wm.caught_up,
                    catch_up: self.catch_up_info(&c),
                    generation: wm.generations.into_iter().next(),
                    rebuild: self.catalog.rebuild_of(c.name()).map(|(_, next)| {
                        self.freshness.progress_of(
                            c.name(),
                            &c.config.topics,
                            next.applied_records(),
                        )
                    }),
                    vector_recall: c.vectors().and_then(|v| v.recall_estimate()).map(|r| {
                        VectorRecallInfo {
                            recall_at_10: r.recall_at_10,
                            measured_at_points: r.points,
                            exact_scan: r.exact_scan,
                        }
                    }),
                }
            })
            .collect();
        CollectionsResult {
            collections,
            as_of: rfc3339_ms(now_ms()),
            cluster: None,
        }
    }
}

/// Checks a caller-supplied query vector against the collection's dimension.
fn check_query_vector(c: &Collection, v: &[f32]) -> Result<Vec<f32>, QueryError> {
    if let Some(index) = c.vectors()
        && index.dim() != v.len()
    {
        return Err(QueryError::InvalidArgument(format!(
            "`vector` has {} numbers but collection `{}` has {}-dimensional vectors",
            v.len(),
            c.name(),
            index.dim()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) || v.iter().all(|x| *x == 0.0) {
        return Err(QueryError::InvalidArgument(
            "`vector` must be finite numbers, not all zero".into(),
        ));
    }
    Ok(v.to_vec())
}

/// Embeds the query text once per distinct embedder among `targets` that needs it (vector
/// or hybrid mode, query text, no caller-supplied vector), on the search pool so the model
/// never runs on an async worker and no more run at once than the pool allows. One entry
/// per target, in order.
pub(crate) async fn embed_query(
    pool: &SearchPool,
    targets: &[Arc<Collection>],
    req: &SearchRequest,
    query: &str,
) -> Vec<Option<Result<Vec<f32>, String>>> {
    let mut out: Vec<Option<Result<Vec<f32>, String>>> = vec![None; targets.len()];
    if req.mode == Mode::Bm25 || req.vector.is_some() || query.is_empty() {
        return out;
    }
    // Collections sharing a model share one embedder (and so one query vector).
    // Keyed by the embedder's address (a usize, so the future stays Send).
    let mut done: Vec<(usize, Result<Vec<f32>, String>)> = Vec::new();
    for (slot, c) in out.iter_mut().zip(targets) {
        let Some(embedder) = c.embedder() else {
            continue;
        };
        if c.frozen().is_some_and(|f| f.vectors_unusable.is_some()) {
            continue;
        }
        let key = Arc::as_ptr(embedder) as *const () as usize;
        if let Some((_, result)) = done.iter().find(|(k, _)| *k == key) {
            *slot = Some(result.clone());
            continue;
        }
        let embedder = Arc::clone(embedder);
        let text = query.to_string();
        let result = match pool.run(move || embedder.embed_query(&text)).await {
            Ok(Ok(vector)) => Ok(vector),
            Ok(Err(e)) => {
                tracing::warn!(collection = c.name(), "query embedding failed: {e}");
                Err(e.to_string())
            }
            Err(_) => Err("internal error".to_string()),
        };
        done.push((key, result.clone()));
        *slot = Some(result);
    }
    out
}

fn tenant_allows(c: &Collection, doc: &StoredDoc, access: &Access) -> bool {
    match (&c.config.tenant_field, &access.tenant) {
        (None, _) | (Some(_), TenantScope::All) => true,
        (Some(_), TenantScope::Only(tenant)) => doc.tenant.as_deref() == Some(tenant.as_str()),
        (Some(_), TenantScope::NoTenant) => false,
    }
}

/// The filter for one collection: the caller's, checked against the filterable fields,
/// plus the mandatory tenant clause.
pub(super) fn build_filter(
    c: &Collection,
    requested: Option<&Map<String, Value>>,
    access: &Access,
) -> Result<Filter, QueryError> {
    let mut filter = match requested {
        Some(map) => {
            let schema = c.config.filter_schema();
            for field in map.keys() {
                if schema.lookup(field).is_none() {
                    let allowed: Vec<String> = schema
                        .fields()
                        .map(|(name, kind)| format!("{name} ({})", kind.name()))
                        .collect();
                    return Err(QueryError::InvalidArgument(format!(
                        "cannot filter collection `{}` on `{field}`; filterable fields: [{}]",
                        c.name(),
                        allowed.join(", ")
                    )));
                }
            }
            Filter::parse(map, &schema)
                .map_err(|e| QueryError::InvalidArgument(format!("filter: {e}")))?
        }
        None => Filter::default(),
    };
    if let Some(field) = &c.config.tenant_field {
        match &access.tenant {
            TenantScope::All => {}
            TenantScope::Only(tenant) => filter = filter.and(field, vec![tenant.clone()]),
            // A clause without values matches nothing, in both retrievers.
            TenantScope::NoTenant => filter = filter.and(field, Vec::new()),
        }
    }
    Ok(filter)
}

/// The per-document part of `filter` for the BM25 search: a chunk passes when its version
/// is the view's current one and the conditions hold for it. `None` when there are none.
fn seq_predicate(c: &Arc<Collection>, filter: &Filter) -> Option<SeqPredicate> {
    if filter.conditions.is_empty() {
        return None;
    }
    let (c, filter) = (Arc::clone(c), filter.clone());
    Some(Arc::new(move |seq| {
        c.view
            .get_by_seq(seq)
            .is_some_and(|d| filter.conditions_hold(&d.candidate()))
    }))
}

/// Keeps the hits whose version is still the view's current one (index entries of replaced
/// versions may linger until the next commit), then each document's best chunk.
fn current_best(
    c: &Collection,
    hits: impl Iterator<Item = (String, u64, u32, f32)>,
) -> Vec<(Arc<StoredDoc>, u32, f32)> {
    let live: Vec<(Arc<StoredDoc>, u32, f32)> = hits
        .filter_map(|(doc_id, seq, chunk_no, score)| {
            c.view
                .get_version(&doc_id, seq)
                .map(|d| (d, chunk_no, score))
        })
        .collect();
    best_chunk_per_doc(live, |(d, _, _)| d.id.as_str())
}

fn to_ranked(c: &Arc<Collection>, hits: Vec<(Arc<StoredDoc>, u32, f32)>) -> Vec<Ranked> {
    hits.into_iter()
        .map(|(doc, chunk_no, score)| Ranked {
            collection: Arc::clone(c),
            doc,
            chunk_no,
            score,
        })
        .collect()
}

/// Top `k` over several collections: one collection keeps its own order and scores; several
/// are fused by reciprocal rank, since their scores are not comparable. `score` reads and
/// `set_score` writes an entry's score.
pub(crate) fn merge_collections<T>(
    mut lists: Vec<Vec<T>>,
    k: usize,
    score: impl Fn(&T) -> f32,
    set_score: impl Fn(&mut T, f32),
) -> Vec<T> {
    if lists.len() == 1 {
        let mut only = lists.pop().unwrap_or_default();
        only.truncate(k);
        return only;
    }
    let mut all: Vec<T> = Vec::new();
    for list in lists {
        for (rank, mut r) in list.into_iter().enumerate() {
            set_score(&mut r, 1.0 / (RRF_K + rank as f32 + 1.0));
            all.push(r);
        }
    }
    all.sort_by(|a, b| score(b).total_cmp(&score(a)));
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::engine::Engine;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::source::SourceRecord;

    /// `docs` has a tenant field (and vectors, so both retrievers are exercised); `open`
    /// has none.
    const CONFIG: &str = r#"
[[collections]]
name = "docs"
topics = ["docs"]
id_field = "id"
text_fields = ["body"]
metadata_fields = ["kind"]
tenant_field = "tenant"
vector_field = "v"

[[collections]]
name = "open"
topics = ["open"]
id_field = "id"
"#;

    fn engine() -> Engine {
        let config = Config::from_toml_with_env(CONFIG, Path::new("t.toml"), Vec::new())
            .expect("test config is valid");
        Engine::new(Arc::new(config), None, None).expect("engine builds")
    }

    fn put(e: &Engine, topic: &str, offset: i64, value: Value) {
        let id = value["id"].as_str().unwrap_or_default().to_string();
        e.ingest().apply(&[SourceRecord {
            topic: Arc::from(topic),
            partition: 0,
            offset,
            key: Some(id.into_bytes()),
            value: Some(value.to_string().into_bytes()),
            timestamp_ms: Some(1_700_000_000_000),
            ingested_at_ms: 1_700_000_000_000,
        }]);
    }

    fn tenant(t: &str) -> Access {
        Access {
            collections: None,
            tenant: TenantScope::Only(t.into()),
        }
    }

    fn no_tenant() -> Access {
        Access {
            collections: None,
            tenant: TenantScope::NoTenant,
        }
    }

    async fn found(e: &Engine, mode: Mode, filter: Option<Value>, access: &Access) -> Vec<String> {
        let req = SearchRequest {
            query: "shared".into(),
            collection: Some("docs".into()),
            k: 10,
            mode,
            filter: filter.and_then(|f| f.as_object().cloned()),
            vector: Some(vec![1.0, 0.0]),
            consistency: Consistency::Any,
            max_wait: Duration::from_millis(1),
            recency: None,
            cursor: None,
        };
        let mut ids: Vec<String> = match e.search().search(req, access).await {
            Ok(r) => r.results.into_iter().map(|h| h.id).collect(),
            Err(err) => panic!("search failed: {err}"),
        };
        ids.sort();
        ids
    }

    fn seed(e: &Engine) {
        put(
            e,
            "docs",
            0,
            json!({"id": "a1", "tenant": "a", "kind": "x", "body": "shared words", "v": [1.0, 0.0]}),
        );
        put(
            e,
            "docs",
            1,
            json!({"id": "b1", "tenant": "b", "kind": "x", "body": "shared words", "v": [1.0, 0.1]}),
        );
        put(
            e,
            "docs",
            2,
            json!({"id": "none", "kind": "x", "body": "shared words", "v": [1.0, 0.2]}),
        );
        put(e, "open", 0, json!({"id": "o", "body": "shared words"}));
    }

    #[tokio::test]
    async fn tenant_claim_is_a_mandatory_filter_in_every_mode() {
        let e = engine();
        seed(&e);
        for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
            assert_eq!(
                found(&e, mode, None, &tenant("a")).await,
                ["a1"],
                "{mode:?}"
            );
            assert_eq!(
                found(&e, mode, None, &tenant("b")).await,
                ["b1"],
                "{mode:?}"
            );
            assert_eq!(
                found(&e, mode, None, &Access::all()).await,
                ["a1", "b1", "none"]
            );
            // A caller's own tenant filter can narrow, never widen.
            let widen = json!({"tenant": ["a", "b"]});
            assert_eq!(found(&e, mode, Some(widen), &tenant("a")).await, ["a1"]);
            let other = json!({"tenant": "b"});
            assert!(found(&e, mode, Some(other), &tenant("a")).await.is_empty());
        }
    }

    #[tokio::test]
    async fn caller_without_tenant_sees_nothing_of_tenanted_collections() {
        let e = engine();
        seed(&e);
        for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
            assert!(
                found(&e, mode, None, &no_tenant()).await.is_empty(),
                "{mode:?}"
            );
            let asks = json!({"tenant": "a"});
            assert!(found(&e, mode, Some(asks), &no_tenant()).await.is_empty());
        }
        assert!(e.search().get_document("docs", "a1", &no_tenant()).is_err());
        assert!(
            e.search()
                .get_document("docs", "none", &no_tenant())
                .is_err()
        );
        let fresh = e
            .search()
            .document_freshness("docs", &["a1".into(), "none".into()], &no_tenant())
            .map(|r| {
                r.documents
                    .into_iter()
                    .map(|d| d.status)
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            fresh.ok(),
            Some(vec!["not_found".into(), "not_found".into()])
        );
        // Collections without a tenant field are unaffected.
        assert!(e.search().get_document("open", "o", &no_tenant()).is_ok());
    }

    #[tokio::test]
    async fn lookups_hide_other_tenants_and_a_moved_document_follows_its_tenant() {
        let e = engine();
        seed(&e);
        assert!(e.search().get_document("docs", "a1", &tenant("a")).is_ok());
        let hidden = e.search().get_document("docs", "a1", &tenant("b"));
        assert!(matches!(hidden, Err(QueryError::NotFound { .. })));
        put(
            &e,
            "docs",
            3,
            json!({"id": "a1", "tenant": "b", "kind": "x", "body": "shared words", "v": [1.0, 0.0]}),
        );
        for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
            assert!(
                found(&e, mode, None, &tenant("a")).await.is_empty(),
                "{mode:?}"
            );
            assert_eq!(
                found(&e, mode, None, &tenant("b")).await,
                ["a1", "b1"],
                "{mode:?}"
            );
        }
        assert!(e.search().get_document("docs", "a1", &tenant("a")).is_err());
        assert!(e.search().get_document("docs", "a1", &tenant("b")).is_ok());
    }

    fn bm25(query: String, filter: Option<Value>) -> SearchRequest {
        SearchRequest {
            query,
            collection: Some("open".into()),
            k: 10,
            mode: Mode::Bm25,
            filter: filter.and_then(|f| f.as_object().cloned()),
            vector: None,
            consistency: Consistency::Any,
            max_wait: Duration::from_millis(1),
            recency: None,
            cursor: None,
        }
    }

    #[tokio::test]
    async fn oversized_queries_are_refused_naming_the_bound() {
        let e = engine();
        seed(&e);
        let long = "word ".repeat(4000);
        let err = e
            .search()
            .search(bm25(long, None), &Access::all())
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("server.max_query_bytes"), "{err}");

        let many: String = (0..200).map(|i| format!("w{i} ")).collect();
        let err = e
            .search()
            .search(bm25(many, None), &Access::all())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("server.max_query_terms"), "{err}");
        assert!(err.to_string().contains("200 distinct terms"), "{err}");

        // Repeating a word does not count twice; the bound is on distinct terms.
        let repeated = "shared ".repeat(1000);
        let ok = e
            .search()
            .search(bm25(repeated, None), &Access::all())
            .await;
        assert_eq!(ok.map(|r| r.results.len()).ok(), Some(1));

        let values: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        let err = e
            .search()
            .search(
                bm25("shared".into(), Some(json!({"kind": values}))),
                &Access::all(),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("filter lists 2000 values"),
            "{err}"
        );
        let metrics = e.search().render_metrics();
        assert!(
            metrics.contains("freshet_limit_refusals_total{limit=\"server.max_query_terms\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn no_access_lists_nothing() {
        let e = engine();
        assert!(
            e.search()
                .list_collections(&Access::none())
                .collections
                .is_empty()
        );
        assert!(
            e.search()
                .get_document("open", "o", &Access::none())
                .is_err()
        );
    }
}
