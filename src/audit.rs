//! The audit log: one JSON line per tool call (stdio and HTTP) and per rejected HTTP
//! request, hash-chained so that changing, removing or reordering a line is detectable.
//!
//! # Format
//!
//! Each line is a JSON object whose first two fields are `seq` (1, 2, 3, … across files) and
//! `prev`: the lowercase hex SHA-256 of the previous line's bytes exactly as written (UTF-8
//! JSON, without the trailing `\n`). The first line of a chain has `prev` = 64 zeros. The
//! file is rotated by size: it is renamed to `<path>.<seq of its first line, 12 digits>` and
//! a new file starts, whose first line links to the rotated file's last line. `freshet audit
//! verify` ([`verify_chain`]) walks files in the order given.
//!
//! A chain only proves that no line *before the last* was altered: record the last line's
//! hash (`audit verify` prints it) elsewhere to detect a truncated tail.
//!
//! # Writing
//!
//! Callers hand an [`Entry`] to [`AuditLog::record`], which only sends it down a channel, so
//! no disk I/O happens on the async runtime. One writer thread assigns `seq` and `prev`,
//! writes in arrival order and flushes after each burst. A lock file (`<path>.lock`) keeps a
//! second freshet from interleaving its own chain into the same file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use fs4::fs_std::FileExt;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::config::Config;

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which face of freshet served the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `freshet stdio`.
    Stdio,
    /// `freshet serve`.
    Http,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tool answered.
    Ok,
    /// The tool answered with `isError: true` (bad argument, unknown collection, …).
    ToolError,
    /// A JSON-RPC error (unknown tool, invalid params, internal error).
    Error,
    /// The HTTP request was refused before reaching a tool (`status` says how).
    Rejected,
}

/// A document a call returned, with where its current version came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Returned {
    /// Collection.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// Kafka topic of the returned version.
    pub topic: String,
    /// Kafka partition.
    pub partition: i64,
    /// Kafka offset.
    pub offset: i64,
}

/// The HTTP request line of a rejected request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path (never the query string: it may hold a token).
    pub path: String,
}

/// One audit line, before the writer adds `seq` and `prev`.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// When the request arrived (RFC 3339 UTC, milliseconds).
    pub time: String,
    /// freshet's id for the request (HTTP: also sent back as `x-request-id`).
    pub request_id: String,
    /// stdio or http.
    pub transport: Transport,
    /// Who called; null for an anonymous (auth off) or unauthenticated caller.
    pub principal: Option<Principal>,
    /// The MCP client (`clientInfo` name/version) when known, else the User-Agent.
    pub client: Option<String>,
    /// The HTTP request of a rejected call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequest>,
    /// The tool (or `resources/read`); null for a rejected request.
    pub tool: Option<String>,
    /// The arguments as given (see [`AuditLog::arguments`] for what is redacted).
    pub arguments: Option<Value>,
    /// The documents returned.
    pub results: Vec<Returned>,
    /// Time from arrival to answer.
    pub latency_ms: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// The message of a tool or protocol error, or the reason for a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP status of a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// freshet's id for one HTTP request, put into the request's extensions by the auth
/// middleware so the tool call's audit line carries the same id as the response header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A new request id: unique within the process and, through its prefix (the start time),
/// across restarts.
pub fn new_request_id() -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let boot = BOOT.get_or_init(|| u64::try_from(crate::time::now_ms()).unwrap_or_default());
    format!("{boot:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A duration in milliseconds with microsecond precision.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// What the writer puts on disk: chain fields first, so a reader sees them at a glance.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    prev: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// Opening the audit log failed; freshet does not serve without it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file, its directory or its lock could not be opened.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("audit log {path} is in use by another freshet (lock file {lock})")]
    Locked {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

enum Msg {
    Entry(Box<Entry>),
    /// Answered once everything sent before it is written and flushed.
    Flush(mpsc::Sender<()>),
}

/// A handle on the audit log; cheap to clone. Entries go to one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    redact_query: bool,
}

impl AuditLog {
    /// Opens (or continues) the log configured in `[audit]`.
    pub fn from_config(config: &Config) -> Result<AuditLog, AuditError> {
        AuditLog::open(
            &config.audit_path(),
            config.audit.max_bytes,
            config.audit.redact_query,
        )
    }

    /// Opens `path` for appending, continuing the chain of what is already there (or of
    /// its newest rotated file), and starts the writer thread.
    pub fn open(path: &Path, max_bytes: u64, redact_query: bool) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        if !lock.try_lock_exclusive().map_err(io)? {
            return Err(AuditError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
            });
        }
        let mut writer = Writer::resume(path, max_bytes, lock).map_err(io)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("freshet-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                redact_query,
            }),
        })
    }

    /// Queues one entry; never blocks on disk.
    pub fn record(&self, entry: Entry) {
        let sent = match self.inner.tx.lock().as_ref() {
            Some(tx) => tx.send(Msg::Entry(Box::new(entry))).is_ok(),
            None => false,
        };
        if !sent {
            tracing::error!("audit log is closed; an entry was not written");
        }
    }

    /// The arguments as logged: `query` replaced by `"[redacted]"` when `audit.redact_query`
    /// is set, and a `vector` shortened to its length (it says nothing a reader can use).
    pub fn arguments(&self, args: Option<&Map<String, Value>>) -> Option<Value> {
        let mut args = args?.clone();
        if self.inner.redact_query
            && let Some(q) = args.get_mut("query")
        {
            *q = Value::String("[redacted]".into());
        }
        if let Some(v) = args.get_mut("vector")
            && let Some(items) = v.as_array()
        {
            *v = Value::String(format!("[{} numbers]", items.len()));
        }
        Some(Value::Object(args))
    }

    /// Blocks until everything recorded so far is on disk. For tests and shutdown; do not
    /// call on the async runtime.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        let sent = self
            .inner
            .tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Flush(done_tx)).is_ok());
        if sent {
            let _ = done_rx.recv();
        }
    }

    /// Writes what is queued, syncs the file and stops the writer. Later entries are
    /// dropped (and logged). Blocks: call it outside the async runtime or in `spawn_blocking`.
    pub fn close(&self) {
        drop(self.inner.tx.lock().take());
        if let Some(thread) = self.inner.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
    }
}

