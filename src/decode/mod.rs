//! Decoding: one Kafka record's bytes → a `ChangeEvent` (upsert or delete) or a
//! `DecodeError` saying what was wrong. Pure: no I/O, no async, no locks, never panics.
//!
//! `Mapping::decode` is the only entry point. Modules, in the order a record meets them:
//! - `debezium`: envelope detection (wrapped, bare, unwrapped rows, tombstones) → `Message`;
//! - `key`: ids from Kafka keys; `fields`: id, title, text, tenant, metadata from a row;
//! - `time`: event times; `vector`: precomputed embeddings;
//! - `json`: dotted paths and key order; `error`: `DecodeError`, `MappingError`.

mod debezium;
mod error;
mod fields;
mod json;
mod key;
mod time;
mod vector;

pub use error::{DecodeError, MappingError};

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
}

/// How a collection's records become documents. Built once from config, checked when built
/// (`check`). Field settings are paths, dotted for nested objects (`author.name`).
#[derive(Clone, Debug)]
pub struct Mapping {
    /// How to read the value.
    pub format: Format,
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
    pub fn decode(&self, record: &RawRecord<'_>) -> Result<ChangeEvent, DecodeError> {
        let bytes = match record.value {
            Some(bytes) if !bytes.is_empty() => bytes,
            _ => return self.delete(None, record, record.timestamp_ms),
        };
        if bytes.len() > self.max_record_bytes {
            return Err(DecodeError::Oversize {
                size: bytes.len(),
                limit: self.max_record_bytes,
            });
        }
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
            Format::Auto => debezium::classify(object, false)?,
        };
        let fallback_time = message.source_time_ms.or(record.timestamp_ms);
        match message.change {
            // A delete's row shows the prior version, so its own times are stale: the source
            // time is when the delete happened.
            Change::Delete(before) => self.delete(before.as_ref(), record, fallback_time),
            Change::Upsert(ref row) => {
                let document = self.document(row, &message, bytes, record, fallback_time)?;
                Ok(ChangeEvent::Upsert(document))
            }
        }
    }

    fn delete(
        &self,
        before: Option<&Object>,
        record: &RawRecord<'_>,
        event_time_ms: Option<i64>,
    ) -> Result<ChangeEvent, DecodeError> {
        Ok(ChangeEvent::Delete {
            id: self.id(before, record)?,
            event_time_ms,
        })
    }

    /// `id_field` from the row if it has one, else the Kafka key.
    fn id(&self, row: Option<&Object>, record: &RawRecord<'_>) -> Result<String, DecodeError> {
        if let (Some(field), Some(row)) = (&self.id_field, row)
            && let Some(id) = fields::id(row, field)?
        {
            return Ok(id);
        }
        key::id_from_key(record.key).ok_or_else(|| DecodeError::MissingId {
            field: self.id_field.clone(),
        })
    }

    fn document(
        &self,
        row: &Object,
        message: &Message,
        bytes: &[u8],
        record: &RawRecord<'_>,
        fallback_time: Option<i64>,
    ) -> Result<Document, DecodeError> {
        let id = self.id(Some(row), record)?;
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

#[cfg(test)]
mod tests;
