//! Merging the BM25 and vector rankings into one hybrid ranking.
//!
//! BM25 scores and cosine similarities live on unrelated scales, so hybrid search fuses
//! *ranks* (reciprocal rank fusion) rather than scores. Both retrievers return chunks, while
//! results are per document, so chunk hits are grouped first.

use std::collections::{HashMap, HashSet};

/// The usual RRF constant (Cormack et al. 2009): large enough that the first few ranks of one
/// list do not drown the other list.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// Reciprocal rank fusion of ranked lists of document ids, each already grouped per document
/// and best first: `score(d) = Σ 1 / (k + rank)` with ranks starting at 1.
///
/// Returns documents best first. Ties keep the order in which documents first appear when the
/// lists are read rank by rank, so the result is deterministic. A repeated id within one list
/// only counts at its first (best) rank.
pub fn rrf(lists: &[&[String]], k: f32) -> Vec<(String, f32)> {
    let mut scores: HashMap<&str, usize> = HashMap::new();
    let mut fused: Vec<(String, f32)> = Vec::new();
    let mut seen_per_list: Vec<HashSet<&str>> = vec![HashSet::new(); lists.len()];
    let longest = lists.iter().map(|list| list.len()).max().unwrap_or(0);
    // Read rank by rank across lists so that first-seen order reflects rank, not list order.
    for rank in 0..longest {
        for (list_no, list) in lists.iter().enumerate() {
            let Some(id) = list.get(rank) else { continue };
            if !seen_per_list[list_no].insert(id.as_str()) {
                continue;
            }
            let contribution = 1.0 / (k + (rank + 1) as f32);
            match scores.get(id.as_str()) {
                Some(&slot) => fused[slot].1 += contribution,
                None => {
                    scores.insert(id.as_str(), fused.len());
                    fused.push((id.clone(), contribution));
                }
            }
        }
    }
    // Stable sort: equal scores keep first-seen order.
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

/// Keep each document's best chunk: the first occurrence of each document in a best-first
/// list of chunk hits. Order is preserved.
pub fn best_chunk_per_doc<H>(hits: Vec<H>, doc_of: impl Fn(&H) -> &str) -> Vec<H> {
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(hits.len());
        hits.iter().map(|hit| seen.insert(doc_of(hit))).collect()
    };
    hits.into_iter()
        .zip(keep)
        .filter_map(|(hit, keep)| keep.then_some(hit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rrf_hand_computed() {
        let bm25 = ids(&["a", "b", "c"]);
        let vector = ids(&["b", "d", "a"]);
        let fused = rrf(&[&bm25, &vector], 60.0);
        // a: 1/61 + 1/63, b: 1/62 + 1/61, c: 1/63, d: 1/62
        let expected = [
            ("b", 1.0 / 62.0 + 1.0 / 61.0),
            ("a", 1.0 / 61.0 + 1.0 / 63.0),
            ("d", 1.0 / 62.0),
            ("c", 1.0 / 63.0),
        ];
        assert_eq!(fused.len(), expected.len());
        for ((id, score), (want_id, want_score)) in fused.iter().zip(expected) {
            assert_eq!(id, want_id);
            assert!(
                (score - want_score as f32).abs() < 1e-7,
                "{id}: {score} vs {want_score}"
            );
        }
    }

    #[test]
    fn rrf_ties_and_duplicates() {
        // x and y tie (rank 1 in one list each); x is first seen because list 0 is read first.
        let fused = rrf(&[&ids(&["x", "x"]), &ids(&["y"])], 60.0);
        assert_eq!(fused.len(), 2);
        assert_eq!(fused[0].0, "x");
        assert_eq!(fused[1].0, "y");
        assert_eq!(
            fused[0].1, fused[1].1,
            "the duplicate x must not count twice"
        );
        assert!(rrf(&[], DEFAULT_RRF_K).is_empty());
        assert!(rrf(&[&[]], DEFAULT_RRF_K).is_empty());
    }

    #[test]
    fn grouping_keeps_best_chunk() {
        let hits = vec![
            ("d1", 3, 0.9),
            ("d2", 0, 0.8),
            ("d1", 0, 0.7),
            ("d3", 1, 0.6),
            ("d2", 4, 0.5),
        ];
        let grouped = best_chunk_per_doc(hits, |h| h.0);
        assert_eq!(
            grouped,
            vec![("d1", 3, 0.9), ("d2", 0, 0.8), ("d3", 1, 0.6)]
        );
    }
}
