//! The point table: every point id ever given to the graph, what it belongs to, whether it
//! is still live, and where its vector is held.

use std::collections::HashMap;
use std::sync::Arc;

/// A write accepted by `stage_upsert` / `stage_delete`, applied by `flush`.
pub(super) enum StagedOp {
    Upsert {
        doc: Arc<str>,
        seq: u64,
        vectors: Vec<(u32, Vec<f32>)>,
    },
    Delete(Arc<str>),
}

#[derive(Default)]
pub(super) struct PointTable {
    /// Indexed by point id, which is also the point's node id in the graph.
    pub(super) points: Vec<Point>,
    /// Live point ids of each document; a document with no live point has no entry.
    pub(super) by_doc: HashMap<Arc<str>, Vec<usize>>,
    /// Live points.
    pub(super) live: usize,
}

/// One point of the table.
pub(super) struct Point {
    pub(super) doc: Arc<str>,
    pub(super) chunk_no: u32,
    pub(super) seq: u64,
    /// The normalised vector, for exact search, export and rebuild. Freed when the point
    /// dies.
    pub(super) vector: Stored,
    pub(super) live: bool,
}

/// Where a point's vector is held: each vector is held once in RAM.
pub(super) enum Stored {
    /// Our copy, until the point is in the graph (and for points that never get there).
    Own(Box<[f32]>),
    /// In the graph, under the point's id: an f32 graph holds the exact vector; an int8
    /// graph the int8 copy, with the exact one in the spill file.
    Graph,
}

impl Stored {
    pub(super) fn dead() -> Stored {
        Stored::Own(Box::default())
    }
}

impl PointTable {
    pub(super) fn kill_doc(&mut self, doc_id: &str) {
        if let Some(ids) = self.by_doc.remove(doc_id) {
            for id in ids {
                let point = &mut self.points[id];
                point.live = false;
                point.vector = Stored::dead();
                self.live -= 1;
            }
        }
    }

    pub(super) fn apply(&mut self, op: StagedOp) {
        match op {
            StagedOp::Upsert { doc, seq, vectors } => {
                self.kill_doc(&doc);
                let first = self.points.len();
                for (chunk_no, vector) in vectors {
                    self.points.push(Point {
                        doc: Arc::clone(&doc),
                        chunk_no,
                        seq,
                        vector: Stored::Own(vector.into_boxed_slice()),
                        live: true,
                    });
                }
                let ids: Vec<usize> = (first..self.points.len()).collect();
                self.live += ids.len();
                if !ids.is_empty() {
                    self.by_doc.insert(doc, ids);
                }
            }
            StagedOp::Delete(doc) => self.kill_doc(&doc),
        }
    }
}
