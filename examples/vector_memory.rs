//! Memory, build rate and recall@10 of the vector index alone, without Kafka, tantivy or the
//! view: where a document's resident bytes go in the graph (docs/BENCHMARKS.md, issue 14).
//!
//! ```text
//! cargo run --release --example vector_memory -- [DOCS] [clustered|uniform] [f32|int8] [EF_SEARCH]
//! ```
//! Defaults: 100,000 documents, clustered, freshet's default storage (int8).
//! Prints one JSON object: heap bytes per point (counted by a wrapping allocator, so it is
//! what the structures ask for, without allocator slack), resident bytes per point (VmRSS
//! deltas, with slack), the build rate, recall@10 of 200 queries against an exact scan and
//! their single-thread latency (mean, p50, p99; k 10, `ef_search` 100 unless given): of the
//! index's searches (`recall_at_10`, exact when the index measured its graph below
//! `HnswParams::min_recall`) and of the graph walk alone (`graph_recall_at_10`), beside the index's
//! own measurement (`recall_estimate`).
//! The vectors follow bench/harness.py's corpus: `clustered` puts 50 documents around each
//! centre at cosine ≈ 0.7, `uniform` draws independent directions.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use freshet::index::{HnswParams, VectorIndex, VectorStorage};

/// Counts the bytes the program has asked for and not yet returned.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is kept
// beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DIM: usize = 384;

/// Resident bytes of this process.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Deterministic normal-ish numbers (sum of uniforms), so runs reproduce without extra crates.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0
    }
    fn direction(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM).map(|_| self.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let docs: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let clustered = args.get(2).is_none_or(|s| s == "clustered");
    let storage: VectorStorage = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let centres: Vec<Vec<f32>> = (0..(docs / 50).max(1)).map(|_| rng.direction()).collect();
    let point = |rng: &mut Rng| -> Vec<f32> {
        let noise = rng.direction();
        if !clustered {
            return noise;
        }
        let centre = &centres[(rng.uniform() * centres.len() as f32) as usize % centres.len()];
        centre.iter().zip(&noise).map(|(c, n)| c + n).collect()
    };
    let vectors: Vec<Vec<f32>> = (0..docs).map(|_| point(&mut rng)).collect();
    let queries: Vec<Vec<f32>> = (0..200).map(|_| point(&mut rng)).collect();

    let per = |bytes: usize| bytes as f64 / docs as f64;
    let (heap_before, rss_before) = (LIVE.load(Ordering::Relaxed), rss());
    let started = Instant::now();
    let ef_search = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(HnswParams::default().ef_search);
    let params = HnswParams {
        storage,
        ef_search,
        ..HnswParams::default()
    };
    let index = VectorIndex::new(DIM, params);
    for (i, v) in vectors.iter().enumerate() {
        index.stage_upsert(&format!("d{i}"), 1, &[(0, v.clone())])?;
        if i % 1024 == 1023 {
            index.flush();
        }
    }
    index.flush();
    index.wait_indexed();
    let build_s = started.elapsed().as_secs_f64();
    let (heap_after, rss_after) = (LIVE.load(Ordering::Relaxed), rss());

    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let units: Vec<Vec<f32>> = vectors.iter().map(|v| unit(v)).collect();
    let (mut found, mut found_by_walk) = (0, 0);
    let mut search_s = Vec::with_capacity(queries.len());
    for q in &queries {
        let q = unit(q);
        let mut exact: Vec<(f32, usize)> = units
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum(), i))
            .collect();
        exact.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let truth: Vec<String> = exact[..10].iter().map(|(_, i)| format!("d{i}")).collect();
        let t = Instant::now();
        let hits = index.search(&q, 10, &|_| true)?;
        search_s.push(t.elapsed().as_secs_f64());
        found += hits.iter().filter(|h| truth.contains(&h.doc_id)).count();
        let walk = index.search_graph(&q, 10)?.unwrap_or_default();
        found_by_walk += walk.iter().filter(|h| truth.contains(&h.doc_id)).count();
    }
    let estimate = index.recall_estimate();
    drop(index);
    search_s.sort_unstable_by(f64::total_cmp);
    let percentile_ms = |p: f64| {
        let at = ((search_s.len() as f64 * p).ceil() as usize).clamp(1, search_s.len()) - 1;
        search_s[at] * 1000.0
    };
    let report = serde_json::json!({
        "docs": docs,
        "vectors": if clustered { "clustered" } else { "uniform" },
        "storage": storage.to_string(),
        "ef_search": ef_search,
        "heap_bytes_per_point": per(heap_after.saturating_sub(heap_before)),
        "rss_bytes_per_point": per(rss_after.saturating_sub(rss_before)),
        "vector_f32_bytes": DIM * 4,
        "build_s": build_s,
        "inserts_per_s": docs as f64 / build_s,
        "recall_at_10": found as f64 / (queries.len() * 10) as f64,
        "graph_recall_at_10": found_by_walk as f64 / (queries.len() * 10) as f64,
        "recall_estimate": estimate.map(|e| serde_json::json!({
            "recall_at_10": e.recall_at_10,
            "points": e.points,
            "exact_scan": e.exact_scan,
            "took_ms": e.took.as_secs_f64() * 1000.0,
        })),
        "search_ms_mean": search_s.iter().sum::<f64>() * 1000.0 / queries.len() as f64,
        "search_ms_p50": percentile_ms(0.50),
        "search_ms_p99": percentile_ms(0.99),
    });
    println!("{report}");
    Ok(())
}
