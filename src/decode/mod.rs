//! Decoding: one Kafka record's bytes → a `ChangeEvent` (upsert or delete) or a
//! `DecodeError` saying what was wrong. Pure: no I/O, no async, no locks, never panics.
//!
//! `Mapping::decode` is the only entry point. Modules, in the order a record meets them:
//! - `debezium`: envelope detection (wrapped, bare, unwrapped rows, tombstones) → `Message`;
//! - `key`: ids from Kafka keys; `fields`: id, title, text, tenant, metadata from a row;
//! - `time`: event times; `vector`: precomputed embeddings;
//! - `json`: dotted paths and key order; `error`: `DecodeError`, `MappingError`;
//! - `wire`, `avro`, `protobuf`, `schema`: schema registry records (the Confluent wire
//!   format), turned into JSON text first so everything after them is shared.

mod avro;
mod debezium;
mod error;
mod fields;
mod json;
mod key;
mod protobuf;
mod schema;
mod time;
mod vector;
mod wire;

use std::borrow::Cow;

pub use error::{DecodeError, DecodeErrorKind, MappingError};
pub use schema::{LookupError, Schema, SchemaKind, SchemaSource, SchemaText};

/// A time value (epoch number in s, ms, µs or ns, RFC 3339, `YYYY-MM-DD[ HH:MM:SS]`) as ms
/// since the epoch, read the way event times are.
pub(crate) fn parse_time_ms(value: &serde_json::Value) -> Result<i64, DecodeError> {
    time::event_time_ms(value, "value", false)
}

use debezium::{Change, Message};
use json::Object;

/// One Kafka record as the source saw it.
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    /// Topic the record came from (for logs and stamps; decoding ignores it).
    pub topic: &'a str,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Key bytes: the id when no `id_field` gives one, always for tombstones.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` or empty is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Kafka record timestamp: the last resort for event time.
    pub timestamp_ms: Option<i64>,
}

/// What a collection's topic carries (`format` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Debezium envelopes when they look like one (`op`, `before`/`after`, `source`),
    /// otherwise plain JSON objects; `__deleted` rows are deletes.
    #[default]
    Auto,
    /// Plain JSON objects, each an upsert.
    Json,
    /// Debezium envelopes (wrapped or bare) or unwrapped rows.
    Debezium,
    /// Avro in the schema registry wire format; Debezium envelopes are detected as in `auto`.
    Avro,
    /// Protobuf in the schema registry wire format.
    Protobuf,
    /// JSON Schema in the schema registry wire format (the payload is a JSON document).
    #[serde(rename = "json_schema")]
    JsonSchema,
}

impl Format {
    /// The schema kind this format requires, if it is a schema registry format.
    pub fn schema_kind(self) -> Option<SchemaKind> {
        match self {
            Format::Avro => Some(SchemaKind::Avro),
            Format::Protobuf => Some(SchemaKind::Protobuf),
            Format::JsonSchema => Some(SchemaKind::Json),
            Format::Auto | Format::Json | Format::Debezium => None,
        }
    }
}

/// How a collection's Kafka keys are read (`key_format` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// Wire-format keys (magic byte and schema ID) through the registry when one is
    /// configured; otherwise as `json`.
    #[default]
    Auto,
    /// The key bytes as UTF-8 text, verbatim.
    String,
    /// A JSON key (object, string or number), else the bytes as UTF-8 text.
    Json,
    /// Avro in the schema registry wire format.
    Avro,
    /// Protobuf in the schema registry wire format.
    Protobuf,
    /// JSON Schema in the schema registry wire format.
    #[serde(rename = "json_schema")]
    JsonSchema,
}

impl KeyFormat {
    /// The schema kind this key format requires, if it is a schema registry format.
    pub fn schema_kind(self) -> Option<SchemaKind> {
        match self {
            KeyFormat::Avro => Some(SchemaKind::Avro),
            KeyFormat::Protobuf => Some(SchemaKind::Protobuf),
            KeyFormat::JsonSchema => Some(SchemaKind::Json),
            KeyFormat::Auto | KeyFormat::String | KeyFormat::Json => None,
        }
    }
}

