//! The engine owns every collection (view + indexes), the per-partition progress, and the
//! two operations everything else is built from: `apply` (one writer, fed by the source) and
//! the read-only queries the MCP tools call.

mod apply;
mod changes;
mod checkpoint;
mod compaction;
mod query;
mod ranking;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::api::{EmbeddingInfo, IngestCounts, PartitionWatermark, Watermark};
use crate::catch_up::CatchUp;
use crate::chunk::Chunker;
use crate::config::{CollectionConfig, Config, Provider};
use crate::decode::{Mapping, SchemaSource};
use crate::embed::{self, EmbedError, Embedder, LocalEmbedder};
use crate::index::{HnswParams, IndexError, TextIndex, VectorIndex};
use crate::metrics::{Metrics, escape, header};
use crate::source::{DeadLetters, MetaClient};
use crate::time::{now_ms, rfc3339_ms};
use crate::view::{OffsetTarget, Progress, View};

pub use apply::{ApplyOutcome, Prepared, PreparedBatch, PreparedChange};
pub use changes::{
    Change, ChangeKind, ChangeWatch, ChangesRequest, Cursor, MAX_CHANGES_LIMIT, Published,
    ReadError, WatchTarget,
};
pub use checkpoint::{GraphDump, RestoreReport};
use compaction::{Rebuild, VectorOp};
pub use query::{Access, Consistency, Mode, QueryError, SearchRequest, TenantScope};
pub use ranking::{MAX_SEARCH_DEPTH, Recency, RecencyField};

/// Errors building the engine at start-up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An index could not be created.
    #[error("collection `{collection}`: {source}")]
    Index {
        /// The collection.
        collection: String,
        /// What the index said.
        source: IndexError,
    },
    /// The schema registry client could not be built (credentials, certificates).
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// The collection's embedder could not be built (model directory, API key, ...).
    #[error("collection `{collection}`: {error}")]
    Embedder {
        /// The collection.
        collection: String,
        /// What is wrong, naming the path or key. (Not a `source`: the message already
        /// says it all, and a source would be printed twice in the error chain.)
        error: EmbedError,
    },
}

/// One collection: its settings, its documents and its two indexes.
pub struct Collection {
    /// Settings from the config file.
    pub config: CollectionConfig,
    mapping: Mapping,
    /// Schemas for wire-format records (`[schema_registry]`), shared by all collections.
    schemas: Option<Arc<dyn SchemaSource>>,
    /// The current documents.
    pub view: View,
    /// BM25 over chunks.
    pub text: TextIndex,
    /// HNSW over vectors; created when the dimension is known (config or first vector), and
    /// replaced whole when a rebuild without dead points is swapped in.
    vectors: RwLock<Option<Arc<VectorIndex>>>,
    /// Vector writes made while a rebuild runs, replayed into the new graph before the swap.
    rebuild_log: Mutex<Option<Vec<VectorOp>>>,
    provider: Provider,
    /// Makes vectors from text (`local`, `openai`); `None` for `precomputed` and `none`.
    embedder: Option<Arc<dyn Embedder>>,
    /// Splits texts into chunks: in model tokens when the embedder has a tokenizer.
    chunker: Chunker,
    counts: Mutex<IngestCounts>,
    /// Where the collection lives on disk; `None` when it is held in memory only.
    persisted: Option<checkpoint::Persisted>,
    /// The recent changes, for the `changes` tool and subscriptions.
    pub changes: changes::ChangeLog,
    /// What the next checkpoint would cover (left by the writer after each batch).
    cut: Mutex<Option<checkpoint::Cut>>,
    /// When the last checkpoint was attempted.
    checkpointed_at: Mutex<std::time::Instant>,
}

