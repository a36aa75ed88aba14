//! End-to-end tests of `Mapping::decode_with` on schema registry records: Avro values and
//! keys, Debezium envelopes written with the Avro converter, schema evolution, and every
//! way a wire-format record can be poison. Schemas come from an in-memory `SchemaSource`.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::{Record, Value as Avro};
use serde_json::json;

use super::*;

struct Schemas(HashMap<u32, Result<Arc<Schema>, LookupError>>);

impl SchemaSource for Schemas {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, LookupError> {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or(Err(LookupError::Unknown))
    }
}

const ARTICLE_V1: &str = r#"{"type": "record", "name": "Article", "namespace": "shop", "fields": [
    {"name": "id", "type": "string"},
    {"name": "title", "type": "string"},
    {"name": "body", "type": ["null", "string"], "default": null},
    {"name": "views", "type": "int"},
    {"name": "legacy", "type": "string", "default": ""},
    {"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
        {"name": "tenant", "type": "string"},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}},
    {"name": "embedding", "type": {"type": "array", "items": "float"}}]}"#;

/// v2: `legacy` removed (it had a default), `views` widened to long, `lang` added (optional).
const ARTICLE_V2: &str = r#"{"type": "record", "name": "Article", "namespace": "shop", "fields": [
    {"name": "id", "type": "string"},
    {"name": "title", "type": "string"},
    {"name": "body", "type": ["null", "string"], "default": null},
    {"name": "views", "type": "long"},
    {"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
        {"name": "tenant", "type": "string"},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}},
    {"name": "embedding", "type": {"type": "array", "items": "float"}},
    {"name": "lang", "type": ["null", "string"], "default": null}]}"#;

const KEY: &str =
    r#"{"type": "record", "name": "ArticleKey", "fields": [{"name": "id", "type": "string"}]}"#;

const PROTO: &str = r#"syntax = "proto3";
    import "google/protobuf/timestamp.proto";
    message Item { string sku = 1; string name = 2; google.protobuf.Timestamp at = 3; repeated float vec = 4; }"#;

fn avro(text: &str) -> Arc<Schema> {
    Arc::new(Schema::parse(SchemaKind::Avro, text, &[]).expect("Avro schema"))
}

fn schemas() -> Schemas {
    let mut map = HashMap::new();
    map.insert(1, Ok(avro(ARTICLE_V1)));
    map.insert(2, Ok(avro(ARTICLE_V2)));
    map.insert(3, Ok(avro(KEY)));
    map.insert(
        4,
        Ok(Arc::new(
            Schema::parse(SchemaKind::Protobuf, PROTO, &[]).expect("proto"),
        )),
    );
    map.insert(5, Ok(Arc::new(Schema::Json)));
    map.insert(
        6,
        Err(LookupError::Unavailable("connection refused".into())),
    );
    map.insert(7, Err(LookupError::Invalid("bad text".into())));
    Schemas(map)
}

fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(payload);
    out
}

fn encode(id: u32, text: &str, fill: impl FnOnce(&mut Record)) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(text).expect("schema");
    let mut record = Record::new(&schema).expect("record");
    fill(&mut record);
    framed(
        id,
        &apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .and_then(|w| w.write_value_to_vec(record))
            .expect("encodes"),
    )
}

fn meta(tenant: &str, at: i64) -> Avro {
    Avro::Record(vec![
        ("tenant".into(), tenant.into()),
        ("updated_at".into(), Avro::TimestampMillis(at)),
    ])
}

fn article_v1(id: &str, title: &str) -> Vec<u8> {
    encode(1, ARTICLE_V1, |r| {
        r.put("id", id);
        r.put("title", title);
        r.put("body", Avro::Union(1, Box::new("Check the valves.".into())));
        r.put("views", 3);
        r.put("legacy", "old");
        r.put("meta", meta("acme", 1_704_067_200_000));
        r.put(
            "embedding",
            Avro::Array(vec![Avro::Float(0.25), Avro::Float(0.5)]),
        );
    })
}

fn article_v2(id: &str, title: &str) -> Vec<u8> {
    encode(2, ARTICLE_V2, |r| {
        r.put("id", id);
        r.put("title", title);
        r.put("body", Avro::Union(0, Box::new(Avro::Null)));
        r.put("views", 5_000_000_000i64);
        r.put("meta", meta("globex", 1_704_067_260_000));
        r.put(
            "embedding",
            Avro::Array(vec![Avro::Float(1.0), Avro::Float(0.0)]),
        );
        r.put("lang", Avro::Union(1, Box::new("en".into())));
    })
}