/// How a collection's records become documents. Built once from config, checked when built
/// (`check`). Field settings are paths, dotted for nested objects (`author.name`).
#[derive(Clone, Debug)]
pub struct Mapping {
    /// How to read the value.
    pub format: Format,
    /// How to read the key.
    pub key_format: KeyFormat,
    /// Where the id is; unset, missing or null → the Kafka key.
    pub id_field: Option<String>,
    /// The title: a string or number.
    pub title_field: Option<String>,
    /// Joined by a blank line; empty → every top-level string field of the row.
    pub text_fields: Vec<String>,
    /// Copied into `Document::metadata` when present and non-null.
    pub metadata_fields: Vec<String>,
    /// The tenant the caller's claim must match: a string or number.
    pub tenant_field: Option<String>,
    /// Unset or missing → Debezium `source.ts_ms`, the envelope `ts_ms`, the Kafka timestamp.
    pub event_time_field: Option<String>,
    /// A precomputed embedding: array of numbers, or a string holding one.
    pub vector_field: Option<String>,
    /// Larger values are rejected before parsing.
    pub max_record_bytes: usize,
}

impl Default for Mapping {
    /// Auto-detected format, ids from the key, all string fields as text, 1 MiB records.
    fn default() -> Mapping {
        Mapping {
            format: Format::Auto,
            key_format: KeyFormat::Auto,
            id_field: None,
            title_field: None,
            text_fields: Vec::new(),
            metadata_fields: Vec::new(),
            tenant_field: None,
            event_time_field: None,
            vector_field: None,
            max_record_bytes: 1 << 20,
        }
    }
}

/// What one record does to the view.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeEvent {
    /// Insert or replace the document with this id.
    Upsert(Document),
    /// Remove the document (Debezium `d`, `__deleted` rows, tombstones).
    Delete {
        /// The id of the document to remove.
        id: String,
        /// When the delete happened at the source, epoch milliseconds.
        event_time_ms: Option<i64>,
    },
}

impl ChangeEvent {
    /// The id of the document this event changes.
    pub fn id(&self) -> &str {
        match self {
            ChangeEvent::Upsert(document) => &document.id,
            ChangeEvent::Delete { id, .. } => id,
        }
    }

    /// When the change happened, as epoch milliseconds.
    pub fn event_time_ms(&self) -> Option<i64> {
        match self {
            ChangeEvent::Upsert(document) => document.event_time_ms,
            ChangeEvent::Delete { event_time_ms, .. } => *event_time_ms,
        }
    }
}

/// A document as the view and indexes store it.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Unique within the collection; upserts and deletes match on it.
    pub id: String,
    /// From `title_field`.
    pub title: Option<String>,
    /// What is indexed for full-text search and embedded.
    pub text: String,
    /// Configured metadata fields, keyed by the path as written in the config.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// From `tenant_field`.
    pub tenant: Option<String>,
    /// Precomputed embedding from `vector_field`.
    pub vector: Option<Vec<f32>>,
    /// When the change happened at the source, epoch milliseconds.
    pub event_time_ms: Option<i64>,
}

