//! Filter operators inside both retrievers: a filtered top-k is full of documents that pass,
//! however many stronger matches fail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;
use crate::auth::Access;
use crate::source::SourceRecord;

const CONFIG: &str = r#"
[[collections]]
name = "items"
topics = ["items"]
id_field = "id"
text_fields = ["body"]
metadata_fields = ["price", "tags", "status"]
vector_field = "v"
[collections.field_types]
price = "number"
"#;

const OLD_MS: i64 = 1_700_000_000_000;
const NEW_MS: i64 = 1_800_000_000_000;

fn engine() -> Engine {
    let config = Config::from_toml_with_env(CONFIG, Path::new("t.toml"), Vec::new()).unwrap();
    Engine::new(Arc::new(config), None, None).unwrap()
}

fn record(offset: i64, event_ms: i64, doc: Value) -> SourceRecord {
    let id = doc["id"].as_str().unwrap().to_string();
    SourceRecord {
        topic: Arc::from("items"),
        partition: 0,
        offset,
        key: Some(id.into_bytes()),
        value: Some(doc.to_string().into_bytes()),
        timestamp_ms: Some(event_ms),
        ingested_at_ms: event_ms,
    }
}

fn put(e: &Engine, offset: i64, event_ms: i64, doc: Value) {
    e.ingest().apply(&[record(offset, event_ms, doc)]);
}

/// 120 cheap, old, strongly matching documents (more than either retriever fetches for a
/// top 5, so a filter applied after the search would come back short) and 8 expensive, new,
/// weakly matching ones.
fn seeded() -> Engine {
    let e = engine();
    let mut batch = Vec::new();
    for i in 0..CHEAP {
        let doc = json!({"id": format!("cheap{i}"), "body": "apple apple apple pie",
            "price": i % 10, "tags": ["fruit", "sale"], "status": "archived", "v": [1.0, 0.001 * i as f64]});
        batch.push(record(i as i64, OLD_MS, doc));
    }
    for i in 0..8 {
        let mut doc = json!({"id": format!("dear{i}"), "body": "apple and many other words here",
            "price": format!("{}", 100 + i), "tags": ["fruit"], "v": [0.2, 1.0]});
        if i % 2 == 0 {
            doc["status"] = json!("active");
        }
        batch.push(record((CHEAP + i) as i64, NEW_MS, doc));
    }
    e.ingest().apply(&batch);
    e
}

const CHEAP: usize = 120;

async fn found(e: &Engine, mode: Mode, filter: Value, k: usize) -> Vec<String> {
    let req = SearchRequest {
        query: "apple".into(),
        collection: Some("items".into()),
        k,
        mode,
        filter: filter.as_object().cloned(),
        vector: Some(vec![1.0, 0.0]),
        consistency: Consistency::Any,
        max_wait: Duration::from_millis(1),
        recency: None,
        cursor: None,
    };
    let mut ids: Vec<String> = match e.search().search(req, &Access::all()).await {
        Ok(r) => r.results.into_iter().map(|h| h.id).collect(),
        Err(err) => panic!("search failed: {err}"),
    };
    ids.sort();
    ids
}

const MODES: [Mode; 3] = [Mode::Bm25, Mode::Vector, Mode::Hybrid];

#[tokio::test]
async fn range_filters_fill_the_top_k_in_every_mode() {
    let e = seeded();
    for mode in MODES {
        let unfiltered = found(&e, mode, json!({}), 5).await;
        assert!(
            unfiltered.iter().all(|id| id.starts_with("cheap")),
            "{mode:?}: {unfiltered:?}"
        );
        let dear = found(&e, mode, json!({"price": {"gte": 100}}), 5).await;
        assert_eq!(dear.len(), 5, "{mode:?}: top-k stays full: {dear:?}");
        assert!(dear.iter().all(|id| id.starts_with("dear")), "{mode:?}");
        let band = found(&e, mode, json!({"price": {"gt": 101, "lte": 103}}), 10).await;
        assert_eq!(band, ["dear2", "dear3"], "{mode:?}");
        let cheap = found(&e, mode, json!({"price": {"lt": 1}}), 100).await;
        assert_eq!(cheap.len(), CHEAP / 10, "{mode:?}");
    }
}

#[tokio::test]
async fn built_in_times_negation_presence_and_lists_in_every_mode() {
    let e = seeded();
    let cut = crate::time::rfc3339_ms((OLD_MS + NEW_MS) / 2);
    for mode in MODES {
        let new = found(&e, mode, json!({"event_time": {"gte": cut}}), 5).await;
        assert_eq!(new.len(), 5, "{mode:?}: {new:?}");
        assert!(new.iter().all(|id| id.starts_with("dear")), "{mode:?}");
        // Everything was indexed just now.
        assert_eq!(
            found(&e, mode, json!({"indexed_at": {"gte": "now-1h"}}), 100)
                .await
                .len(),
            100
        );
        assert!(
            found(&e, mode, json!({"indexed_at": {"lt": "now-1h"}}), 10)
                .await
                .is_empty()
        );
        let live = found(&e, mode, json!({"status": {"ne": "archived"}}), 10).await;
        assert_eq!(live.len(), 8, "{mode:?}: a missing status is not archived");
        let missing = found(&e, mode, json!({"status": {"exists": false}}), 10).await;
        assert_eq!(missing, ["dear1", "dear3", "dear5", "dear7"], "{mode:?}");
        let on_sale = found(&e, mode, json!({"tags": {"all": ["fruit", "sale"]}}), 100).await;
        assert_eq!(on_sale.len(), 100, "{mode:?}: k is the bound");
        let not_on_sale = found(&e, mode, json!({"tags": {"all": ["fruit", "x"]}}), 100).await;
        assert!(not_on_sale.is_empty(), "{mode:?}");
        let either = found(&e, mode, json!({"status": {"any": ["active", "x"]}}), 100).await;
        assert_eq!(either, ["dear0", "dear2", "dear4", "dear6"], "{mode:?}");
    }
}

