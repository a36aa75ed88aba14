//! Snapshot files: one consistent cut of the view (documents, vectors, per-partition offsets)
//! written atomically, so a restart resumes at offset + 1 instead of replaying every topic.
//!
//! Layout of a file: an 24-byte header — magic `FRESHET\0`, format version (u32 LE), body
//! length (u64 LE), CRC-32 of the body (u32 LE) — then the bincode body. Writes go to a
//! temporary file that is fsynced and renamed into place (then the directory is fsynced), so
//! a crash leaves either the old set of snapshots or the new one, never a torn file under a
//! final name. Reads check length and checksum before decoding anything.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::index::DocVectors;

const MAGIC: &[u8; 8] = b"FRESHET\0";
// 2: topic IDs beside the offsets.
const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: u64 = 24;
/// Snapshots kept on disk; older ones are removed after a successful write.
const KEEP: usize = 3;

/// Errors reading or writing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a complete, intact snapshot.
    #[error("{path} is not a valid snapshot: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything a snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotData {
    /// When the cut was taken (ms since the epoch).
    pub created_at_ms: i64,
    /// One entry per collection.
    pub collections: Vec<CollectionSnapshot>,
}

/// One collection's part of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct CollectionSnapshot {
    /// Collection name.
    pub name: String,
    /// The settings that shaped these documents and vectors (mapping, chunking, embedder);
    /// if they differ at restore time, the collection is rebuilt from its topics instead.
    pub fingerprint: String,
    /// (topic, partition, next offset to apply).
    pub partitions: Vec<(String, i32, i64)>,
    /// The documents.
    pub docs: Vec<DocSnapshot>,
    /// Their live vectors.
    pub vectors: Vec<DocVectors>,
    /// (topic, Kafka topic ID) of the topic generation the offsets belong to: a topic found
    /// with another ID at restart was recreated while freshet was down.
    pub topic_ids: Vec<(String, String)>,
}

/// One document's stored form.
#[derive(Debug, Serialize, Deserialize)]
pub struct DocSnapshot {
    /// Document id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Indexed text.
    pub text: String,
    /// Metadata as JSON text (bincode cannot carry arbitrary JSON values).
    pub metadata_json: String,
    /// Tenant.
    pub tenant: Option<String>,
    /// Chunk byte ranges of `text`.
    pub chunks: Vec<(u64, u64)>,
    /// Apply sequence number of this version.
    pub seq: u64,
    /// Stamp: topic.
    pub topic: String,
    /// Stamp: partition.
    pub partition: i32,
    /// Stamp: offset.
    pub offset: i64,
    /// Stamp: event time (ms).
    pub event_time_ms: i64,
    /// Stamp: ingested at (ms).
    pub ingested_at_ms: i64,
    /// Stamp: indexed at (ms).
    pub indexed_at_ms: i64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writer that keeps a CRC-32 and a byte count of what passes through.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `data` as a new snapshot in `dir` and prunes old ones; returns the new file's path.
pub fn write(dir: &Path, data: &SnapshotData) -> Result<PathBuf, SnapshotError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = format!("snapshot-{:015}.bin", data.created_at_ms.max(0));
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; HEADER_LEN as usize])
        .map_err(io_err(&tmp_path))?;
    let mut body = Checksummed {
        inner: out,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    bincode::serialize_into(&mut body, data).map_err(|e| SnapshotError::Io {
        path: tmp_path.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let (crc, len) = (body.crc.finalize(), body.len);
    let mut file = body.inner.into_inner().map_err(|e| SnapshotError::Io {
        path: tmp_path.clone(),
        source: e.into_error(),
    })?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0)).map_err(io_err(&tmp_path))?;
    file.write_all(&header).map_err(io_err(&tmp_path))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    drop(file);
    fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    prune(dir, KEEP);
    Ok(final_path)
}

/// Snapshot files in `dir`, newest first (names sort by creation time).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".bin"))
        })
        .collect();
    files.sort();
    files.reverse();
    files
}

