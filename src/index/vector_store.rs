//! On-disk form of a vector index: a journal of its writes and occasional dumps of its graph.
//!
//! A journal generation (`journal-<gen>.log`) starts with a base record holding the whole
//! point table (every point id, live or dead, with the vectors of the live ones), followed by
//! one record per staged write, in the order the writer applied them. Replaying it gives back
//! exactly the same point ids, which are also the ids in the graph. Records are framed as
//! `length (u32 LE) | CRC-32 (u32 LE) | bincode body`; the length an index commit names is the
//! part that counts, anything after it (a write that crashed half way) is cut off on open.
//! Records are decoded with their own length as the size limit, so a damaged one is reported,
//! never an allocation of exabytes.
//!
//! A graph dump (`graph-<gen>-<points>.{links,vectors}`: the graph's neighbour lists and its
//! vectors as flat little-endian arrays) holds the graph of the first `points` ids; its
//! `.meta` file, written last and atomically, carries the CRC-32 of both files, which are
//! checked before the graph is loaded from them. Points after the dump are inserted into the
//! graph again on restore, in the background, and are searchable by exact scan meanwhile. A
//! dump in an older format (hnsw_rs's `.hnsw.{graph,data}`, before [`GRAPH_FORMAT`]) is
//! treated as absent: the graph is built again from the journal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::{Deserialize, Serialize};

/// Largest record accepted when reading (a base record of a large table is big, but a length
/// field beyond this is damage).
const MAX_RECORD: u64 = 1 << 36;

/// One point of a base record: its id is its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasePoint {
    /// The document.
    pub doc: String,
    /// Chunk number within the document.
    pub chunk_no: u32,
    /// Document version.
    pub seq: u64,
    /// The normalised vector; `None` for a dead point.
    pub vector: Option<Vec<f32>>,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The whole point table at the start of a generation.
    Base {
        /// Vector dimension.
        dim: usize,
        /// Every point, by id.
        points: Vec<BasePoint>,
    },
    /// A document's vectors replaced (already normalised).
    Upsert {
        /// The document.
        doc: String,
        /// Its version.
        seq: u64,
        /// `(chunk_no, vector)`.
        vectors: Vec<(u32, Vec<f32>)>,
    },
    /// A document's vectors masked.
    Delete {
        /// The document.
        doc: String,
    },
}

fn encoding() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

fn frame(record: &Record) -> io::Result<Vec<u8>> {
    let body = encoding()
        .serialize(record)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("journal record too big"))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Path of generation `generation`'s journal in `dir`.
pub fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:010}.log"))
}

/// The append end of a journal generation. Writes are buffered; [`sync`](Self::sync) makes
/// them durable and says how long the journal is. After a failed write the journal refuses
/// to sync again (records would be missing): the owner starts a new generation.
pub struct Journal {
    path: PathBuf,
    generation: u64,
    file: BufWriter<File>,
    len: u64,
    failed: Option<String>,
}

