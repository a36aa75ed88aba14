//! freshet's HNSW graph (Malkov & Yashunin, "Efficient and robust approximate nearest
//! neighbor search using Hierarchical Navigable Small World graphs"), over dense node ids.
//!
//! Layout, chosen for memory (issue 14) and lock-free reads:
//! - vectors in [`Chunked`] storage indexed by node id, each held once, written once;
//! - layer 0's neighbour lists in one flat array: per node a count and `2·m` `u32` ids;
//! - the upper layers (about one node in `m` has any) in a map from node id to its lists.
//!
//! Searches run while inserts go on and take no lock on layer 0: list entries are atomics,
//! so a walk may read a list half rewritten, but every id it can read was published, with its
//! vector, before it was stored in any list (release/acquire). Changes to a node's lists are
//! serialised by a striped lock.

use std::cell::UnsafeCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::chunked::{Chunked, MAX_NODES, Zeroed};
use super::kernel::{SCALE_BYTES, compact_distance, unit_distance};

/// Highest level a node can be drawn.
pub(super) const MAX_LEVEL: usize = 15;
/// Locks serialising neighbour-list changes, shared by node ids modulo this.
const LINK_LOCKS: usize = 1024;
/// Extra starting points of a layer-0 walk that was trapped (see `search_layer0`).
const ESCAPE_SEEDS: usize = 8;
/// Seed of the level draw: levels are a function of node id, so a graph built again from the
/// same points gets the same levels whatever the order of parallel inserts.
const LEVEL_SEED: u64 = 0x5eed_f4e5_4e70_0001;

/// Node states: never inserted, claimed by an insert in progress, published (plus level).
const ABSENT: u8 = 0;
const CLAIMED: u8 = 1;
const PUBLISHED: u8 = 2;

const LINKS_MAGIC: &[u8; 8] = b"FSHNSWL1";
const VECTORS_MAGIC: &[u8; 8] = b"FSHNSWV1";

/// How a graph holds and compares vectors.
pub(super) trait Encoding: Send + Sync + 'static {
    /// One element of a held vector.
    type Elem: Copy + Default + Send + Sync + 'static;
    /// Identifies the encoding in dump headers.
    const TAG: u8;
    /// Bytes per element in a dump (little-endian).
    const BYTES: usize;
    /// Elements per vector of `dim` components.
    fn width(dim: usize) -> usize;
    /// Distance of two held vectors: in `[0, 2]`, never NaN.
    fn distance(a: &[Self::Elem], b: &[Self::Elem]) -> f32;
    fn put(e: Self::Elem, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self::Elem;
}

/// Unit f32 vectors, compared by `1 - dot`.
pub(super) struct UnitF32;

impl Encoding for UnitF32 {
    type Elem = f32;
    const TAG: u8 = 0;
    const BYTES: usize = 4;
    fn width(dim: usize) -> usize {
        dim
    }
    fn distance(a: &[f32], b: &[f32]) -> f32 {
        unit_distance(a, b)
    }
    fn put(e: f32, out: &mut Vec<u8>) {
        out.extend_from_slice(&e.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> f32 {
        f32::from_le_bytes(std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0)))
    }
}

/// int8 components plus a scale (see `kernel::quantise`), compared by the int8 dot product.
pub(super) struct CompactI8;

impl Encoding for CompactI8 {
    type Elem = i8;
    const TAG: u8 = 1;
    const BYTES: usize = 1;
    fn width(dim: usize) -> usize {
        dim + SCALE_BYTES
    }
    fn distance(a: &[i8], b: &[i8]) -> f32 {
        compact_distance(a, b)
    }
    fn put(e: i8, out: &mut Vec<u8>) {
        out.push(e as u8);
    }
    fn get(bytes: &[u8]) -> i8 {
        bytes.first().map_or(0, |&b| b as i8)
    }
}

/// One element of a held vector. Written once, by the thread that claimed its node (state
/// `CLAIMED`), before the node is published with a release store; read only after an
/// acquire load has seen it published; never written again.
#[repr(transparent)]
pub(super) struct Slot<E>(UnsafeCell<E>);

// SAFETY: see `Slot`: no write to a slot can run concurrently with any other access to it,
// because the one write happens before the node's publication and every read after it.
unsafe impl<E: Send> Sync for Slot<E> {}

impl<E: Default + Send> Zeroed for Slot<E> {
    fn zeroed() -> Self {
        Slot(UnsafeCell::new(E::default()))
    }
}

/// A node and its distance to whatever is being searched for; ordered by distance, then id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Near {
    pub(super) distance: f32,
    pub(super) id: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Nodes seen by one walk: a mark per node id, valid when equal to the current stamp, so
/// clearing is a stamp increment.
#[derive(Default)]
struct Visited {
    marks: Vec<u16>,
    stamp: u16,
}

