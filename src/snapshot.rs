//! Snapshot files: one consistent cut of the view (documents, vectors, per-partition offsets)
//! written atomically, so a restart resumes at offset + 1 instead of replaying every topic.
//!
//! Layout of a file: an 24-byte header — magic `FRESHET\0`, format version (u32 LE), body
//! length (u64 LE), CRC-32 of the body (u32 LE) — then the bincode body. Writes go to a
//! temporary file that is fsynced and renamed into place (then the directory is fsynced), so
//! a crash leaves either the old set of snapshots or the new one, never a torn file under a
//! final name. Reads check length and checksum before decoding anything, decode with a size
//! limit (a length field can never ask for more memory than the file holds), and check what
//! they decoded (vector dimensions, chunk ranges, metadata): a file that passes the checksum
//! but holds garbage is reported corrupt like any other, so the caller falls back to an older
//! snapshot or to a replay.
//!
//! A failed write removes its temporary file on every path, and [`remove_temp_files`] clears
//! leftovers of a crash at start, so a full disk is not kept full by freshet's own debris.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bincode::Options;
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

impl SnapshotError {
    /// True when the file system is out of space (or quota): the operator must act, and
    /// retrying sooner will not help.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SnapshotError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
                    || source.kind() == io::ErrorKind::FileTooLarge
            }
            SnapshotError::Corrupt { .. } => false,
        }
    }
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

