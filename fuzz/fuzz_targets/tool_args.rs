//! Tool arguments as an MCP client sends them: the input is the JSON `arguments` object of
//! `search` (then run against a small in-memory engine: bounds, filters, query analysis,
//! both retrievers), `get_document` and `document_freshness`, and a resource URI.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use freshet::config::Config;
use freshet::engine::{Access, Engine};
use freshet::mcp::{FreshnessArgs, GetDocumentArgs, SearchArgs, parse_document_uri};
use freshet::source::SourceRecord;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[collections]]
name = "docs"
topics = ["docs"]
id_field = "id"
text_fields = ["body"]
metadata_fields = ["kind"]
tenant_field = "tenant"
vector_field = "v"
"#;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = Config::from_toml_with_env(CONFIG, Path::new("fuzz.toml"), Vec::new())
            .expect("fuzz config is valid");
        let engine = Engine::new(Arc::new(config), None, None).expect("engine builds");
        let records: Vec<SourceRecord> = (0..20)
            .map(|i| {
                let (tenant, kind) = (["a", "b"][i % 2], ["x", "y", "z"][i % 3]);
                let doc = serde_json::json!({
                    "id": format!("d{i}"), "tenant": tenant, "kind": kind,
                    "body": format!("kafka stream offset number {i} replica words"),
                    "v": [1.0, (i as f32) / 20.0],
                });
                SourceRecord {
                    topic: Arc::from("docs"),
                    partition: 0,
                    offset: i as i64,
                    key: Some(format!("d{i}").into_bytes()),
                    value: Some(doc.to_string().into_bytes()),
                    timestamp_ms: Some(1_700_000_000_000),
                    ingested_at_ms: 1_700_000_000_000,
                }
            })
            .collect();
        engine.apply(&records);
        engine
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_document_uri(text);
    }
    let engine = engine();
    if let Ok(args) = serde_json::from_slice::<GetDocumentArgs>(data) {
        let _ = engine.get_document(&args.collection, &args.id, &Access::all());
    }
    if let Ok(args) = serde_json::from_slice::<FreshnessArgs>(data) {
        let _ = engine.document_freshness(&args.collection, &args.ids, &Access::all());
    }
    let Ok(args) = serde_json::from_slice::<SearchArgs>(data) else {
        return;
    };
    // Head waits need a broker; the fuzzer explores everything else.
    let Ok(mut req) = args.into_request(10) else {
        return;
    };
    req.consistency = freshet::engine::Consistency::Any;
    let _ = runtime().block_on(engine.search(req, &Access::all()));
});