impl Visited {
    fn clear(&mut self, len: usize) {
        if self.marks.len() < len {
            self.marks.resize(len, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
    }

    /// True the first time `id` is seen since [`clear`](Self::clear).
    fn first_visit(&mut self, id: u32) -> bool {
        let at = id as usize;
        if at >= self.marks.len() {
            // A node published after the walk began.
            self.marks.resize(at + 1, 0);
        }
        let seen = self.marks[at] == self.stamp;
        self.marks[at] = self.stamp;
        !seen
    }
}

/// The graph (see the module doc).
pub(super) struct Hnsw<S: Encoding> {
    dim: usize,
    /// Neighbours per node on the upper layers; layer 0 keeps `2·m`.
    m: usize,
    ef_construction: usize,
    /// `1 / ln(m)`: the level distribution's scale.
    level_factor: f64,
    /// Per node: `ABSENT`, `CLAIMED` or `PUBLISHED + level`.
    state: Chunked<AtomicU8>,
    vectors: Chunked<Slot<S::Elem>>,
    /// Per node: count, then `2·m` neighbour ids.
    layer0: Chunked<AtomicU32>,
    /// Per node above layer 0: for each layer `1..=level`, a count then `m` ids.
    upper: RwLock<HashMap<u32, Box<[AtomicU32]>>>,
    /// Where walks start, and its level.
    entry: RwLock<Option<(u32, usize)>>,
    /// One past the highest node id claimed.
    len: AtomicUsize,
    /// Serialise changes to a node's lists.
    link_locks: Box<[Mutex<()>]>,
    /// Visited sets for reuse, one taken per walk.
    visited: Mutex<Vec<Visited>>,
    _encoding: PhantomData<S>,
}

impl<S: Encoding> Hnsw<S> {
    /// An empty graph for `dim`-d vectors; `m` is at least 2.
    pub(super) fn new(dim: usize, m: usize, ef_construction: usize) -> Self {
        let m = m.max(2);
        Hnsw {
            dim,
            m,
            ef_construction: ef_construction.max(1),
            level_factor: 1.0 / (m as f64).ln(),
            state: Chunked::new(1),
            vectors: Chunked::new(S::width(dim)),
            layer0: Chunked::new(1 + 2 * m),
            upper: RwLock::new(HashMap::new()),
            entry: RwLock::new(None),
            len: AtomicUsize::new(0),
            link_locks: (0..LINK_LOCKS).map(|_| Mutex::new(())).collect(),
            visited: Mutex::new(Vec::new()),
            _encoding: PhantomData,
        }
    }

    fn level_of_state(state: u8) -> Option<usize> {
        state.checked_sub(PUBLISHED).map(usize::from)
    }

    /// Node `id`'s level, when it is published.
    fn level(&self, id: u32) -> Option<usize> {
        let state = self.state.get(id as usize)?[0].load(Ordering::Acquire);
        Self::level_of_state(state)
    }

    /// Whether node `id` is in the graph.
    pub(super) fn contains(&self, id: usize) -> bool {
        id < MAX_NODES && self.level(id as u32).is_some()
    }

    /// Node `id`'s vector, when it is published.
    pub(super) fn vector(&self, id: usize) -> Option<&[S::Elem]> {
        if id >= MAX_NODES {
            return None;
        }
        self.level(id as u32)?;
        let slots = self.vectors.get(id)?;
        // SAFETY: the node is published (the acquire load in `level` saw it), so its slots
        // were written before and are never written again (see `Slot`); `Slot<E>` is
        // `repr(transparent)` over `UnsafeCell<E>`, which has `E`'s layout.
        Some(unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<S::Elem>(), slots.len()) })
    }

    /// The draw of node `id`'s level: `floor(-ln(u) / ln(m))`, `u` uniform in `(0, 1]`.
    fn draw_level(&self, id: usize) -> usize {
        let mut x = (id as u64) ^ LEVEL_SEED;
        // splitmix64's finaliser: consecutive ids give independent draws.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_factor) as usize).min(MAX_LEVEL)
    }

    /// Calls `f` with node `id`'s list on `layer` (count, then ids), if it has one. The upper
    /// layers' map is read-locked only for the call; `f` must take no other lock.
    fn with_list<R>(&self, id: u32, layer: usize, f: impl FnOnce(&[AtomicU32]) -> R) -> Option<R> {
        if layer == 0 {
            return self.layer0.get(id as usize).map(f);
        }
        let width = 1 + self.m;
        let upper = self.upper.read();
        let lists = upper.get(&id)?;
        lists.get((layer - 1) * width..layer * width).map(f)
    }

    /// Node `id`'s neighbours on `layer`, into `out`.
    fn neighbours(&self, id: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        self.with_list(id, layer, |list| {
            if let Some((count, ids)) = list.split_first() {
                let n = (count.load(Ordering::Acquire) as usize).min(ids.len());
                out.extend(ids[..n].iter().map(|s| s.load(Ordering::Acquire)));
            }
        });
    }

    /// Replaces node `id`'s list on `layer` (caller holds its link lock). Ids first, then the
    /// count, each with release: a concurrent reader sees old or new ids, all published.
    fn write_list(&self, id: u32, layer: usize, ids: &[u32]) {
        self.with_list(id, layer, |list| {
            if let Some((count, slots)) = list.split_first() {
                let n = ids.len().min(slots.len());
                for (slot, &x) in slots.iter().zip(&ids[..n]) {
                    slot.store(x, Ordering::Release);
                }
                count.store(n as u32, Ordering::Release);
            }
        });
    }

    fn link_lock(&self, id: u32) -> &Mutex<()> {
        &self.link_locks[id as usize % LINK_LOCKS]
    }

