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
//! With `audit.hmac_key_env` set, `prev` is the HMAC-SHA256 of the previous line under that
//! key instead, and the line says `"chain":"hmac-sha256"`: whoever lacks the key cannot
//! re-hash an edited chain. An unkeyed chain only proves that no line *before the last* was
//! altered; a truncated tail or a dropped head needs the head checkpoints
//! (`audit.checkpoint_path`): every `checkpoint_interval_ms` the writer appends the head's
//! `seq` and link hash (with an HMAC when keyed) to that second file, which `audit verify
//! --checkpoints` compares with the chain. docs/SECURITY.md says what is and is not detected.
//!
//! # Writing
//!
//! Tool calls go through [`AuditLog::record_durable`], which waits until the line is
//! written (to the OS: it survives a crash of freshet, not of the machine) and says whether
//! it was; with `audit.on_failure = "refuse"` a call whose line failed is not answered.
//! Rejected requests use [`AuditLog::record`], which does not wait. One writer thread does
//! all file I/O (none on the async runtime), assigns `seq` and `prev` and writes in arrival
//! order, one `write` per line. A `seq` is used up by every *attempted* line: a line that
//! could not be written (disk full) leaves a gap that `audit verify` reports, and a partial
//! line is cut off again. Write failures are counted (`freshet_audit_write_failures_total`)
//! and make `/readyz` answer 503 for [`UNHEALTHY_FOR`]. A lock file (`<path>.lock`) keeps a
//! second freshet from interleaving its own chain into the same file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use hmac::{KeyInit, Mac};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{ChangesResult, DocumentResult, FreshnessResult, SearchResult, StampOut};
use crate::auth::Principal;
use crate::config::{AuditOnFailure, Config};

/// How long `/readyz` reports an audit write failure after the last one.
pub const UNHEALTHY_FOR: Duration = Duration::from_secs(30);

/// The `chain` value of keyed lines.
const KEYED: &str = "hmac-sha256";

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
    /// `hmac-sha256` when `prev` is keyed; absent for plain SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<&'static str>,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// The link to a line: lowercase hex HMAC-SHA256 under `key`, or SHA-256 without one.
pub fn link(key: Option<&[u8]>, line: &[u8]) -> String {
    match key {
        Some(key) => {
            // HMAC takes keys of any length: new_from_slice cannot fail for it.
            let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
                return sha256_hex(line);
            };
            mac.update(line);
            hex(&mac.finalize().into_bytes())
        }
        None => sha256_hex(line),
    }
}

/// How the log is written (from `[audit]`, see [`AuditOptions::from_config`]).
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Rotate before the file passes this size.
    pub max_bytes: u64,
    /// Log `"[redacted]"` for `query`.
    pub redact_query: bool,
    /// Refuse or serve calls whose line failed.
    pub on_failure: AuditOnFailure,
    /// HMAC key of the chain's links.
    pub key: Option<Vec<u8>>,
    /// Where head checkpoints go.
    pub checkpoint_path: Option<PathBuf>,
    /// How often the head is checkpointed.
    pub checkpoint_interval: Duration,
}

impl AuditOptions {
    /// Plain SHA-256 chain, no checkpoints, calls refused when their line fails.
    pub fn new(max_bytes: u64, redact_query: bool) -> AuditOptions {
        AuditOptions {
            max_bytes,
            redact_query,
            on_failure: AuditOnFailure::Refuse,
            key: None,
            checkpoint_path: None,
            checkpoint_interval: Duration::from_secs(10),
        }
    }

    /// The options of `[audit]`; the key is read from the environment variable it names
    /// (config validation has checked that it is set).
    pub fn from_config(config: &Config) -> AuditOptions {
        let a = &config.audit;
        AuditOptions {
            max_bytes: a.max_bytes,
            redact_query: a.redact_query,
            on_failure: a.on_failure,
            key: a
                .hmac_key_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok())
                .map(String::into_bytes),
            checkpoint_path: a.checkpoint_path.clone(),
            checkpoint_interval: Duration::from_millis(a.checkpoint_interval_ms),
        }
    }
}

