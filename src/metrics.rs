//! Prometheus metrics at `/metrics` (text exposition format 0.0.4).
//!
//! Counters that already live elsewhere (ingest counts per collection, partition progress,
//! view sizes) are read when scraped; this module only owns what has no other home:
//! histograms and a few counters. Hand-rolled because the set is small and fixed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::api::IngestCounts;
use crate::view::Progress;

/// Bucket bounds (seconds) for query latency.
const QUERY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) for one ingest stage's work on one batch.
const STAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Bucket bounds (seconds) for event time → searchable.
const DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds, so it fits an atomic integer.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation in seconds (negative values count as zero).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// The metrics freshet owns.
#[derive(Debug)]
pub struct Metrics {
    /// Event time → searchable, per collection.
    index_delay: Mutex<BTreeMap<String, &'static Histogram>>,
    /// Tool call latency by (tool, mode, outcome).
    queries: Mutex<BTreeMap<(String, String), &'static Histogram>>,
    /// Time per batch in each ingest stage (see [`ApplyStage`]).
    apply_stages: Mutex<BTreeMap<&'static str, &'static Histogram>>,
    /// Records seen by the writer, by (topic, outcome).
    records: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Requests refused by authentication, by reason.
    auth_rejections: Mutex<BTreeMap<String, u64>>,
    /// Requests and calls refused because they hit a configured bound, by its key.
    limits_hit: Mutex<BTreeMap<&'static str, u64>>,
    /// Checkpoints committed and vector graphs saved.
    pub checkpoints_written: AtomicU64,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: AtomicU64,
    /// Whether checkpoint writes are failing right now, and why.
    pub storage: StorageHealth,
    /// Vector index rebuilds completed.
    pub vector_rebuilds: AtomicU64,
    /// Partitions re-read from the start because their topic was recreated.
    pub partition_resets: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            index_delay: Mutex::new(BTreeMap::new()),
            queries: Mutex::new(BTreeMap::new()),
            apply_stages: Mutex::new(BTreeMap::new()),
            records: Mutex::new(BTreeMap::new()),
            auth_rejections: Mutex::new(BTreeMap::new()),
            limits_hit: Mutex::new(BTreeMap::new()),
            checkpoints_written: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            storage: StorageHealth::default(),
            vector_rebuilds: AtomicU64::new(0),
            partition_resets: AtomicU64::new(0),
        }
    }
}

/// Whether checkpoint writes currently fail. Kept so that a failure is reported once, when it
/// starts (log, `/readyz`, gauges), and its end once, instead of at every retry.
#[derive(Debug, Default)]
pub struct StorageHealth {
    failing: Mutex<Option<StorageFailure>>,
}

/// A run of failed checkpoint writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// The latest error.
    pub error: String,
    /// The file system is full (or over quota).
    pub disk_full: bool,
    /// Failed attempts in this run.
    pub attempts: u64,
}

impl StorageHealth {
    /// Records a failed write; true when this starts a run of failures or changes its kind
    /// (disk full or not): the moment to log it.
    pub fn failed(&self, error: String, disk_full: bool) -> bool {
        let mut failing = self.failing.lock();
        let news = failing.as_ref().is_none_or(|f| f.disk_full != disk_full);
        let attempts = failing.as_ref().map_or(0, |f| f.attempts) + 1;
        *failing = Some(StorageFailure {
            error,
            disk_full,
            attempts,
        });
        news
    }

    /// Records a successful write; returns the run of failures it ends, if any.
    pub fn succeeded(&self) -> Option<StorageFailure> {
        self.failing.lock().take()
    }

    /// The current run of failures, if writes are failing.
    pub fn failure(&self) -> Option<StorageFailure> {
        self.failing.lock().clone()
    }
}

/// The steps a batch of records goes through between the Kafka consumer and being
/// searchable, timed per batch so an operator can see where freshness goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyStage {
    /// Decoding, chunking and embedding (the prepare thread).
    Prepare,
    /// Writing the view's pending changes into both indexes, record by record.
    Write,
    /// Publishing the batch's vectors to the vector index (waits when the HNSW graph is
    /// too far behind).
    VectorFlush,
    /// Noting what the next checkpoint covers and publishing the batch (the writer's last
    /// step; the batch is searchable after it).
    Publish,
    /// A checkpoint: the vector journal's fsync and the BM25 commit with the offsets, on the
    /// checkpoint thread (per checkpoint, not per batch).
    Checkpoint,
}

