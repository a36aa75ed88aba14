//! Decode throughput per record format on one core: the same documents encoded as plain JSON,
//! Avro, Protobuf and JSON Schema (the last three in the schema registry wire format), each
//! decoded into documents by `Mapping::decode_with` as the prepare stage does. Schemas are
//! parsed up front (the registry cache's steady state). Prints one JSON line per format.
//! Used by bench/decode_throughput.sh.
//!
//! ```text
//! cargo run --release --example decode_throughput -- [RECORDS] [VECTOR_DIM]
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use apache_avro::types::{Record, Value as Avro};
use freshet::decode::{
    Format, KeyFormat, LookupError, Mapping, RawRecord, Schema, SchemaKind, SchemaSource,
};
use prost_reflect::{DynamicMessage, Value as Proto};

const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "Article", "fields": [
    {"name": "id", "type": "string"},
    {"name": "title", "type": "string"},
    {"name": "body", "type": ["null", "string"], "default": null},
    {"name": "category", "type": "string"},
    {"name": "views", "type": "long"},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "embedding", "type": {"type": "array", "items": "float"}}]}"#;

const PROTO_SCHEMA: &str = r#"syntax = "proto3";
    import "google/protobuf/timestamp.proto";
    message Article {
      string id = 1; string title = 2; string body = 3; string category = 4; int64 views = 5;
      repeated string tags = 6; google.protobuf.Timestamp updated_at = 7; repeated float embedding = 8;
    }"#;

/// Pre-parsed schemas by ID.
struct Schemas(HashMap<u32, Arc<Schema>>);

impl SchemaSource for Schemas {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, LookupError> {
        self.0.get(&id).cloned().ok_or(LookupError::Unknown)
    }
}

struct Doc {
    id: String,
    title: String,
    body: String,
    category: String,
    views: i64,
    tags: Vec<String>,
    updated_at_ms: i64,
    embedding: Vec<f32>,
}