    fn capacity(&self, layer: usize) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }

    /// Adds an edge `from → to` (`distance` apart) on `layer`. A full list takes `to` only
    /// when no nearer neighbour already covers its direction (the rule of
    /// [`select`](Self::select)), and then gives up the farthest neighbour that `to` now
    /// covers, or else its farthest one.
    ///
    /// Re-running the whole selection over a full list instead costs a distance for every
    /// pair of neighbours (~500 at 2·m = 32) on most back-links: 77 % of all distances
    /// computed while building a 100k graph. Checking only the pairs that involve `to` costs
    /// at most one distance per neighbour, and keeps lists full.
    fn link(&self, from: u32, to: u32, distance: f32, layer: usize) {
        if from == to {
            return;
        }
        let _guard = self.link_lock(from).lock();
        let capacity = self.capacity(layer);
        let mut ids = Vec::with_capacity(capacity + 1);
        self.neighbours(from, layer, &mut ids);
        if ids.contains(&to) {
            return;
        }
        if ids.len() < capacity {
            ids.push(to);
            self.write_list(from, layer, &ids);
            return;
        }
        let (Some(base), Some(added)) = (self.vector(from as usize), self.vector(to as usize))
        else {
            return;
        };
        let mut current: Vec<(Near, &[S::Elem])> = ids
            .iter()
            .filter_map(|&id| {
                let v = self.vector(id as usize)?;
                Some((
                    Near {
                        distance: S::distance(base, v),
                        id,
                    },
                    v,
                ))
            })
            .collect();
        current.sort_unstable_by_key(|(n, _)| *n);
        let new = Near { distance, id: to };
        let at = current.partition_point(|(n, _)| *n < new);
        if at == current.len()
            || current[..at]
                .iter()
                .any(|(_, v)| S::distance(added, v) < distance)
        {
            // Farther than every neighbour of a full list, or covered by a nearer one.
            return;
        }
        let leaving = current[at..]
            .iter()
            .rposition(|(n, v)| S::distance(added, v) < n.distance)
            .map_or(current.len() - 1, |i| at + i);
        current.remove(leaving);
        current.insert(at, (new, added));
        ids.clear();
        ids.extend(current.iter().map(|(n, _)| n.id));
        self.write_list(from, layer, &ids);
    }

    /// The neighbour-selection heuristic: of `candidates` (nearest first), keep each that is
    /// no farther from the base than from every one kept before it, up to `keep`. Spreads edges over
    /// directions instead of spending them all inside one cluster. (Filling the places left
    /// with the nearest pruned candidates was measured: no recall gained on uniform data.)
    fn select(&self, candidates: &[Near], keep: usize) -> Vec<Near> {
        let mut kept: Vec<(Near, &[S::Elem])> = Vec::with_capacity(keep);
        for &c in candidates {
            if kept.len() >= keep {
                break;
            }
            let Some(v) = self.vector(c.id as usize) else {
                continue;
            };
            // A tie keeps the candidate: a twin of the base (an update that kept its vector)
            // is exactly as far from every candidate as the base is, and pruning on ties
            // would leave the base linked to its twin alone, a two-node island walks cannot
            // leave.
            if kept
                .iter()
                .all(|(_, other)| S::distance(v, other) >= c.distance)
            {
                kept.push((c, v));
            }
        }
        kept.into_iter().map(|(n, _)| n).collect()
    }

    fn with_visited<R>(&self, f: impl FnOnce(&mut Visited) -> R) -> R {
        let mut visited = self.visited.lock().pop().unwrap_or_default();
        let result = f(&mut visited);
        self.visited.lock().push(visited);
        result
    }

    /// Moves to nearer neighbours on `layer` while there are any.
    fn greedy(&self, query: &[S::Elem], mut at: Near, layer: usize, buf: &mut Vec<u32>) -> Near {
        loop {
            let mut moved = false;
            self.neighbours(at.id, layer, buf);
            for &id in buf.iter() {
                if let Some(v) = self.vector(id as usize) {
                    let distance = S::distance(query, v);
                    if distance < at.distance {
                        at = Near { distance, id };
                        moved = true;
                    }
                }
            }
            if !moved {
                return at;
            }
        }
    }

    /// The `ef` nearest nodes to `query` on `layer` reachable from `entry`, nearest first.
    fn search_layer(
        &self,
        query: &[S::Elem],
        entry: &[Near],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
    ) -> Vec<Near> {
        visited.clear(self.len.load(Ordering::Acquire));
        let mut candidates: BinaryHeap<Reverse<Near>> = BinaryHeap::new();
        let mut best: BinaryHeap<Near> = BinaryHeap::new();
        for &e in entry {
            if visited.first_visit(e.id) {
                candidates.push(Reverse(e));
                best.push(e);
            }
        }
        while best.len() > ef {
            best.pop();
        }
        let mut buf = Vec::with_capacity(2 * self.m);
        // The unvisited neighbours of the node being expanded, with their vectors.
        let mut fresh: Vec<(u32, &[S::Elem])> = Vec::with_capacity(2 * self.m);
        while let Some(Reverse(c)) = candidates.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c.distance > w.distance) {
                break;
            }
            self.neighbours(c.id, layer, &mut buf);
            fresh.clear();
            fresh.extend(
                buf.iter()
                    .filter(|&&id| visited.first_visit(id))
                    .filter_map(|&id| Some((id, self.vector(id as usize)?))),
            );
            for &(_, v) in &fresh {
                prefetch(v);
            }
            for &(id, v) in &fresh {
                let distance = S::distance(query, v);
                if best.len() < ef || best.peek().is_some_and(|w| distance < w.distance) {
                    let near = Near { distance, id };
                    candidates.push(Reverse(near));
                    best.push(near);
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    /// [`search_layer`](Self::search_layer) on layer 0, walked again from more places when
    /// it ends short of `ef` nodes in a graph that has more: the walk was trapped in a
    /// pocket with no way out (a graph built before twins stopped cutting nodes off, see
    /// [`select`](Self::select)). Without this a trapped search comes back with a handful
    /// of nodes, which makes the index fall back to an exact scan of every point.
    fn search_layer0(
        &self,
        query: &[S::Elem],
        entry: &[Near],
        ef: usize,
        visited: &mut Visited,
    ) -> Vec<Near> {
        let found = self.search_layer(query, entry, ef, 0, visited);
        let len = self.len.load(Ordering::Acquire);
        if found.len() >= ef || found.len() >= len {
            return found;
        }
        let mut seeds = found.clone();
        // The entry point and nodes spread over the id range: far apart, so at least one
        // is outside the pocket.
        let spread = (*self.entry.read())
            .map(|(id, _)| id)
            .into_iter()
            .chain((0..ESCAPE_SEEDS).map(|k| u32::try_from(k * len / ESCAPE_SEEDS).unwrap_or(0)));
        for id in spread {
            if let Some(v) = self.vector(id as usize)
                && !seeds.iter().any(|n| n.id == id)
            {
                seeds.push(Near {
                    distance: S::distance(query, v),
                    id,
                });
            }
        }
        let wider = self.search_layer(query, &seeds, ef, 0, visited);
        if wider.len() > found.len() {
            wider
        } else {
            found
        }
    }

    /// Inserts `vector` (`S::width(dim)` elements) as node `id`. False when the id is
    /// already taken or out of range, or the vector has the wrong width: nothing changes.
    pub(super) fn insert(&self, id: usize, vector: &[S::Elem]) -> bool {
        if vector.len() != self.vectors.width() || id >= MAX_NODES {
            return false;
        }
        let Some(state) = self.state.get_or_alloc(id).map(|s| &s[0]) else {
            return false;
        };
        if state
            .compare_exchange(ABSENT, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let (Some(slots), Some(_)) = (self.vectors.get_or_alloc(id), self.layer0.get_or_alloc(id))
        else {
            return false;
        };
        write_slots(slots, vector.iter().copied());
        let node = id as u32;
        let level = self.draw_level(id);
        if level > 0 {
            let lists = (0..level * (1 + self.m))
                .map(|_| AtomicU32::new(0))
                .collect();
            self.upper.write().insert(node, lists);
        }
        state.store(PUBLISHED + level as u8, Ordering::Release);
        self.len.fetch_max(id + 1, Ordering::AcqRel);
        self.link_in(node, level);
        true
    }

    /// Connects a published node: the walk down from the entry point, its own lists, and
    /// edges back from its neighbours.
    fn link_in(&self, node: u32, level: usize) {
        let Some(query) = self.vector(node as usize) else {
            return;
        };
        let (entry, top) = loop {
            if let Some(entry) = *self.entry.read() {
                break entry;
            }
            let mut entry = self.entry.write();
            if entry.is_none() {
                *entry = Some((node, level));
                return;
            }
        };
        let Some(entry_vector) = self.vector(entry as usize) else {
            return;
        };
        let mut at = Near {
            distance: S::distance(query, entry_vector),
            id: entry,
        };
        let mut buf = Vec::new();
        for layer in (level + 1..=top).rev() {
            at = self.greedy(query, at, layer, &mut buf);
        }
        self.with_visited(|visited| {
            let mut from = vec![at];
            for layer in (0..=level.min(top)).rev() {
                let mut found = if layer == 0 {
                    self.search_layer0(query, &from, self.ef_construction, visited)
                } else {
                    self.search_layer(query, &from, self.ef_construction, layer, visited)
                };
                // A concurrent insert may have linked this node already.
                found.retain(|n| n.id != node);
                // As many as the layer holds (2·m on layer 0), not m: on evenly spread
                // 384-d data m out-edges cost 0.07 of recall@10 at 10k points (0.52
                // against 0.59), for half the insert time.
                for n in self.select(&found, self.capacity(layer)) {
                    self.link(node, n.id, n.distance, layer);
                    self.link(n.id, node, n.distance, layer);
                }
                if !found.is_empty() {
                    from = found;
                }
            }
        });
        if level > top {
            let mut entry = self.entry.write();
            if entry.is_none_or(|(_, top)| level > top) {
                *entry = Some((node, level));
            }
        }
    }

    /// The `k` nearest nodes to `query`, nearest first, from a walk keeping `ef` candidates.
    pub(super) fn search(&self, query: &[S::Elem], k: usize, ef: usize) -> Vec<Near> {
        if query.len() != self.vectors.width() || k == 0 {
            return Vec::new();
        }
        let Some((entry, top)) = *self.entry.read() else {
            return Vec::new();
        };
        let Some(entry_vector) = self.vector(entry as usize) else {
            return Vec::new();
        };
        let mut at = Near {
            distance: S::distance(query, entry_vector),
            id: entry,
        };
        let mut buf = Vec::new();
        for layer in (1..=top).rev() {
            at = self.greedy(query, at, layer, &mut buf);
        }
        let mut found = self.with_visited(|v| self.search_layer0(query, &[at], ef.max(k), v));
        found.truncate(k);
        found
    }

    /// Writes the nodes below `nodes` (inserts must be paused) as two files: `links` (header,
    /// node states, layer-0 lists, upper lists) and `vectors`, flat little-endian arrays.
    pub(super) fn dump(&self, nodes: usize, links: &Path, vectors: &Path) -> io::Result<()> {
        let nodes = nodes.min(MAX_NODES);
        let levels: Vec<u8> = (0..nodes)
            .map(|id| self.level(id as u32).map_or(ABSENT, |l| l as u8 + 1))
            .collect();
        let entry = (*self.entry.read()).filter(|&(id, _)| (id as usize) < nodes);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(links)?);
        out.write_all(LINKS_MAGIC)?;
        out.write_all(&[S::TAG])?;
        out.write_all(&(self.dim as u32).to_le_bytes())?;
        out.write_all(&(self.m as u32).to_le_bytes())?;
        out.write_all(&(nodes as u64).to_le_bytes())?;
        let (entry_id, entry_level) = entry.map_or((u32::MAX, 0), |(id, l)| (id, l as u8));
        out.write_all(&entry_id.to_le_bytes())?;
        out.write_all(&[entry_level])?;
        out.write_all(&levels)?;
        let mut bytes = Vec::new();
        let mut put_list = |list: &[AtomicU32], out: &mut BufWriter<File>| {
            bytes.clear();
            for x in list {
                bytes.extend_from_slice(&x.load(Ordering::Acquire).to_le_bytes());
            }
            out.write_all(&bytes)
        };
        let zeros: Vec<AtomicU32> = (0..1 + 2 * self.m).map(|_| AtomicU32::new(0)).collect();
        for (id, _) in levels.iter().enumerate().filter(|(_, l)| **l != ABSENT) {
            put_list(self.layer0.get(id).unwrap_or(&zeros), &mut out)?;
        }
        let upper = self.upper.read();
        for (id, &l) in levels.iter().enumerate().filter(|(_, l)| **l > 1) {
            let want = usize::from(l - 1) * (1 + self.m);
            match upper.get(&(id as u32)) {
                Some(lists) if lists.len() == want => put_list(lists, &mut out)?,
                _ => return Err(io::Error::other(format!("node {id} lost its upper lists"))),
            }
        }
        drop(upper);
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

        let mut out = BufWriter::with_capacity(1 << 20, File::create(vectors)?);
        out.write_all(VECTORS_MAGIC)?;
        out.write_all(&[S::TAG])?;
        out.write_all(&(self.vectors.width() as u32).to_le_bytes())?;
        out.write_all(&(nodes as u64).to_le_bytes())?;
        for (id, _) in levels.iter().enumerate().filter(|(_, l)| **l != ABSENT) {
            let v = self
                .vector(id)
                .ok_or_else(|| io::Error::other(format!("node {id} lost its vector")))?;
            bytes.clear();
            for &e in v {
                S::put(e, &mut bytes);
            }
            out.write_all(&bytes)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// A graph from files [`dump`](Self::dump) wrote for `dim`-d vectors and this `m`.
    /// Anything that does not fit (another encoding, dimension or `m`, an id out of range,
    /// a count over a list's capacity, a short or long file) is an error, never a panic.
    pub(super) fn load(
        links: &Path,
        vectors: &Path,
        dim: usize,
        m: usize,
        ef_construction: usize,
    ) -> Result<Self, String> {
        let graph = Self::new(dim, m, ef_construction);
        let m = graph.m;
        let mut r = Reader::open(links)?;
        r.magic(LINKS_MAGIC)?;
        expect("encoding", r.u8()?.into(), S::TAG.into())?;
        expect("dimension", r.u32()?.into(), dim as u64)?;
        expect("m", r.u32()?.into(), m as u64)?;
        let nodes = r.u64()?;
        if nodes > MAX_NODES as u64 {
            return Err(format!("{nodes} nodes"));
        }
        let nodes = nodes as usize;
        let (entry_id, entry_level) = (r.u32()?, usize::from(r.u8()?));
        let mut levels = vec![0u8; nodes];
        r.bytes(&mut levels)?;
        if levels.iter().any(|&l| usize::from(l) > MAX_LEVEL + 1) {
            return Err("a node level out of range".into());
        }
        let present = |id: u32| levels.get(id as usize).is_some_and(|&l| l != ABSENT);
        let mut list = vec![0u32; 1 + 2 * m];
        let mut read_list = |r: &mut Reader, len: usize, into: &[AtomicU32]| {
            r.u32s(&mut list[..len])?;
            let (count, ids) = list[..len].split_first().ok_or("an empty list")?;
            let count = *count as usize;
            if count > ids.len() || !ids[..count].iter().all(|&id| present(id)) {
                return Err("a neighbour list out of range".to_string());
            }
            for (slot, &x) in into.iter().zip(&list[..len]) {
                slot.store(x, Ordering::Relaxed);
            }
            Ok(())
        };
        for id in (0..nodes).filter(|&id| levels[id] != ABSENT) {
            let into = graph
                .layer0
                .get_or_alloc(id)
                .ok_or("node id out of range")?;
            read_list(&mut r, 1 + 2 * m, into)?;
        }
        let mut upper = HashMap::new();
        for id in (0..nodes).filter(|&id| levels[id] > 1) {
            let layers = usize::from(levels[id] - 1);
            let lists: Box<[AtomicU32]> =
                (0..layers * (1 + m)).map(|_| AtomicU32::new(0)).collect();
            for chunk in lists.chunks(1 + m) {
                read_list(&mut r, 1 + m, chunk)?;
            }
            upper.insert(id as u32, lists);
        }
        r.end()?;

        let width = S::width(dim);
        let mut r = Reader::open(vectors)?;
        r.magic(VECTORS_MAGIC)?;
        expect("encoding", r.u8()?.into(), S::TAG.into())?;
        expect("vector width", r.u32()?.into(), width as u64)?;
        expect("node count", r.u64()?, nodes as u64)?;
        let mut bytes = vec![0u8; width * S::BYTES];
        for id in (0..nodes).filter(|&id| levels[id] != ABSENT) {
            r.bytes(&mut bytes)?;
            let slots = graph
                .vectors
                .get_or_alloc(id)
                .ok_or("node id out of range")?;
            write_slots(slots, bytes.chunks_exact(S::BYTES).map(S::get));
        }
        r.end()?;

        match entry_id {
            u32::MAX if levels.iter().all(|&l| l == ABSENT) => {}
            id if present(id) && usize::from(levels[id as usize]) == entry_level + 1 => {
                *graph.entry.write() = Some((id, entry_level));
            }
            _ => return Err("the entry point is not a node of its level".into()),
        }
        *graph.upper.write() = upper;
        for (id, &l) in levels.iter().enumerate().filter(|(_, l)| **l != ABSENT) {
            let state = graph.state.get_or_alloc(id).ok_or("node id out of range")?;
            state[0].store(PUBLISHED + l - 1, Ordering::Release);
        }
        graph.len.store(nodes, Ordering::Release);
        Ok(graph)
    }
}

/// Writes a node's vector (its slots' one write; see `Slot`). Callers own the node: they
/// claimed it, or are building a graph nobody else can see yet.
/// Asks the CPU to start loading `vector` into cache. A walk's distances are bound by memory
/// (each 384-d f32 vector is 24 cache lines at a random address): loading all of a node's
/// unvisited neighbours before scoring them overlaps those misses instead of taking them one
/// vector at a time.
fn prefetch<E>(vector: &[E]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = vector.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(vector)).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults, and the address is inside
            // `vector` anyway; SSE is part of the x86-64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.add(offset),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
}

fn write_slots<E: Copy>(slots: &[Slot<E>], values: impl Iterator<Item = E>) {
    for (slot, x) in slots.iter().zip(values) {
        // SAFETY: the node is not published, and only its owner (the caller) writes it.
        unsafe { *slot.0.get() = x };
    }
}

/// A header field that must match this index.
fn expect(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("its {what} is {got}, this index's {want}"))
    }
}

