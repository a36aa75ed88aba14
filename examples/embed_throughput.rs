//! Embedding throughput of the local model: reads texts, embeds them in batches the way the
//! prepare stage does, and prints texts/s as JSON. Used by bench/scifact.sh.
//!
//! ```text
//! cargo run --release --example embed_throughput -- MODEL_DIR TEXTS.jsonl [BATCH] [LIMIT]
//! ```
//! Each line of TEXTS.jsonl is a JSON string or an object with `title` and `text` (BEIR).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use freshet::embed::{Embedder, LocalEmbedder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: embed_throughput MODEL_DIR TEXTS.jsonl [BATCH] [LIMIT]".into());
    }
    let model = LocalEmbedder::load(&PathBuf::from(&args[1]))?;
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let limit: usize = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(usize::MAX);
    let file = std::io::BufReader::new(std::fs::File::open(&args[2])?);
    let mut texts = Vec::new();
    for line in file.lines().take(limit) {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        texts.push(match value {
            serde_json::Value::String(s) => s,
            v => format!(
                "{}\n\n{}",
                v["title"].as_str().unwrap_or(""),
                v["text"].as_str().unwrap_or("")
            ),
        });
    }
    // Warm-up: first-touch page faults and thread start-up are not throughput.
    model.embed(&texts.iter().take(8).map(String::as_str).collect::<Vec<_>>())?;
    let started = Instant::now();
    let mut tokens = 0usize;
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        tokens += model.count_tokens(&refs);
        model.embed(&refs)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "texts": texts.len(),
            "tokens": tokens,
            "seconds": seconds,
            "texts_per_s": texts.len() as f64 / seconds,
            "tokens_per_s": tokens as f64 / seconds,
            "batch": batch,
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        })
    );
    Ok(())
}
