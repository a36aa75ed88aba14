//! Append-only storage of fixed-width per-node records, indexed by node id, in chunks that
//! never move once allocated: readers need no lock, and growing never copies.
//!
//! Two levels of directory (blocks of chunks) are allocated on first use, so an empty store
//! costs a few hundred bytes and a chunk of [`CHUNK_NODES`] records is the unit of growth.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32};

/// Records per chunk.
const CHUNK_NODES: usize = 4096;
/// Chunks per directory block.
const BLOCK_CHUNKS: usize = 1024;
/// Directory blocks: with the two above, room for 2^28 nodes.
const BLOCKS: usize = 64;

/// Most node ids a store can hold.
pub(super) const MAX_NODES: usize = CHUNK_NODES * BLOCK_CHUNKS * BLOCKS;

/// An element type whose all-zero value is where every record starts.
pub(super) trait Zeroed: Send + Sync {
    fn zeroed() -> Self;
}

impl Zeroed for AtomicU32 {
    fn zeroed() -> Self {
        AtomicU32::new(0)
    }
}

impl Zeroed for AtomicU8 {
    fn zeroed() -> Self {
        AtomicU8::new(0)
    }
}

/// A chunk of `CHUNK_NODES` records, allocated on first use.
type Chunk<T> = OnceLock<Box<[T]>>;
/// A directory block of `BLOCK_CHUNKS` chunks, allocated on first use.
type Block<T> = OnceLock<Box<[Chunk<T>]>>;

/// `width` elements per node id (see the module doc).
pub(super) struct Chunked<T> {
    width: usize,
    blocks: Box<[Block<T>]>,
}

impl<T: Zeroed> Chunked<T> {
    /// An empty store of `width` elements per node.
    pub(super) fn new(width: usize) -> Self {
        Chunked {
            width,
            blocks: (0..BLOCKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Elements per node.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    fn locate(id: usize) -> Option<(usize, usize, usize)> {
        let chunk = id / CHUNK_NODES;
        let block = chunk / BLOCK_CHUNKS;
        (block < BLOCKS).then_some((block, chunk % BLOCK_CHUNKS, id % CHUNK_NODES))
    }

    /// Node `id`'s record, if its chunk was allocated.
    #[inline]
    pub(super) fn get(&self, id: usize) -> Option<&[T]> {
        let (block, chunk, at) = Self::locate(id)?;
        let chunk = self.blocks[block].get()?[chunk].get()?;
        chunk.get(at * self.width..(at + 1) * self.width)
    }

    /// Node `id`'s record, allocating its chunk (zeroed) if needed; `None` beyond
    /// [`MAX_NODES`].
    pub(super) fn get_or_alloc(&self, id: usize) -> Option<&[T]> {
        let (block, chunk, at) = Self::locate(id)?;
        let chunks =
            self.blocks[block].get_or_init(|| (0..BLOCK_CHUNKS).map(|_| OnceLock::new()).collect());
        let width = self.width;
        let chunk =
            chunks[chunk].get_or_init(|| (0..CHUNK_NODES * width).map(|_| T::zeroed()).collect());
        chunk.get(at * width..(at + 1) * width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn records_stay_put_and_are_zeroed() {
        let store: Chunked<AtomicU32> = Chunked::new(3);
        assert!(store.get(0).is_none());
        let first = store.get_or_alloc(5).unwrap().as_ptr();
        store.get_or_alloc(5).unwrap()[2].store(7, Ordering::Relaxed);
        // Growing far away allocates other chunks and moves nothing.
        store.get_or_alloc(CHUNK_NODES * BLOCK_CHUNKS + 1).unwrap();
        assert_eq!(store.get(5).unwrap().as_ptr(), first);
        assert_eq!(store.get(5).unwrap()[2].load(Ordering::Relaxed), 7);
        assert_eq!(store.get(6).unwrap()[0].load(Ordering::Relaxed), 0);
        assert!(
            store.get(CHUNK_NODES).is_none(),
            "its chunk was never allocated"
        );
        assert!(store.get_or_alloc(MAX_NODES).is_none());
    }
}