fn key(id: &str) -> Vec<u8> {
    encode(3, KEY, |r| r.put("id", id))
}

fn articles(format: Format) -> Mapping {
    Mapping {
        format,
        title_field: Some("title".into()),
        text_fields: vec!["title".into(), "body".into()],
        metadata_fields: vec!["views".into(), "meta.tenant".into(), "lang".into()],
        tenant_field: Some("meta.tenant".into()),
        event_time_field: Some("meta.updated_at".into()),
        vector_field: Some("embedding".into()),
        ..Mapping::default()
    }
}

fn decode(
    mapping: &Mapping,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<ChangeEvent, DecodeError> {
    let record = RawRecord {
        topic: "articles",
        partition: 0,
        offset: 9,
        key,
        value,
        timestamp_ms: Some(1),
    };
    mapping.decode_with(&record, Some(&schemas()))
}

fn upsert(mapping: &Mapping, key: Option<&[u8]>, value: &[u8]) -> Document {
    match decode(mapping, key, Some(value)) {
        Ok(ChangeEvent::Upsert(document)) => document,
        other => panic!("expected an upsert, got {other:?}"),
    }
}

fn kind(result: Result<ChangeEvent, DecodeError>) -> &'static str {
    match result {
        Err(e) => e.kind().label(),
        Ok(event) => panic!("expected an error, got {event:?}"),
    }
}

#[test]
fn avro_values_and_keys_become_documents() {
    for format in [Format::Avro, Format::Auto] {
        let mapping = articles(format);
        let doc = upsert(
            &mapping,
            Some(&key("a-1")),
            &article_v1("ignored-by-key", "Pumps"),
        );
        assert_eq!(doc.id, "a-1");
        assert_eq!(doc.title.as_deref(), Some("Pumps"));
        assert_eq!(doc.text, "Pumps\n\nCheck the valves.");
        assert_eq!(doc.tenant.as_deref(), Some("acme"));
        assert_eq!(doc.event_time_ms, Some(1_704_067_200_000));
        assert_eq!(doc.vector, Some(vec![0.25, 0.5]));
        assert_eq!(
            serde_json::Value::Object(doc.metadata),
            json!({"views": 3, "meta.tenant": "acme"})
        );
    }
}

#[test]
fn id_field_default_text_and_string_keys() {
    let mapping = Mapping {
        format: Format::Avro,
        id_field: Some("id".into()),
        key_format: KeyFormat::String,
        ..Mapping::default()
    };
    let doc = upsert(&mapping, Some(b"raw key"), &article_v1("a-2", "Valves"));
    assert_eq!(doc.id, "a-2");
    // Every top-level string field in schema order, except the id.
    assert_eq!(doc.text, "Valves\n\nCheck the valves.\n\nold");
    let Ok(ChangeEvent::Delete { id, .. }) = decode(&mapping, Some(b"{\"id\": 1}"), None) else {
        panic!("tombstone")
    };
    assert_eq!(id, "{\"id\": 1}");
}

#[test]
fn evolved_schemas_decode_side_by_side() {
    let mapping = articles(Format::Avro);
    let old = upsert(&mapping, Some(&key("a-1")), &article_v1("a-1", "Old"));
    let new = upsert(&mapping, Some(&key("a-1")), &article_v2("a-1", "New"));
    assert_eq!(old.metadata.get("lang"), None);
    assert_eq!(new.metadata.get("lang"), Some(&json!("en")));
    assert_eq!(new.metadata.get("views"), Some(&json!(5_000_000_000_i64)));
    assert_eq!(new.text, "New");
    assert_eq!(new.tenant.as_deref(), Some("globex"));
}

#[test]
fn tombstones_take_the_avro_key() {
    let mapping = articles(Format::Avro);
    for value in [None, Some(&[][..])] {
        match decode(&mapping, Some(&key("a-9")), value) {
            Ok(ChangeEvent::Delete { id, event_time_ms }) => {
                assert_eq!(id, "a-9");
                assert_eq!(event_time_ms, Some(1));
            }
            other => panic!("expected a delete, got {other:?}"),
        }
    }
}