impl Mapping {
    /// Rejects settings that could never decode a record: empty paths or path segments, and
    /// a zero size limit.
    pub fn check(&self) -> Result<(), MappingError> {
        if self.max_record_bytes == 0 {
            return Err(MappingError::ZeroMaxRecordBytes);
        }
        let single = [
            ("id_field", &self.id_field),
            ("title_field", &self.title_field),
            ("tenant_field", &self.tenant_field),
            ("event_time_field", &self.event_time_field),
            ("vector_field", &self.vector_field),
        ];
        let single = single
            .into_iter()
            .filter_map(|(setting, path)| Some((setting, path.as_ref()?)));
        let lists = [
            ("text_fields", &self.text_fields),
            ("metadata_fields", &self.metadata_fields),
        ];
        let listed = lists
            .into_iter()
            .flat_map(|(setting, paths)| paths.iter().map(move |path| (setting, path)));
        for (setting, path) in single.chain(listed) {
            if path.split('.').any(str::is_empty) {
                return Err(MappingError::BadPath {
                    setting,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }

    /// Decodes one record. A null or empty value is a tombstone: a delete of the key's id.
    /// Records in the schema registry wire format need `decode_with` and a schema source.
    pub fn decode(&self, record: &RawRecord<'_>) -> Result<ChangeEvent, DecodeError> {
        self.decode_with(record, None)
    }

    /// Decodes one record, fetching the schemas that wire-format keys and values name from
    /// `schemas`.
    pub fn decode_with(
        &self,
        record: &RawRecord<'_>,
        schemas: Option<&dyn SchemaSource>,
    ) -> Result<ChangeEvent, DecodeError> {
        let raw = match record.value {
            Some(bytes) if !bytes.is_empty() => bytes,
            _ => return self.delete(None, record, schemas, record.timestamp_ms),
        };
        if raw.len() > self.max_record_bytes {
            return Err(DecodeError::Oversize {
                size: raw.len(),
                limit: self.max_record_bytes,
            });
        }
        let bytes = self.value_json(raw, schemas)?;
        let bytes = bytes.as_ref();
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson {
                reason: e.to_string(),
            })?;
        let serde_json::Value::Object(object) = value else {
            return Err(DecodeError::NotObject {
                found: json::describe(&value),
            });
        };
        let message = match self.format {
            Format::Json => Message::plain(object),
            Format::Debezium => debezium::classify(object, true)?,
            Format::Auto | Format::Avro | Format::Protobuf | Format::JsonSchema => {
                debezium::classify(object, false)?
            }
        };
        let fallback_time = message.source_time_ms.or(record.timestamp_ms);
        match message.change {
            // A delete's row shows the prior version, so its own times are stale: the source
            // time is when the delete happened.
            Change::Delete(before) => self.delete(before.as_ref(), record, schemas, fallback_time),
            Change::Upsert(ref row) => {
                let document =
                    self.document(row, &message, bytes, record, schemas, fallback_time)?;
                Ok(ChangeEvent::Upsert(document))
            }
        }
    }

    /// The value as JSON text: as it is for JSON formats, decoded through its schema for
    /// wire-format ones (`auto` recognises the magic byte, which no JSON text starts with).
    fn value_json<'b>(
        &self,
        bytes: &'b [u8],
        schemas: Option<&dyn SchemaSource>,
    ) -> Result<Cow<'b, [u8]>, DecodeError> {
        match self.format {
            Format::Json | Format::Debezium => Ok(Cow::Borrowed(bytes)),
            Format::Auto if !wire::looks_framed(bytes) => Ok(Cow::Borrowed(bytes)),
            Format::Auto => framed_json(bytes, None, "value", schemas).map(Cow::Owned),
            Format::Avro | Format::Protobuf | Format::JsonSchema => {
                framed_json(bytes, self.format.schema_kind(), "value", schemas).map(Cow::Owned)
            }
        }
    }

    fn delete(
        &self,
        before: Option<&Object>,
        record: &RawRecord<'_>,
        schemas: Option<&dyn SchemaSource>,
        event_time_ms: Option<i64>,
    ) -> Result<ChangeEvent, DecodeError> {
        Ok(ChangeEvent::Delete {
            id: self.id(before, record, schemas)?,
            event_time_ms,
        })
    }

    /// `id_field` from the row if it has one, else the Kafka key.
    fn id(
        &self,
        row: Option<&Object>,
        record: &RawRecord<'_>,
        schemas: Option<&dyn SchemaSource>,
    ) -> Result<String, DecodeError> {
        if let (Some(field), Some(row)) = (&self.id_field, row)
            && let Some(id) = fields::id(row, field)?
        {
            return Ok(id);
        }
        self.key_id(record.key, schemas)?
            .ok_or_else(|| DecodeError::MissingId {
                field: self.id_field.clone(),
            })
    }

    /// The id the Kafka key stands for, read as `key_format` says.
    fn key_id(
        &self,
        key: Option<&[u8]>,
        schemas: Option<&dyn SchemaSource>,
    ) -> Result<Option<String>, DecodeError> {
        let Some(key) = key.filter(|key| !key.is_empty()) else {
            return Ok(None);
        };
        let framed_kind = match self.key_format {
            KeyFormat::String => {
                let id = std::str::from_utf8(key).ok().filter(|id| !id.is_empty());
                return Ok(id.map(str::to_owned));
            }
            KeyFormat::Json => return Ok(key::id_from_key(Some(key))),
            KeyFormat::Auto if schemas.is_none() || !wire::looks_framed(key) => {
                return Ok(key::id_from_key(Some(key)));
            }
            KeyFormat::Auto => None,
            KeyFormat::Avro | KeyFormat::Protobuf | KeyFormat::JsonSchema => {
                self.key_format.schema_kind()
            }
        };
        let json = framed_json(key, framed_kind, "key", schemas)?;
        Ok(key::id_from_key(Some(&json)))
    }

    fn document(
        &self,
        row: &Object,
        message: &Message,
        bytes: &[u8],
        record: &RawRecord<'_>,
        schemas: Option<&dyn SchemaSource>,
        fallback_time: Option<i64>,
    ) -> Result<Document, DecodeError> {
        let id = self.id(Some(row), record, schemas)?;
        let title = match &self.title_field {
            Some(field) => fields::title(row, field)?,
            None => None,
        };
        let text = if self.text_fields.is_empty() {
            let keys = json::source_order(row, bytes, message.row_path);
            let skip = [self.id_field.as_deref(), self.vector_field.as_deref()];
            let skip: Vec<&str> = skip.into_iter().flatten().collect();
            fields::default_text(row, &keys, &skip)
        } else {
            fields::text(row, &self.text_fields)?
        };
        let tenant = match &self.tenant_field {
            Some(field) => fields::tenant(row, field)?,
            None => None,
        };
        let vector = match &self.vector_field {
            Some(field) => json::lookup_present(row, field)
                .map(|value| vector::vector(value, field))
                .transpose()?,
            None => None,
        };
        let event_time = self
            .event_time_field
            .as_deref()
            .and_then(|field| Some((field, json::lookup_present(row, field)?)));
        let event_time_ms = match event_time {
            Some((field, value)) => {
                let days = message
                    .row_schema
                    .as_ref()
                    .is_some_and(|schema| debezium::is_date_field(schema, field));
                Some(time::event_time_ms(value, field, days)?)
            }
            None => fallback_time,
        };
        Ok(Document {
            id,
            title,
            text,
            metadata: fields::metadata(row, &self.metadata_fields),
            tenant,
            vector,
            event_time_ms,
        })
    }
}

/// Decodes a wire-format key or value to JSON text through the schema its header names.
/// `expected` is the kind the config requires (`None`: whatever the registry says).
fn framed_json(
    bytes: &[u8],
    expected: Option<SchemaKind>,
    part: &'static str,
    schemas: Option<&dyn SchemaSource>,
) -> Result<Vec<u8>, DecodeError> {
    let (id, payload) =
        wire::split(bytes).map_err(|reason| DecodeError::NotWireFormat { part, reason })?;
    let schemas = schemas.ok_or(DecodeError::NoRegistry { part, id })?;
    let schema = schemas.schema(id).map_err(|e| match e {
        LookupError::Unknown => DecodeError::UnknownSchema { part, id },
        LookupError::Unavailable(reason) => DecodeError::RegistryUnavailable { part, id, reason },
        LookupError::Invalid(reason) => DecodeError::BadSchema { part, id, reason },
    })?;
    if let Some(expected) = expected
        && schema.kind() != expected
    {
        return Err(DecodeError::BadSchema {
            part,
            id,
            reason: format!(
                "it is a {} schema, the config says {}",
                schema.kind().label(),
                expected.label()
            ),
        });
    }
    let decoded = match schema.as_ref() {
        Schema::Avro(avro) => guarded(|| avro.to_json(payload)),
        Schema::Protobuf(proto) => guarded(|| proto.to_json(payload)),
        Schema::Json => return Ok(payload.to_vec()),
    };
    decoded
        .map(String::into_bytes)
        .map_err(|reason| DecodeError::SchemaMismatch { part, id, reason })
}

/// Runs a third-party decoder so that a bug in it costs one record, not the ingest thread.
fn guarded(decode: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err("the decoder failed on this payload".to_owned()))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