/// Counters and the last failure, shared by the writer and the handles.
#[derive(Debug, Default)]
struct Health {
    written: AtomicU64,
    failures: AtomicU64,
    refused_calls: AtomicU64,
    checkpoint_failures: AtomicU64,
    /// Whether the most recent attempt failed.
    failing: AtomicBool,
    /// When the last failure happened (ms since the epoch).
    last_failure_ms: AtomicI64,
    last_error: Mutex<String>,
    /// Unit tests: this many next lines fail half-written, as on a full disk.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicU32,
}

/// A line that could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit line seq {seq} could not be written: {reason}")]
pub struct AuditFailure {
    /// The `seq` it would have had (0 when the log was closed).
    pub seq: u64,
    /// The OS error, or why the writer was not reached.
    pub reason: String,
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

/// Where the writer reports whether a line was written.
type Reply = tokio::sync::oneshot::Sender<Result<u64, AuditFailure>>;

enum Msg {
    Entry(Box<Entry>, Option<Reply>),
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
    on_failure: AuditOnFailure,
    health: Arc<Health>,
}

impl AuditLog {
    /// Opens (or continues) the log configured in `[audit]`.
    pub fn from_config(config: &Config) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(&config.audit_path(), AuditOptions::from_config(config))
    }

    /// Opens `path` with a plain chain and no checkpoints (see [`AuditLog::open_with`]).
    pub fn open(path: &Path, max_bytes: u64, redact_query: bool) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, AuditOptions::new(max_bytes, redact_query))
    }

    /// Opens `path` for appending, continuing the chain of what is already there (or of
    /// its newest rotated file), and starts the writer thread.
    pub fn open_with(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
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
        let health = Arc::new(Health::default());
        let (redact_query, on_failure) = (options.redact_query, options.on_failure);
        let mut writer = Writer::resume(path, options, lock, Arc::clone(&health)).map_err(io)?;
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
                on_failure,
                health,
            }),
        })
    }

    fn send(&self, entry: Entry, reply: Option<Reply>) -> bool {
        match self.inner.tx.lock().as_ref() {
            Some(tx) => tx.send(Msg::Entry(Box::new(entry), reply)).is_ok(),
            None => false,
        }
    }

    /// Queues one entry without waiting for it (rejected requests); never blocks on disk.
    pub fn record(&self, entry: Entry) {
        if !self.send(entry, None) {
            tracing::error!("audit log is closed; an entry was not written");
        }
    }

    /// Writes one entry and waits until it is written, or says why it was not.
    pub async fn record_durable(&self, entry: Entry) -> Result<u64, AuditFailure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let closed = || AuditFailure {
            seq: 0,
            reason: "the audit log is closed".into(),
        };
        if !self.send(entry, Some(tx)) {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// True when a call whose line failed must be refused (`audit.on_failure = "refuse"`).
    pub fn refuses_on_failure(&self) -> bool {
        self.inner.on_failure == AuditOnFailure::Refuse
    }

    /// Unit tests: the next `n` lines fail half-written, as on a full disk.
    #[cfg(test)]
    fn fail_next_writes(&self, n: u32) {
        self.inner.health.fail_next.store(n, Ordering::Relaxed);
    }

    /// Counts a call refused because its line failed.
    pub fn count_refused_call(&self) {
        self.inner
            .health
            .refused_calls
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Why `/readyz` should say no: the last line failed less than [`UNHEALTHY_FOR`] ago.
    pub fn unhealthy(&self) -> Option<String> {
        let h = &self.inner.health;
        let since = crate::time::now_ms() - h.last_failure_ms.load(Ordering::Relaxed);
        (h.failing.load(Ordering::Relaxed)
            && u128::try_from(since).is_ok_and(|ms| ms < UNHEALTHY_FOR.as_millis()))
        .then(|| format!("audit log cannot be written: {}", h.last_error.lock()))
    }

    /// Appends the audit series to a Prometheus text exposition.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let h = &self.inner.health;
        for (name, help, value) in [
            (
                "freshet_audit_lines_written_total",
                "Audit lines written.",
                &h.written,
            ),
            (
                "freshet_audit_write_failures_total",
                "Audit lines that could not be written (each leaves a seq gap).",
                &h.failures,
            ),
            (
                "freshet_audit_refused_calls_total",
                "Calls refused because their audit line could not be written.",
                &h.refused_calls,
            ),
            (
                "freshet_audit_checkpoint_failures_total",
                "Head checkpoints that could not be written.",
                &h.checkpoint_failures,
            ),
        ] {
            crate::metrics::header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        crate::metrics::header(
            out,
            "freshet_audit_healthy",
            "gauge",
            "0 while the last audit write failed (within the last 30 s), else 1.",
        );
        let _ = writeln!(
            out,
            "freshet_audit_healthy {}",
            u8::from(self.unhealthy().is_none())
        );
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
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
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
    /// Unbuffered: one `write` per line, so a failure is seen at that line.
    file: File,
    /// Bytes in the current file (all of them complete lines).
    size: u64,
    /// `seq` of the last line attempted (0 before the first).
    seq: u64,
    /// Link (SHA-256 or HMAC) of the last line written.
    prev: String,
    /// `seq` of the last line written, which `prev` belongs to.
    written_seq: u64,
    /// `seq` of the current file's first line, which names it when rotated.
    first_seq: Option<u64>,
    options: AuditOptions,
    health: Arc<Health>,
    /// `seq` of the last checkpointed head, and when.
    checkpointed: (u64, Instant),
    /// Held for the writer's lifetime.
    _lock: File,
}

/// One head checkpoint line.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `seq` of the head line.
    pub seq: u64,
    /// Its link hash (what the next line's `prev` will be).
    pub hash: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// HMAC-SHA256 of `"{seq} {hash} {time}"` under the chain's key, when keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Checkpoint {
    fn signed_text(&self) -> String {
        format!("{} {} {}", self.seq, self.hash, self.time)
    }
}

impl Writer {
    fn resume(
        path: &Path,
        options: AuditOptions,
        lock: File,
        health: Arc<Health>,
    ) -> std::io::Result<Writer> {
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
                (seq, link(options.key.as_deref(), line))
            }
        };
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
            size,
            seq,
            prev,
            written_seq: seq,
            first_seq,
            options,
            health,
            checkpointed: (seq, Instant::now()),
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
        let tick = self.options.checkpoint_interval;
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maybe_checkpoint(false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut waiters = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Entry(entry, reply) => {
                        let result = self.write(&entry);
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Msg::Flush(done) => waiters.push(done),
                }
                next = rx.try_recv().ok();
            }
            self.maybe_checkpoint(false);
            for w in waiters {
                let _ = w.send(());
            }
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!("closing audit log {}: {e}", self.path.display());
        }
        self.maybe_checkpoint(true);
    }

    /// Writes one line; its `seq` is used up whether or not that works.
    fn write(&mut self, entry: &Entry) -> Result<u64, AuditFailure> {
        self.seq += 1;
        let seq = self.seq;
        let keyed = self.options.key.is_some().then_some(KEYED);
        let result = serde_json::to_vec(&Line {
            seq,
            prev: &self.prev,
            chain: keyed,
            entry,
        })
        .map_err(std::io::Error::other)
        .and_then(|line| self.append(&line).map(|()| line));
        let h = &self.health;
        match result {
            Ok(line) => {
                self.prev = link(self.options.key.as_deref(), &line);
                self.written_seq = seq;
                self.first_seq.get_or_insert(seq);
                h.written.fetch_add(1, Ordering::Relaxed);
                if h.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "audit log {} is writable again (from seq {seq})",
                        self.path.display()
                    );
                }
                Ok(seq)
            }
            Err(e) => {
                h.failures.fetch_add(1, Ordering::Relaxed);
                h.last_failure_ms
                    .store(crate::time::now_ms(), Ordering::Relaxed);
                *h.last_error.lock() = e.to_string();
                // Logged once per failing stretch, not once per line.
                if !h.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "writing audit log {} failed at seq {seq}: {e}; lines are lost (a seq gap) until it recovers",
                        self.path.display()
                    );
                }
                Err(AuditFailure {
                    seq,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Appends `line` and a newline, rotating first when the file would grow too big. A
    /// failed write is cut off again, so the file keeps ending on a complete line.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.options.max_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        if let Err(e) = self.write_line(&buf) {
            if let Err(cut) = self.file.set_len(self.size) {
                tracing::error!(
                    "could not cut a partial line off audit log {}: {cut}",
                    self.path.display()
                );
            }
            return Err(e);
        }
        self.size += len;
        Ok(())
    }

    fn write_line(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self.health.fail_next.load(Ordering::Relaxed) > 0 {
            self.health.fail_next.fetch_sub(1, Ordering::Relaxed);
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all(buf)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
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
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.first_seq = None;
        tracing::info!("audit log rotated to {}", target.display());
        Ok(())
    }

    /// Appends the head to the checkpoint file when it moved and the interval passed (or
    /// at `last`, on close).
    fn maybe_checkpoint(&mut self, last: bool) {
        let Some(path) = self.options.checkpoint_path.clone() else {
            return;
        };
        let (at, when) = self.checkpointed;
        if self.written_seq == at || (!last && when.elapsed() < self.options.checkpoint_interval) {
            return;
        }
        let mut cp = Checkpoint {
            seq: self.written_seq,
            hash: self.prev.clone(),
            time: crate::time::rfc3339_ms(crate::time::now_ms()),
            mac: None,
        };
        if let Some(key) = &self.options.key {
            cp.mac = Some(link(Some(key), cp.signed_text().as_bytes()));
        }
        let written = serde_json::to_vec(&cp)
            .map_err(std::io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                f.write_all(&line)?;
                f.sync_data()
            });
        match written {
            Ok(()) => self.checkpointed = (self.written_seq, Instant::now()),
            Err(e) => {
                self.health
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("writing audit checkpoint {}: {e}", path.display());
                // Try again at the next interval, not at every line.
                self.checkpointed.1 = Instant::now();
            }
        }
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

/// A chain whose lines all link up (possibly with lines lost to write failures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intact {
    /// Lines checked.
    pub lines: u64,
    /// `seq` of the first line (1 unless older files were not given).
    pub first_seq: Option<u64>,
    /// `seq` of the last line.
    pub last_seq: Option<u64>,
    /// Link hash of the last line (SHA-256, or HMAC when keyed): keep it elsewhere to
    /// detect a truncated tail later, or let the checkpoints do that.
    pub last_hash: Option<String>,
    /// `seq` ranges (first, last) of lines attempted but never written: the next written
    /// line links to the one before the gap, so nothing was removed; the writes failed.
    pub lost: Vec<(u64, u64)>,
    /// Links checked with the key.
    pub keyed_links: u64,
    /// Head checkpoints compared with the chain.
    pub checkpoints: usize,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every line links to the one before it.
    Intact(Intact),
    /// The first line that does not.
    Broken(Break),
}