fn docs(n: usize, dim: usize) -> Vec<Doc> {
    const WORDS: [&str; 12] = [
        "pump", "valve", "restart", "nightly", "pressure", "sensor", "gasket", "flow", "alarm",
        "operator", "shift", "runbook",
    ];
    (0..n)
        .map(|i| Doc {
            id: format!("doc-{i}"),
            title: format!("Maintenance note {i}"),
            body: (0..80)
                .map(|w| WORDS[(i * 7 + w * 13) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" "),
            category: ["runbook", "postmortem", "howto"][i % 3].to_owned(),
            views: (i * 37) as i64,
            tags: vec!["water".into(), format!("site-{}", i % 17)],
            updated_at_ms: 1_704_067_200_000 + i as i64 * 1000,
            embedding: (0..dim).map(|d| ((i + d) % 13) as f32 / 13.0).collect(),
        })
        .collect()
}

fn framed(id: u32, prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(prefix);
    out.extend(payload);
    out
}

fn json_of(doc: &Doc) -> serde_json::Value {
    let at = chrono::DateTime::from_timestamp_millis(doc.updated_at_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    serde_json::json!({
        "id": doc.id, "title": doc.title, "body": doc.body, "category": doc.category,
        "views": doc.views, "tags": doc.tags, "updated_at": at, "embedding": doc.embedding,
    })
}

fn avro_of(schema: &apache_avro::Schema, doc: &Doc) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut record = Record::new(schema).ok_or("not a record schema")?;
    record.put("id", doc.id.as_str());
    record.put("title", doc.title.as_str());
    record.put("body", Avro::Union(1, Box::new(doc.body.as_str().into())));
    record.put("category", doc.category.as_str());
    record.put("views", doc.views);
    record.put(
        "tags",
        Avro::Array(doc.tags.iter().map(|t| t.as_str().into()).collect()),
    );
    record.put("updated_at", Avro::TimestampMillis(doc.updated_at_ms));
    record.put(
        "embedding",
        Avro::Array(doc.embedding.iter().map(|x| Avro::Float(*x)).collect()),
    );
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?;
    Ok(writer.write_value_to_vec(record)?)
}

fn proto_of(descriptor: &prost_reflect::MessageDescriptor, doc: &Doc) -> Vec<u8> {
    let mut message = DynamicMessage::new(descriptor.clone());
    message.set_field_by_name("id", Proto::String(doc.id.clone()));
    message.set_field_by_name("title", Proto::String(doc.title.clone()));
    message.set_field_by_name("body", Proto::String(doc.body.clone()));
    message.set_field_by_name("category", Proto::String(doc.category.clone()));
    message.set_field_by_name("views", Proto::I64(doc.views));
    message.set_field_by_name(
        "tags",
        Proto::List(doc.tags.iter().map(|t| Proto::String(t.clone())).collect()),
    );
    if let Some(kind) = descriptor
        .get_field_by_name("updated_at")
        .and_then(|f| f.kind().as_message().cloned())
    {
        let mut at = DynamicMessage::new(kind);
        at.set_field_by_name("seconds", Proto::I64(doc.updated_at_ms / 1000));
        at.set_field_by_name(
            "nanos",
            Proto::I32((doc.updated_at_ms % 1000) as i32 * 1_000_000),
        );
        message.set_field_by_name("updated_at", Proto::Message(at));
    }
    message.set_field_by_name(
        "embedding",
        Proto::List(doc.embedding.iter().map(|x| Proto::F32(*x)).collect()),
    );
    prost::Message::encode_to_vec(&message)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let dim: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let docs = docs(n, dim);

    let avro_schema = apache_avro::Schema::parse_str(AVRO_SCHEMA)?;
    let proto_pool = {
        let dir = std::env::temp_dir().join(format!("freshet-decode-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("article.proto"), PROTO_SCHEMA)?;
        let pool = protox::compile(["article.proto"], [&dir])?;
        let _ = std::fs::remove_dir_all(&dir);
        prost_reflect::DescriptorPool::from_file_descriptor_set(pool)?
    };
    let proto_descriptor = proto_pool
        .get_message_by_name("Article")
        .ok_or("no Article message")?;

    let schemas = Schemas(HashMap::from([
        (
            1,
            Arc::new(Schema::parse(SchemaKind::Avro, AVRO_SCHEMA, &[])?),
        ),
        (
            2,
            Arc::new(Schema::parse(SchemaKind::Protobuf, PROTO_SCHEMA, &[])?),
        ),
        (3, Arc::new(Schema::parse(SchemaKind::Json, "{}", &[])?)),
    ]));

    let mut encodings: Vec<(&str, Format, Vec<Vec<u8>>)> = Vec::new();
    let json: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| serde_json::to_vec(&json_of(d)))
        .collect::<Result<_, _>>()?;
    encodings.push(("json", Format::Json, json.clone()));
    let avro: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| avro_of(&avro_schema, d).map(|p| framed(1, &[], &p)))
        .collect::<Result<_, _>>()?;
    encodings.push(("avro", Format::Avro, avro));
    let proto: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| framed(2, &[0], &proto_of(&proto_descriptor, d)))
        .collect();
    encodings.push(("protobuf", Format::Protobuf, proto));
    let json_schema: Vec<Vec<u8>> = json.iter().map(|p| framed(3, &[], p)).collect();
    encodings.push(("json_schema", Format::JsonSchema, json_schema));

    let mut json_rate = None;
    for (name, format, records) in &encodings {
        let mapping = Mapping {
            format: *format,
            key_format: KeyFormat::String,
            id_field: Some("id".into()),
            title_field: Some("title".into()),
            text_fields: vec!["title".into(), "body".into()],
            metadata_fields: vec!["category".into(), "views".into(), "tags".into()],
            event_time_field: Some("updated_at".into()),
            vector_field: (dim > 0).then(|| "embedding".into()),
            ..Mapping::default()
        };
        let decode_all = || -> Result<usize, Box<dyn std::error::Error>> {
            let mut chars = 0;
            for (offset, bytes) in records.iter().enumerate() {
                let record = RawRecord {
                    topic: "bench",
                    partition: 0,
                    offset: offset as i64,
                    key: None,
                    value: Some(bytes),
                    timestamp_ms: None,
                };
                let event = mapping.decode_with(&record, Some(&schemas))?;
                chars += event.id().len();
            }
            Ok(chars)
        };
        decode_all()?; // warm-up, and a check that every record decodes
        let rounds = 3;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(decode_all()?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let rate = (records.len() * rounds) as f64 / seconds;
        let bytes: usize = records.iter().map(Vec::len).sum();
        let baseline = *json_rate.get_or_insert(rate);
        println!(
            "{}",
            serde_json::json!({
                "format": name, "records": records.len(), "vector_dim": dim,
                "avg_record_bytes": bytes / records.len().max(1),
                "records_per_s": rate.round(),
                "mb_per_s": ((bytes * rounds) as f64 / seconds / 1e6 * 10.0).round() / 10.0,
                "vs_json": (rate / baseline * 100.0).round() / 100.0,
            })
        );
    }
    Ok(())
}
