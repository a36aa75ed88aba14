//! Schemas from a schema registry, parsed once and shared, and the lookup the decoder calls.
//!
//! The decoder stays free of I/O: it asks a [`SchemaSource`] for the schema with an ID, and
//! the registry client (`crate::registry`) is the source that fetches, parses and caches.

use std::sync::Arc;

use super::avro::AvroSchema;
use super::protobuf::ProtoSchema;

/// What kind of schema a registry holds (`schemaType`; absent means Avro).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaKind {
    /// Apache Avro.
    Avro,
    /// Protocol Buffers.
    Protobuf,
    /// JSON Schema.
    Json,
}

impl SchemaKind {
    /// Reads the registry's `schemaType` field (`None`: Avro).
    pub fn from_registry(schema_type: Option<&str>) -> Option<SchemaKind> {
        match schema_type {
            None | Some("AVRO") => Some(SchemaKind::Avro),
            Some("PROTOBUF") => Some(SchemaKind::Protobuf),
            Some("JSON") => Some(SchemaKind::Json),
            Some(_) => None,
        }
    }

    /// The name the config and messages use.
    pub fn label(self) -> &'static str {
        match self {
            SchemaKind::Avro => "avro",
            SchemaKind::Protobuf => "protobuf",
            SchemaKind::Json => "json_schema",
        }
    }
}

/// A schema text as the registry returns it: the schema itself, or one it references.
#[derive(Clone, Debug)]
pub struct SchemaText {
    /// The reference name (Avro: the full name of a type; Protobuf: the import path);
    /// empty for the schema itself.
    pub name: String,
    /// The schema as stored.
    pub text: String,
}

/// A parsed schema, ready to decode payloads.
#[derive(Debug)]
pub enum Schema {
    /// An Avro writer schema with the named types it references.
    Avro(Box<AvroSchema>),
    /// A Protobuf file with its imports.
    Protobuf(ProtoSchema),
    /// A JSON Schema: payloads are JSON documents.
    Json,
}

impl Schema {
    /// Parses `text` (with the referenced schemas, in dependency order) as a `kind` schema.
    pub fn parse(
        kind: SchemaKind,
        text: &str,
        references: &[SchemaText],
    ) -> Result<Schema, String> {
        match kind {
            SchemaKind::Avro => {
                AvroSchema::parse(text, references).map(|s| Schema::Avro(Box::new(s)))
            }
            SchemaKind::Protobuf => ProtoSchema::parse(text, references).map(Schema::Protobuf),
            SchemaKind::Json => {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| format!("not a JSON Schema document: {e}"))?;
                Ok(Schema::Json)
            }
        }
    }

    /// Which kind of schema this is.
    pub fn kind(&self) -> SchemaKind {
        match self {
            Schema::Avro(_) => SchemaKind::Avro,
            Schema::Protobuf(_) => SchemaKind::Protobuf,
            Schema::Json => SchemaKind::Json,
        }
    }
}

/// Why a schema could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The registry answered that it has no schema with this ID.
    #[error("the schema registry has no schema with this ID")]
    Unknown,
    /// The registry could not be reached or failed, after retries.
    #[error("the schema registry is unavailable: {0}")]
    Unavailable(String),
    /// The registry returned a schema that cannot be parsed.
    #[error("the registry's schema cannot be used: {0}")]
    Invalid(String),
}

/// Where the decoder gets schemas by ID. Implementations may block (the decoder runs in the
/// prepare stage, off the async runtime) but must return within a bounded time.
pub trait SchemaSource: Send + Sync {
    /// The schema registered under `id`.
    fn schema(&self, id: u32) -> Result<Arc<Schema>, LookupError>;
}
