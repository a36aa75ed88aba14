//! Shared by the decoder fuzz targets: fixed schemas under fixed IDs, and one record through
//! `Mapping::decode_with`, the path every Kafka record takes.

use std::collections::HashMap;
use std::sync::Arc;

use freshet::decode::{
    Format, KeyFormat, LookupError, Mapping, RawRecord, Schema, SchemaKind, SchemaSource,
};

/// Avro: nested and recursive records, unions, enums, maps, arrays, fixed, decimals and every
/// logical type.
pub const AVRO_ID: u32 = 1;
/// Protobuf: nested messages, maps, oneof, enums, packed floats and well-known types.
pub const PROTO_ID: u32 = 2;
/// JSON Schema: the payload is JSON.
pub const JSON_ID: u32 = 3;

const AVRO: &str = r#"{"type": "record", "name": "Fuzz", "namespace": "f", "fields": [
  {"name": "id", "type": ["null", "string", "long"]},
  {"name": "n", "type": "int"}, {"name": "d", "type": "double"}, {"name": "x", "type": "float"},
  {"name": "b", "type": "boolean"}, {"name": "raw", "type": "bytes"},
  {"name": "fx", "type": {"type": "fixed", "name": "Sixteen", "size": 16}},
  {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "attrs", "type": {"type": "map", "values": ["null", "int", "string"]}},
  {"name": "vec", "type": {"type": "array", "items": "float"}},
  {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 4}},
  {"name": "fprice", "type": {"type": "fixed", "name": "F8", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 2}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
  {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
  {"name": "tsn", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
  {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
  {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}},
  {"name": "next", "type": ["null", "Fuzz"], "default": null}
]}"#;

const PROTO: &str = r#"syntax = "proto3";
package f;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/any.proto";
message Fuzz {
  string id = 1; int64 n = 2; uint64 u = 3; sint32 s = 4; double d = 5; float x = 6; bool b = 7;
  bytes raw = 8; E e = 9; repeated string tags = 10; map<string, int32> attrs = 11;
  repeated float vec = 12; google.protobuf.Timestamp at = 13; google.protobuf.Duration took = 14;
  google.protobuf.Struct meta = 15; google.protobuf.Value any_value = 16;
  google.protobuf.StringValue maybe = 17; google.protobuf.Any packed = 18; Fuzz next = 19;
  oneof choice { string text = 20; Inner inner = 21; }
  fixed32 f32 = 22; sfixed64 sf64 = 23;
  message Inner { repeated Inner children = 1; string name = 2; }
}
enum E { ZERO = 0; ONE = 1; }
"#;

struct Schemas(HashMap<u32, Arc<Schema>>);

impl SchemaSource for Schemas {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, LookupError> {
        self.0.get(&id).cloned().ok_or(LookupError::Unknown)
    }
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: std::sync::OnceLock<Schemas> = std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let parse = |kind, text| Arc::new(Schema::parse(kind, text, &[]).expect("fuzz schema parses"));
        Schemas(HashMap::from([
            (AVRO_ID, parse(SchemaKind::Avro, AVRO)),
            (PROTO_ID, parse(SchemaKind::Protobuf, PROTO)),
            (JSON_ID, parse(SchemaKind::Json, "{}")),
        ]))
    })
}

/// `payload` behind a wire-format header naming schema `id`.
pub fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(payload);
    out
}

/// Decodes one record with every field setting in use. Errors are expected; panics are not.
pub fn decode(format: Format, key_format: KeyFormat, key: Option<&[u8]>, value: Option<&[u8]>) {
    let mapping = Mapping {
        format,
        key_format,
        title_field: Some("id".into()),
        text_fields: vec!["tags".into(), "e".into(), "next.tags".into()],
        metadata_fields: vec!["attrs".into(), "price".into(), "day".into(), "at".into()],
        tenant_field: Some("e".into()),
        event_time_field: Some("ts".into()),
        vector_field: Some("vec".into()),
        ..Mapping::default()
    };
    let record = RawRecord {
        topic: "fuzz",
        partition: 0,
        offset: 0,
        key,
        value,
        timestamp_ms: Some(0),
    };
    let _ = mapping.decode_with(&record, Some(schemas()));
}