/// `<path><suffix>`, e.g. `audit.jsonl.lock`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Rotated files are `<path>.<12 digits>`, so a shell glob lists them in chain order.
fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    sibling(path, &format!(".{first_seq:012}"))
}

/// The newest rotated file of `path`, if any.
fn newest_rotated(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(digits) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = digits.parse::<u64>()
            && best.as_ref().is_none_or(|(b, _)| n > *b)
        {
            best = Some((n, entry.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The last line of a file (without its newline), reading backwards from the end.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    // Skip one trailing newline: it ends the last line rather than starting an empty one.
    let mut skipped_newline = false;
    while end > 0 {
        let start = end.saturating_sub(8192);
        let mut chunk = vec![0; usize::try_from(end - start).unwrap_or(8192)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        if !skipped_newline && tail.last() == Some(&b'\n') {
            tail.pop();
            skipped_newline = true;
        }
        if let Some(i) = tail.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(tail.split_off(i + 1)));
        }
        end = start;
    }
    Ok((!tail.is_empty()).then_some(tail))
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// The writer thread's state: the open file and the chain's head.
struct Writer {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes in the current file.
    size: u64,
    /// `seq` of the last line written (0 before the first).
    seq: u64,
    /// SHA-256 of the last line written.
    prev: String,
    /// `seq` of the current file's first line, which names it when rotated.
    first_seq: Option<u64>,
    max_bytes: u64,
    /// Held for the writer's lifetime.
    _lock: File,
}

impl Writer {
    fn resume(path: &Path, max_bytes: u64, lock: File) -> std::io::Result<Writer> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        let (last, first_seq) = if size > 0 {
            let mut first = Vec::new();
            file.seek(SeekFrom::Start(0))?;
            BufReader::new(&mut file).read_until(b'\n', &mut first)?;
            (last_line(&mut file)?, seq_of(first.trim_ascii_end()))
        } else {
            let last = match newest_rotated(path)? {
                Some(p) => last_line(&mut File::open(p)?)?,
                None => None,
            };
            (last, None)
        };
        let (seq, prev) = match &last {
            None => (0, GENESIS.to_string()),
            Some(line) => {
                let seq = seq_of(line).unwrap_or_else(|| {
                    tracing::error!(
                        "the last line of audit log {} is damaged; `audit verify` will show a break there",
                        path.display()
                    );
                    0
                });
                (seq, sha256_hex(line))
            }
        };
        let mut writer = Writer {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            size,
            seq,
            prev,
            first_seq,
            max_bytes,
            _lock: lock,
        };
        // A crash mid-line leaves no newline: end that line so ours starts cleanly.
        if size > 0 {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::End(-1))?;
            let mut byte = [0u8];
            f.read_exact(&mut byte)?;
            if byte[0] != b'\n' {
                writer.file.write_all(b"\n")?;
                writer.size += 1;
            }
        }
        Ok(writer)
    }

    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut waiters = Vec::new();
            let mut next = Some(first);
            // Drain the burst, then flush once.
            while let Some(msg) = next {
                match msg {
                    Msg::Entry(entry) => {
                        if let Err(e) = self.write(&entry) {
                            tracing::error!("writing audit log {}: {e}", self.path.display());
                        }
                    }
                    Msg::Flush(done) => waiters.push(done),
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.file.flush() {
                tracing::error!("flushing audit log {}: {e}", self.path.display());
            }
            for w in waiters {
                let _ = w.send(());
            }
        }
        if let Err(e) = self
            .file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
        {
            tracing::error!("closing audit log {}: {e}", self.path.display());
        }
    }

    fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        let seq = self.seq + 1;
        let line = serde_json::to_vec(&Line {
            seq,
            prev: &self.prev,
            entry,
        })
        .map_err(std::io::Error::other)?;
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.file.write_all(b"\n")?;
        self.size += len;
        self.seq = seq;
        self.prev = sha256_hex(&line);
        self.first_seq.get_or_insert(seq);
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        let mut target = rotated_name(&self.path, self.first_seq.unwrap_or(self.seq));
        let mut n = 1;
        while target.exists() {
            target = sibling(
                &rotated_name(&self.path, self.first_seq.unwrap_or(self.seq)),
                &format!(".{n}"),
            );
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.file = BufWriter::new(file);
        self.size = 0;
        self.first_seq = None;
        tracing::info!("audit log rotated to {}", target.display());
        Ok(())
    }
}

/// Where a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// An intact chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intact {
    /// Lines checked.
    pub lines: u64,
    /// `seq` of the first line (1 unless older files were not given).
    pub first_seq: Option<u64>,
    /// `seq` of the last line.
    pub last_seq: Option<u64>,
    /// SHA-256 of the last line: keep it elsewhere to detect a truncated tail later.
    pub last_hash: Option<String>,
}

