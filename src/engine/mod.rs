//! The engine: the [`Catalog`] of collections (view + indexes) and its two sides, built
//! together by [`Engine::open`]:
//! - [`Ingest`] (`apply.rs`, `compaction.rs`, `checkpoint.rs`): prepare and apply batches
//!   (one writer, fed by the source), purge re-read partitions, rebuild vector indexes,
//!   write checkpoints.
//! - [`Search`] (`query.rs`, `changes.rs`): the read-only queries the MCP tools call.
//!
//! Both share the catalog and the [`Freshness`] (progress, watermarks, readiness), which
//! lives outside the engine in [`crate::freshness`].

mod apply;
mod catalog;
mod changes;
mod checkpoint;
mod collection;
mod compaction;
mod generation;
mod poison;
mod query;
mod ranking;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::api::{GenerationInfo, Watermark};
use crate::config::Config;
use crate::decode::SchemaSource;
use crate::embed::EmbedError;
use crate::freshness::Freshness;
use crate::index::IndexError;
use crate::metrics::Metrics;
use crate::source::{DeadLetters, MetaClient};

pub use apply::{ApplyOutcome, Prepared, PreparedBatch, PreparedChange};
pub use catalog::Catalog;
pub use changes::{
    Change, ChangeKind, ChangeWatch, ChangesRequest, Cursor, MAX_CHANGES_LIMIT, Published,
    ReadError, WatchTarget,
};
pub use checkpoint::{GraphDump, RestoreReport};
pub use collection::Collection;
use compaction::Rebuild;
pub use generation::Frozen;
pub use poison::{ApplyError, PoisonKind};
pub(crate) use query::{
    Candidate, Retrieved, check_ids, embed_query, fetch_depth, fuse, merge_collections,
    query_vector, render_hit, retrieve, search_pool,
};
pub use query::{Consistency, Mode, QueryError, SearchRequest};
pub(crate) use ranking::next_cursor;
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

/// A running freshet's collections and the two sides that work on them: [`Ingest`], the
/// single writer (prepare, apply, purge, compaction, checkpoints), and [`Search`], the
/// read-only tools. Both share the [`Catalog`] and the [`Freshness`].
pub struct Engine {
    ingest: Arc<Ingest>,
    search: Arc<Search>,
}

/// The writing side: prepares and applies batches, purges re-read partitions, compacts
/// vector indexes and writes checkpoints. One writer thread calls `apply_prepared`.
pub struct Ingest {
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    freshness: Arc<Freshness>,
    metrics: Arc<Metrics>,
    dead_letters: Option<Arc<DeadLetters>>,
    /// Apply sequence: every applied version gets the next number.
    seq: AtomicU64,
    /// Vector index rebuilds running in the background, by collection index.
    rebuilds: Mutex<Vec<Rebuild>>,
    /// Collections whose next generation is being built after a settings change.
    generations: Mutex<Vec<generation::Pending>>,
    /// Every applied batch's changes, for subscriptions.
    change_events: tokio::sync::broadcast::Sender<Arc<Vec<Published>>>,
    /// The pipeline's one cancellation path (see [`Ingest::cancellation`]).
    cancel: tokio_util::sync::CancellationToken,
}

/// The reading side: the MCP tools' queries (search, lookups, freshness, changes,
/// subscriptions, the collection list) and `/metrics`. Never writes a collection.
pub struct Search {
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    freshness: Arc<Freshness>,
    metrics: Arc<Metrics>,
    /// Read only for its counters at `/metrics`.
    dead_letters: Option<Arc<DeadLetters>>,
    /// Subscriptions receive every applied batch's changes from here.
    change_events: tokio::sync::broadcast::Sender<Arc<Vec<Published>>>,
    /// This node's part in a cluster (`[cluster]`), set once at start.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
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
    /// `store` is given (see [`crate::store`]); [`Ingest::open_persisted`] then loads what
    /// is there.
    pub fn open(
        config: Arc<Config>,
        meta: Option<MetaClient>,
        dead_letters: Option<DeadLetters>,
        store: Option<std::path::PathBuf>,
    ) -> Result<Engine, EngineError> {
        let mut collections = Vec::new();
        let mut models = HashMap::new();
        let schemas = crate::registry::Registry::from_config(&config)?
            .map(|registry| Arc::new(registry) as Arc<dyn SchemaSource>);
        for (i, c) in config.collections.iter().enumerate() {
            let collection =
                Collection::new(i, c.clone(), &mut models, schemas.clone(), store.as_deref())?;
            collections.push(Arc::new(collection));
        }
        let catalog = Arc::new(Catalog::new(collections));
        let freshness = Arc::new(Freshness::new(
            meta,
            catalog.topics(),
            config.kafka.watermark_interval_ms,
        ));
        let metrics = Arc::new(Metrics::default());
        let dead_letters = dead_letters.map(Arc::new);
        let change_events = tokio::sync::broadcast::channel(changes::SUBSCRIBER_BACKLOG).0;
        let search = Arc::new(Search {
            config: Arc::clone(&config),
            catalog: Arc::clone(&catalog),
            freshness: Arc::clone(&freshness),
            metrics: Arc::clone(&metrics),
            dead_letters: dead_letters.clone(),
            change_events: change_events.clone(),
            cluster: std::sync::OnceLock::new(),
        });
        let ingest = Arc::new(Ingest {
            config,
            catalog,
            freshness,
            metrics,
            dead_letters,
            seq: AtomicU64::new(0),
            rebuilds: Mutex::new(Vec::new()),
            generations: Mutex::new(Vec::new()),
            change_events,
            cancel: tokio_util::sync::CancellationToken::new(),
        });
        Ok(Engine { ingest, search })
    }