impl Journal {
    /// Creates generation `generation` in `dir` starting with `base`, durable on return.
    pub fn create(dir: &Path, generation: u64, base: &Record) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let path = journal_path(dir, generation);
        let file = File::create(&path)?;
        let mut journal = Journal {
            path,
            generation,
            file: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            failed: None,
        };
        let result = journal
            .write(base)
            .and_then(|()| journal.flush_and_sync())
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(e) = result {
            drop(journal.file);
            let _ = fs::remove_file(journal_path(dir, generation));
            return Err(e);
        }
        Ok(journal)
    }

    /// Opens generation `generation` for appending after its first `len` bytes (cutting off
    /// anything after them).
    pub fn reopen(dir: &Path, generation: u64, len: u64) -> io::Result<Journal> {
        let path = journal_path(dir, generation);
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(len)?;
        file.sync_all()?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.seek(SeekFrom::Start(len))?;
        Ok(Journal {
            path,
            generation,
            file,
            len,
            failed: None,
        })
    }

    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = frame(record)?;
        self.file.write_all(&bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Buffers a record. A failure is remembered and reported by the next `sync`.
    pub fn append(&mut self, record: &Record) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.write(record) {
            self.failed = Some(format!("{}: {e}", self.path.display()));
        }
    }

    fn flush_and_sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    /// Makes every appended record durable; returns the journal's length. Once a write has
    /// failed, always an error.
    pub fn sync(&mut self) -> Result<u64, String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Err(e) = self.flush_and_sync() {
            let e = format!("{}: {e}", self.path.display());
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(self.len)
    }

    /// Hands every appended record to the OS (no fsync) and returns what a checkpoint must
    /// make durable: the length so far and the file to `fsync`, so the wait for the disk can
    /// happen on another thread while appends go on. Once a write has failed, an error.
    pub fn cut(&mut self) -> Result<JournalSync, String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let handle = self
            .file
            .flush()
            .and_then(|()| self.file.get_ref().try_clone());
        match handle {
            Ok(file) => Ok(JournalSync {
                generation: self.generation,
                len: self.len,
                file,
            }),
            Err(e) => {
                let e = format!("{}: {e}", self.path.display());
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Marks the journal failed (a sync of its file failed elsewhere): the next checkpoint
    /// starts a new generation.
    pub fn fail(&mut self, reason: String) {
        self.failed.get_or_insert(reason);
    }

    /// True after a write failed (the I/O error is returned by `sync`).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Whether the error says the disk is full.
    pub fn failed_for_space(&self) -> bool {
        self.failed
            .as_deref()
            .is_some_and(|e| e.contains("No space left") || e.contains("quota"))
    }
}

/// A journal's state at a checkpoint cut (see [`Journal::cut`]).
#[derive(Debug)]
pub struct JournalSync {
    /// The journal's generation.
    pub generation: u64,
    /// Its length at the cut.
    pub len: u64,
    file: File,
}

impl JournalSync {
    /// Makes the journal durable at least up to the cut.
    pub fn sync(&self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("vector journal generation {}: {e}", self.generation))
    }
}

/// Reads the first `len` bytes of a journal generation: its records in order. Any damage in
/// that part is an error (the caller replays from the topics instead).
pub fn read_journal(dir: &Path, generation: u64, len: u64) -> Result<Vec<Record>, String> {
    let path = journal_path(dir, generation);
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = File::open(&path).map_err(|e| what(&e))?;
    let actual = file.metadata().map_err(|e| what(&e))?.len();
    if actual < len {
        return Err(what(&format!(
            "holds {actual} bytes, the checkpoint names {len}"
        )));
    }
    let mut reader = BufReader::with_capacity(1 << 20, file.take(len));
    let mut records = Vec::new();
    let mut at = 0u64;
    let mut header = [0u8; 8];
    while at < len {
        reader
            .read_exact(&mut header)
            .map_err(|_| what(&format!("record header cut off at byte {at}")))?;
        let body_len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_len > MAX_RECORD || at + 8 + body_len > len {
            return Err(what(&format!(
                "record at byte {at} claims {body_len} bytes, past the end"
            )));
        }
        let mut body = vec![0u8; body_len as usize];
        reader
            .read_exact(&mut body)
            .map_err(|e| what(&format!("record at byte {at}: {e}")))?;
        if crc32fast::hash(&body) != crc {
            return Err(what(&format!("record at byte {at}: checksum mismatch")));
        }
        let record: Record = encoding()
            .with_limit(body_len)
            .deserialize(&body)
            .map_err(|e| what(&format!("record at byte {at} cannot be decoded: {e}")))?;
        check(&record).map_err(|e| what(&format!("record at byte {at}: {e}")))?;
        if matches!(record, Record::Base { .. }) != (at == 0) {
            return Err(what(&format!(
                "record at byte {at}: base record out of place"
            )));
        }
        records.push(record);
        at += 8 + body_len;
    }
    if records.is_empty() {
        return Err(what(&"no base record"));
    }
    Ok(records)
}