/// A temporary file that is removed when dropped, unless it was renamed into place: every
/// early return of a failed write cleans up after itself.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// The error of a bincode write, keeping the I/O error's kind (disk full must stay visible).
#[allow(clippy::boxed_local)] // bincode::Error is a Box; the caller has no other form
fn bincode_io(path: &Path, e: bincode::Error) -> SnapshotError {
    let source = match *e {
        bincode::ErrorKind::Io(io) => io,
        other => io::Error::other(other.to_string()),
    };
    SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` as a new snapshot in `dir` and prunes old ones; returns the new file's path.
/// On failure nothing of this write is left in `dir`.
pub fn write(dir: &Path, data: &SnapshotData) -> Result<PathBuf, SnapshotError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = format!("snapshot-{:015}.bin", data.created_at_ms.max(0));
    let final_path = dir.join(&name);
    let mut tmp = TempFile {
        path: dir.join(format!(".{name}.tmp")),
        renamed: false,
    };
    let tmp_path = tmp.path.clone();
    let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; HEADER_LEN as usize])
        .map_err(io_err(&tmp_path))?;
    let mut body = Checksummed {
        inner: out,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    bincode::serialize_into(&mut body, data).map_err(|e| bincode_io(&tmp_path, e))?;
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
    tmp.renamed = true;
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
    remove_temp_files(dir);
}

/// Removes temporary files of writes that crashed before their rename (call at start, when
/// no write is in flight); returns how many were removed.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".bin.tmp") {
            match fs::remove_file(e.path()) {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
    removed
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
    // The same encoding `serialize_into` writes, with the body's length as the limit: a
    // corrupt length field then fails to decode instead of asking for exabytes of memory.
    let data: SnapshotData = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(len)
        .deserialize_from(reader)
        .map_err(|e| corrupt(format!("cannot decode: {e}")))?;
    data.check().map_err(corrupt)?;
    Ok(data)
}

impl SnapshotData {
    /// Checks what decoding cannot: every vector of a collection has one dimension and finite
    /// values, chunk ranges lie within their text, metadata is a JSON object, offsets are not
    /// negative. Restoring then never meets a value it cannot index.
    pub fn check(&self) -> Result<(), String> {
        for c in &self.collections {
            let name = &c.name;
            if let Some((t, p, next)) = c.partitions.iter().find(|(_, _, n)| *n < 0) {
                return Err(format!("collection {name}: next offset {next} of {t}/{p}"));
            }
            for d in &c.docs {
                for &(start, end) in &d.chunks {
                    let inside = match (usize::try_from(start), usize::try_from(end)) {
                        (Ok(a), Ok(b)) => a <= b && d.text.get(a..b).is_some(),
                        _ => false,
                    };
                    if !inside {
                        return Err(format!(
                            "collection {name}, document {:?}: chunk {start}..{end} outside its text",
                            d.id
                        ));
                    }
                }
                if !matches!(
                    serde_json::from_str::<serde_json::Value>(&d.metadata_json),
                    Ok(serde_json::Value::Object(_))
                ) {
                    return Err(format!(
                        "collection {name}, document {:?}: metadata is not a JSON object",
                        d.id
                    ));
                }
            }
            let mut dim = None;
            for v in &c.vectors {
                for (chunk, x) in &v.vectors {
                    let expected = *dim.get_or_insert(x.len());
                    if x.is_empty() || x.len() != expected || !x.iter().all(|f| f.is_finite()) {
                        return Err(format!(
                            "collection {name}, document {:?}: vector of chunk {chunk} has {} values (expected {expected}, finite)",
                            v.doc_id,
                            x.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
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

    /// Writes `body` under a valid header (right length, right checksum): only decoding and
    /// checking can tell it is not a snapshot.
    fn seal(path: &Path, body: &[u8]) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes.extend_from_slice(body);
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn garbage_body_with_valid_checksum_is_corrupt_not_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &data(1, 3)).unwrap();
        let newest = dir.path().join("snapshot-000000000000002.bin");
        // created_at, then a collection count of ~6.8e18: unbounded, this asks for exabytes.
        let mut body = 2i64.to_le_bytes().to_vec();
        body.extend_from_slice(&0x5f00_0000_0000_0000u64.to_le_bytes());
        body.extend_from_slice(&[0xab; 64]);
        seal(&newest, &body);
        let err = read(&newest).unwrap_err().to_string();
        assert!(err.contains("cannot decode"), "{err}");
        let (path, older) = read_newest(dir.path()).unwrap();
        assert_eq!(older.created_at_ms, 1);
        assert!(path.ends_with("snapshot-000000000000001.bin"));
    }

    #[test]
    fn randomly_damaged_bodies_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &data(1, 20)).unwrap();
        let body = fs::read(&path).unwrap()[HEADER_LEN as usize..].to_vec();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut rejected = 0;
        for _ in 0..500 {
            let mut damaged = body.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            seal(&path, &damaged);
            // Either it decodes to something that passes the checks, or it is corrupt.
            match read(&path) {
                Ok(d) => assert!(d.check().is_ok()),
                Err(SnapshotError::Corrupt { .. }) => rejected += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(rejected > 0);
    }

    #[test]
    fn decoded_values_that_cannot_be_restored_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-000000000000001.bin");
        type Damage = fn(&mut CollectionSnapshot);
        let cases: [(Damage, &str); 4] = [
            (|c| c.vectors[0].vectors[0].1[0] = f32::NAN, "finite"),
            (|c| c.vectors[0].vectors.push((1, vec![1.0])), "expected 2"),
            (|c| c.docs[0].chunks.push((2, 99)), "outside its text"),
            (
                |c| c.docs[1].metadata_json = "[1]".into(),
                "not a JSON object",
            ),
        ];
        for (damage, says) in cases {
            let mut d = data(1, 3);
            damage(&mut d.collections[0]);
            seal(&path, &bincode::serialize(&d).unwrap());
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the snapshot should go: the rename fails.
        let blocker = dir.path().join("snapshot-000000000000007.bin");
        fs::create_dir_all(blocker.join("x")).unwrap();
        let err = write(dir.path(), &data(7, 10)).unwrap_err();
        assert!(!err.is_disk_full(), "{err}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["snapshot-000000000000007.bin".to_string()]);
    }

    #[test]
    fn leftover_temporary_files_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &data(1, 1)).unwrap();
        fs::write(
            dir.path().join(".snapshot-000000000000002.bin.tmp"),
            b"partial",
        )
        .unwrap();
        fs::write(dir.path().join(".snapshot-000000000000003.bin.tmp"), b"").unwrap();
        assert_eq!(remove_temp_files(dir.path()), 2);
        assert_eq!(list(dir.path()).len(), 1);
        assert_eq!(remove_temp_files(dir.path()), 0);
    }

    #[test]
    fn disk_full_is_recognised() {
        let full = SnapshotError::Io {
            path: "x".into(),
            source: io::Error::from_raw_os_error(28), // ENOSPC
        };
        assert!(full.is_disk_full());
    }
}
