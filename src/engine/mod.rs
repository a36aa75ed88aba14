//! The engine owns every collection (view + indexes), the per-partition progress, and the
//! two operations everything else is built from: `apply` (one writer, fed by the source) and
//! the read-only queries the MCP tools call.

mod apply;
mod query;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::api::{EmbeddingInfo, IngestCounts, PartitionWatermark, Watermark};
use crate::chunk::Chunker;
use crate::config::{CollectionConfig, Config, Provider};
use crate::decode::Mapping;
use crate::embed::{self, EmbedError, Embedder, LocalEmbedder};
use crate::index::{HnswParams, IndexError, TextIndex, VectorIndex};
use crate::source::{DeadLetters, MetaClient};
use crate::time::{now_ms, rfc3339_ms};
use crate::view::{OffsetTarget, Progress, View};

pub use apply::{ApplyOutcome, Prepared, PreparedChange};
pub use query::{Access, Consistency, Mode, QueryError, SearchRequest};

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
    /// The current documents.
    pub view: View,
    /// BM25 over chunks.
    pub text: TextIndex,
    /// HNSW over vectors; created when the dimension is known (config or first vector).
    vectors: OnceLock<VectorIndex>,
    provider: Provider,
    /// Makes vectors from text (`local`, `openai`); `None` for `precomputed` and `none`.
    embedder: Option<Arc<dyn Embedder>>,
    /// Splits texts into chunks: in model tokens when the embedder has a tokenizer.
    chunker: Chunker,
    counts: Mutex<IngestCounts>,
}

impl Collection {
    /// Builds collection `index` of the config. Local models are loaded once per directory
    /// and shared through `models`.
    fn new(
        index: usize,
        config: CollectionConfig,
        models: &mut HashMap<std::path::PathBuf, Arc<LocalEmbedder>>,
    ) -> Result<Collection, EngineError> {
        let provider = config.provider();
        let embedder = embed::for_collection(index, &config, models).map_err(|error| {
            EngineError::Embedder {
                collection: config.name.clone(),
                error,
            }
        })?;
        let text = TextIndex::in_ram_with_title_boost(config.title_boost()).map_err(|source| {
            EngineError::Index {
                collection: config.name.clone(),
                source,
            }
        })?;
        let vectors = OnceLock::new();
        let known_dim = embedder
            .as_ref()
            .and_then(|e| e.identity().dimensions)
            .or(config.embedding.dimensions);
        if let (Provider::Precomputed | Provider::Local | Provider::Openai, Some(dim)) =
            (provider, known_dim)
        {
            let _ = vectors.set(VectorIndex::new(dim, hnsw_params(&config)));
        }
        let chunker = chunker_for(&config, embedder.as_deref());
        Ok(Collection {
            mapping: config.mapping(),
            view: View::default(),
            text,
            vectors,
            provider,
            embedder,
            chunker,
            counts: Mutex::new(IngestCounts::default()),
            config,
        })
    }

    /// Name of the collection.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The vector index, once it exists.
    pub fn vectors(&self) -> Option<&VectorIndex> {
        self.vectors.get()
    }

    /// The vector index for vectors of `dim` dimensions, creating it on first use.
    fn vectors_for(&self, dim: usize) -> &VectorIndex {
        self.vectors
            .get_or_init(|| VectorIndex::new(dim, hnsw_params(&self.config)))
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
                .map(VectorIndex::dim)
                .or(identity.and_then(|i| i.dimensions))
                .or(self.config.embedding.dimensions),
        }
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
        let dim = self
            .vectors()
            .map(|v| v.dim().to_string())
            .or_else(|| self.config.embedding.dimensions.map(|d| d.to_string()));
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
}

impl Engine {
    /// Builds the collections from config. `meta` reads watermarks (None in unit tests, which
    /// then never claim to be caught up); `dead_letters` receives undecodable records.
    pub fn new(
        config: Arc<Config>,
        meta: Option<MetaClient>,
        dead_letters: Option<DeadLetters>,
    ) -> Result<Engine, EngineError> {
        let mut collections = Vec::new();
        let mut by_topic = HashMap::new();
        let mut models = HashMap::new();
        for (i, c) in config.collections.iter().enumerate() {
            for t in &c.topics {
                by_topic.insert(t.clone(), i);
            }
            collections.push(Arc::new(Collection::new(i, c.clone(), &mut models)?));
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
        let caught_up = topics.iter().all(|t| assigned.contains(t.as_str()))
            && partitions.iter().all(|p| p.lag == Some(0));
        Watermark {
            as_of: rfc3339_ms(now_ms()),
            caught_up,
            partitions,
        }
    }

    /// Reads all partitions' watermarks from the broker and stores them; returns how many
    /// partitions answered.
    pub async fn refresh_watermarks(&self, timeout: std::time::Duration) -> usize {
        let Some(meta) = &self.meta else { return 0 };
        let partitions: Vec<(String, i32)> = self
            .progress
            .snapshot(&[])
            .into_iter()
            .map(|((t, p), _)| (t.to_string(), p))
            .collect();
        let marks = meta.watermarks(partitions, timeout).await;
        let at = now_ms();
        for w in &marks {
            self.progress
                .set_watermarks(&w.topic, w.partition, w.low, w.high, at);
        }
        self.update_readiness(&marks);
        marks.len()
    }

    /// True once the view has caught up with the watermarks first read at start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn update_readiness(&self, marks: &[crate::source::meta::Watermarks]) {
        if self.is_ready() {
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
        if self.is_ready() {
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
mod tests;
