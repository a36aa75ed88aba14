//! Merging the BM25 and vector rankings into one hybrid ranking.
//!
//! BM25 scores and cosine similarities live on unrelated scales, so hybrid search either
//! fuses *ranks* (reciprocal rank fusion) or first brings each retriever's scores onto [0, 1]
//! over its top candidates (min-max) and mixes those. Both retrievers return chunks, while
//! results are per document, so chunk hits are grouped first.

use std::collections::{HashMap, HashSet};

/// The usual RRF constant (Cormack et al. 2009): large enough that the first few ranks of one
/// list do not drown the other list.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// How many of each retriever's best candidates set the range its scores are normalised
/// over: a fixed depth, so that a document's fused score does not depend on `k`.
pub const SCORE_FUSION_DEPTH: usize = 100;

/// Score fusion of two ranked lists `(id, score)`, each grouped per document and best first:
/// each list's scores are min-max normalised over its first [`SCORE_FUSION_DEPTH`] entries
/// (clamped to [0, 1] below that), a document absent from a list counts 0 there, and
/// `fused = bm25_weight × bm25 + (1 − bm25_weight) × vector`.
///
/// Returns documents best first; ties keep first-seen order (BM25 list first), so the result
/// is deterministic. A repeated id within one list only counts at its first (best) entry.
pub fn score_fusion(
    bm25: &[(String, f32)],
    vector: &[(String, f32)],
    bm25_weight: f32,
) -> Vec<(String, f32)> {
    let mut fused = Fused::default();
    for (list, weight) in [(bm25, bm25_weight), (vector, 1.0 - bm25_weight)] {
        let top = &list[..list.len().min(SCORE_FUSION_DEPTH)];
        let (lo, hi) = top
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| s.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s), hi.max(s))
            });
        let span = hi - lo;
        let mut seen: HashSet<&str> = HashSet::new();
        for (id, score) in list {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let normalised = if !score.is_finite() {
                0.0
            } else if span > 0.0 {
                ((score - lo) / span).clamp(0.0, 1.0)
            } else {
                1.0 // one candidate, or all equal: each is the list's best
            };
            fused.add(id, weight * normalised);
        }
    }
    fused.best_first()
}

/// Per-document sums of contributions, in first-seen order.
#[derive(Default)]
struct Fused<'a> {
    slots: HashMap<&'a str, usize>,
    scores: Vec<(String, f32)>,
}

impl<'a> Fused<'a> {
    fn add(&mut self, id: &'a str, contribution: f32) {
        match self.slots.get(id) {
            Some(&slot) => self.scores[slot].1 += contribution,
            None => {
                self.slots.insert(id, self.scores.len());
                self.scores.push((id.to_owned(), contribution));
            }
        }
    }

    /// Stable sort: equal scores keep first-seen order.
    fn best_first(mut self) -> Vec<(String, f32)> {
        self.scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        self.scores
    }
}

/// Reciprocal rank fusion of ranked lists of document ids, each already grouped per document
/// and best first: `score(d) = Σ 1 / (k + rank)` with ranks starting at 1.
///
/// Returns documents best first. Ties keep the order in which documents first appear when the
/// lists are read rank by rank, so the result is deterministic. A repeated id within one list
/// only counts at its first (best) rank.
pub fn rrf(lists: &[&[String]], k: f32) -> Vec<(String, f32)> {
    let mut fused = Fused::default();
    let mut seen_per_list: Vec<HashSet<&str>> = vec![HashSet::new(); lists.len()];
    let longest = lists.iter().map(|list| list.len()).max().unwrap_or(0);
    // Read rank by rank across lists so that first-seen order reflects rank, not list order.
    for rank in 0..longest {
        for (list_no, list) in lists.iter().enumerate() {
            let Some(id) = list.get(rank) else { continue };
            if !seen_per_list[list_no].insert(id.as_str()) {
                continue;
            }
            fused.add(id, 1.0 / (k + (rank + 1) as f32));
        }
    }
    fused.best_first()
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

    fn scored(items: &[(&str, f32)]) -> Vec<(String, f32)> {
        items.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    #[test]
    fn score_fusion_hand_computed() {
        // BM25 a=10 (1.0), b=6 (0.5), c=2 (0.0); vector c=0.9 (1.0), a=0.5 (0.0), d=0.7 (0.5).
        let bm25 = scored(&[("a", 10.0), ("b", 6.0), ("c", 2.0)]);
        let vector = scored(&[("c", 0.9), ("d", 0.7), ("a", 0.5)]);
        let fused = score_fusion(&bm25, &vector, 0.6);
        let got: Vec<(&str, f32)> = fused.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        let expect = [("a", 0.6), ("c", 0.4), ("b", 0.3), ("d", 0.2)];
        assert_eq!(got.len(), expect.len());
        for ((id, s), (eid, es)) in got.iter().zip(expect) {
            assert_eq!(*id, eid);
            assert!((s - es).abs() < 1e-6, "{id}: {s} vs {es}");
        }
    }

    #[test]
    fn score_fusion_edges() {
        // A weight of 1 is BM25 order; equal scores count as the list's best; NaN counts 0;
        // a repeated id counts once, at its best entry.
        let bm25 = scored(&[("a", 3.0), ("b", 1.0), ("a", 0.5)]);
        let vector = scored(&[("b", 0.9), ("z", f32::NAN)]);
        let only_bm25: Vec<String> = score_fusion(&bm25, &vector, 1.0)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(only_bm25[..2], ["a", "b"]);
        let flat = score_fusion(&scored(&[("x", 2.0), ("y", 2.0)]), &[], 0.5);
        assert_eq!(flat, scored(&[("x", 0.5), ("y", 0.5)]));
        let with_nan = score_fusion(&[], &vector, 0.0);
        assert_eq!(with_nan, scored(&[("b", 1.0), ("z", 0.0)]));
    }

    #[test]
    fn score_fusion_does_not_depend_on_depth_beyond_the_normalised_top() {
        // Candidates past SCORE_FUSION_DEPTH change nothing for those above them.
        let long: Vec<(String, f32)> = (0..300)
            .map(|i| (format!("d{i}"), 300.0 - i as f32))
            .collect();
        let vector = scored(&[("d5", 0.8), ("d0", 0.2)]);
        let shallow = score_fusion(&long[..SCORE_FUSION_DEPTH], &vector, 0.55);
        let deep = score_fusion(&long, &vector, 0.55);
        assert_eq!(shallow[..50], deep[..50]);
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