#[test]
fn debezium_envelopes_written_with_avro() {
    let row = r#"{"type": "record", "name": "Value", "namespace": "db.inventory.customers", "fields": [
        {"name": "id", "type": "int"}, {"name": "first_name", "type": "string"},
        {"name": "email", "type": "string"}]}"#;
    let source = r#"{"type": "record", "name": "Source", "namespace": "io.debezium.connector.mysql", "fields": [
        {"name": "ts_ms", "type": "long"}, {"name": "db", "type": "string"}]}"#;
    let envelope = format!(
        r#"{{"type": "record", "name": "Envelope", "namespace": "db.inventory.customers", "fields": [
        {{"name": "before", "type": ["null", {row}], "default": null}},
        {{"name": "after", "type": ["null", "Value"], "default": null}},
        {{"name": "source", "type": {source}}},
        {{"name": "op", "type": "string"}},
        {{"name": "ts_ms", "type": ["null", "long"], "default": null}}]}}"#
    );
    let schema = apache_avro::Schema::parse_str(&envelope).expect("envelope schema");
    let customer = |id: i32, name: &str| {
        Avro::Record(vec![
            ("id".into(), Avro::Int(id)),
            ("first_name".into(), name.into()),
            ("email".into(), format!("{name}@example.com").into()),
        ])
    };
    let event = |op: &str, before: Option<Avro>, after: Option<Avro>| {
        let mut r = Record::new(&schema).expect("record");
        let union = |v: Option<Avro>| match v {
            Some(v) => Avro::Union(1, Box::new(v)),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        r.put("before", union(before));
        r.put("after", union(after));
        r.put(
            "source",
            Avro::Record(vec![
                ("ts_ms".into(), Avro::Long(1_718_000_000_000)),
                ("db".into(), "inventory".into()),
            ]),
        );
        r.put("op", op);
        r.put(
            "ts_ms",
            Avro::Union(1, Box::new(Avro::Long(1_718_000_000_500))),
        );
        framed(
            8,
            &apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                .build()
                .and_then(|w| w.write_value_to_vec(r))
                .expect("encodes"),
        )
    };
    let key_schema =
        r#"{"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]}"#;
    let mut all = schemas();
    all.0.insert(8, Ok(avro(&envelope)));
    all.0.insert(9, Ok(avro(key_schema)));
    let key = |id: i32| {
        let schema = apache_avro::Schema::parse_str(key_schema).expect("key");
        let mut r = Record::new(&schema).expect("record");
        r.put("id", id);
        framed(
            9,
            &apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                .build()
                .and_then(|w| w.write_value_to_vec(r))
                .expect("encodes"),
        )
    };
    let unwrapped = r#"{"type": "record", "name": "Value", "fields": [
        {"name": "id", "type": "int"}, {"name": "first_name", "type": "string"},
        {"name": "__deleted", "type": ["null", "string"], "default": null}]}"#;
    all.0.insert(10, Ok(avro(unwrapped)));
    let mapping = Mapping {
        format: Format::Avro,
        title_field: Some("email".into()),
        ..Mapping::default()
    };
    let run = |k: &[u8], v: Option<&[u8]>| {
        mapping.decode_with(
            &RawRecord {
                topic: "db.inventory.customers",
                partition: 0,
                offset: 1,
                key: Some(k),
                value: v,
                timestamp_ms: Some(1),
            },
            Some(&all),
        )
    };
    let Ok(ChangeEvent::Upsert(doc)) = run(
        &key(1001),
        Some(&event("c", None, Some(customer(1001, "Sally")))),
    ) else {
        panic!("create")
    };
    assert_eq!(doc.id, "1001");
    assert_eq!(doc.title.as_deref(), Some("Sally@example.com"));
    assert_eq!(doc.text, "Sally\n\nSally@example.com");
    assert_eq!(doc.event_time_ms, Some(1_718_000_000_000));
    let deleted = run(
        &key(1001),
        Some(&event("d", Some(customer(1001, "Sally")), None)),
    );
    assert!(
        matches!(deleted, Ok(ChangeEvent::Delete { ref id, .. }) if id == "1001"),
        "{deleted:?}"
    );
    assert!(
        matches!(run(&key(1001), None), Ok(ChangeEvent::Delete { ref id, .. }) if id == "1001")
    );
    // The unwrapped form (ExtractNewRecordState with delete.handling.mode=rewrite).
    let row = encode(10, unwrapped, |r| {
        r.put("id", 1002);
        r.put("first_name", "George");
        r.put("__deleted", Avro::Union(1, Box::new("true".into())));
    });
    assert!(
        matches!(run(&key(1002), Some(&row)), Ok(ChangeEvent::Delete { ref id, .. }) if id == "1002")
    );
}