/// Little-endian reads from a dump file, with errors that say what did not fit.
struct Reader {
    inner: BufReader<File>,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Reader {
            inner: BufReader::with_capacity(1 << 20, file),
        })
    }

    fn bytes(&mut self, out: &mut [u8]) -> Result<(), String> {
        self.inner
            .read_exact(out)
            .map_err(|e| format!("truncated ({e})"))
    }

    fn magic(&mut self, want: &[u8; 8]) -> Result<(), String> {
        let mut got = [0u8; 8];
        self.bytes(&mut got)?;
        if &got == want {
            Ok(())
        } else {
            Err("not a graph dump of this version".into())
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.bytes(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn u32s(&mut self, out: &mut [u32]) -> Result<(), String> {
        let mut b = vec![0u8; out.len() * 4];
        self.bytes(&mut b)?;
        for (x, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *x = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// Nothing may follow the last record.
    fn end(&mut self) -> Result<(), String> {
        let mut b = [0u8; 1];
        match self.inner.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err("trailing bytes".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::vector::kernel::{dot, quantise};

    use crate::index::vector::tests::Rng;

    impl Rng {
        fn unit(&mut self, dim: usize) -> Vec<f32> {
            unit(self.vector(dim))
        }
        /// Points around `clusters` centres: the hard case for a graph (dense pockets).
        fn clustered(&mut self, n: usize, clusters: usize, dim: usize) -> Vec<Vec<f32>> {
            let centres: Vec<Vec<f32>> = (0..clusters).map(|_| self.unit(dim)).collect();
            (0..n)
                .map(|i| {
                    let noise = self.unit(dim);
                    let around = centres[i % clusters].iter().zip(&noise);
                    unit(around.map(|(c, e)| c + 0.6 * e).collect())
                })
                .collect()
        }
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn exact_top(points: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (dot(p, q), i as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|(_, i)| i).collect()
    }

    fn recall<S: Encoding>(
        graph: &Hnsw<S>,
        points: &[Vec<f32>],
        queries: &[Vec<f32>],
        encode: impl Fn(&[f32]) -> Vec<S::Elem>,
    ) -> f64 {
        let found: usize = queries
            .iter()
            .map(|q| {
                let truth = exact_top(points, q, 10);
                let hits = graph.search(&encode(q), 10, 100);
                assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
                hits.iter().filter(|h| truth.contains(&h.id)).count()
            })
            .sum();
        found as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn recall_at_10_on_clustered_data_in_both_encodings() {
        let (dim, n) = (32, 3000);
        let mut rng = Rng(0x1234_5678);
        let points = rng.clustered(n, 30, dim);
        let queries = rng.clustered(100, 30, dim);
        let f32_graph: Hnsw<UnitF32> = Hnsw::new(dim, 16, 100);
        let int8_graph: Hnsw<CompactI8> = Hnsw::new(dim, 16, 100);
        for (id, p) in points.iter().enumerate() {
            assert!(f32_graph.insert(id, p));
            assert!(int8_graph.insert(id, &quantise(p)));
        }
        assert!(!f32_graph.insert(5, &points[6]), "an id is inserted once");
        assert_eq!(f32_graph.vector(5), Some(points[5].as_slice()));
        let r = recall(&f32_graph, &points, &queries, <[f32]>::to_vec);
        assert!(r >= 0.95, "f32 recall@10 = {r}");
        // int8 distances rank by the quantised vectors (the index re-ranks exactly).
        let r = recall(&int8_graph, &points, &queries, quantise);
        assert!(r >= 0.9, "int8 recall@10 = {r}");
    }

    #[test]
    fn searches_run_during_parallel_inserts() {
        use rayon::prelude::*;
        let (dim, n) = (16, 4000);
        let mut rng = Rng(99);
        let points = rng.clustered(n, 20, dim);
        let queries = rng.clustered(50, 20, dim);
        let graph: Hnsw<UnitF32> = Hnsw::new(dim, 8, 60);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let searcher = s.spawn(|| {
                let mut searches = 0;
                while !done.load(Ordering::Relaxed) || searches < 50 {
                    let q = &queries[searches % queries.len()];
                    let hits = graph.search(q, 10, 50);
                    let mut ids: Vec<u32> = hits.iter().map(|h| h.id).collect();
                    for h in &hits {
                        // Every id found is a published node, its distance the true one.
                        let v = graph.vector(h.id as usize).expect("a published node");
                        assert!((h.distance - unit_distance(q, v)).abs() < 1e-6);
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    assert_eq!(ids.len(), hits.len(), "no node twice");
                    searches += 1;
                }
                searches
            });
            points.par_iter().enumerate().for_each(|(id, p)| {
                graph.insert(id, p);
            });
            done.store(true, Ordering::Relaxed);
            assert!(searcher.join().unwrap() >= 50);
        });
        // The graph built concurrently is as good as a sequential one.
        let r = recall(&graph, &points, &queries, <[f32]>::to_vec);
        assert!(r >= 0.95, "recall@10 = {r}");
    }

    /// An f32 graph (m 8, ef_construction 60) of `points`, node id = index.
    fn f32_graph_of(points: &[Vec<f32>]) -> Hnsw<UnitF32> {
        let graph = Hnsw::new(points[0].len(), 8, 60);
        for (id, p) in points.iter().enumerate() {
            assert!(graph.insert(id, p));
        }
        graph
    }

    /// An update that keeps its vector inserts a twin of a node already in the graph (a new
    /// point id, same vector). Twins must not cut their region off: every walk still finds
    /// `k` nodes and the true neighbours.
    #[test]
    fn twins_of_updated_points_leave_the_graph_navigable() {
        let (dim, n, updated) = (16, 3000, 1500);
        let mut rng = Rng(0x7a11);
        let mut points = rng.clustered(n, 30, dim);
        let graph = f32_graph_of(&points);
        for i in 0..updated {
            let twin = points[i].clone();
            assert!(graph.insert(points.len(), &twin));
            points.push(twin);
        }
        let mut short = 0;
        for (i, q) in points.iter().enumerate().step_by(3) {
            let hits = graph.search(q, 10, 50);
            if hits.len() < 10 {
                short += 1;
            }
            assert!(
                hits.first().is_some_and(|h| h.distance <= 1e-6),
                "point {i}: its own vector is not found first"
            );
        }
        assert_eq!(short, 0, "walks that found fewer than 10 nodes");
        let queries = rng.clustered(100, 30, dim);
        let r = recall(&graph, &points, &queries, <[f32]>::to_vec);
        assert!(r >= 0.9, "recall@10 = {r}");
    }

    /// A graph written before twins stopped cutting nodes off may hold such pockets; a walk
    /// that ends in one is walked again from elsewhere instead of coming back short.
    #[test]
    fn a_walk_trapped_in_a_pocket_gets_out() {
        let (dim, n) = (16, 2000);
        let points = Rng(0x90c4).clustered(n, 20, dim);
        let graph = f32_graph_of(&points);
        // Node `pocket` keeps no edge out on any layer, as the old twin pruning left them.
        let pocket = (0..n as u32)
            .find(|&id| Some(id) != graph.entry.read().map(|(e, _)| e))
            .expect("a node other than the entry");
        let level = graph.level(pocket).expect("published");
        for layer in 0..=level {
            graph.write_list(pocket, layer, &[]);
        }
        let query = &points[pocket as usize];
        let start = [Near {
            distance: 0.0,
            id: pocket,
        }];
        let trapped = graph.with_visited(|v| graph.search_layer(query, &start, 50, 0, v));
        assert_eq!(trapped.len(), 1, "the plain walk cannot leave the pocket");
        let hits = graph.with_visited(|v| graph.search_layer0(query, &start, 50, v));
        assert_eq!(hits.len(), 50);
        assert_eq!(hits[0].id, pocket);
        let truth = exact_top(&points, query, 10);
        let found = hits.iter().filter(|h| truth.contains(&h.id)).count();
        assert!(found >= 8, "{found} of the true 10");
    }

    /// A full list takes a new neighbour only when no nearer neighbour covers its direction,
    /// and then gives up the farthest neighbour the new one covers.
    #[test]
    fn a_full_list_trades_a_covered_neighbour_for_a_new_direction() {
        let at = |degrees: f32| {
            let r = degrees.to_radians();
            vec![r.cos(), r.sin()]
        };
        // Node 0 at 0°; its list (capacity 2·m = 4) holds 10°, 20°, 90° and 170°.
        let angles = [0.0, 10.0, 20.0, 90.0, 170.0, 15.0, -60.0, 180.0];
        let graph: Hnsw<UnitF32> = Hnsw::new(2, 2, 10);
        for (id, &a) in angles.iter().enumerate() {
            assert!(graph.insert(id, &at(a)));
        }
        let full = [1, 2, 3, 4];
        let list = |graph: &Hnsw<UnitF32>| {
            let mut ids = Vec::new();
            graph.neighbours(0, 0, &mut ids);
            ids
        };
        let offer = |graph: &Hnsw<UnitF32>, to: u32| {
            let distance = unit_distance(&at(0.0), &at(angles[to as usize]));
            graph.link(0, to, distance, 0);
        };
        // 15° is covered by 10°, and 180° is farther than every neighbour: no change.
        for to in [5, 7] {
            graph.write_list(0, 0, &full);
            offer(&graph, to);
            assert_eq!(list(&graph), full, "offered node {to}");
        }
        // -60° is a new direction (nearer to 0° than to 10° or 20°) and covers 170°, which
        // leaves; the list stays nearest first.
        graph.write_list(0, 0, &full);
        offer(&graph, 6);
        assert_eq!(list(&graph), [1, 2, 6, 3]);
    }

    fn dump_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        (dir.join("g.links"), dir.join("g.vectors"))
    }

    #[test]
    fn dump_and_load_give_the_same_answers_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (links, vectors) = dump_files(dir.path());
        let (dim, n) = (24, 1500);
        let mut rng = Rng(7);
        let points = rng.clustered(n, 15, dim);
        let graph: Hnsw<CompactI8> = Hnsw::new(dim, 12, 80);
        for (id, p) in points.iter().enumerate() {
            // A hole (a point that died before its insert) must survive the round trip.
            if id != 3 {
                graph.insert(id, &quantise(p));
            }
        }
        graph.dump(n, &links, &vectors).unwrap();
        let loaded: Hnsw<CompactI8> = Hnsw::load(&links, &vectors, dim, 12, 80).unwrap();
        assert!(!loaded.contains(3) && loaded.contains(4));
        for q in rng.clustered(30, 15, dim) {
            let q = quantise(&q);
            assert_eq!(graph.search(&q, 10, 50), loaded.search(&q, 10, 50));
        }
        // The loaded graph takes new nodes.
        assert!(loaded.insert(n, &quantise(&points[0])));
        assert!(loaded.insert(3, &quantise(&points[3])));

        // Another encoding, dimension or m: refused.
        assert!(Hnsw::<UnitF32>::load(&links, &vectors, dim, 12, 80).is_err());
        assert!(Hnsw::<CompactI8>::load(&links, &vectors, dim + 1, 12, 80).is_err());
        assert!(Hnsw::<CompactI8>::load(&links, &vectors, dim, 16, 80).is_err());
        let good = std::fs::read(&links).unwrap();
        let damaged = |bytes: Vec<u8>| {
            std::fs::write(&links, bytes).unwrap();
            Hnsw::<CompactI8>::load(&links, &vectors, dim, 12, 80).map(|_| ())
        };
        // Truncated anywhere, or with bytes after the end.
        for cut in [0, 5, 30, good.len() / 2, good.len() - 1] {
            assert!(damaged(good[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(damaged(long).is_err());
        // A neighbour id beyond the nodes, a count beyond a list's capacity.
        let lists_at = 8 + 1 + 4 + 4 + 8 + 4 + 1 + n;
        let mut bad_id = good.clone();
        bad_id[lists_at + 4..lists_at + 8].copy_from_slice(&(n as u32 + 7).to_le_bytes());
        bad_id[lists_at..lists_at + 4].copy_from_slice(&1u32.to_le_bytes());
        assert!(damaged(bad_id).unwrap_err().contains("out of range"));
        let mut bad_count = good.clone();
        bad_count[lists_at..lists_at + 4].copy_from_slice(&999u32.to_le_bytes());
        assert!(damaged(bad_count).is_err());
        // The hole's id as a neighbour: not a node.
        let mut to_hole = good.clone();
        to_hole[lists_at + 4..lists_at + 8].copy_from_slice(&3u32.to_le_bytes());
        to_hole[lists_at..lists_at + 4].copy_from_slice(&1u32.to_le_bytes());
        assert!(damaged(to_hole).is_err());
        // A vector file cut short.
        assert!(damaged(good).is_ok());
        let v = std::fs::read(&vectors).unwrap();
        std::fs::write(&vectors, &v[..v.len() - 1]).unwrap();
        assert!(Hnsw::<CompactI8>::load(&links, &vectors, dim, 12, 80).is_err());
    }

    #[test]
    fn nan_vectors_never_panic() {
        let dim = 8;
        let mut rng = Rng(3);
        let graph: Hnsw<UnitF32> = Hnsw::new(dim, 4, 20);
        for id in 0..300 {
            let v = if id % 7 == 0 {
                vec![f32::NAN; dim]
            } else {
                rng.unit(dim)
            };
            graph.insert(id, &v);
        }
        assert_eq!(graph.search(&[f32::NAN; 8], 5, 20).len(), 5);
        let hits = graph.search(&rng.unit(dim), 5, 20);
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| (0.0..=2.0).contains(&h.distance)));
        // Wrong widths are refused, not a panic.
        assert!(!graph.insert(1000, &[1.0; 3]));
        assert!(graph.search(&[1.0; 3], 5, 20).is_empty());
        let int8: Hnsw<CompactI8> = Hnsw::new(dim, 4, 20);
        let mut nan_scale = quantise(&rng.unit(dim));
        let at = nan_scale.len() - SCALE_BYTES;
        for (i, b) in f32::NAN.to_le_bytes().into_iter().enumerate() {
            nan_scale[at + i] = b as i8;
        }
        for id in 0..50 {
            let v = if id % 5 == 0 {
                nan_scale.clone()
            } else {
                quantise(&rng.unit(dim))
            };
            int8.insert(id, &v);
        }
        assert!(!int8.search(&nan_scale, 3, 10).is_empty());
    }
}
