//! The engine with real embedders: the local model (when scripts/setup.sh installed it) and
//! an OpenAI-compatible server stand-in on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::tests::search_error;
use super::*;
use crate::auth::Access;
use crate::embed::test_server::{Reply, embeddings, serve};
use crate::source::SourceRecord;

fn model_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; run scripts/setup.sh to install the model",
            dir.display()
        );
        None
    }
}

fn config(collection: &str) -> Config {
    let text = format!("[[collections]]\nname = \"docs\"\ntopics = [\"docs\"]\n{collection}");
    Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new()).unwrap()
}

/// An engine whose `docs` collection embeds with the local model in 16-token chunks.
fn local_engine() -> Option<Engine> {
    let dir = model_dir()?;
    let c = config(&format!(
        "id_field = \"id\"\ntitle_field = \"title\"\ntext_fields = [\"title\", \"body\"]\n\
         chunk_tokens = 16\nchunk_overlap = 4\n\
         [collections.embedding]\nmodel_dir = {:?}\n",
        dir.display().to_string()
    ));
    Some(Engine::new(Arc::new(c), None, None).unwrap())
}

fn record(offset: i64, key: &str, value: Option<Value>) -> SourceRecord {
    SourceRecord {
        topic: Arc::from("docs"),
        partition: 0,
        offset,
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| v.to_string().into_bytes()),
        timestamp_ms: Some(1_700_000_000_000 + offset),
        ingested_at_ms: 1_700_000_000_500 + offset,
    }
}

fn doc(id: &str, title: &str, body: &str) -> Option<Value> {
    Some(json!({"id": id, "title": title, "body": body}))
}

fn request(query: &str, mode: Mode) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        collection: Some("docs".into()),
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

const LONG: &str = "Kafka consumers read records from partitions in order. Each consumer \
    tracks an offset per partition. When producers write faster than consumers read, the \
    distance between the newest offset and the consumer's offset grows; this is called lag. \
    Monitoring lag tells operators whether downstream systems are keeping up with the stream.";

#[tokio::test]
async fn long_documents_are_chunked_and_updates_remove_every_old_chunk() {
    let Some(e) = local_engine() else { return };
    let c = e.catalog().collection("docs").unwrap();
    e.ingest().apply(&[
        record(0, "a", doc("a", "Consumer lag", LONG)),
        record(
            1,
            "b",
            doc("b", "Gardening", "Tomatoes need sun and water."),
        ),
    ]);
    let a = c.view.get("a").unwrap();
    let chunks = a.chunks.len();
    assert!(chunks >= 4, "{chunks} chunks");
    // Every chunk fits the chunk size in model tokens, and neighbours overlap.
    let (tokenizer, _) = c.embedder().unwrap().tokenizer().unwrap();
    for (i, r) in a.chunks.iter().enumerate() {
        let n = tokenizer.encode(&a.text[r.clone()], false).unwrap().len();
        assert!(n <= 16, "chunk {i} has {n} tokens");
    }
    assert!(a.chunks.windows(2).all(|w| w[1].start < w[0].end));
    // Every chunk is in both indexes.
    assert_eq!(c.text.num_chunks() as usize, chunks + 1);
    let vectors = c.vectors().unwrap();
    assert_eq!(vectors.live_points(), chunks + 1);
    assert_eq!(c.view.chunk_count(), chunks + 1);

    // A passage deep inside the long document is found, with that chunk as the snippet.
    let res = e
        .search()
        .search(
            request("monitoring whether downstream keeps up", Mode::Vector),
            &Access::all(),
        )
        .await
        .unwrap();
    assert_eq!(res.results[0].id, "a");
    assert!(
        res.results[0].snippet.contains("Monitoring"),
        "{}",
        res.results[0].snippet
    );
    // Hits are grouped per document: one result per document, not one per chunk.
    assert_eq!(res.results.len(), 2);

    // The update leaves one chunk: every old chunk is gone from both indexes.
    e.ingest().apply(&[record(
        2,
        "a",
        doc("a", "Consumer lag", "Lag is the offset gap."),
    )]);
    assert_eq!(c.view.get("a").unwrap().chunks.len(), 1);
    assert_eq!(c.text.num_chunks(), 2);
    assert_eq!(vectors.live_points(), 2);
    assert_eq!(vectors.dead_points(), chunks);
    assert!(
        ids(&e, request("monitoring operators downstream", Mode::Bm25))
            .await
            .is_empty()
    );
    let res = e
        .search()
        .search(
            request("monitoring whether downstream keeps up", Mode::Vector),
            &Access::all(),
        )
        .await
        .unwrap();
    for hit in &res.results {
        assert!(!hit.snippet.contains("Monitoring"), "stale chunk: {hit:?}");
    }
    assert_eq!(res.results.len(), 2);

    // A delete removes the rest.
    e.ingest().apply(&[record(3, "a", None)]);
    assert_eq!(c.text.num_chunks(), 1);
    assert_eq!(vectors.live_points(), 1);
    assert_eq!(
        ids(&e, request("consumer lag offset", Mode::Vector)).await,
        ["b"]
    );
    assert_eq!(
        ids(&e, request("lag offset gap", Mode::Hybrid)).await,
        ["b"]
    );
}

