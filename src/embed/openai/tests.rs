//! The client against a real HTTP server on loopback: a small scripted stand-in for an
//! OpenAI-compatible endpoint (no mock of our own code; every byte goes over TCP).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::embed::test_server::{Reply, embeddings, serve};

fn client(url: &str, dimensions: Option<usize>, batch_size: usize) -> OpenAiEmbedder {
    OpenAiEmbedder::new(
        url,
        "test-embed",
        Some("sk-test".into()),
        dimensions,
        batch_size,
        Duration::from_secs(5),
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
    )
}

#[test]
fn batches_in_order_with_auth_and_dimensions() {
    let (url, seen) = serve(vec![
        Reply::json(200, embeddings(2, 3, 0.0)),
        Reply::json(200, embeddings(1, 3, 100.0)),
    ]);
    let e = client(&url, Some(3), 2);
    let v = e.embed(&["a", "", "c"]).unwrap();
    assert_eq!(v.len(), 3);
    // Reordered by `index`: input 0 got base + 0, input 1 base + 1.
    assert_eq!(v[0][0], 0.0);
    assert_eq!(v[1][0], 1.0);
    assert_eq!(v[2][0], 100.0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/v1/embeddings");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(
        seen[0].body,
        json!({"model": "test-embed", "input": ["a", " "], "dimensions": 3})
    );
    assert_eq!(seen[1].body["input"], json!(["c"]));
    assert_eq!(e.identity().dimensions, Some(3));
}

#[test]
fn retries_429_and_5xx_then_succeeds() {
    let (url, seen) = serve(vec![
        Reply::json(503, json!({"error": "loading model"})),
        Reply {
            status: 429,
            headers: vec![("retry-after", "0".into())],
            body: json!({"error": {"message": "rate limited"}}).to_string(),
        },
        Reply::json(500, json!({"error": "oops"})),
        Reply::json(200, embeddings(1, 4, 0.0)),
    ]);
    let e = client(&url, None, 8);
    let started = Instant::now();
    let v = e.embed(&["hello"]).unwrap();
    assert_eq!(v[0].len(), 4);
    assert_eq!(seen.lock().unwrap().len(), 4);
    // Without a configured dimension, none is sent and the first vector's is learned.
    assert!(seen.lock().unwrap()[0].body.get("dimensions").is_none());
    assert_eq!(e.identity().dimensions, Some(4));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn gives_up_after_the_last_attempt_as_unavailable() {
    let replies = (0..4)
        .map(|_| Reply::json(502, json!({"error": "bad gateway"})))
        .collect();
    let (url, seen) = serve(replies);
    let err = client(&url, None, 8).embed(&["x"]).unwrap_err();
    assert!(err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("after 4 attempts") && message.contains("502"),
        "{message}"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[test]
fn connection_refused_is_transient() {
    // Bind and drop, so nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client(&format!("http://127.0.0.1:{port}/v1"), None, 8)
        .embed(&["x"])
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
fn a_cancelled_pipeline_stops_the_retries_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let patient = OpenAiEmbedder::new(
        &url,
        "test-embed",
        None,
        None,
        8,
        Duration::from_secs(5),
        RetryPolicy {
            attempts: 1000,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        },
    );
    let cancel = CancellationToken::new();
    cancel.cancel();
    // Without the token the first wait alone would be a minute.
    let err = patient.embed_cancellable(&["x"], &cancel).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("stopped retrying"), "{err}");
}

#[test]
fn client_errors_are_not_retried() {
    let (url, seen) = serve(vec![Reply::json(
        400,
        json!({"error": {"message": "input too long"}}),
    )]);
    let err = client(&url, None, 8).embed(&["x"]).unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("input too long"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (url, _) = serve(vec![Reply::json(401, json!({"error": "no key"}))]);
    let err = client(&url, None, 8).embed(&["x"]).unwrap_err();
    assert!(err.to_string().contains("api_key_env"), "{err}");
}

#[test]
fn dimension_mismatch_is_a_clear_error() {
    let (url, _) = serve(vec![Reply::json(200, embeddings(2, 3, 0.0))]);
    let err = client(&url, Some(4), 8).embed(&["a", "b"]).unwrap_err();
    assert!(matches!(
        err,
        EmbedError::DimensionMismatch {
            expected: 4,
            got: 3
        }
    ));
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("embedding.dimensions is 4"),
        "{err}"
    );

    // Without a configured dimension, a later vector of another size is refused too.
    let (url, _) = serve(vec![
        Reply::json(200, embeddings(1, 3, 0.0)),
        Reply::json(200, embeddings(1, 5, 0.0)),
    ]);
    let e = client(&url, None, 8);
    e.embed(&["a"]).unwrap();
    assert!(matches!(
        e.embed(&["b"]).unwrap_err(),
        EmbedError::DimensionMismatch {
            expected: 3,
            got: 5
        }
    ));
}

#[test]
fn wrong_count_or_body_is_rejected() {
    let (url, _) = serve(vec![
        Reply::json(200, embeddings(1, 3, 0.0)),
        Reply {
            status: 200,
            headers: Vec::new(),
            body: "not json".into(),
        },
    ]);
    let e = client(&url, None, 8);
    let err = e.embed(&["a", "b"]).unwrap_err();
    assert!(
        err.to_string().contains("1 embeddings for 2 inputs"),
        "{err}"
    );
    let err = e.embed(&["a"]).unwrap_err();
    assert!(err.to_string().contains("unexpected body"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let mut config = EmbeddingConfig {
        url: Some("http://127.0.0.1:1/v1".into()),
        model: Some("m".into()),
        api_key_env: Some("FRESHET_TEST_SURELY_UNSET_KEY".into()),
        ..EmbeddingConfig::default()
    };
    let err = OpenAiEmbedder::from_config(2, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("collections[2].embedding.api_key_env")
            && err.contains("FRESHET_TEST_SURELY_UNSET_KEY"),
        "{err}"
    );
    config.api_key_env = None;
    config.url = Some("127.0.0.1:11434".into());
    let err = OpenAiEmbedder::from_config(0, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("collections[0].embedding.url"), "{err}");
}