impl Collection {
    /// Builds collection `index` of the config, persisted under `store` when given. Local
    /// models are loaded once per directory and shared through `models`.
    fn new(
        index: usize,
        config: CollectionConfig,
        models: &mut HashMap<std::path::PathBuf, Arc<LocalEmbedder>>,
        schemas: Option<Arc<dyn SchemaSource>>,
        store: Option<&std::path::Path>,
    ) -> Result<Collection, EngineError> {
        let provider = config.provider();
        let embedder = embed::for_collection(index, &config, models).map_err(|error| {
            EngineError::Embedder {
                collection: config.name.clone(),
                error,
            }
        })?;
        let index_error = |source| EngineError::Index {
            collection: config.name.clone(),
            source,
        };
        let (text, persisted) = match store {
            Some(root) => {
                let (text, persisted) =
                    checkpoint::open_text(root, &config.name, config.title_boost())
                        .map_err(index_error)?;
                (text, Some(persisted))
            }
            None => (
                TextIndex::in_ram_with_title_boost(config.title_boost()).map_err(index_error)?,
                None,
            ),
        };
        let vectors = RwLock::new(None);
        let known_dim = embedder
            .as_ref()
            .and_then(|e| e.identity().dimensions)
            .or(config.embedding.dimensions);
        if let (Provider::Precomputed | Provider::Local | Provider::Openai, Some(dim)) =
            (provider, known_dim)
        {
            *vectors.write() = Some(Arc::new(VectorIndex::new(dim, hnsw_params(&config))));
        }
        let chunker = chunker_for(&config, embedder.as_deref());
        let collection = Collection {
            mapping: config.mapping(),
            schemas,
            view: View::default(),
            text,
            vectors,
            rebuild_log: Mutex::new(None),
            provider,
            embedder,
            chunker,
            counts: Mutex::new(IngestCounts::default()),
            persisted,
            changes: changes::ChangeLog::new(config.changes.clone(), now_ms()),
            cut: Mutex::new(None),
            checkpointed_at: Mutex::new(std::time::Instant::now()),
            config,
        };
        if let Some(p) = &collection.persisted {
            p.set_fingerprint(collection.fingerprint());
        }
        Ok(collection)
    }

    /// Name of the collection.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The vector index, once it exists.
    pub fn vectors(&self) -> Option<Arc<VectorIndex>> {
        self.vectors.read().clone()
    }

    /// The vector index for vectors of `dim` dimensions, creating it on first use.
    fn vectors_for(&self, dim: usize) -> Arc<VectorIndex> {
        if let Some(v) = self.vectors() {
            return v;
        }
        let mut slot = self.vectors.write();
        Arc::clone(
            slot.get_or_insert_with(|| Arc::new(VectorIndex::new(dim, hnsw_params(&self.config)))),
        )
    }

    /// Queues replacing a document's vectors (writer only; visible after
    /// [`flush_vectors`](Self::flush_vectors)); logged while a rebuild runs.
    fn upsert_vectors(
        &self,
        doc_id: &str,
        seq: u64,
        vectors: &[(u32, Vec<f32>)],
    ) -> Result<(), IndexError> {
        let Some((_, first)) = vectors.first() else {
            self.delete_vectors(doc_id);
            return Ok(());
        };
        self.vectors_for(first.len())
            .stage_upsert(doc_id, seq, vectors)?;
        if let Some(log) = self.rebuild_log.lock().as_mut() {
            log.push(VectorOp::Upsert {
                doc_id: doc_id.to_string(),
                seq,
                vectors: vectors.to_vec(),
            });
        }
        Ok(())
    }

    /// Queues masking a document's vectors (writer only); logged while a rebuild runs.
    fn delete_vectors(&self, doc_id: &str) {
        if let Some(v) = self.vectors() {
            v.stage_delete(doc_id);
        }
        if let Some(log) = self.rebuild_log.lock().as_mut() {
            log.push(VectorOp::Delete {
                doc_id: doc_id.to_string(),
            });
        }
    }

    /// Applies the queued vector writes (one parallel insert for the whole batch).
    fn flush_vectors(&self) {
        if let Some(v) = self.vectors() {
            v.flush();
        }
    }

    /// How vectors are produced for this collection.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The embedder that makes this collection's vectors from text, if any.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// How texts are split into chunks.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// Embedding set-up as shown to agents.
    pub fn embedding_info(&self) -> EmbeddingInfo {
        let identity = self.embedder.as_ref().map(|e| e.identity());
        EmbeddingInfo {
            provider: format!("{:?}", self.provider).to_lowercase(),
            model: identity
                .as_ref()
                .map(|i| i.model.clone())
                .or_else(|| self.config.embedding.model.clone()),
            dimensions: self
                .vectors()
                .map(|v| v.dim())
                .or(identity.and_then(|i| i.dimensions))
                .or(self.config.embedding.dimensions),
        }
    }