fn prune(dir: &Path, keep: usize) {
    for old in list(dir).into_iter().skip(keep) {
        if let Err(e) = fs::remove_file(&old) {
            tracing::warn!("cannot remove old snapshot {}: {e}", old.display());
        }
    }
    // Leftovers of writes that crashed before their rename.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".bin.tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Reads and verifies one snapshot file.
pub fn read(path: &Path) -> Result<SnapshotData, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let actual_len = file.metadata().map_err(io_err(path))?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header)
        .map_err(|_| corrupt("shorter than its header".into()))?;
    if &header[..8] != MAGIC {
        return Err(corrupt("wrong magic bytes".into()));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[12..20]);
    let len = u64::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if actual_len != HEADER_LEN + len {
        return Err(corrupt(format!(
            "body is {} bytes, header says {len}",
            actual_len.saturating_sub(HEADER_LEN)
        )));
    }
    // First pass: checksum, so nothing corrupt is ever decoded.
    let mut hasher = crc32fast::Hasher::new();
    let mut reader = BufReader::with_capacity(1 << 20, &mut file);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if hasher.finalize() != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    drop(reader);
    file.seek(SeekFrom::Start(HEADER_LEN))
        .map_err(io_err(path))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    bincode::deserialize_from(reader).map_err(|e| corrupt(format!("cannot decode: {e}")))
}

/// The newest intact snapshot in `dir`, skipping (and logging) corrupt ones.
pub fn read_newest(dir: &Path) -> Option<(PathBuf, SnapshotData)> {
    for path in list(dir) {
        match read(&path) {
            Ok(data) => return Some((path, data)),
            Err(e) => tracing::warn!("skipping snapshot: {e}; trying an older one"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(at: i64, docs: usize) -> SnapshotData {
        SnapshotData {
            created_at_ms: at,
            collections: vec![CollectionSnapshot {
                name: "c".into(),
                fingerprint: "f".into(),
                partitions: vec![("t".into(), 0, 42)],
                topic_ids: vec![("t".into(), "AAAAAAAAAAAAAAAAAAAAAA".into())],
                docs: (0..docs)
                    .map(|i| DocSnapshot {
                        id: format!("d{i}"),
                        title: None,
                        text: "text".into(),
                        metadata_json: "{}".into(),
                        tenant: None,
                        chunks: vec![(0, 4)],
                        seq: i as u64,
                        topic: "t".into(),
                        partition: 0,
                        offset: i as i64,
                        event_time_ms: 1,
                        ingested_at_ms: 2,
                        indexed_at_ms: 3,
                    })
                    .collect(),
                vectors: vec![DocVectors {
                    doc_id: "d0".into(),
                    seq: 0,
                    vectors: vec![(0, vec![1.0, 0.0])],
                }],
            }],
        }
    }

    #[test]
    fn round_trip_and_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &data(1, 3)).unwrap();
        write(dir.path(), &data(2, 5)).unwrap();
        let (path, newest) = read_newest(dir.path()).unwrap();
        assert!(path.ends_with("snapshot-000000000000002.bin"));
        assert_eq!(newest.collections[0].docs.len(), 5);
        assert_eq!(newest.collections[0].partitions, vec![("t".into(), 0, 42)]);
        assert_eq!(
            newest.collections[0].vectors[0].vectors[0].1,
            vec![1.0, 0.0]
        );
    }

    #[test]
    fn corrupt_newest_falls_back_to_previous() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &data(1, 3)).unwrap();
        let newest = write(dir.path(), &data(2, 5)).unwrap();
        let mut bytes = fs::read(&newest).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&newest, &bytes).unwrap();
        assert!(
            matches!(read(&newest), Err(SnapshotError::Corrupt { reason, .. }) if reason.contains("checksum"))
        );
        let (_, older) = read_newest(dir.path()).unwrap();
        assert_eq!(older.created_at_ms, 1);
    }

    #[test]
    fn truncated_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &data(1, 50)).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("header says"), "{err}");
        assert!(read_newest(dir.path()).is_none());
        fs::write(&path, b"FRESH").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("header"));
    }

    #[test]
    fn old_snapshots_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for at in 1..=5 {
            write(dir.path(), &data(at, 1)).unwrap();
        }
        let names: Vec<String> = list(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), KEEP);
        assert!(names[0].contains("005"));
    }
}
