//! What `search` adds on top of the retrievers' ranking: a recency decay blended into the
//! scores, and paging through one ranking with a cursor.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::query::{QueryError, SearchRequest};

/// Which time a recency decay reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecencyField {
    /// When the change happened at the source.
    EventTime,
    /// When the version became searchable.
    IndexedAt,
}

/// A time decay blended into the ranking: `score = (1 − weight) · relevance + weight ·
/// 0.5^(age / half_life)`, where relevance is the retriever's score rescaled to 0..1 over
/// the candidates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recency {
    /// The time whose age decays.
    pub field: RecencyField,
    /// Age at which the recency part halves, in ms (> 0).
    pub half_life_ms: i64,
    /// Share of the recency part, 0 to 1.
    pub weight: f32,
}

impl Recency {
    /// Checks and builds a decay from the tool's arguments.
    pub fn new(field: RecencyField, half_life: &str, weight: f32) -> Result<Recency, String> {
        let half_life_ms = crate::index::filter::duration_ms(half_life.trim())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                format!(
                    "recency.half_life must be a positive duration like \"30m\", \"6h\" or \"7d\" \
                     (units ms, s, m, h, d, w), got {half_life:?}"
                )
            })?;
        if !(0.0..=1.0).contains(&weight) {
            return Err(format!(
                "recency.weight must be between 0 and 1, got {weight}"
            ));
        }
        Ok(Recency {
            field,
            half_life_ms,
            weight,
        })
    }

    /// Rescores `items` (with their times, ms) and sorts them best first.
    pub fn rerank<T>(
        &self,
        items: &mut [T],
        score: impl Fn(&T) -> f32,
        time_ms: impl Fn(&T) -> i64,
        set: impl Fn(&mut T, f32),
        now_ms: i64,
    ) {
        let (lo, hi) = items
            .iter()
            .map(&score)
            .fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for item in items.iter_mut() {
            let relevance = if hi > lo {
                (score(item) - lo) / (hi - lo)
            } else {
                1.0
            };
            let age = (now_ms - time_ms(item)).max(0) as f64;
            let decay = 0.5f64.powf(age / self.half_life_ms as f64) as f32;
            set(item, (1.0 - self.weight) * relevance + self.weight * decay);
        }
        items.sort_by(|a, b| score(b).total_cmp(&score(a)));
    }
}

/// Deepest rank `search` pages reach: a cursor past it is refused.
pub const MAX_SEARCH_DEPTH: usize = 500;

#[derive(Serialize, Deserialize)]
struct PageWire {
    v: u8,
    /// Results already returned.
    o: usize,
    /// Which search this cursor continues.
    h: String,
}

/// Identifies a search for its cursors: everything that shapes its ranking except `k`.
fn fingerprint(req: &SearchRequest) -> String {
    let shape = serde_json::json!([
        req.query.trim(),
        req.collection,
        format!("{:?}", req.mode),
        req.filter,
        req.vector,
        req.recency,
    ]);
    // FNV-1a: stable across processes and replicas, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in shape.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Where a page starts: 0, or what the request's cursor says.
pub fn page_offset(req: &SearchRequest) -> Result<usize, QueryError> {
    let Some(text) = &req.cursor else {
        return Ok(0);
    };
    let bad = || {
        QueryError::InvalidArgument(
            "`cursor` is not a `next` value returned by `search`".to_string(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
    let wire: PageWire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if wire.v != 1 {
        return Err(bad());
    }
    if wire.h != fingerprint(req) {
        return Err(QueryError::InvalidArgument(
            "`cursor` belongs to another search: pass it with the same query, collection, mode, \
             filter, vector and recency as the search that returned it"
                .into(),
        ));
    }
    if wire.o.saturating_add(req.k) > MAX_SEARCH_DEPTH {
        return Err(QueryError::InvalidArgument(format!(
            "search pages reach rank {MAX_SEARCH_DEPTH} at most; narrow the query or the filter"
        )));
    }
    Ok(wire.o)
}

/// The cursor of the page after one that ended at rank `end`, if there are results past it
/// and it is within the depth bound.
pub fn next_cursor(req: &SearchRequest, end: usize, more: bool) -> Option<String> {
    (more && end < MAX_SEARCH_DEPTH).then(|| {
        let wire = PageWire {
            v: 1,
            o: end,
            h: fingerprint(req),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_past_the_depth_bound_are_refused_even_when_forged() {
        let mut req = SearchRequest {
            query: "q".into(),
            collection: None,
            k: 10,
            mode: super::super::Mode::Bm25,
            filter: None,
            vector: None,
            consistency: super::super::Consistency::Any,
            max_wait: std::time::Duration::from_millis(1),
            recency: None,
            cursor: None,
        };
        assert!(next_cursor(&req, MAX_SEARCH_DEPTH, true).is_none());
        let Some(next) = next_cursor(&req, 10, true) else {
            panic!("a next page within the bound")
        };
        req.cursor = Some(next.clone());
        assert_eq!(page_offset(&req).ok(), Some(10));
        let mut wire: PageWire =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(next).unwrap()).unwrap();
        wire.o = usize::MAX;
        req.cursor = Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap()));
        let err = page_offset(&req).unwrap_err().to_string();
        assert!(err.contains("rank 500 at most"), "{err}");
    }

    #[test]
    fn recency_blends_decay_into_rescaled_relevance() {
        let r = Recency::new(RecencyField::EventTime, "1h", 0.7).unwrap();
        let hour = 3_600_000;
        // (name, score, time)
        let mut items = vec![
            ("old-best", 10.0, 0),
            ("new-worse", 6.0, 10 * hour),
            ("mid", 8.0, 9 * hour),
        ];
        r.rerank(&mut items, |i| i.1, |i| i.2, |i, s| i.1 = s, 10 * hour);
        let order: Vec<&str> = items.iter().map(|i| i.0).collect();
        assert_eq!(order, ["new-worse", "mid", "old-best"]);
        assert!((items[0].1 - 0.7).abs() < 1e-6, "relevance 0, decay 1");
        let none = Recency::new(RecencyField::IndexedAt, "1h", 0.0).unwrap();
        let mut items = vec![("a", 1.0, 0), ("b", 2.0, 100)];
        none.rerank(&mut items, |i| i.1, |i| i.2, |i, s| i.1 = s, 100);
        assert_eq!(items[0].0, "b", "weight 0 keeps relevance order");
        assert!(Recency::new(RecencyField::EventTime, "0h", 0.5).is_err());
        assert!(Recency::new(RecencyField::EventTime, "soon", 0.5).is_err());
        assert!(Recency::new(RecencyField::EventTime, "1h", 1.5).is_err());
    }
}