#[tokio::test]
async fn a_replaced_version_is_judged_by_its_new_values() {
    let e = seeded();
    put(
        &e,
        1000,
        NEW_MS,
        json!({"id": "cheap0", "body": "apple apple apple pie", "price": 500, "v": [1.0, 0.0]}),
    );
    for mode in MODES {
        let dear = found(&e, mode, json!({"price": {"gte": 500}}), 10).await;
        assert_eq!(dear, ["cheap0"], "{mode:?}");
    }
}

#[tokio::test]
async fn bad_operators_are_argument_errors_naming_field_and_fields() {
    let e = seeded();
    let search = |filter: Value| {
        let e = &e;
        async move {
            let req = SearchRequest {
                query: "apple".into(),
                collection: Some("items".into()),
                k: 5,
                mode: Mode::Bm25,
                filter: filter.as_object().cloned(),
                vector: None,
                consistency: Consistency::Any,
                max_wait: Duration::from_millis(1),
                recency: None,
                cursor: None,
            };
            match e.search().search(req, &Access::all()).await {
                Err(QueryError::InvalidArgument(m)) => m,
                other => panic!("expected an argument error, got {other:?}"),
            }
        }
    };
    let m = search(json!({"status": {"gt": "a"}})).await;
    assert!(m.contains("`status` is a keyword field"), "{m}");
    let m = search(json!({"price": {"gt": "lots"}})).await;
    assert!(m.contains("`price` (number): `gt` needs a number"), "{m}");
    let m = search(json!({"colour": {"exists": true}})).await;
    assert!(
        m.contains("cannot filter collection `items` on `colour`"),
        "{m}"
    );
    assert!(
        m.contains("price (number)") && m.contains("event_time (time)"),
        "{m}"
    );
    let listed = e.search().list_collections(&Access::all());
    let types: &Map<String, Value> = &serde_json::to_value(&listed.collections[0].field_types)
        .unwrap()
        .as_object()
        .cloned()
        .unwrap();
    assert_eq!(types["price"], "number");
    assert_eq!(types["indexed_at"], "time");
    assert_eq!(types["status"], "keyword");
}

fn bm25_request(k: usize, cursor: Option<String>) -> SearchRequest {
    SearchRequest {
        query: "apple".into(),
        collection: Some("items".into()),
        k,
        mode: Mode::Bm25,
        filter: None,
        vector: None,
        consistency: Consistency::Any,
        max_wait: Duration::from_millis(1),
        recency: None,
        cursor,
    }
}

#[tokio::test]
async fn pages_follow_one_ranking_and_cursors_are_bound_to_their_search() {
    let e = seeded();
    let all = |r: crate::api::SearchResult| -> (Vec<String>, Option<String>) {
        (r.results.into_iter().map(|h| h.id).collect(), r.next)
    };
    let (top20, _) = all(e
        .search()
        .search(bm25_request(20, None), &Access::all())
        .await
        .unwrap());
    let (first, next) = all(e
        .search()
        .search(bm25_request(10, None), &Access::all())
        .await
        .unwrap());
    let (second, _) = all(e
        .search()
        .search(bm25_request(10, next.clone()), &Access::all())
        .await
        .unwrap());
    assert_eq!([first, second].concat(), top20);
    // Paging to the end: every document once, and no cursor after a short page.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (ids, next) = all(e
            .search()
            .search(bm25_request(50, cursor), &Access::all())
            .await
            .unwrap());
        seen.extend(ids);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (CHEAP + 8, CHEAP + 8));
    // A cursor of another search, or garbage, is refused.
    let mut other = bm25_request(10, next);
    other.query = "pie".into();
    let err = e.search().search(other, &Access::all()).await.unwrap_err();
    assert!(
        err.to_string().contains("belongs to another search"),
        "{err}"
    );
    let err = e
        .search()
        .search(bm25_request(10, Some("xyz".into())), &Access::all())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a `next` value"), "{err}");
}

#[tokio::test]
async fn recency_lifts_recent_documents_in_every_mode() {
    let e = seeded();
    // Recency reorders each retriever's candidates (max(4k, 50) of them): with k = 40 all
    // 128 documents are candidates.
    for mode in MODES {
        let mut req = bm25_request(40, None);
        req.mode = mode;
        req.vector = Some(vec![1.0, 0.0]);
        let plain = e
            .search()
            .search(req.clone(), &Access::all())
            .await
            .unwrap();
        assert!(
            plain.results[..8].iter().all(|h| h.id.starts_with("cheap")),
            "{mode:?}"
        );
        req.recency = Some(Recency::new(RecencyField::EventTime, "30d", 0.9).unwrap());
        let recent = e.search().search(req, &Access::all()).await.unwrap();
        let ids: Vec<&str> = recent.results[..8].iter().map(|h| h.id.as_str()).collect();
        assert!(
            ids.iter().all(|id| id.starts_with("dear")),
            "{mode:?}: {ids:?}"
        );
        assert!(recent.results.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