/// Values decoding cannot rule out but the index cannot take: non-finite numbers, vectors of
/// the wrong dimension.
fn check(record: &Record) -> Result<(), String> {
    let bad = |v: &[f32], dim: Option<usize>| {
        v.is_empty() || dim.is_some_and(|d| v.len() != d) || !v.iter().all(|x| x.is_finite())
    };
    match record {
        Record::Base { dim, points } => {
            if let Some(p) = points
                .iter()
                .find(|p| p.vector.as_deref().is_some_and(|v| bad(v, Some(*dim))))
            {
                return Err(format!("bad vector for document {:?}", p.doc));
            }
        }
        Record::Upsert { doc, vectors, .. } => {
            let dim = vectors.first().map(|(_, v)| v.len());
            if vectors.iter().any(|(_, v)| bad(v, dim)) {
                return Err(format!("bad vector for document {doc:?}"));
            }
        }
        Record::Delete { .. } => {}
    }
    Ok(())
}

/// The graph dump format written now. Metas without a format (0) name hnsw_rs dumps.
pub const GRAPH_FORMAT: u32 = 1;
/// Extension of a dump's neighbour-list file.
pub const LINKS_EXT: &str = "links";
/// Extension of a dump's vector file.
pub const VECTORS_EXT: &str = "vectors";

/// What a graph dump's `.meta` file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphMeta {
    /// Journal generation the dump belongs to.
    pub generation: u64,
    /// The dump holds the graph of point ids below this.
    pub points: usize,
    /// The basename of the dump's files.
    pub basename: String,
    /// CRC-32 of `<basename>.links`.
    pub graph_crc: u32,
    /// CRC-32 of `<basename>.vectors`.
    pub data_crc: u32,
    /// How the dumped graph holds vectors (dumps from before the setting existed: f32).
    #[serde(default = "super::vector::VectorStorage::of_older_dumps")]
    pub storage: super::vector::VectorStorage,
    /// The dump's format ([`GRAPH_FORMAT`]); 0 for hnsw_rs dumps, which are not read.
    #[serde(default)]
    pub format: u32,
}

/// CRC-32 of a whole file, optionally fsyncing it first (when it was just written).
pub fn file_crc(path: &Path, sync: bool) -> io::Result<u32> {
    let mut file = File::open(path)?;
    if sync {
        file.sync_all()?;
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Writes `meta` as `<dir>/<basename>.meta`, atomically (temporary file, fsync, rename).
pub fn write_graph_meta(dir: &Path, meta: &GraphMeta) -> io::Result<()> {
    let body = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut bytes = crc32fast::hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let final_path = dir.join(format!("{}.meta", meta.basename));
    let tmp = dir.join(format!(".{}.meta.tmp", meta.basename));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &final_path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The newest graph dump of `generation` whose files are intact, with at most `max_points`
/// points. Damaged or unusable dumps are logged and skipped.
pub fn newest_graph(dir: &Path, generation: u64, max_points: usize) -> Option<GraphMeta> {
    let mut metas: Vec<GraphMeta> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".meta"))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let bytes = fs::read(e.path()).ok()?;
            let (crc, body) = bytes.split_at_checked(4)?;
            if crc32fast::hash(body).to_le_bytes() != crc {
                tracing::warn!("{}: checksum mismatch, ignored", e.path().display());
                return None;
            }
            serde_json::from_slice(body).ok()
        })
        .filter(|m: &GraphMeta| m.generation == generation && m.points <= max_points)
        .filter(|m| {
            let current = m.format == GRAPH_FORMAT;
            if !current {
                tracing::info!(
                    "graph dump {} was written by an older version (format {}); the graph is \
                     built again from the journal",
                    m.basename,
                    m.format
                );
            }
            current
        })
        .collect();
    metas.sort_by_key(|m| std::cmp::Reverse(m.points));
    metas.into_iter().find(|m| {
        let intact = |ext: &str, want: u32| {
            file_crc(&dir.join(format!("{}.{ext}", m.basename)), false).is_ok_and(|crc| crc == want)
        };
        let ok = intact(LINKS_EXT, m.graph_crc) && intact(VECTORS_EXT, m.data_crc);
        if !ok {
            tracing::warn!(
                "graph dump {} is damaged; its points are inserted again",
                m.basename
            );
        }
        ok
    })
}