    /// The writing side.
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// The reading side.
    pub fn search(&self) -> &Arc<Search> {
        &self.search
    }

    /// The collections (shared, read-only).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.search.catalog
    }

    /// Progress, watermarks, readiness and catch-up.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.search.freshness
    }
}

impl Ingest {
    /// The configuration the engine was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Dead-letter producer, if configured.
    pub fn dead_letters(&self) -> Option<&DeadLetters> {
        self.dead_letters.as_deref()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Search {
    /// Makes this node a cluster node: searches then cover every node's partitions.
    pub fn join_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// This node's part in a cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// The configuration the engine was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The collections (shared, read-only).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Progress, watermarks, readiness and catch-up.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// Histograms and counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Dead-letter producer, if configured (read for its counters at `/metrics`).
    pub fn dead_letters(&self) -> Option<&DeadLetters> {
        self.dead_letters.as_deref()
    }

    /// Everything `/metrics` shows of the pipeline, in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let collections: Vec<_> = self
            .catalog
            .collections()
            .iter()
            .map(|c| {
                let mut gauges = c.gauges();
                if let Some((_, next)) = self.catalog.rebuild_of(c.name()) {
                    gauges.building = Some((next.generation(), next.view.len()));
                    // What the stream delivers goes to the generation being built.
                    gauges.counts = next.counts();
                }
                gauges
            })
            .collect();
        crate::metrics::render_state(
            self.freshness.is_ready(),
            self.freshness.progress(),
            &collections,
            &self.metrics,
        )
    }

    /// The watermark of the given collections' partitions right now, and which generation
    /// of each answered. A frozen generation (serving while the next is built) answers as of
    /// its checkpoint: its partitions show the offsets that checkpoint covers, and the
    /// answer is not caught up.
    pub fn watermark(&self, collections: &[&Collection]) -> Watermark {
        let mut w = self.freshness.watermark(&topics_of(collections));
        for c in collections {
            let frozen = c.frozen();
            if let Some(f) = frozen {
                w.caught_up = false;
                for p in w
                    .partitions
                    .iter_mut()
                    .filter(|p| c.config.topics.contains(&p.topic))
                {
                    let next = f
                        .partitions
                        .iter()
                        .find(|fp| fp.topic == p.topic && fp.partition == p.partition)
                        .map(|fp| fp.next_offset);
                    p.applied_offset = next.map(|n| n - 1);
                    p.lag = p.high_watermark.map(|h| (h - next.unwrap_or(0)).max(0));
                    p.rereading = None;
                }
            }
            w.generations.push(GenerationInfo {
                collection: c.name().to_string(),
                generation: c.generation(),
                building: frozen.map(|f| f.next_generation),
                note: frozen.map(|f| f.note(c.generation())),
            });
        }
        w
    }

    /// Catch-up numbers of a collection while the replica is not ready; `None` once it is.
    pub fn catch_up_info(&self, c: &Collection) -> Option<crate::api::CatchUpInfo> {
        self.freshness
            .catch_up_info(c.name(), &c.config.topics, c.applied_records())
    }
}

/// Every topic of `collections`.
fn topics_of(collections: &[&Collection]) -> Vec<String> {
    collections
        .iter()
        .flat_map(|c| c.config.topics.iter().cloned())
        .collect()
}

#[cfg(test)]
mod embed_tests;
#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tests;