    /// The settings that shape this collection's documents and vectors. A snapshot taken
    /// under other settings is not restored into it (the collection is rebuilt instead).
    pub fn fingerprint(&self) -> String {
        let c = &self.config;
        serde_json::json!({
            "topics": c.topics,
            "format": c.format,
            "id_field": c.id_field,
            "title_field": c.title_field,
            "text_fields": c.text_fields,
            "metadata_fields": c.metadata_fields,
            "tenant_field": c.tenant_field,
            "event_time_field": c.event_time_field,
            "vector_field": c.vector_field,
            "chunk_tokens": c.chunk_tokens,
            "chunk_overlap": c.chunk_overlap,
            "embedder": self.embedder_identity(),
        })
        .to_string()
    }

    /// Which vector space this collection's vectors are in, as one string:
    /// `provider:model:dimensions:fingerprint`, where the fingerprint hashes the model files
    /// and tokenizer settings (`local`) or the URL, model and requested dimension (`openai`).
    /// `precomputed` collections give `precomputed:<vector_field>:<dimensions>`, `none` gives
    /// `none`; an unknown dimension is `?`.
    ///
    /// A snapshot stores this next to its vectors. On restore, if the current value differs,
    /// the stored vectors are from another model and must not be loaded into the index: the
    /// documents are restored and re-embedded instead.
    pub fn embedder_identity(&self) -> String {
        // Only dimensions known before any vector arrives: a value learned from the first
        // vector would make the identity (and the snapshot fingerprint) change over time.
        let dim = self.config.embedding.dimensions.map(|d| d.to_string());
        match (&self.embedder, self.provider) {
            (Some(e), _) => {
                let id = e.identity();
                let dim = dim
                    .or_else(|| id.dimensions.map(|d| d.to_string()))
                    .unwrap_or_else(|| "?".into());
                format!("{}:{}:{dim}:{}", id.provider, id.model, id.fingerprint)
            }
            (None, Provider::Precomputed) => format!(
                "precomputed:{}:{}",
                self.config.vector_field.as_deref().unwrap_or(""),
                dim.unwrap_or_else(|| "?".into())
            ),
            (None, _) => "none".into(),
        }
    }

    /// A copy of the ingest counters.
    pub fn counts(&self) -> IngestCounts {
        self.counts.lock().clone()
    }
}

/// Token chunks for a model with a tokenizer, capped at what the model reads whole; word
/// chunks otherwise.
fn chunker_for(config: &CollectionConfig, embedder: Option<&dyn Embedder>) -> Chunker {
    let (size, overlap) = (config.chunk_tokens, config.chunk_overlap);
    match embedder.and_then(|e| e.tokenizer()) {
        Some((tokenizer, window)) => {
            let capped = size.min(window);
            // Keep the overlap a fraction of the chunk when the cap shrank it.
            let overlap = if capped < size {
                overlap.min(capped / 4)
            } else {
                overlap
            };
            if capped < size {
                tracing::debug!(
                    collection = config.name,
                    chunk_tokens = size,
                    model_window = window,
                    "chunks capped at the model's window of {window} tokens (overlap {overlap})"
                );
            }
            Chunker::Tokens {
                tokenizer: Arc::new(tokenizer.clone()),
                size: capped,
                overlap,
            }
        }
        None => Chunker::Words { size, overlap },
    }
}

fn hnsw_params(config: &CollectionConfig) -> HnswParams {
    HnswParams {
        m: config.hnsw.m,
        ef_construction: config.hnsw.ef_construction,
        ef_search: config.hnsw.ef_search,
        storage: config.vector_storage,
    }
}

/// Everything a running freshet knows.
pub struct Engine {
    config: Arc<Config>,
    collections: Vec<Arc<Collection>>,
    /// topic → index into `collections`.
    by_topic: HashMap<String, usize>,
    progress: Arc<Progress>,
    meta: Option<MetaClient>,
    dead_letters: Option<DeadLetters>,
    /// Apply sequence: every applied version gets the next number.
    seq: AtomicU64,
    /// Set once the view has caught up with the watermarks read at start.
    ready: AtomicBool,
    /// Partitions and the high watermarks that must be reached before `ready`.
    startup_targets: Mutex<Option<Vec<OffsetTarget>>>,
    /// Histograms and counters for `/metrics`.
    metrics: Metrics,
    /// Vector index rebuilds running in the background, by collection index.
    rebuilds: Mutex<Vec<Rebuild>>,
    /// Apply-rate samples while catching up at start.
    catch_up: CatchUp,
    /// Every applied batch's changes, for subscriptions.
    change_events: tokio::sync::broadcast::Sender<Arc<Vec<Published>>>,
}