/// The result of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every line links to the one before it.
    Intact(Intact),
    /// The first line that does not.
    Broken(Break),
}

/// Checks the hash chain across `files`, in the order given. I/O errors are returned as
/// such; anything wrong with the content is a [`Verdict::Broken`] naming the first bad line.
pub fn verify_chain(files: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut head: Option<(u64, String)> = None;
    let mut summary = Intact {
        lines: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
    };
    for file in files {
        let mut reader = BufReader::new(File::open(file)?);
        let mut buf = Vec::new();
        let mut line_no = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            line_no += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let broken = |what: String| {
                Ok(Verdict::Broken(Break {
                    file: file.clone(),
                    line: line_no,
                    what,
                }))
            };
            if line.is_empty() {
                return broken("empty line".into());
            }
            let value: Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(e) => return broken(format!("not valid JSON ({e})")),
            };
            let Some(seq) = value.get("seq").and_then(Value::as_u64) else {
                return broken("no numeric `seq`".into());
            };
            let Some(prev) = value.get("prev").and_then(Value::as_str) else {
                return broken("no `prev` hash".into());
            };
            match &head {
                None if seq == 1 && prev != GENESIS => {
                    return broken("seq 1 must have prev = 64 zeros (start of the chain)".into());
                }
                None => {}
                Some((last_seq, _)) if seq != last_seq + 1 => {
                    return broken(format!(
                        "seq {seq} follows seq {last_seq}: a line was removed, inserted or moved"
                    ));
                }
                Some((_, last_hash)) if prev != last_hash => {
                    return broken(
                        "prev does not match the SHA-256 of the line before it: that line was changed"
                            .into(),
                    );
                }
                Some(_) => {}
            }
            let hash = sha256_hex(line);
            summary.lines += 1;
            summary.first_seq.get_or_insert(seq);
            summary.last_seq = Some(seq);
            summary.last_hash = Some(hash.clone());
            head = Some((seq, hash));
        }
    }
    Ok(Verdict::Intact(summary))
}

/// The documents in a tool's structured result, for the audit line: `results` (search),
/// `document` (get_document, resources), `documents` (document_freshness, whose entries
/// carry no collection, so `collection` is the call's argument).
pub fn returned(structured: &Value, collection: Option<&str>) -> Vec<Returned> {
    let one = |doc: &Value| -> Option<Returned> {
        let stamp = doc.get("freshness")?;
        Some(Returned {
            collection: doc
                .get("collection")
                .and_then(Value::as_str)
                .or(collection)?
                .to_string(),
            id: doc.get("id")?.as_str()?.to_string(),
            topic: stamp.get("topic")?.as_str()?.to_string(),
            partition: stamp.get("partition")?.as_i64()?,
            offset: stamp.get("offset")?.as_i64()?,
        })
    };
    let mut out = Vec::new();
    for key in ["results", "documents"] {
        if let Some(items) = structured.get(key).and_then(Value::as_array) {
            out.extend(items.iter().filter_map(one));
        }
    }
    if let Some(doc) = structured.get("document") {
        out.extend(one(doc));
    }
    out
}

#[cfg(test)]
mod tests;
