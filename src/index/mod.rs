//! The search indexes: BM25 over chunk text (tantivy), HNSW over chunk vectors (our own graph),
//! the metadata filters both of them apply, and the fusion of their rankings.
//!
//! Pure, synchronous code with no knowledge of Kafka or MCP. One apply task writes
//! (`upsert`, `delete`, `commit`); any number of query tasks search concurrently. Locks stay
//! inside the methods and are never held across a whole search where avoidable.
//!
//! - [`filter`]: `{field: value | [values]}` filters and the per-document terms they match.
//! - [`text`]: [`TextIndex`], BM25 with English stemming, title boost and snippets.
//! - [`vector`]: [`VectorIndex`], HNSW with masking of superseded points and exact fallback.
//! - [`vector_store`]: the journal and graph dumps a persisted [`VectorIndex`] is restored from.
//! - [`fusion`]: reciprocal rank fusion and per-document grouping of chunk hits.

pub mod filter;
mod fresh_text;
pub mod fusion;
pub mod text;
pub mod vector;
pub mod vector_store;

pub use filter::{
    Candidate, FieldSource, FieldType, Filter, FilterError, FilterSchema, FilterTerms,
};
pub use fusion::{DEFAULT_RRF_K, SCORE_FUSION_DEPTH, best_chunk_per_doc, rrf, score_fusion};
pub use text::{SeqPredicate, TermStats, TextHit, TextIndex};
pub use vector::{DocVectors, HnswParams, RecallEstimate, VectorHit, VectorIndex, VectorStorage};

/// Errors from the indexes. Bad input (vectors) is reported so the caller can tell the user
/// what to change; tantivy failures are internal and carry tantivy's own message.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy failed (I/O, a poisoned writer, ...). Not caused by the query text.
    #[error("text index failure: {0}")]
    Text(#[from] tantivy::TantivyError),
    /// The text index directory could not be created.
    #[error("cannot create text index directory {}: {source}", path.display())]
    Directory {
        /// The directory that was asked for.
        path: std::path::PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// A vector's length differs from the dimension the index was created with.
    #[error(
        "vector has {got} dimensions but this index holds {expected}-dimensional vectors; \
         the query vector or embedding model must produce {expected} dimensions"
    )]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The offending vector's length.
        got: usize,
    },
    /// NaN or infinity would poison every distance computed against it.
    #[error("{what} contains NaN or infinite values")]
    NonFiniteVector {
        /// Which vector, e.g. "query vector" or a chunk of a named document.
        what: String,
    },
    /// A zero vector has no direction, so cosine similarity is undefined.
    #[error("{what} is all zeros, so it has no direction to compare")]
    ZeroVector {
        /// Which vector, e.g. "query vector" or a chunk of a named document.
        what: String,
    },
}