#[test]
fn protobuf_and_json_schema_values() {
    let descriptor = match schemas().schema(4).expect("proto").as_ref() {
        Schema::Protobuf(p) => p.message_descriptor_for_tests(),
        _ => unreachable!(),
    };
    let mut message = prost_reflect::DynamicMessage::new(descriptor);
    message.set_field_by_name("sku", prost_reflect::Value::String("A-1".into()));
    message.set_field_by_name("name", prost_reflect::Value::String("Gasket".into()));
    message.set_field_by_name(
        "vec",
        prost_reflect::Value::List(vec![
            prost_reflect::Value::F32(1.0),
            prost_reflect::Value::F32(2.0),
        ]),
    );
    let mut payload = vec![0];
    payload.extend(prost::Message::encode_to_vec(&message));
    let mapping = Mapping {
        format: Format::Protobuf,
        id_field: Some("sku".into()),
        vector_field: Some("vec".into()),
        ..Mapping::default()
    };
    let doc = upsert(&mapping, None, &framed(4, &payload));
    assert_eq!((doc.id.as_str(), doc.text.as_str()), ("A-1", "Gasket"));
    assert_eq!(doc.vector, Some(vec![1.0, 2.0]));
    let json_mapping = Mapping {
        format: Format::JsonSchema,
        id_field: Some("id".into()),
        ..Mapping::default()
    };
    let doc = upsert(
        &json_mapping,
        None,
        &framed(5, br#"{"id": 3, "name": "Bolt"}"#),
    );
    assert_eq!((doc.id.as_str(), doc.text.as_str()), ("3", "Bolt"));
    assert_eq!(
        kind(decode(&json_mapping, None, Some(&framed(5, b"{oops")))),
        "not_json"
    );
}

#[test]
fn poison_kinds() {
    let mapping = articles(Format::Avro);
    let value = article_v1("a-1", "T");
    let k = key("a-1");
    let with_id = |id: u32| {
        let mut v = value.clone();
        v[1..5].copy_from_slice(&id.to_be_bytes());
        v
    };
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&with_id(99)))),
        "unknown_schema"
    );
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&with_id(6)))),
        "registry_unavailable"
    );
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&with_id(7)))),
        "bad_schema"
    );
    // Schema 4 is Protobuf, the config says Avro.
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&with_id(4)))),
        "bad_schema"
    );
    // Written with v1, header says the key schema.
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&with_id(3)))),
        "schema_mismatch"
    );
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&value[..value.len() - 2]))),
        "schema_mismatch"
    );
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(br#"{"id": "x"}"#))),
        "not_wire_format"
    );
    assert_eq!(
        kind(decode(&mapping, Some(&k), Some(&[0, 0, 1]))),
        "not_wire_format"
    );
    // A bad key only matters when the id comes from it.
    let bad_key = framed(99, b"x");
    assert_eq!(
        kind(decode(&mapping, Some(&bad_key), Some(&value))),
        "unknown_schema"
    );
    let by_field = Mapping {
        id_field: Some("id".into()),
        ..articles(Format::Avro)
    };
    assert_eq!(upsert(&by_field, Some(&bad_key), &value).id, "a-1");
    // Without a registry, wire-format records say so (auto) rather than "not JSON".
    let auto = Mapping::default();
    let record = RawRecord {
        topic: "t",
        partition: 0,
        offset: 0,
        key: Some(b"k"),
        value: Some(&value),
        timestamp_ms: None,
    };
    assert_eq!(
        auto.decode(&record).map_err(|e| e.kind().label()).err(),
        Some("no_registry")
    );
    // JSON still decodes under auto with a registry.
    let doc = upsert(&Mapping::default(), Some(b"k"), br#"{"title": "plain"}"#);
    assert_eq!((doc.id.as_str(), doc.text.as_str()), ("k", "plain"));
}