/// What [`verify`] checks besides the chain itself.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The chain's HMAC key: keyed links are checked with it, and an unkeyed link after a
    /// keyed one is a break (a re-hash by someone without the key).
    pub key: Option<Vec<u8>>,
    /// The head checkpoint file (`audit.checkpoint_path`).
    pub checkpoints: Option<PathBuf>,
}

/// Checks the plain hash chain across `files`, in the order given (see [`verify`]).
pub fn verify_chain(files: &[PathBuf]) -> std::io::Result<Verdict> {
    verify(files, &VerifyOptions::default())
}

/// Why the checkpoint file cannot be used: it cannot be read, or a line is bad.
enum CheckpointsFault {
    Io(std::io::Error),
    Broken(Break),
}

/// Reads and checks the checkpoint file: every line parses and, with a key, carries a
/// valid MAC. Returns them with their line numbers.
fn read_checkpoints(
    path: &Path,
    key: Option<&[u8]>,
) -> Result<Vec<(usize, Checkpoint)>, CheckpointsFault> {
    let text = std::fs::read_to_string(path).map_err(CheckpointsFault::Io)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let broken = |what: &str| {
            Err(CheckpointsFault::Broken(Break {
                file: path.to_path_buf(),
                line: i + 1,
                what: what.to_string(),
            }))
        };
        let Ok(cp) = serde_json::from_str::<Checkpoint>(line) else {
            return broken("not a checkpoint line");
        };
        match (key, &cp.mac) {
            (Some(key), Some(mac)) if *mac == link(Some(key), cp.signed_text().as_bytes()) => {}
            (Some(_), _) => {
                return broken("checkpoint MAC missing or wrong: forged or made with another key");
            }
            (None, Some(_)) => {
                return broken("checkpoints are keyed: pass the key (--key-env VAR) to check them");
            }
            (None, None) => {}
        }
        out.push((i + 1, cp));
    }
    Ok(out)
}

