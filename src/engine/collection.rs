//! One collection: its settings, its documents (the view), its BM25 and vector indexes,
//! its embedder and chunker, its change log and what its next checkpoint covers.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::api::{EmbeddingInfo, IngestCounts};
use crate::chunk::Chunker;
use crate::config::{CollectionConfig, Provider};
use crate::decode::{Mapping, SchemaSource};
use crate::embed::{self, Embedder, LocalEmbedder};
use crate::index::{HnswParams, IndexError, TextIndex, VectorIndex};
use crate::metrics::{CollectionGauges, VectorGauges};
use crate::time::now_ms;
use crate::view::View;

use super::compaction::VectorOp;
use super::generation::Frozen;
use super::poison::Counters;
use super::{EngineError, changes, checkpoint};

/// One collection: its settings, its documents and its two indexes.
pub struct Collection {
    /// Settings from the config file.
    pub config: CollectionConfig,
    pub(super) mapping: Mapping,
    /// Schemas for wire-format records (`[schema_registry]`), shared by all collections.
    pub(super) schemas: Option<Arc<dyn SchemaSource>>,
    /// The current documents.
    pub view: View,
    /// BM25 over chunks.
    pub text: TextIndex,
    /// HNSW over vectors; created when the dimension is known (config or first vector), and
    /// replaced whole when a rebuild without dead points is swapped in.
    pub(super) vectors: RwLock<Option<Arc<VectorIndex>>>,
    /// Vector writes made while a rebuild runs, replayed into the new graph before the swap.
    pub(super) rebuild_log: Mutex<Option<Vec<VectorOp>>>,
    pub(super) provider: Provider,
    /// Makes vectors from text (`local`, `openai`); `None` for `precomputed` and `none`.
    pub(super) embedder: Option<Arc<dyn Embedder>>,
    /// Splits texts into chunks: in model tokens when the embedder has a tokenizer.
    pub(super) chunker: Chunker,
    pub(super) counts: Mutex<Counters>,
    /// Where the collection lives on disk; `None` when it is held in memory only.
    pub(super) persisted: Option<checkpoint::Persisted>,
    /// The recent changes, for the `changes` tool and subscriptions.
    pub changes: changes::ChangeLog,
    /// What the next checkpoint would cover (left by the writer after each batch).
    pub(super) cut: Mutex<Option<checkpoint::Cut>>,
    /// When the last checkpoint was attempted.
    pub(super) checkpointed_at: Mutex<std::time::Instant>,
    /// Set on a generation that serves, read-only, while the next one is built (see
    /// `generation`).
    pub(super) frozen: OnceLock<Frozen>,
    /// True while this is a next generation being built: its changes reach no change feed
    /// (they replay what the serving generation already showed).
    pub(super) building: AtomicBool,
}

impl Collection {
    /// Builds collection `index` of the config, persisted under `store` when given. Local
    /// models are loaded once per directory and shared through `models`.
    pub(super) fn new(
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
            counts: Mutex::new(Counters::default()),
            persisted,
            changes: changes::ChangeLog::new(config.changes.clone(), now_ms()),
            cut: Mutex::new(None),
            checkpointed_at: Mutex::new(std::time::Instant::now()),
            frozen: OnceLock::new(),
            building: AtomicBool::new(false),
            config,
        };
        if let Some(p) = &collection.persisted {
            p.set_fingerprint(collection.fingerprint());
        }
        Ok(collection)
    }

    /// The next generation of this persisted collection, empty, under the same settings
    /// (shared model, chunker, mapping), in its own directory (see `generation`).
    pub(super) fn next_generation(&self) -> Result<Option<Collection>, IndexError> {
        let Some(p) = &self.persisted else {
            return Ok(None);
        };
        let (text, persisted) =
            checkpoint::open_generation(p, p.generation() + 1, self.config.title_boost())?;
        let known_dim = self.vectors().map(|v| (v.dim(), v.params()));
        let next = Collection {
            config: self.config.clone(),
            mapping: self.mapping.clone(),
            schemas: self.schemas.clone(),
            view: View::default(),
            text,
            vectors: RwLock::new(
                known_dim.map(|(dim, params)| Arc::new(VectorIndex::new(dim, params))),
            ),
            rebuild_log: Mutex::new(None),
            provider: self.provider,
            embedder: self.embedder.clone(),
            chunker: self.chunker.clone(),
            counts: Mutex::new(Counters::default()),
            persisted: Some(persisted),
            changes: changes::ChangeLog::new(self.config.changes.clone(), now_ms()),
            cut: Mutex::new(None),
            checkpointed_at: Mutex::new(std::time::Instant::now()),
            frozen: OnceLock::new(),
            building: AtomicBool::new(true),
        };
        if let Some(p) = &next.persisted {
            p.set_fingerprint(next.fingerprint());
        }
        Ok(Some(next))
    }

    /// Which generation of the collection this is (1 for collections held in memory).
    pub fn generation(&self) -> u64 {
        self.persisted.as_ref().map_or(1, |p| p.generation())
    }

    /// Set while this generation serves, frozen, and the next one is built.
    pub fn frozen(&self) -> Option<&Frozen> {
        self.frozen.get()
    }

    /// True while this is a next generation not serving yet.
    pub fn is_building(&self) -> bool {
        self.building.load(Ordering::Acquire)
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
    pub(super) fn vectors_for(&self, dim: usize) -> Arc<VectorIndex> {
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
    pub(super) fn upsert_vectors(
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
    pub(super) fn delete_vectors(&self, doc_id: &str) {
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
    pub(super) fn flush_vectors(&self) {
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
        self.counts.lock().to_api()
    }

    /// Records applied since start: every change that reached the view, and the poison
    /// records skipped (they move its partitions forward too).
    pub fn applied_records(&self) -> u64 {
        self.counts.lock().applied()
    }

    /// What `/metrics` shows of this collection.
    pub fn gauges(&self) -> CollectionGauges {
        CollectionGauges {
            name: self.name().to_string(),
            documents: self.view.len(),
            chunks: self.text.num_chunks(),
            vectors: self.vectors().map(|v| VectorGauges {
                live: v.live_points(),
                dead: v.dead_points(),
                graph_backlog: v.graph_backlog(),
                recall: v.recall_estimate().map(|r| (r.recall_at_10, r.exact_scan)),
            }),
            counts: self.counts(),
            generation: self.generation(),
            building: None,
        }
    }
}

/// Token chunks for a model with a tokenizer, capped at what the model reads whole; word
/// chunks otherwise.
pub(super) fn chunker_for(config: &CollectionConfig, embedder: Option<&dyn Embedder>) -> Chunker {
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

pub(super) fn hnsw_params(config: &CollectionConfig) -> HnswParams {
    HnswParams {
        m: config.hnsw.m,
        ef_construction: config.hnsw.ef_construction,
        ef_search: config.hnsw.ef_search,
        storage: config.vector_storage,
        min_recall: config.hnsw.min_recall as f32,
    }
}
