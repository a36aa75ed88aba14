//! Engine behaviour without a broker: batches are built by hand and applied directly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::auth::{Access, TenantScope};
use crate::source::SourceRecord;

const CONFIG: &str = r#"
[[collections]]
name = "articles"
topics = ["articles"]
id_field = "id"
title_field = "title"
text_fields = ["title", "body"]
metadata_fields = ["category"]
vector_field = "embedding"

[[collections]]
name = "notes"
topics = ["notes"]
metadata_fields = ["kind"]
"#;

fn engine() -> Engine {
    let config = Config::from_toml_with_env(CONFIG, Path::new("t.toml"), Vec::new()).unwrap();
    Engine::new(Arc::new(config), None, None).unwrap()
}

/// The error message of a search that must fail.
pub(super) async fn search_error(e: &Engine, req: SearchRequest) -> String {
    e.search()
        .search(req, &Access::all())
        .await
        .unwrap_err()
        .to_string()
}

fn record(topic: &str, offset: i64, key: &str, value: Option<Value>) -> SourceRecord {
    SourceRecord {
        topic: Arc::from(topic),
        partition: 0,
        offset,
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| v.to_string().into_bytes()),
        timestamp_ms: Some(1_700_000_000_000 + offset),
        ingested_at_ms: 1_700_000_000_500 + offset,
    }
}

fn article(id: &str, body: &str, category: &str, axis: usize) -> Value {
    let mut v = vec![0.0; 4];
    v[axis] = 1.0;
    json!({"id": id, "title": "Note", "body": body, "category": category, "embedding": v})
}

fn request(query: &str, mode: Mode) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        collection: Some("articles".into()),
        k: 10,
        mode,
        filter: None,
        vector: None,
        consistency: Consistency::Any,
        max_wait: Duration::from_millis(10),
        recency: None,
        cursor: None,
    }
}