/// Checks the chain across `files`, in the order given, and against the head checkpoints
/// when given. I/O errors are returned as such; anything wrong with the content is a
/// [`Verdict::Broken`] naming the first bad line.
pub fn verify(files: &[PathBuf], options: &VerifyOptions) -> std::io::Result<Verdict> {
    let key = options.key.as_deref();
    let checkpoints = match &options.checkpoints {
        Some(path) => match read_checkpoints(path, key) {
            Ok(cps) => cps,
            Err(CheckpointsFault::Broken(b)) => return Ok(Verdict::Broken(b)),
            Err(CheckpointsFault::Io(e)) => return Err(e),
        },
        None => Vec::new(),
    };
    let by_seq: std::collections::HashMap<u64, &Checkpoint> =
        checkpoints.iter().map(|(_, cp)| (cp.seq, cp)).collect();
    // The last line: its seq, plain hash and keyed hash.
    let mut head: Option<(u64, String, Option<String>)> = None;
    let mut seen_keyed = false;
    let mut summary = Intact {
        lines: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        lost: Vec::new(),
        keyed_links: 0,
        checkpoints: 0,
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
            let keyed = match value.get("chain").and_then(Value::as_str) {
                None => false,
                Some(KEYED) => true,
                Some(other) => return broken(format!("unknown chain `{other}`")),
            };
            if keyed && key.is_none() {
                return broken(
                    "the chain is keyed (hmac-sha256): pass its key (--key-env VAR) to verify it"
                        .into(),
                );
            }
            if !keyed && seen_keyed && key.is_some() {
                return broken(
                    "an unkeyed line after keyed ones: the chain was rewritten without the key"
                        .into(),
                );
            }
            seen_keyed |= keyed;
            let expected = head.as_ref().and_then(|(_, plain, mac)| {
                if keyed {
                    mac.clone()
                } else {
                    Some(plain.clone())
                }
            });
            match &head {
                None if seq == 1 && prev != GENESIS => {
                    return broken("seq 1 must have prev = 64 zeros (start of the chain)".into());
                }
                None => {}
                Some((last_seq, _, _)) if seq <= *last_seq => {
                    return broken(format!(
                        "seq {seq} follows seq {last_seq}: a line was inserted or moved"
                    ));
                }
                Some((last_seq, _, _)) if expected.as_deref() != Some(prev) => {
                    return broken(if seq == last_seq + 1 {
                        "prev does not match the hash of the line before it: that line was changed"
                            .into()
                    } else {
                        format!("seq {seq} follows seq {last_seq}: a line was removed")
                    });
                }
                Some((last_seq, _, _)) if seq > last_seq + 1 => {
                    summary.lost.push((last_seq + 1, seq - 1));
                }
                Some(_) => {}
            }
            summary.keyed_links += u64::from(keyed && head.is_some());
            let plain = sha256_hex(line);
            let mac = key.map(|k| link(Some(k), line));
            if let Some(cp) = by_seq.get(&seq) {
                let ours = if cp.mac.is_some() {
                    mac.as_ref()
                } else {
                    Some(&plain)
                };
                if ours != Some(&cp.hash) {
                    return broken(format!(
                        "this line differs from the head checkpointed at {}: it was replaced or the chain re-hashed",
                        cp.time
                    ));
                }
                summary.checkpoints += 1;
            }
            summary.lines += 1;
            summary.first_seq.get_or_insert(seq);
            summary.last_seq = Some(seq);
            summary.last_hash = Some(mac.clone().unwrap_or_else(|| plain.clone()));
            head = Some((seq, plain, mac));
        }
    }
    if key.is_some()
        && summary.lines > 1
        && summary.keyed_links == 0
        && let Some(first) = files.first()
    {
        return Ok(Verdict::Broken(Break {
            file: first.clone(),
            line: 1,
            what: "no line is keyed although a key was given: the chain was rewritten without \
                   the key (or audit.hmac_key_env was never set)"
                .into(),
        }));
    }
    if let Some(path) = &options.checkpoints {
        for (line, cp) in &checkpoints {
            let what = match (summary.first_seq, summary.last_seq) {
                (_, None) => Some("the chain is empty".to_string()),
                (_, Some(last)) if cp.seq > last => Some(format!(
                    "the chain ends at seq {last}: its tail was truncated (or later files were not given)"
                )),
                (Some(first), _) if cp.seq < first => Some(format!(
                    "the chain starts at seq {first}: its head was dropped (or earlier files were not given)"
                )),
                _ if summary
                    .lost
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&cp.seq)) =>
                {
                    Some("that line is missing from the chain".to_string())
                }
                _ => None,
            };
            if let Some(what) = what {
                return Ok(Verdict::Broken(Break {
                    file: path.clone(),
                    line: *line,
                    what: format!("checkpoint of seq {} taken at {}: {what}", cp.seq, cp.time),
                }));
            }
        }
    }
    Ok(Verdict::Intact(summary))
}