impl ApplyStage {
    /// The `stage` label value.
    pub fn label(self) -> &'static str {
        match self {
            ApplyStage::Prepare => "prepare",
            ApplyStage::Write => "write",
            ApplyStage::VectorFlush => "vector_flush",
            ApplyStage::Publish => "publish",
            ApplyStage::Checkpoint => "checkpoint",
        }
    }
}

/// Histograms live for the whole process; leaking them keeps `observe` lock-free after the
/// first lookup of a label set (the number of label sets is small and fixed by config).
fn leak(bounds: &'static [f64]) -> &'static Histogram {
    Box::leak(Box::new(Histogram::new(bounds)))
}

impl Metrics {
    /// Records how long a version took from its event time to being searchable.
    pub fn observe_index_delay(&self, collection: &str, delay_ms: i64) {
        let h = *self
            .index_delay
            .lock()
            .entry(collection.to_string())
            .or_insert_with(|| leak(DELAY_BUCKETS));
        h.observe(delay_ms as f64 / 1000.0);
    }

    /// Records one tool call's latency.
    pub fn observe_query(&self, tool: &str, mode: &str, elapsed: Duration) {
        let h = *self
            .queries
            .lock()
            .entry((tool.to_string(), mode.to_string()))
            .or_insert_with(|| leak(QUERY_BUCKETS));
        h.observe(elapsed.as_secs_f64());
    }

    /// Records how long one batch spent in an ingest stage.
    pub fn observe_apply_stage(&self, stage: ApplyStage, elapsed: Duration) {
        let h = *self
            .apply_stages
            .lock()
            .entry(stage.label())
            .or_insert_with(|| leak(STAGE_BUCKETS));
        h.observe(elapsed.as_secs_f64());
    }

    /// Counts records the writer handled for a topic (`applied`, `replay`, `poison`, ...).
    pub fn count_records(&self, topic: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            *self
                .records
                .lock()
                .entry((topic.to_string(), outcome))
                .or_default() += n;
        }
    }

    /// Counts a request refused by authentication.
    pub fn count_auth_rejection(&self, reason: &str) {
        *self
            .auth_rejections
            .lock()
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Counts a request or call refused by the bound configured at `key`
    /// (e.g. `server.tool_timeout_ms`).
    pub fn count_limit_hit(&self, key: &'static str) {
        *self.limits_hit.lock().entry(key).or_default() += 1;
    }

    /// Appends freshet-owned series to `out`.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "freshet_limit_refusals_total",
            "counter",
            "Requests and tool calls refused by a configured bound, by its config key.",
        );
        for (limit, n) in self.limits_hit.lock().iter() {
            let _ = writeln!(out, "freshet_limit_refusals_total{{limit=\"{limit}\"}} {n}");
        }
        header(
            out,
            "freshet_records_total",
            "counter",
            "Kafka records handled by the writer, by outcome.",
        );
        for ((topic, outcome), n) in self.records.lock().iter() {
            let _ = writeln!(
                out,
                "freshet_records_total{{topic=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(topic)
            );
        }
        header(
            out,
            "freshet_index_delay_seconds",
            "histogram",
            "Event time to searchable, per applied version.",
        );
        for (collection, h) in self.index_delay.lock().iter() {
            h.render(
                out,
                "freshet_index_delay_seconds",
                &format!("collection=\"{}\"", escape(collection)),
            );
        }
        header(
            out,
            "freshet_query_duration_seconds",
            "histogram",
            "Tool call latency by tool and retrieval mode.",
        );
        for ((tool, mode), h) in self.queries.lock().iter() {
            h.render(
                out,
                "freshet_query_duration_seconds",
                &format!("tool=\"{}\",mode=\"{}\"", escape(tool), escape(mode)),
            );
        }
        header(
            out,
            "freshet_apply_stage_seconds",
            "histogram",
            "Time per ingest batch in each stage from consumer to searchable.",
        );
        for (stage, h) in self.apply_stages.lock().iter() {
            h.render(
                out,
                "freshet_apply_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        header(
            out,
            "freshet_auth_rejections_total",
            "counter",
            "HTTP requests refused by authentication.",
        );
        for (reason, n) in self.auth_rejections.lock().iter() {
            let _ = writeln!(
                out,
                "freshet_auth_rejections_total{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        let failure = self.storage.failure();
        for (name, help, value) in [
            (
                "freshet_checkpoint_failing",
                "1 while checkpoint writes fail (the last attempt failed).",
                failure.is_some(),
            ),
            (
                "freshet_checkpoint_disk_full",
                "1 while checkpoint writes fail because the file system is full.",
                failure.as_ref().is_some_and(|f| f.disk_full),
            ),
        ] {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", u8::from(value));
        }
        for (name, help, value) in [
            (
                "freshet_checkpoints_written_total",
                "Snapshots written.",
                &self.checkpoints_written,
            ),
            (
                "freshet_checkpoint_failures_total",
                "Snapshot writes that failed.",
                &self.checkpoint_failures,
            ),
            (
                "freshet_vector_rebuilds_total",
                "HNSW graphs rebuilt without dead points.",
                &self.vector_rebuilds,
            ),
            (
                "freshet_partition_resets_total",
                "Partitions re-read from the start because their topic was recreated.",
                &self.partition_resets,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// What `/metrics` shows of one collection, read when scraped.
#[derive(Clone, Debug)]
pub struct CollectionGauges {
    /// The collection.
    pub name: String,
    /// Documents in the view.
    pub documents: usize,
    /// Chunks in the BM25 index.
    pub chunks: u64,
    /// The vector index, once it exists.
    pub vectors: Option<VectorGauges>,
    /// Ingest counters.
    pub counts: IngestCounts,
    /// The generation serving queries.
    pub generation: u64,
    /// While a settings change is applied: the generation being built and its documents.
    pub building: Option<(u64, usize)>,
}

/// Points of a collection's vector index.
#[derive(Clone, Copy, Debug)]
pub struct VectorGauges {
    /// Live points.
    pub live: usize,
    /// Points masked dead.
    pub dead: usize,
    /// Searchable points still waiting for their graph insert.
    pub graph_backlog: usize,
    /// `(recall@10, exact scan)`: the graph's measured recall and whether searches scan
    /// exactly because of it; `None` until the graph is large enough to measure.
    pub recall: Option<(f32, bool)>,
}

/// Everything `/metrics` shows of the pipeline's state (readiness, partitions,
/// collections) followed by `metrics`' histograms and counters, in Prometheus text format.
pub fn render_state(
    ready: bool,
    progress: &Progress,
    collections: &[CollectionGauges],
    metrics: &Metrics,
) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "freshet_ready",
        "gauge",
        "1 once caught up with the watermarks seen at start.",
    );
    let _ = writeln!(out, "freshet_ready {}", u8::from(ready));
    render_partitions(&mut out, progress);
    render_collections(&mut out, collections);
    header(
        &mut out,
        "freshet_partition_truncations_total",
        "counter",
        "Times retention removed records of a partition before they were applied.",
    );
    let _ = writeln!(
        out,
        "freshet_partition_truncations_total {}",
        progress.truncations()
    );
    metrics.render(&mut out);
    out
}

fn render_partitions(out: &mut String, progress: &Progress) {
    header(
        out,
        "freshet_partition_applied_offset",
        "gauge",
        "Last offset applied to the view.",
    );
    header(
        out,
        "freshet_partition_high_watermark",
        "gauge",
        "Log end offset last read from the broker.",
    );
    header(
        out,
        "freshet_partition_lag",
        "gauge",
        "Records written but not yet applied.",
    );
    for ((topic, partition), p) in progress.snapshot(&[]) {
        let labels = format!("topic=\"{}\",partition=\"{partition}\"", escape(&topic));
        if let Some(next) = p.next_offset {
            let _ = writeln!(
                out,
                "freshet_partition_applied_offset{{{labels}}} {}",
                next - 1
            );
        }
        if let Some(high) = p.high_watermark {
            let _ = writeln!(out, "freshet_partition_high_watermark{{{labels}}} {high}");
        }
        if let Some(lag) = p.lag() {
            let _ = writeln!(out, "freshet_partition_lag{{{labels}}} {lag}");
        }
    }
}

fn render_collections(out: &mut String, collections: &[CollectionGauges]) {
    for (name, kind, help) in [
        ("freshet_documents", "gauge", "Documents in the view."),
        ("freshet_chunks", "gauge", "Chunks in the BM25 index."),
        (
            "freshet_vector_points",
            "gauge",
            "Points in the HNSW graph, live or masked dead.",
        ),
        (
            "freshet_vector_dead_fraction",
            "gauge",
            "Share of HNSW points that are masked.",
        ),
        (
            "freshet_vector_graph_backlog",
            "gauge",
            "Searchable points still waiting for their HNSW graph insert (found by exact scan).",
        ),
        (
            "freshet_vector_recall_estimate",
            "gauge",
            "The HNSW graph's recall@10 measured on the collection's own vectors (again at every doubling; absent below 1024 points).",
        ),
        (
            "freshet_vector_exact_scan",
            "gauge",
            "1 when the measured recall is below 0.9 and vector searches scan every point exactly instead of walking the graph.",
        ),
        (
            "freshet_collection_generation",
            "gauge",
            "Generation of the collection's index that answers queries (one more per settings change).",
        ),
        (
            "freshet_rebuild_documents",
            "gauge",
            "Documents in the generation being built after a settings change, by its number (absent when none is).",
        ),
        (
            "freshet_ingest_total",
            "counter",
            "Changes applied, by kind.",
        ),
        (
            "freshet_poison_records_total",
            "counter",
            "Records refused as undecodable, by kind.",
        ),
    ] {
        header(out, name, kind, help);
    }
    for c in collections {
        let name = escape(&c.name);
        let _ = writeln!(
            out,
            "freshet_documents{{collection=\"{name}\"}} {}",
            c.documents
        );
        let _ = writeln!(out, "freshet_chunks{{collection=\"{name}\"}} {}", c.chunks);
        let _ = writeln!(
            out,
            "freshet_collection_generation{{collection=\"{name}\"}} {}",
            c.generation
        );
        if let Some((generation, documents)) = c.building {
            let _ = writeln!(
                out,
                "freshet_rebuild_documents{{collection=\"{name}\",generation=\"{generation}\"}} {documents}"
            );
        }
        if let Some(v) = c.vectors {
            let (live, dead) = (v.live, v.dead);
            let _ = writeln!(
                out,
                "freshet_vector_points{{collection=\"{name}\",state=\"live\"}} {live}"
            );
            let _ = writeln!(
                out,
                "freshet_vector_points{{collection=\"{name}\",state=\"dead\"}} {dead}"
            );
            let fraction = if live + dead == 0 {
                0.0
            } else {
                dead as f64 / (live + dead) as f64
            };
            let _ = writeln!(
                out,
                "freshet_vector_dead_fraction{{collection=\"{name}\"}} {fraction}"
            );
            let _ = writeln!(
                out,
                "freshet_vector_graph_backlog{{collection=\"{name}\"}} {}",
                v.graph_backlog
            );
            if let Some((recall, exact_scan)) = v.recall {
                let _ = writeln!(
                    out,
                    "freshet_vector_recall_estimate{{collection=\"{name}\"}} {recall}"
                );
                let _ = writeln!(
                    out,
                    "freshet_vector_exact_scan{{collection=\"{name}\"}} {}",
                    u8::from(exact_scan)
                );
            }
        }
        let counts = &c.counts;
        for (kind, n) in [
            ("upsert", counts.upserts),
            ("delete", counts.deletes),
            ("replay", counts.replays_skipped),
        ] {
            let _ = writeln!(
                out,
                "freshet_ingest_total{{collection=\"{name}\",kind=\"{kind}\"}} {n}"
            );
        }
        for (kind, n) in &counts.poison {
            let _ = writeln!(
                out,
                "freshet_poison_records_total{{collection=\"{name}\",kind=\"{}\"}} {n}",
                escape(kind)
            );
        }
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        h.observe(-1.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"0.1\"} 2\nx_bucket{a=\"b\",le=\"1\"} 3\nx_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 7.55\nx_count{a=\"b\"} 4\n"
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