impl Engine {
    /// Builds the collections from config, held in memory only. `meta` reads watermarks
    /// (None in unit tests, which then never claim to be caught up); `dead_letters` receives
    /// undecodable records.
    pub fn new(
        config: Arc<Config>,
        meta: Option<MetaClient>,
        dead_letters: Option<DeadLetters>,
    ) -> Result<Engine, EngineError> {
        Self::open(config, meta, dead_letters, None)
    }

    /// Like [`new`](Self::new), with each collection persisted in `<store>/<name>/` when
    /// `store` is given (see [`crate::store`]); [`open_persisted`](Self::open_persisted)
    /// then loads what is there.
    pub fn open(
        config: Arc<Config>,
        meta: Option<MetaClient>,
        dead_letters: Option<DeadLetters>,
        store: Option<std::path::PathBuf>,
    ) -> Result<Engine, EngineError> {
        let mut collections = Vec::new();
        let mut by_topic = HashMap::new();
        let mut models = HashMap::new();
        let schemas = crate::registry::Registry::from_config(&config)?
            .map(|registry| Arc::new(registry) as Arc<dyn SchemaSource>);
        for (i, c) in config.collections.iter().enumerate() {
            for t in &c.topics {
                by_topic.insert(t.clone(), i);
            }
            let collection =
                Collection::new(i, c.clone(), &mut models, schemas.clone(), store.as_deref())?;
            collections.push(Arc::new(collection));
        }
        Ok(Engine {
            config,
            collections,
            by_topic,
            progress: Arc::new(Progress::default()),
            meta,
            dead_letters,
            seq: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            startup_targets: Mutex::new(None),
            metrics: Metrics::default(),
            rebuilds: Mutex::new(Vec::new()),
            catch_up: CatchUp::default(),
            change_events: tokio::sync::broadcast::channel(changes::SUBSCRIBER_BACKLOG).0,
        })
    }

    /// The configuration the engine was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Per-partition progress (shared with the source).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// All collections, in config order.
    pub fn collections(&self) -> &[Arc<Collection>] {
        &self.collections
    }

    /// A collection by name.
    pub fn collection(&self, name: &str) -> Option<&Arc<Collection>> {
        self.collections.iter().find(|c| c.name() == name)
    }

    /// Every topic freshet consumes.
    pub fn topics(&self) -> Vec<String> {
        self.collections
            .iter()
            .flat_map(|c| c.config.topics.iter().cloned())
            .collect()
    }

    /// Histograms and counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Catch-up progress at start (see [`crate::catch_up`]).
    pub fn catch_up(&self) -> &CatchUp {
        &self.catch_up
    }