impl Returned {
    /// The version `stamp` names of document `id` in `collection`.
    pub fn of(collection: &str, id: &str, stamp: &StampOut) -> Returned {
        Returned {
            collection: collection.to_string(),
            id: id.to_string(),
            topic: stamp.topic.clone(),
            partition: i64::from(stamp.partition),
            offset: stamp.offset,
        }
    }
}

/// An answer that returns document versions: what its audit line names.
pub trait Returns {
    /// The versions returned; `collection` is the call's collection, for answers whose
    /// entries do not name theirs (`document_freshness`).
    fn returned(&self, collection: &str) -> Vec<Returned>;
}

impl Returns for SearchResult {
    fn returned(&self, _: &str) -> Vec<Returned> {
        self.results
            .iter()
            .map(|h| Returned::of(&h.collection, &h.id, &h.freshness))
            .collect()
    }
}

impl Returns for DocumentResult {
    fn returned(&self, _: &str) -> Vec<Returned> {
        let d = &self.document;
        vec![Returned::of(&d.collection, &d.id, &d.freshness)]
    }
}

impl Returns for FreshnessResult {
    fn returned(&self, collection: &str) -> Vec<Returned> {
        self.documents
            .iter()
            .filter_map(|d| Some(Returned::of(collection, &d.id, d.freshness.as_ref()?)))
            .collect()
    }
}

impl Returns for ChangesResult {
    fn returned(&self, _: &str) -> Vec<Returned> {
        self.changes
            .iter()
            .map(|c| Returned::of(&c.collection, &c.id, &c.freshness))
            .collect()
    }
}

/// Where a tool call leaves the versions it returned, for its audit line: the audit hook
/// puts one into the call's request extensions, the tool fills it from its typed answer.
#[derive(Clone, Debug, Default)]
pub struct ReturnedSlot(Arc<Mutex<Vec<Returned>>>);

impl ReturnedSlot {
    /// Notes what `answer` returned.
    pub fn record(&self, answer: &impl Returns, collection: &str) {
        self.0.lock().extend(answer.returned(collection));
    }

    /// Everything noted, emptying the slot.
    pub fn take(&self) -> Vec<Returned> {
        std::mem::take(&mut *self.0.lock())
    }
}

#[cfg(test)]
mod tests;
