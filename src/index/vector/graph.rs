//! The HNSW graph (hnsw_rs) in either storage: f32 vectors, or int8 vectors with a scale
//! (see [`VectorStorage`]). Everything outside this file sees unit f32 vectors; an int8 graph
//! quantises them on the way in.

use std::path::Path;
use std::sync::Arc;

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::{Hnsw, Neighbour, Point};
use serde::{Serialize, de::DeserializeOwned};

use super::kernel::{CompactCosine, SCALE_BYTES, UnitCosine, quantise};
use super::points::Stored;
use super::{HnswParams, MAX_LAYERS, VectorStorage};

/// hnsw_rs's graph over the index's point ids.
pub(super) enum Graph {
    /// Holds each vector as given (unit f32): the only copy in RAM.
    F32(Hnsw<'static, f32, UnitCosine>),
    /// Holds each vector as int8 components plus a scale; the exact copy is on disk.
    Int8(Hnsw<'static, i8, CompactCosine>),
}

impl Graph {
    /// An empty graph; `capacity` is only a hint.
    pub(super) fn new(params: &HnswParams, capacity: usize) -> Graph {
        let (m, ef) = (params.m, params.ef_construction);
        match params.storage {
            VectorStorage::F32 => Graph::F32(Hnsw::new(m, capacity, MAX_LAYERS, ef, UnitCosine)),
            VectorStorage::Int8 => {
                Graph::Int8(Hnsw::new(m, capacity, MAX_LAYERS, ef, CompactCosine))
            }
        }
    }

    /// Inserts a unit vector under point id `id`.
    pub(super) fn insert(&self, unit: &[f32], id: usize) {
        match self {
            Graph::F32(h) => h.insert_slice((unit, id)),
            Graph::Int8(h) => h.insert_slice((&quantise(unit), id)),
        }
    }

    /// The `k` nearest points to a unit query, best first (for an int8 graph, by the
    /// approximate distance).
    pub(super) fn search(&self, unit: &[f32], k: usize, ef: usize) -> Vec<Neighbour> {
        match self {
            Graph::F32(h) => h.search(unit, k, ef),
            Graph::Int8(h) => h.search(&quantise(unit), k, ef),
        }
    }

    /// Points per layer now: with [`added_since`](Self::added_since), tells which points an
    /// insert round added.
    pub(super) fn layer_sizes(&self) -> Vec<usize> {
        match self {
            Graph::F32(h) => layer_sizes(h),
            Graph::Int8(h) => layer_sizes(h),
        }
    }

    /// The points added since each layer had `before[l]` points, as `(point id, where its
    /// vector is held in the graph)`.
    pub(super) fn added_since(&self, before: &[usize]) -> Vec<(usize, Stored)> {
        match self {
            Graph::F32(h) => added_since(h, before)
                .map(|p| (p.get_origin_id(), Stored::Graph(p)))
                .collect(),
            Graph::Int8(h) => added_since(h, before)
                .map(|p| (p.get_origin_id(), Stored::Compact(p)))
                .collect(),
        }
    }

    /// Writes the graph as `<dir>/<wanted>.hnsw.{graph,data}`; returns the basename used.
    pub(super) fn dump(&self, dir: &Path, wanted: &str) -> std::io::Result<String> {
        use hnsw_rs::api::AnnT;
        match self {
            Graph::F32(h) => h.file_dump(dir, wanted),
            Graph::Int8(h) => h.file_dump(dir, wanted),
        }
        .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Loads a dump whose checksums were verified, as `storage` wrote it for `dim`-d
    /// vectors. hnsw_rs asserts rather than returning errors on some bad input, so a panic
    /// is caught and reported as an error too.
    pub(super) fn load(
        dir: &Path,
        basename: &str,
        dim: usize,
        storage: VectorStorage,
    ) -> Result<Graph, String> {
        let graph = match storage {
            VectorStorage::F32 => Graph::F32(load(dir, basename, dim)?),
            VectorStorage::Int8 => Graph::Int8(load(dir, basename, dim + SCALE_BYTES)?),
        };
        Ok(graph)
    }
}

fn layer_sizes<T: Clone + Send + Sync, D: Distance<T> + Send + Sync>(
    h: &Hnsw<'static, T, D>,
) -> Vec<usize> {
    let indexation = h.get_point_indexation();
    (0..MAX_LAYERS)
        .map(|l| indexation.get_layer_nb_point(l))
        .collect()
}

fn added_since<'h, T: Clone + Send + Sync, D: Distance<T> + Send + Sync>(
    h: &'h Hnsw<'static, T, D>,
    before: &'h [usize],
) -> impl Iterator<Item = Arc<Point<'static, T>>> + 'h {
    let indexation = h.get_point_indexation();
    before
        .iter()
        .enumerate()
        .filter(move |&(layer, &before)| indexation.get_layer_nb_point(layer) > before)
        .flat_map(move |(layer, &before)| indexation.get_layer_iterator(layer).skip(before))
}

fn load<T, D>(dir: &Path, basename: &str, width: usize) -> Result<Hnsw<'static, T, D>, String>
where
    T: 'static + Serialize + DeserializeOwned + Clone + Send + Sync + std::fmt::Debug,
    D: Distance<T> + Default + Send + Sync,
{
    use hnsw_rs::hnswio::HnswIo;
    let (dir, basename) = (dir.to_path_buf(), basename.to_string());
    let loaded = std::panic::catch_unwind(move || {
        // The loaded graph borrows its loader for its whole life (hnsw_rs's design); the
        // loader is small (paths and options, no data without mmap), so one per restore is
        // leaked rather than tied to the index with a self-referential type.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, &basename)));
        io.load_hnsw::<T, D>().map_err(|e| e.to_string())
    })
    .map_err(|_| "hnsw_rs panicked reading it".to_string())??;
    let got = loaded.get_point_indexation().get_data_dimension();
    if got != width && loaded.get_nb_point() > 0 {
        return Err(format!(
            "its vectors have {got} components, this index's {width}"
        ));
    }
    Ok(loaded)
}