/// The generation a journal or graph file name belongs to (`journal-<gen>.log`,
/// `graph-<gen>-<points>...`).
fn generation_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("journal-")
        .or_else(|| name.strip_prefix("graph-"))?;
    rest.get(..10)?.parse().ok()
}

/// Removes what no longer belongs to a checkpoint of generation `generation`: journals and
/// graph dumps of older generations, temporary files and, when `keep` names this
/// generation's newest dump, its other dumps. Newer generations (created but not committed
/// yet) are left alone.
pub fn remove_stale(dir: &Path, generation: u64, keep: Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = if name.starts_with('.') && name.ends_with(".tmp") {
            true
        } else {
            match generation_of(&name) {
                Some(g) if g < generation => true,
                Some(g) if g == generation && name.starts_with("graph-") => {
                    keep.is_some_and(|k| !name.starts_with(&format!("{k}.")))
                }
                _ => false,
            }
        };
        if stale && let Err(err) = fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {err}", path.display());
        }
    }
}

/// Removes temporary files (`.*.tmp`) that interrupted writes left in `dir`.
pub fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(".tmp")
            && let Err(err) = fs::remove_file(e.path())
        {
            tracing::warn!("cannot remove {}: {err}", e.path().display());
        }
    }
}

/// Removes the files of a dump that failed half way (`<basename>.*`).
pub fn remove_dump(dir: &Path, basename: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(basename) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Record {
        Record::Base {
            dim: 2,
            points: vec![
                BasePoint {
                    doc: "a".into(),
                    chunk_no: 0,
                    seq: 1,
                    vector: Some(vec![1.0, 0.0]),
                },
                BasePoint {
                    doc: "b".into(),
                    chunk_no: 0,
                    seq: 2,
                    vector: None,
                },
            ],
        }
    }

    fn upsert(doc: &str) -> Record {
        Record::Upsert {
            doc: doc.into(),
            seq: 3,
            vectors: vec![(0, vec![0.0, 1.0])],
        }
    }

    #[test]
    fn records_come_back_up_to_the_synced_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), 1, &base()).unwrap();
        j.append(&upsert("c"));
        let len = j.sync().unwrap();
        // Written after the checkpoint's length: ignored, then cut off on reopen.
        j.append(&Record::Delete { doc: "a".into() });
        j.sync().unwrap();
        drop(j);
        let records = read_journal(dir.path(), 1, len).unwrap();
        assert_eq!(records, vec![base(), upsert("c")]);
        let mut j = Journal::reopen(dir.path(), 1, len).unwrap();
        j.append(&upsert("d"));
        let len2 = j.sync().unwrap();
        let records = read_journal(dir.path(), 1, len2).unwrap();
        assert_eq!(records, vec![base(), upsert("c"), upsert("d")]);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), 1, &base()).unwrap();
        j.append(&upsert("c"));
        let len = j.sync().unwrap();
        drop(j);
        let path = journal_path(dir.path(), 1);
        let good = fs::read(&path).unwrap();
        // Shorter than the checkpoint says.
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(
            read_journal(dir.path(), 1, len)
                .unwrap_err()
                .contains("holds")
        );
        // A flipped byte.
        let mut bad = good.clone();
        bad[12] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        assert!(
            read_journal(dir.path(), 1, len)
                .unwrap_err()
                .contains("checksum")
        );
        // A garbage body under a valid checksum, whose length fields ask for exabytes.
        let mut body = 1u32.to_le_bytes().to_vec(); // Upsert, then its document id's length
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&[0xab; 32]);
        let mut crafted = Vec::new();
        crafted.extend_from_slice(&(body.len() as u32).to_le_bytes());
        crafted.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        crafted.extend_from_slice(&body);
        fs::write(&path, &crafted).unwrap();
        let err = read_journal(dir.path(), 1, crafted.len() as u64).unwrap_err();
        assert!(err.contains("cannot be decoded"), "{err}");
        // A decodable record with a NaN.
        let nan = frame(&Record::Upsert {
            doc: "x".into(),
            seq: 1,
            vectors: vec![(0, vec![f32::NAN, 1.0])],
        })
        .unwrap();
        let mut with_nan = good.clone();
        with_nan.extend_from_slice(&nan);
        fs::write(&path, &with_nan).unwrap();
        let err = read_journal(dir.path(), 1, with_nan.len() as u64).unwrap_err();
        assert!(err.contains("bad vector"), "{err}");
    }

    #[test]
    fn graph_meta_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        for ext in [LINKS_EXT, VECTORS_EXT] {
            fs::write(dir.path().join(format!("graph-0000000001-5.{ext}")), ext).unwrap();
        }
        let meta = GraphMeta {
            generation: 1,
            points: 5,
            basename: "graph-0000000001-5".into(),
            graph_crc: crc32fast::hash(LINKS_EXT.as_bytes()),
            data_crc: crc32fast::hash(VECTORS_EXT.as_bytes()),
            storage: crate::index::vector::VectorStorage::F32,
            format: GRAPH_FORMAT,
        };
        write_graph_meta(dir.path(), &meta).unwrap();
        assert_eq!(newest_graph(dir.path(), 1, 10), Some(meta.clone()));
        assert_eq!(
            newest_graph(dir.path(), 1, 4),
            None,
            "more points than the journal"
        );
        assert_eq!(newest_graph(dir.path(), 2, 10), None, "another generation");
        fs::write(dir.path().join("graph-0000000001-5.vectors"), "vectorx").unwrap();
        assert_eq!(newest_graph(dir.path(), 1, 10), None);
        let journal = journal_path(dir.path(), 3);
        fs::write(&journal, b"newer, not committed yet").unwrap();
        fs::write(dir.path().join("graph-0000000001-3.vectors"), "older").unwrap();
        remove_stale(dir.path(), 1, Some("graph-0000000001-5"));
        let left = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 4, "the older dump goes, the newer journal stays");
        remove_stale(dir.path(), 2, None);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(journal.exists());
    }

    /// A meta file of `body` as written by some version: its CRC-32, then the JSON.
    fn write_raw_meta(dir: &Path, basename: &str, body: &[u8]) {
        let mut bytes = crc32fast::hash(body).to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        fs::write(dir.join(format!("{basename}.meta")), bytes).unwrap();
    }

    #[test]
    fn a_meta_without_storage_is_an_f32_dump_whatever_the_default() {
        let dir = tempfile::tempdir().unwrap();
        for ext in [LINKS_EXT, VECTORS_EXT] {
            fs::write(dir.path().join(format!("graph-0000000001-5.{ext}")), ext).unwrap();
        }
        // Written before `storage` existed, when every graph held f32 vectors.
        let body = format!(
            r#"{{"generation":1,"points":5,"basename":"graph-0000000001-5","graph_crc":{},"data_crc":{},"format":{GRAPH_FORMAT}}}"#,
            crc32fast::hash(LINKS_EXT.as_bytes()),
            crc32fast::hash(VECTORS_EXT.as_bytes()),
        );
        write_raw_meta(dir.path(), "graph-0000000001-5", body.as_bytes());
        let meta = newest_graph(dir.path(), 1, 10).expect("a current dump");
        assert_eq!(meta.storage, crate::index::vector::VectorStorage::F32);
        assert_ne!(meta.storage, crate::index::vector::VectorStorage::default());
    }

    #[test]
    fn an_hnsw_rs_dump_counts_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        // What the hnsw_rs version wrote: its two files and a meta with no format.
        for ext in ["graph", "data"] {
            fs::write(
                dir.path().join(format!("graph-0000000001-5.hnsw.{ext}")),
                ext,
            )
            .unwrap();
        }
        let body = br#"{"generation":1,"points":5,"basename":"graph-0000000001-5","graph_crc":1,"data_crc":2,"storage":"f32"}"#;
        write_raw_meta(dir.path(), "graph-0000000001-5", body);
        assert_eq!(newest_graph(dir.path(), 1, 10), None);
        // It is stale once a newer generation is checkpointed, like any other dump.
        remove_stale(dir.path(), 2, None);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