    /// Everything `/metrics` shows, in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "freshet_ready",
            "gauge",
            "1 once caught up with the watermarks seen at start.",
        );
        let _ = writeln!(out, "freshet_ready {}", u8::from(self.is_ready()));
        header(
            &mut out,
            "freshet_partition_applied_offset",
            "gauge",
            "Last offset applied to the view.",
        );
        header(
            &mut out,
            "freshet_partition_high_watermark",
            "gauge",
            "Log end offset last read from the broker.",
        );
        header(
            &mut out,
            "freshet_partition_lag",
            "gauge",
            "Records written but not yet applied.",
        );
        for ((topic, partition), p) in self.progress.snapshot(&[]) {
            let labels = format!("topic=\"{}\",partition=\"{partition}\"", escape(&topic));
            if let Some(next) = p.next_offset {
                let _ = writeln!(
                    out,
                    "freshet_partition_applied_offset{{{labels}}} {}",
                    next - 1
                );
            }
            if let Some(high) = p.high_watermark {
                let _ = writeln!(out, "freshet_partition_high_watermark{{{labels}}} {high}");
            }
            if let Some(lag) = p.lag() {
                let _ = writeln!(out, "freshet_partition_lag{{{labels}}} {lag}");
            }
        }
        header(
            &mut out,
            "freshet_documents",
            "gauge",
            "Documents in the view.",
        );
        header(
            &mut out,
            "freshet_chunks",
            "gauge",
            "Chunks in the BM25 index.",
        );
        header(
            &mut out,
            "freshet_vector_points",
            "gauge",
            "Points in the HNSW graph, live or masked dead.",
        );
        header(
            &mut out,
            "freshet_vector_dead_fraction",
            "gauge",
            "Share of HNSW points that are masked.",
        );
        header(
            &mut out,
            "freshet_vector_graph_backlog",
            "gauge",
            "Searchable points still waiting for their HNSW graph insert (found by exact scan).",
        );
        header(
            &mut out,
            "freshet_ingest_total",
            "counter",
            "Changes applied, by kind.",
        );
        header(
            &mut out,
            "freshet_poison_records_total",
            "counter",
            "Records refused as undecodable, by kind.",
        );
        for c in &self.collections {
            let name = escape(c.name());
            let _ = writeln!(
                out,
                "freshet_documents{{collection=\"{name}\"}} {}",
                c.view.len()
            );
            let _ = writeln!(
                out,
                "freshet_chunks{{collection=\"{name}\"}} {}",
                c.text.num_chunks()
            );
            if let Some(v) = c.vectors() {
                let (live, dead) = (v.live_points(), v.dead_points());
                let _ = writeln!(
                    out,
                    "freshet_vector_points{{collection=\"{name}\",state=\"live\"}} {live}"
                );
                let _ = writeln!(
                    out,
                    "freshet_vector_points{{collection=\"{name}\",state=\"dead\"}} {dead}"
                );
                let fraction = if live + dead == 0 {
                    0.0
                } else {
                    dead as f64 / (live + dead) as f64
                };
                let _ = writeln!(
                    out,
                    "freshet_vector_dead_fraction{{collection=\"{name}\"}} {fraction}"
                );
                let _ = writeln!(
                    out,
                    "freshet_vector_graph_backlog{{collection=\"{name}\"}} {}",
                    v.graph_backlog()
                );
            }
            let counts = c.counts();
            for (kind, n) in [
                ("upsert", counts.upserts),
                ("delete", counts.deletes),
                ("replay", counts.replays_skipped),
            ] {
                let _ = writeln!(
                    out,
                    "freshet_ingest_total{{collection=\"{name}\",kind=\"{kind}\"}} {n}"
                );
            }
            for (kind, n) in &counts.poison {
                let _ = writeln!(
                    out,
                    "freshet_poison_records_total{{collection=\"{name}\",kind=\"{}\"}} {n}",
                    escape(kind)
                );
            }
        }
        header(
            &mut out,
            "freshet_partition_truncations_total",
            "counter",
            "Times retention removed records of a partition before they were applied.",
        );
        let _ = writeln!(
            out,
            "freshet_partition_truncations_total {}",
            self.progress.truncations()
        );
        self.metrics.render(&mut out);
        out
    }

    /// Dead-letter producer, if configured.
    pub fn dead_letters(&self) -> Option<&DeadLetters> {
        self.dead_letters.as_ref()
    }

    /// The watermark of the given collections' partitions right now.
    pub fn watermark(&self, collections: &[&Collection]) -> Watermark {
        let topics: Vec<String> = collections
            .iter()
            .flat_map(|c| c.config.topics.iter().cloned())
            .collect();
        let partitions: Vec<PartitionWatermark> = self
            .progress
            .snapshot(&topics)
            .iter()
            .map(|(k, p)| PartitionWatermark::new(k, p))
            .collect();
        let assigned: HashSet<&str> = partitions.iter().map(|p| p.topic.as_str()).collect();
        // Lag computed from old watermarks (broker unreachable) proves nothing.
        let now = now_ms();
        let fresh_after = now - self.watermark_staleness_ms();
        let watermarks_fresh = self
            .progress
            .snapshot(&topics)
            .iter()
            .all(|(_, p)| p.watermarks_read_at_ms.is_some_and(|at| at >= fresh_after));
        let caught_up = topics.iter().all(|t| assigned.contains(t.as_str()))
            && watermarks_fresh
            && partitions
                .iter()
                .all(|p| p.lag == Some(0) && p.rereading.is_none());
        Watermark {
            as_of: rfc3339_ms(now),
            caught_up,
            partitions,
        }
    }

    /// How old the last watermark reading may be for an answer to claim `caught_up`.
    fn watermark_staleness_ms(&self) -> i64 {
        (self.config.kafka.watermark_interval_ms as i64 * 3).max(5_000)
    }

    /// Reads all partitions' watermarks from the broker and stores them; returns how many
    /// partitions answered. (Retention passing unapplied records is noticed by the consumer,
    /// which the broker tells exactly: a log start above applied offsets here may only mean
    /// that the records are still on their way to the view.)
    pub async fn refresh_watermarks(&self, timeout: std::time::Duration) -> usize {
        let Some(meta) = &self.meta else { return 0 };
        let partitions: Vec<(String, i32)> = self
            .progress
            .snapshot(&[])
            .into_iter()
            .map(|((t, p), _)| (t.to_string(), p))
            .collect();
        let reading = self.read_watermarks(meta, partitions, timeout).await;
        if !reading.marks.is_empty() {
            crate::source::broker_health().mark_up();
        } else if let Some((_, reason)) = reading.failed.first() {
            crate::source::broker_health().mark_down(reason);
        }
        self.update_readiness(&reading.marks);
        reading.marks.len()
    }

    /// Reads `partitions`' watermarks from the broker and stores those that answered.
    pub(crate) async fn read_watermarks(
        &self,
        meta: &MetaClient,
        partitions: Vec<(String, i32)>,
        timeout: std::time::Duration,
    ) -> crate::source::meta::Reading {
        let reading = meta.watermarks(partitions, timeout).await;
        let at = now_ms();
        for w in &reading.marks {
            self.progress
                .set_watermarks(&w.topic, w.partition, w.low, w.high, at);
        }
        reading
    }

    /// Partitions restored without a topic ID (a snapshot of an older freshet) whose log
    /// ended below the restored offset at the first reading: not the log the offsets came
    /// from, so they are read again from the start, their documents removed first.
    pub fn partitions_to_reset(&self) -> Vec<(String, i32, String)> {
        self.progress
            .snapshot(&[])
            .into_iter()
            .filter(|(_, p)| p.log_replaced)
            .filter_map(|((topic, partition), p)| {
                let next = p.next_offset?;
                let high = p.high_watermark?;
                Some((
                    topic.to_string(),
                    partition,
                    format!(
                        "log end offset {high} is behind what was applied (next offset {next}) and the snapshot has no topic ID: the topic was recreated"
                    ),
                ))
            })
            .collect()
    }

    /// True once the view has caught up with the watermarks first read at start, and no
    /// partition is being read again from its start (recreated topic, truncated log).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.progress.rereading(&[])
    }

    /// True once the first catch-up after start is done (re-reads aside).
    fn caught_up_at_start(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn update_readiness(&self, marks: &[crate::source::meta::Watermarks]) {
        if self.caught_up_at_start() {
            return;
        }
        let mut targets = self.startup_targets.lock();
        if targets.is_none() {
            // The first complete reading (every topic assigned and answered) fixes the target.
            let topics = self.topics();
            let seen: HashSet<&str> = marks.iter().map(|w| w.topic.as_str()).collect();
            let assigned = self.progress.snapshot(&[]).len();
            if assigned == 0
                || marks.len() < assigned
                || !topics.iter().all(|t| seen.contains(t.as_str()))
            {
                return;
            }
            *targets = Some(
                marks
                    .iter()
                    .map(|w| (Arc::from(w.topic.as_str()), w.partition, w.high))
                    .collect(),
            );
        }
        if let Some(t) = targets.as_ref()
            && self.progress.reached_all(t)
        {
            self.ready.store(true, Ordering::Release);
            tracing::info!("caught up with the stream: ready");
        }
    }

    /// Re-checks readiness against the start-up targets (after each applied batch).
    fn recheck_readiness(&self) {
        if self.caught_up_at_start() {
            return;
        }
        let targets = self.startup_targets.lock();
        if let Some(t) = targets.as_ref()
            && self.progress.reached_all(t)
        {
            self.ready.store(true, Ordering::Release);
            tracing::info!("caught up with the stream: ready");
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn collection_for_topic(&self, topic: &str) -> Option<&Arc<Collection>> {
        self.by_topic.get(topic).map(|&i| &self.collections[i])
    }

    /// Ingest counters of every collection, by name.
    pub fn counts(&self) -> BTreeMap<String, IngestCounts> {
        self.collections
            .iter()
            .map(|c| (c.name().to_string(), c.counts()))
            .collect()
    }
}

#[cfg(test)]
mod embed_tests;
#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tests;
