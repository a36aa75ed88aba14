//! Shared by the JSON decoder targets: a mapping that reads every kind of field, and a record.
// Each target includes this file and uses part of it.
#![allow(dead_code)]

use freshet::decode::{Format, Mapping, RawRecord};

/// A mapping that exercises every field kind: id, title, nested text, metadata, tenant,
/// event time and a precomputed vector.
pub fn mapping(format: Format) -> Mapping {
    Mapping {
        format,
        id_field: Some("id".into()),
        title_field: Some("title".into()),
        text_fields: vec!["body".into(), "nested.text".into()],
        metadata_fields: vec!["tags".into(), "n".into()],
        tenant_field: Some("tenant".into()),
        event_time_field: Some("ts".into()),
        vector_field: Some("v".into()),
        max_record_bytes: 1 << 20,
        ..Mapping::default()
    }
}

/// Decodes `value` (and `key`) with `mapping`; any outcome but a panic is fine.
pub fn decode(mapping: &Mapping, key: Option<&[u8]>, value: Option<&[u8]>) {
    let record = RawRecord {
        topic: "fuzz",
        partition: 0,
        offset: 0,
        key,
        value,
        timestamp_ms: Some(1_700_000_000_000),
    };
    if let Ok(event) = mapping.decode(&record) {
        // What the engine reads next must not panic either.
        let _ = event.id();
        let _ = event.event_time_ms();
    }
}

/// Decodes a record whose `field` holds `data`: as raw JSON text, and as a JSON string of
/// the same bytes (vectors and times may arrive as strings).
pub fn decode_field(field: &str, data: &[u8]) {
    let mapping = mapping(Format::Json);
    let mut raw = format!("{{\"id\":\"a\",\"body\":\"x\",\"{field}\":").into_bytes();
    raw.extend_from_slice(data);
    raw.push(b'}');
    decode(&mapping, None, Some(&raw));
    let text = String::from_utf8_lossy(data);
    let mut quoted = serde_json::Map::new();
    quoted.insert("id".into(), "a".into());
    quoted.insert("body".into(), "x".into());
    quoted.insert(field.into(), text.into());
    let quoted = serde_json::Value::Object(quoted).to_string();
    decode(&mapping, None, Some(quoted.as_bytes()));
}
