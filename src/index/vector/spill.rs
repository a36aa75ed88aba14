//! The exact (f32) vectors of a compact index, on disk: what re-ranking and exports read
//! while RAM holds only the int8 copies.
//!
//! One file per index, a flat array indexed by point id (`id * dim * 4` bytes in), created
//! and unlinked at once: it lives as long as the index holds it open and leaves nothing
//! behind after a crash. It is a cache, never restored from: a restart rewrites it from the
//! vector journal. Reads go through the page cache (`pread`), so hot vectors cost no disk
//! access and the kernel may drop cold ones under memory pressure.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where spill files are created: set once at start (the server's `data_dir`), else the
/// system's temporary directory.
static SPILL_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Creates compact indexes' spill files under `dir` from now on (first call wins).
pub fn set_spill_dir(dir: &Path) {
    let _ = SPILL_DIR.set(dir.to_path_buf());
}

fn spill_dir() -> PathBuf {
    SPILL_DIR.get().cloned().unwrap_or_else(std::env::temp_dir)
}

/// Makes file names unique within the process; the pid makes them unique across processes.
static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Exact vectors by point id (see the module doc).
pub(super) struct SpillFile {
    file: File,
    dim: usize,
}

impl SpillFile {
    /// A new, empty, already unlinked spill file for `dim`-dimensional vectors.
    pub(super) fn create(dim: usize) -> io::Result<SpillFile> {
        Self::create_in(&spill_dir(), dim)
    }

    fn create_in(dir: &Path, dim: usize) -> io::Result<SpillFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            ".vectors-{}-{}.f32",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(SpillFile { file, dim })
    }

    fn offset(&self, id: usize) -> u64 {
        (id * self.dim * 4) as u64
    }

    /// Stores point `id`'s vector.
    pub(super) fn write(&self, id: usize, vector: &[f32]) -> io::Result<()> {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.file.write_all_at(&bytes, self.offset(id))
    }

    /// Point `id`'s vector, as written.
    pub(super) fn read(&self, id: usize) -> io::Result<Vec<f32>> {
        let mut bytes = vec![0u8; self.dim * 4];
        self.file.read_exact_at(&mut bytes, self.offset(id))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_by_id_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillFile::create_in(dir.path(), 3).unwrap();
        spill.write(5, &[1.0, -2.5, 3.25]).unwrap();
        spill.write(0, &[0.5, 0.0, f32::MIN_POSITIVE]).unwrap();
        assert_eq!(spill.read(5).unwrap(), vec![1.0, -2.5, 3.25]);
        assert_eq!(spill.read(0).unwrap(), vec![0.5, 0.0, f32::MIN_POSITIVE]);
        // Never written and past the end: an error, not garbage.
        assert!(spill.read(6).is_err());
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 0, "spill files are unlinked at creation");
    }
}
