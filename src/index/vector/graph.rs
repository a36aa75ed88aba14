//! The HNSW graph ([`Hnsw`]) in either storage: f32 vectors, or int8 vectors with a scale
//! (see [`VectorStorage`]). Everything outside this file sees unit f32 vectors; an int8 graph
//! quantises them on the way in.

use std::path::Path;

use super::hnsw::{CompactI8, Hnsw, UnitF32};
use super::kernel::quantise;
use super::{HnswParams, VectorStorage};
use crate::index::vector_store::{LINKS_EXT, VECTORS_EXT};

/// The graph over the index's point ids (node id = point id).
pub(super) enum Graph {
    /// Holds each vector as given (unit f32): the only copy in RAM.
    F32(Hnsw<UnitF32>),
    /// Holds each vector as int8 components plus a scale; the exact copy is on disk.
    Int8(Hnsw<CompactI8>),
}

/// A point found by a graph search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Neighbour {
    pub(super) id: usize,
    /// `1 - similarity` (approximate for an int8 graph), in `[0, 2]`.
    pub(super) distance: f32,
}

impl Graph {
    /// An empty graph for `dim`-d vectors.
    pub(super) fn new(params: &HnswParams, dim: usize) -> Graph {
        let (m, ef) = (params.m, params.ef_construction);
        match params.storage {
            VectorStorage::F32 => Graph::F32(Hnsw::new(dim, m, ef)),
            VectorStorage::Int8 => Graph::Int8(Hnsw::new(dim, m, ef)),
        }
    }

    /// Inserts a unit vector under point id `id`; an id already in the graph is left as it
    /// is.
    pub(super) fn insert(&self, unit: &[f32], id: usize) {
        match self {
            Graph::F32(h) => h.insert(id, unit),
            Graph::Int8(h) => h.insert(id, &quantise(unit)),
        };
    }

    /// The `k` nearest points to a unit query, best first (for an int8 graph, by the
    /// approximate distance).
    pub(super) fn search(&self, unit: &[f32], k: usize, ef: usize) -> Vec<Neighbour> {
        let found = match self {
            Graph::F32(h) => h.search(unit, k, ef),
            Graph::Int8(h) => h.search(&quantise(unit), k, ef),
        };
        found
            .into_iter()
            .map(|n| Neighbour {
                id: n.id as usize,
                distance: n.distance,
            })
            .collect()
    }

    /// Whether point `id` is in the graph (then the graph holds its vector).
    pub(super) fn contains(&self, id: usize) -> bool {
        match self {
            Graph::F32(h) => h.contains(id),
            Graph::Int8(h) => h.contains(id),
        }
    }

    /// Point `id`'s exact vector, when an f32 graph holds it.
    pub(super) fn exact(&self, id: usize) -> Option<&[f32]> {
        match self {
            Graph::F32(h) => h.vector(id),
            Graph::Int8(_) => None,
        }
    }

    /// Point `id`'s int8 vector, when an int8 graph holds it.
    pub(super) fn compact(&self, id: usize) -> Option<&[i8]> {
        match self {
            Graph::F32(_) => None,
            Graph::Int8(h) => h.vector(id),
        }
    }

    /// Writes the points below `points` as `<dir>/<basename>.{links,vectors}` (inserts
    /// must be paused).
    pub(super) fn dump(&self, dir: &Path, basename: &str, points: usize) -> std::io::Result<()> {
        let links = dir.join(format!("{basename}.{LINKS_EXT}"));
        let vectors = dir.join(format!("{basename}.{VECTORS_EXT}"));
        match self {
            Graph::F32(h) => h.dump(points, &links, &vectors),
            Graph::Int8(h) => h.dump(points, &links, &vectors),
        }
    }

    /// Loads a dump whose checksums were verified, for `dim`-d vectors with these
    /// parameters; one written with another storage, dimension or `m` is an error.
    pub(super) fn load(
        dir: &Path,
        basename: &str,
        dim: usize,
        params: &HnswParams,
    ) -> Result<Graph, String> {
        let links = dir.join(format!("{basename}.{LINKS_EXT}"));
        let vectors = dir.join(format!("{basename}.{VECTORS_EXT}"));
        let (m, ef) = (params.m, params.ef_construction);
        Ok(match params.storage {
            VectorStorage::F32 => Graph::F32(Hnsw::load(&links, &vectors, dim, m, ef)?),
            VectorStorage::Int8 => Graph::Int8(Hnsw::load(&links, &vectors, dim, m, ef)?),
        })
    }
}