async fn ids(e: &Engine, req: SearchRequest) -> Vec<String> {
    e.search()
        .search(req, &Access::all())
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn state(e: &Engine) -> Vec<(String, i64, String)> {
    let mut docs: Vec<_> = e
        .catalog()
        .collection("articles")
        .unwrap()
        .view
        .all()
        .iter()
        .map(|d| (d.id.clone(), d.stamp.offset, d.text.clone()))
        .collect();
    docs.sort();
    docs
}

#[tokio::test]
async fn replaying_a_batch_changes_nothing() {
    let e = engine();
    let batch = vec![
        record("articles", 0, "a", Some(article("a", "apples", "x", 0))),
        record("articles", 1, "b", Some(article("b", "bananas", "x", 1))),
        record("articles", 2, "a", Some(article("a", "avocados", "x", 2))),
        record("articles", 3, "b", None),
    ];
    let first = e.ingest().apply(&batch);
    assert_eq!((first.upserts, first.deletes, first.replays), (3, 1, 0));
    let before = state(&e);
    let chunks = e
        .catalog()
        .collection("articles")
        .unwrap()
        .text
        .num_chunks();

    let again = e.ingest().apply(&batch);
    assert_eq!(
        again,
        ApplyOutcome {
            replays: 4,
            ..Default::default()
        }
    );
    // A replay from the middle (a restart resuming one record early) is also a no-op.
    assert_eq!(e.ingest().apply(&batch[2..]).replays, 2);
    assert_eq!(state(&e), before);
    assert_eq!(before, vec![("a".into(), 2, "Note\n\navocados".into())]);
    let c = e.catalog().collection("articles").unwrap();
    assert_eq!(c.text.num_chunks(), chunks);
    assert_eq!(c.vectors().unwrap().live_points(), 1);
    assert!(
        ids(&e, request("bananas", Mode::Bm25)).await.is_empty(),
        "no resurrected delete"
    );
    assert_eq!(c.counts().replays_skipped, 6);
}

/// The `_count` of one stage's `freshet_apply_stage_seconds` series (0 when absent).
fn stage_count(e: &Engine, stage: &str) -> u64 {
    let prefix = format!("freshet_apply_stage_seconds_count{{stage=\"{stage}\"}} ");
    e.search()
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn every_applied_batch_is_timed_by_stage() {
    let e = engine();
    let batch = vec![
        record("articles", 0, "a", Some(article("a", "apples", "x", 0))),
        record("articles", 1, "b", Some(article("b", "bananas", "x", 1))),
    ];
    e.ingest().apply(&batch);
    e.ingest().apply(&[record("articles", 2, "a", None)]);
    for stage in ["prepare", "write", "vector_flush", "publish"] {
        assert_eq!(stage_count(&e, stage), 2, "{stage}");
    }
    // A batch of replays touches no index: it is prepared but not written or committed.
    e.ingest().apply(&batch);
    assert_eq!(stage_count(&e, "prepare"), 3);
    assert_eq!(stage_count(&e, "publish"), 2);
}

#[tokio::test]
async fn duplicates_inside_one_batch_are_replays() {
    let e = engine();
    let r = record("articles", 0, "a", Some(article("a", "apples", "x", 0)));
    let out = e.ingest().apply(&[r.clone(), r]);
    assert_eq!((out.upserts, out.replays), (1, 1));
}

#[tokio::test]
async fn update_replaces_old_text_and_vector() {
    let e = engine();
    e.ingest().apply(&[record(
        "articles",
        0,
        "a",
        Some(article("a", "apples", "x", 0)),
    )]);
    e.ingest().apply(&[record(
        "articles",
        1,
        "a",
        Some(article("a", "cherries", "x", 3)),
    )]);
    assert!(ids(&e, request("apples", Mode::Bm25)).await.is_empty());
    assert_eq!(ids(&e, request("cherries", Mode::Bm25)).await, ["a"]);
    let mut vreq = request("", Mode::Vector);
    vreq.vector = Some(vec![1.0, 0.0, 0.0, 0.0]);
    let res = e.search().search(vreq, &Access::all()).await.unwrap();
    assert_eq!(res.results.len(), 1, "one live point per document");
    assert!(
        res.results[0].score.abs() < 1e-5,
        "the old vector is masked"
    );
    let c = e.catalog().collection("articles").unwrap();
    assert_eq!(c.vectors().unwrap().dead_points(), 1);
}

#[tokio::test]
async fn poison_is_counted_and_neighbours_applied() {
    let e = engine();
    let mut bad = record("articles", 1, "x", None);
    bad.value = Some(b"{not json".to_vec());
    let wrong_dim = record(
        "articles",
        4,
        "w",
        Some(json!({"id": "w", "body": "w", "embedding": [1.0, 2.0]})),
    );
    let out = e.ingest().apply(&[
        record("articles", 0, "a", Some(article("a", "first", "x", 0))),
        bad,
        record("articles", 3, "b", Some(article("b", "second", "x", 1))),
        wrong_dim,
    ]);
    assert_eq!((out.upserts, out.poison), (2, 2));
    let counts = e.catalog().collection("articles").unwrap().counts();
    assert_eq!(counts.poison["not_json"], 1);
    assert_eq!(counts.poison["bad_vector"], 1);
    assert_eq!(
        e.freshness().progress().next_offset("articles", 0),
        Some(5),
        "poison still advances"
    );
    assert_eq!(ids(&e, request("second", Mode::Bm25)).await, ["b"]);
}

#[tokio::test]
async fn hybrid_fuses_and_explains_fallbacks() {
    async fn fused(e: &Engine) -> Vec<(String, f32)> {
        e.ingest().apply(&[
            record("articles", 0, "a", Some(article("a", "kafka lag", "x", 0))),
            record("articles", 1, "b", Some(article("b", "unrelated", "x", 1))),
        ]);
        let mut req = request("kafka", Mode::Hybrid);
        req.vector = Some(vec![0.0, 1.0, 0.0, 0.0]);
        let res = e.search().search(req, &Access::all()).await.unwrap();
        assert_eq!(res.mode, "hybrid");
        res.results
            .iter()
            .map(|h| (h.id.clone(), h.score))
            .collect()
    }
    fn close(got: &[(String, f32)], expect: &[(&str, f32)]) {
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for ((id, s), (eid, es)) in got.iter().zip(expect) {
            assert!(id == eid && (s - es).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
    }
    // BM25 ranks only a (normalised 1); the vector list ranks b (cosine 1 → 1) then a
    // (cosine 0 → 0). Score fusion, BM25 weight 0.55: a = 0.55, b = 0.45.
    let e = engine();
    close(&fused(&e).await, &[("a", 0.55), ("b", 0.45)]);
    // Reciprocal rank fusion: a = 1/61 + 1/62, b = 1/61.
    let rrf_config = CONFIG.replacen(
        "name = \"articles\"",
        "name = \"articles\"\nfusion = \"rrf\"",
        1,
    );
    let config = Config::from_toml_with_env(&rrf_config, Path::new("t.toml"), Vec::new()).unwrap();
    let with_rrf = Engine::new(Arc::new(config), None, None).unwrap();
    close(
        &fused(&with_rrf).await,
        &[("a", 1.0 / 61.0 + 1.0 / 62.0), ("b", 1.0 / 61.0)],
    );

    let res = e
        .search()
        .search(request("kafka", Mode::Hybrid), &Access::all())
        .await
        .unwrap();
    assert_eq!(res.mode, "bm25");
    assert!(
        res.notes[0].contains("pass the query's vector"),
        "{:?}",
        res.notes
    );

    let mut notes = request("kafka", Mode::Vector);
    notes.collection = Some("notes".into());
    let err = search_error(&e, notes).await;
    assert!(err.contains("no vectors"), "{err}");
}

#[tokio::test]
async fn filters_are_checked_and_applied() {
    let e = engine();
    e.ingest().apply(&[
        record("articles", 0, "a", Some(article("a", "kafka", "ops", 0))),
        record("articles", 1, "b", Some(article("b", "kafka", "dev", 1))),
    ]);
    let mut req = request("kafka", Mode::Bm25);
    req.filter = Some(json!({"category": "dev"}).as_object().unwrap().clone());
    assert_eq!(ids(&e, req.clone()).await, ["b"]);
    req.filter = Some(json!({"team": "dev"}).as_object().unwrap().clone());
    let err = search_error(&e, req).await;
    assert!(
        err.contains(
            "filterable fields: [category (keyword), event_time (time), indexed_at (time)]"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn access_hides_collections_and_tenants() {
    let e = engine();
    e.ingest()
        .apply(&[record("notes", 0, "n", Some(json!({"body": "secret"})))]);
    let only_articles = Access {
        collections: Some(["articles".to_string()].into()),
        tenant: TenantScope::All,
    };
    let mut req = request("secret", Mode::Bm25);
    req.collection = Some("notes".into());
    let err = e
        .search()
        .search(req.clone(), &only_articles)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown collection `notes`; available: articles"),
        "{err}"
    );
    assert!(
        e.search()
            .get_document("notes", "n", &only_articles)
            .is_err()
    );
    assert_eq!(
        e.search()
            .list_collections(&only_articles)
            .collections
            .len(),
        1
    );
    req.collection = None;
    assert!(
        e.search()
            .search(req, &only_articles)
            .await
            .unwrap()
            .results
            .is_empty()
    );
}

#[tokio::test]
async fn search_without_collection_covers_all_readable() {
    let e = engine();
    e.ingest().apply(&[
        record(
            "articles",
            0,
            "a",
            Some(article("a", "shared word", "x", 0)),
        ),
        record("notes", 0, "n", Some(json!({"body": "shared word"}))),
    ]);
    let mut req = request("shared", Mode::Bm25);
    req.collection = None;
    let res = e.search().search(req, &Access::all()).await.unwrap();
    let mut got: Vec<(String, String)> = res
        .results
        .into_iter()
        .map(|h| (h.collection, h.id))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("articles".into(), "a".into()),
            ("notes".into(), "n".into())
        ]
    );
}

#[tokio::test]
async fn stamps_come_from_the_record() {
    let e = engine();
    e.ingest()
        .apply(&[record("notes", 7, "n", Some(json!({"body": "stamped"})))]);
    let doc = e
        .search()
        .get_document("notes", "n", &Access::all())
        .unwrap()
        .document;
    assert_eq!(doc.freshness.offset, 7);
    assert_eq!(doc.freshness.event_time, "2023-11-14T22:13:20.007Z");
    assert_eq!(doc.freshness.ingested_at, "2023-11-14T22:13:20.507Z");
    assert!(doc.freshness.index_delay_ms >= 500);
    // Without a broker the watermark is unknown, so the answer never claims to be caught up.
    let wm = e
        .search()
        .get_document("notes", "n", &Access::all())
        .unwrap()
        .freshness;
    assert!(!wm.caught_up);
    assert_eq!(wm.partitions[0].applied_offset, Some(7));
    assert_eq!(wm.partitions[0].lag, None);
}

#[tokio::test]
async fn vector_rebuild_drops_dead_points_and_keeps_results() {
    // `articles` (the first collection) gets low rebuild thresholds.
    let text = CONFIG.replacen(
        "vector_field = \"embedding\"\n",
        "vector_field = \"embedding\"\n[collections.hnsw]\nrebuild_dead_fraction = 0.5\nrebuild_min_dead = 10\n",
        1,
    );
    let config = Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new()).unwrap();
    let e = Engine::new(Arc::new(config), None, None).unwrap();
    let doc = |i: usize, rev: usize| {
        let v: Vec<f64> = (0..4)
            .map(|d| ((i * 31 + rev) * 7 + d * 3) as f64 % 11.0 + 0.5)
            .collect();
        json!({"id": format!("d{i}"), "body": format!("rev {rev}"), "category": "x", "embedding": v})
    };
    let mut batch = Vec::new();
    for rev in 0..4 {
        for i in 0..30 {
            let offset = (rev * 30 + i) as i64;
            batch.push(record(
                "articles",
                offset,
                &format!("d{i}"),
                Some(doc(i, rev)),
            ));
        }
    }
    e.ingest().apply(&batch);
    let c = e.catalog().collection("articles").unwrap();
    let old = c.vectors().unwrap();
    assert_eq!((old.live_points(), old.dead_points()), (30, 90));
    let mut req = request("", Mode::Vector);
    req.vector = Some(vec![1.0, 2.0, 3.0, 4.0]);
    req.k = 30;
    let before = ids(&e, req.clone()).await;

    e.ingest().maintain_vector_indexes(); // starts the rebuild
    // Writes made while it runs must reach the new graph.
    e.ingest().apply(&[
        record("articles", 120, "d0", None),
        record("articles", 121, "d1", Some(doc(1, 9))),
    ]);
    e.ingest().finish_vector_rebuilds();
    let fresh = c.vectors().unwrap();
    assert!(!Arc::ptr_eq(&old, &fresh), "a new graph was swapped in");
    assert_eq!(fresh.live_points(), 29);
    assert!(
        fresh.dead_points() <= 2,
        "only the replayed writes' old versions are dead"
    );
    let mut after = ids(&e, req).await;
    let mut expected: Vec<String> = before.into_iter().filter(|id| id != "d0").collect();
    after.sort();
    expected.sort();
    assert_eq!(after, expected, "same documents before and after the swap");
}

fn persisted(dir: &Path, config: &str) -> Engine {
    let config = Config::from_toml_with_env(config, Path::new("t.toml"), Vec::new()).unwrap();
    Engine::open(Arc::new(config), None, None, Some(dir.to_path_buf())).unwrap()
}

fn history() -> Vec<SourceRecord> {
    vec![
        record("articles", 0, "a", Some(article("a", "apples", "x", 0))),
        record("articles", 1, "b", Some(article("b", "bananas", "y", 1))),
        record("articles", 2, "a", Some(article("a", "avocados", "x", 2))),
        record("articles", 3, "b", None),
        record("articles", 4, "c", Some(article("c", "cherries", "z", 3))),
    ]
}

async fn vector_ids(e: &Engine, axis: usize) -> Vec<String> {
    let mut req = request("", Mode::Vector);
    let mut v = vec![0.1; 4];
    v[axis] = 1.0;
    req.vector = Some(v);
    ids(e, req).await
}

#[tokio::test]
async fn a_reopened_engine_serves_what_was_committed_without_reindexing() {
    let dir = tempfile::tempdir().unwrap();
    let (before, bm25, vector) = {
        let e = persisted(dir.path(), CONFIG);
        assert_eq!(e.ingest().open_persisted(), RestoreReport::default());
        let records = history();
        e.ingest().apply(&records[..3]);
        assert!(e.ingest().checkpoint_due(true));
        // A graph dump part way: the restore loads it and inserts only what came after.
        e.catalog()
            .collection("articles")
            .unwrap()
            .vectors()
            .unwrap()
            .wait_indexed();
        for dump in e.ingest().due_graph_dumps(true) {
            dump.run(e.ingest());
        }
        e.ingest().apply(&records[3..]);
        e.ingest().checkpoint_due(true);
        (
            state(&e),
            ids(&e, request("avocados cherries bananas", Mode::Bm25)).await,
            vector_ids(&e, 3).await,
        )
        // Dropped without any shutdown step, as by kill -9.
    };
    let e = persisted(dir.path(), CONFIG);
    let report = e.ingest().open_persisted();
    assert_eq!(report.restored, vec![("articles".to_string(), 2)]);
    assert!(report.rebuilt.is_empty());
    assert_eq!(state(&e), before);
    assert_eq!(
        ids(&e, request("avocados cherries bananas", Mode::Bm25)).await,
        bm25
    );
    assert_eq!(vector_ids(&e, 3).await, vector);
    assert_eq!(e.freshness().progress().next_offset("articles", 0), Some(5));
    let c = e.catalog().collection("articles").unwrap();
    let v = c.vectors().unwrap();
    assert_eq!((v.live_points(), v.dead_points()), (2, 2));
    assert!(
        v.points_in_graph() >= 3,
        "the dumped graph was loaded, not rebuilt"
    );
    // Records the checkpoint covers are replays: nothing duplicated or resurrected.
    assert_eq!(e.ingest().apply(&history()).replays, 5);
    assert_eq!(state(&e), before);
    // And the stream goes on from there, through a second restart.
    e.ingest().apply(&[record(
        "articles",
        5,
        "d",
        Some(article("d", "dates", "x", 1)),
    )]);
    e.ingest().checkpoint_due(true);
    drop((c, e));
    let e = persisted(dir.path(), CONFIG);
    let report = e.ingest().open_persisted();
    assert_eq!(
        report.restored,
        vec![("articles".to_string(), 3)],
        "{report:?}"
    );
    assert_eq!(ids(&e, request("dates", Mode::Bm25)).await, ["d"]);
    assert_eq!(e.freshness().progress().next_offset("articles", 0), Some(6));
}

/// A data directory holding a checkpoint of `history()` under `CONFIG`.
fn checkpointed_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let e = persisted(dir.path(), CONFIG);
    e.ingest().open_persisted();
    e.ingest().apply(&history());
    e.ingest().checkpoint_due(true);
    dir
}

/// The mapping change the rebuild tests make: `category` is no longer a metadata field.
fn changed_mapping() -> String {
    CONFIG.replace(
        r#"metadata_fields = ["category"]"#,
        r#"metadata_fields = []"#,
    )
}

/// Tells progress the log of `articles` partition 0 ends at `high` (as the watermark task
/// would after reading the broker).
fn log_ends_at(e: &Engine, high: i64) {
    e.freshness()
        .progress()
        .set_watermarks("articles", 0, 0, high, crate::time::now_ms());
}

/// The answer's generation of `articles`: (generation, building).
async fn answering_generation(e: &Engine) -> (u64, Option<u64>, bool, Vec<String>) {
    let res = e
        .search()
        .search(
            request("apples avocados cherries", Mode::Bm25),
            &Access::all(),
        )
        .await
        .unwrap();
    let g = &res.freshness.generations[0];
    assert_eq!(g.collection, "articles");
    (g.generation, g.building, res.freshness.caught_up, res.notes)
}

#[tokio::test]
async fn changed_settings_serve_the_old_generation_until_the_new_one_is_caught_up() {
    let dir = checkpointed_history();
    let before;
    {
        let e = persisted(dir.path(), &changed_mapping());
        before = {
            let report = e.ingest().open_persisted();
            assert_eq!(report.rebuilding, vec![("articles".to_string(), 2)]);
            assert!(report.rebuilt.is_empty() && report.restored.is_empty());
            state(&e)
        };
        assert_eq!(before.len(), 2, "the previous generation serves");
        let (generation, building, caught_up, notes) = answering_generation(&e).await;
        assert_eq!((generation, building, caught_up), (1, Some(2), false));
        assert!(
            notes[0].contains("answers come from generation 1"),
            "{notes:?}"
        );
        assert_eq!(
            vector_ids(&e, 3).await[0],
            "c",
            "same vector space: vectors serve"
        );
        // The new generation is read from the start and written beside the old one.
        assert_eq!(e.freshness().progress().next_offset("articles", 0), None);
        let mut more = history();
        more.push(record(
            "articles",
            5,
            "d",
            Some(article("d", "dates", "x", 1)),
        ));
        assert_eq!(e.ingest().apply(&more).upserts, 5);
        assert_eq!(state(&e), before, "the serving generation is frozen");
        let next_docs = e.catalog().rebuild_of("articles").unwrap().1.view.len();
        assert_eq!(next_docs, 3);
        // Caught up, but no checkpoint covers it yet: no swap. Then the checkpoint: swap.
        log_ends_at(&e, 6);
        assert!(e.ingest().swap_caught_up_generations().is_empty());
        e.ingest().checkpoint_due(true);
        assert_eq!(e.ingest().swap_caught_up_generations(), ["articles"]);
        assert_eq!(state(&e).len(), 3);
        let (generation, building, _, notes) = answering_generation(&e).await;
        assert_eq!((generation, building), (2, None));
        assert!(notes.is_empty(), "{notes:?}");
        // The new settings apply: `category` is no metadata field any more.
        let doc = e
            .search()
            .get_document("articles", "d", &Access::all())
            .unwrap();
        assert!(
            doc.document.metadata.is_empty(),
            "{:?}",
            doc.document.metadata
        );
        let files = dir.path().join("articles");
        assert!(!files.join("text").exists() && !files.join("vectors").exists());
        assert!(files.join("gen-2/text").exists());
        assert_eq!(
            std::fs::read_to_string(files.join("generation")).unwrap(),
            "2\n"
        );
    }
    // A restart opens generation 2 as any persisted collection.
    let e = persisted(dir.path(), &changed_mapping());
    let report = e.ingest().open_persisted();
    assert_eq!(report.restored, vec![("articles".to_string(), 3)]);
    assert!(report.rebuilding.is_empty());
    assert_eq!(answering_generation(&e).await.0, 2);
    assert_eq!(e.freshness().progress().next_offset("articles", 0), Some(6));
}

#[tokio::test]
async fn a_crash_during_a_rebuild_keeps_the_old_generation_and_resumes_the_new_one() {
    let dir = checkpointed_history();
    let before;
    {
        let e = persisted(dir.path(), &changed_mapping());
        e.ingest().open_persisted();
        before = state(&e);
        e.ingest().apply(&history()[..3]);
        e.ingest().checkpoint_due(true);
        // Dropped without any shutdown step, as by kill -9, before catching up.
    }
    let e = persisted(dir.path(), &changed_mapping());
    let report = e.ingest().open_persisted();
    assert_eq!(report.rebuilding, vec![("articles".to_string(), 2)]);
    assert_eq!(state(&e), before, "the old generation still serves");
    assert_eq!(
        e.freshness().progress().next_offset("articles", 0),
        Some(3),
        "the rebuild resumes from its own checkpoint"
    );
    assert_eq!(e.ingest().apply(&history()).replays, 3);
    log_ends_at(&e, 5);
    e.ingest().checkpoint_due(true);
    assert_eq!(e.ingest().swap_caught_up_generations(), ["articles"]);
    assert_eq!(
        state(&e),
        before,
        "the same documents, under the new settings"
    );
    assert_eq!(answering_generation(&e).await.0, 2);
    // Settings changed back: generation 3 is built, generation 2 serves meanwhile.
    drop(e);
    let e = persisted(dir.path(), CONFIG);
    assert_eq!(
        e.ingest().open_persisted().rebuilding,
        vec![("articles".to_string(), 2)]
    );
    assert_eq!(answering_generation(&e).await.1, Some(3));
    assert!(dir.path().join("articles/gen-3/text").exists());
}

#[tokio::test]
async fn a_generation_whose_vectors_are_in_another_space_answers_with_bm25_only() {
    let dir = checkpointed_history();
    let changed = CONFIG.replace(r#"vector_field = "embedding""#, r#"vector_field = "other""#);
    let e = persisted(dir.path(), &changed);
    e.ingest().open_persisted();
    let res = e
        .search()
        .search(request("cherries", Mode::Hybrid), &Access::all())
        .await
        .unwrap();
    assert_eq!(res.mode, "bm25");
    assert_eq!(res.results[0].id, "c");
    assert!(
        res.notes
            .iter()
            .any(|n| n.contains("fell back to bm25") && n.contains("vector field changed")),
        "{:?}",
        res.notes
    );
    let mut req = request("", Mode::Vector);
    req.vector = Some(vec![0.0, 0.0, 0.0, 1.0]);
    let error = search_error(&e, req).await;
    assert!(error.contains("no usable vectors"), "{error}");
}

#[tokio::test]
async fn damaged_files_rebuild_from_the_topics() {
    let dir = checkpointed_history();
    // A damaged vector journal: rebuilt in place, never a panic.
    let journal = std::fs::read_dir(dir.path().join("articles/vectors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".log"))
        .unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&journal, bytes).unwrap();
    let e = persisted(dir.path(), CONFIG);
    let report = e.ingest().open_persisted();
    assert_eq!(report.rebuilt, vec!["articles".to_string()]);
    assert!(state(&e).is_empty());
    assert_eq!(e.freshness().progress().next_offset("articles", 0), None);
    assert_eq!(e.ingest().apply(&history()).upserts, 4);
    assert_eq!(state(&e).len(), 2);
}

#[tokio::test]
async fn a_rebuilt_vector_index_starts_a_new_journal_generation_that_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG.replacen(
        "vector_field = \"embedding\"\n",
        "vector_field = \"embedding\"\n[collections.hnsw]\nrebuild_dead_fraction = 0.5\nrebuild_min_dead = 10\n",
        1,
    );
    let mut batch = Vec::new();
    for rev in 0..4 {
        for i in 0..30 {
            let offset = (rev * 30 + i) as i64;
            let body = format!("rev {rev}");
            batch.push(record(
                "articles",
                offset,
                &format!("d{i}"),
                Some(article(&format!("d{i}"), &body, "x", (i + rev) % 4)),
            ));
        }
    }
    let (before, journals_before) = {
        let e = persisted(dir.path(), &text);
        e.ingest().open_persisted();
        e.ingest().apply(&batch);
        e.ingest().checkpoint_due(true);
        e.ingest().maintain_vector_indexes();
        e.ingest().finish_vector_rebuilds();
        let c = e.catalog().collection("articles").unwrap();
        assert_eq!(
            c.vectors().unwrap().dead_points(),
            0,
            "rebuilt without dead points"
        );
        assert!(
            e.ingest().due_graph_dumps(true).is_empty(),
            "no graph save before the rebuilt index's generation is committed"
        );
        // The next batch's checkpoint names a new generation with the rebuilt table as base.
        e.ingest().apply(&[record("articles", 120, "d0", None)]);
        e.ingest().checkpoint_due(true);
        c.vectors().unwrap().wait_indexed();
        let dumps = e.ingest().due_graph_dumps(true);
        assert_eq!(dumps.len(), 1);
        for dump in dumps {
            dump.run(e.ingest());
        }
        let journals: Vec<String> = std::fs::read_dir(dir.path().join("articles/vectors"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("journal-"))
            .collect();
        (state(&e), journals)
    };
    assert_eq!(
        journals_before,
        vec!["journal-0000000002.log".to_string()],
        "the old generation is removed"
    );
    let e = persisted(dir.path(), &text);
    assert_eq!(
        e.ingest().open_persisted().restored,
        vec![("articles".to_string(), 29)]
    );
    assert_eq!(state(&e), before);
    let v = e
        .catalog()
        .collection("articles")
        .unwrap()
        .vectors()
        .unwrap();
    // The delete after the swap is in the new base as a dead point, as in the live index.
    assert_eq!((v.live_points(), v.dead_points()), (29, 1));
    assert_eq!(
        v.points_in_graph(),
        30,
        "the new generation's graph save was loaded"
    );
    assert_eq!(e.ingest().apply(&batch).replays, 120);
}

/// What is applied is searchable before its checkpoint; a crash before the checkpoint loses
/// it from disk only, and the restart resumes at the checkpoint's offsets, so replaying the
/// topic brings it back: nothing lost, nothing duplicated.
#[tokio::test]
async fn searchable_before_the_checkpoint_and_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let records = history();
    let (before, bm25, vector) = {
        let e = persisted(dir.path(), CONFIG);
        e.ingest().open_persisted();
        e.ingest().apply(&records[..2]);
        assert!(e.ingest().checkpoint_due(true));
        // Not checkpointed: an update of "a", a delete of "b", a new "c".
        e.ingest().apply(&records[2..]);
        let mut found = ids(&e, request("avocados cherries bananas apples", Mode::Bm25)).await;
        found.sort();
        assert_eq!(found, ["a", "c"]);
        assert_eq!(vector_ids(&e, 3).await[0], "c");
        let c = e.catalog().collection("articles").unwrap();
        assert_eq!(c.text.num_chunks(), 2);
        assert_eq!(c.text.uncommitted(), 3);
        (
            state(&e),
            ids(&e, request("avocados cherries bananas apples", Mode::Bm25)).await,
            vector_ids(&e, 3).await,
        )
        // Dropped without a checkpoint, as by kill -9.
    };
    let e = persisted(dir.path(), CONFIG);
    assert_eq!(
        e.ingest().open_persisted().restored,
        vec![("articles".to_string(), 2)]
    );
    assert_eq!(e.freshness().progress().next_offset("articles", 0), Some(2));
    let mut found = ids(&e, request("apples bananas", Mode::Bm25)).await;
    found.sort();
    assert_eq!(found, ["a", "b"], "the checkpoint's state");
    let replay = e.ingest().apply(&records);
    assert_eq!((replay.replays, replay.upserts, replay.deletes), (2, 2, 1));
    assert_eq!(state(&e), before);
    assert_eq!(
        ids(&e, request("avocados cherries bananas apples", Mode::Bm25)).await,
        bm25
    );
    assert_eq!(vector_ids(&e, 3).await, vector);
    let v = e
        .catalog()
        .collection("articles")
        .unwrap()
        .vectors()
        .unwrap();
    assert_eq!(v.live_points(), 2, "one live point per document");
}