#[tokio::test]
async fn query_text_is_embedded_for_vector_and_hybrid() {
    let Some(e) = local_engine() else { return };
    e.ingest().apply(&[
        record(
            0,
            "cat",
            doc("cat", "Pets", "The kitten is sleeping on the sofa."),
        ),
        record(
            1,
            "car",
            doc("car", "Cars", "The engine needs an oil change."),
        ),
        record(
            2,
            "rain",
            doc("rain", "Weather", "Heavy rain is expected tomorrow."),
        ),
    ]);
    // No word in common with the document: only the vectors can find it.
    for mode in [Mode::Vector, Mode::Hybrid] {
        let res = e
            .search()
            .search(
                request("young kitty naps atop a couch", mode),
                &Access::all(),
            )
            .await
            .unwrap();
        assert_eq!(res.results[0].id, "cat", "{mode:?}: {:?}", res.results);
        assert_eq!(
            res.mode,
            if mode == Mode::Vector {
                "vector"
            } else {
                "hybrid"
            }
        );
        assert!(res.notes.is_empty(), "{:?}", res.notes);
    }
    assert!(
        ids(&e, request("young kitty naps atop a couch", Mode::Bm25))
            .await
            .is_empty()
    );
    // A query vector may still be passed explicitly; its dimension is checked.
    let mut req = request("", Mode::Vector);
    req.vector = Some(vec![0.1; 3]);
    let err = search_error(&e, req).await;
    assert!(err.contains("384-dimensional"), "{err}");
}

#[test]
fn list_collections_and_identity_name_the_model() {
    let Some(e) = local_engine() else { return };
    let info = e.search().list_collections(&Access::all());
    let emb = &info.collections[0].embedding;
    assert_eq!(
        (emb.provider.as_str(), emb.model.as_deref(), emb.dimensions),
        ("local", Some("all-MiniLM-L6-v2"), Some(384))
    );
    assert_eq!(info.collections[0].modes, ["hybrid", "bm25", "vector"]);
    let identity = e.catalog().collection("docs").unwrap().embedder_identity();
    let parts: Vec<&str> = identity.split(':').collect();
    assert_eq!(
        &parts[..3],
        ["local", "all-MiniLM-L6-v2", "384"],
        "{identity}"
    );
    assert_eq!(parts[3].len(), 16, "{identity}");
}

#[test]
fn collections_sharing_a_model_dir_share_one_model() {
    let Some(dir) = model_dir() else { return };
    let text = format!(
        "[[collections]]\nname = \"a\"\ntopics = [\"a\"]\n[collections.embedding]\nmodel_dir = {0:?}\n\
         [[collections]]\nname = \"b\"\ntopics = [\"b\"]\n[collections.embedding]\nmodel_dir = {0:?}\n",
        dir.display().to_string()
    );
    let c = Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new()).unwrap();
    let e = Engine::new(Arc::new(c), None, None).unwrap();
    let (a, b) = (
        e.catalog().collection("a").unwrap(),
        e.catalog().collection("b").unwrap(),
    );
    assert!(Arc::ptr_eq(a.embedder().unwrap(), b.embedder().unwrap()));
}

#[test]
fn missing_model_dir_is_a_startup_error_naming_the_path() {
    let c = config("[collections.embedding]\nmodel_dir = \"models/not-installed\"\n");
    let err = Engine::new(Arc::new(c), None, None)
        .err()
        .unwrap()
        .to_string();
    // Resolved against the config file's directory ("t.toml": the working directory).
    let dir = std::env::current_dir()
        .unwrap()
        .join("models/not-installed");
    assert!(
        err.starts_with(&format!(
            "collection `docs`: embedding model directory {}",
            dir.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn openai_collection_embeds_through_the_server() {
    // The whole batch is refused once (one input is bad), so the records are retried one by
    // one: the refused one becomes poison, the others are applied with their vectors.
    let (url, seen) = serve(vec![
        Reply::json(400, json!({"error": {"message": "input 2 is too long"}})),
        Reply::json(200, embeddings(1, 3, 1.0)),
        Reply::json(400, json!({"error": {"message": "input is too long"}})),
        Reply::json(200, embeddings(1, 3, 2.0)),
        // The query.
        Reply::json(200, embeddings(1, 3, 1.0)),
    ]);
    let c = config(&format!(
        "id_field = \"id\"\n[collections.embedding]\nprovider = \"openai\"\nurl = {url:?}\n\
         model = \"test-embed\"\ndimensions = 3\n"
    ));
    let e = Engine::new(Arc::new(c), None, None).unwrap();
    let out = e.ingest().apply(&[
        record(0, "x", Some(json!({"id": "x", "body": "first"}))),
        record(1, "y", Some(json!({"id": "y", "body": "second"}))),
        record(2, "z", Some(json!({"id": "z", "body": "third"}))),
    ]);
    assert_eq!((out.upserts, out.poison), (2, 1));
    let c = e.catalog().collection("docs").unwrap();
    assert_eq!(c.counts().poison["embed_error"], 1);
    assert!(c.view.get("y").is_none());
    assert_eq!(c.vectors().unwrap().live_points(), 2);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests[0].body["input"],
        json!(["first", "second", "third"])
    );
    assert_eq!(requests[2].body["input"], json!(["second"]));

    let res = e
        .search()
        .search(request("first", Mode::Vector), &Access::all())
        .await
        .unwrap();
    assert_eq!(res.results[0].id, "x");
    let info = e.search().list_collections(&Access::all());
    let emb = &info.collections[0].embedding;
    assert_eq!(
        (emb.provider.as_str(), emb.model.as_deref(), emb.dimensions),
        ("openai", Some("test-embed"), Some(3))
    );
    assert!(c.embedder_identity().starts_with("openai:test-embed:3:"));
}
