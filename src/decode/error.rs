//! Why a record could not become a change event, and why a mapping is invalid.
//!
//! A bad record is a normal, expected outcome (the source counts it, logs it with its
//! coordinates, moves on), so `DecodeError` is a plain enum that names the field and what was
//! expected, and `kind` says which kind it is (with a short stable label for metrics).

/// Why one record could not be decoded. The message names the field and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is larger than `max_record_bytes`; checked before parsing.
    #[error("record value is {size} bytes, over the max_record_bytes limit of {limit}")]
    Oversize {
        /// Length of the value in bytes.
        size: usize,
        /// The configured `max_record_bytes`.
        limit: usize,
    },
    /// The value bytes are not JSON.
    #[error("record value is not valid JSON (expected a JSON object): {reason}")]
    NotJson {
        /// The parser's message, with line and column.
        reason: String,
    },
    /// The value is JSON but not an object.
    #[error("record value is {found}, expected a JSON object")]
    NotObject {
        /// The JSON type found, e.g. "an array".
        found: &'static str,
    },
    /// Neither `id_field` nor the Kafka key gives a non-empty id.
    #[error("no document id: {}", missing_id_detail(.field.as_deref()))]
    MissingId {
        /// The configured `id_field`, if any.
        field: Option<String>,
    },
    /// A field has a type or value the mapping cannot use.
    #[error("field `{field}`: expected {expected}, found {found}")]
    BadField {
        /// The path as configured, or the envelope field (`op`, `after`, `payload`).
        field: String,
        /// What the mapping accepts there.
        expected: &'static str,
        /// The type found, with the value when it is a short scalar.
        found: String,
    },
    /// The `vector_field` value is not a usable embedding.
    #[error("vector field `{field}`: {reason}")]
    BadVector {
        /// The configured `vector_field`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Debezium op that does not change a document: `t` (truncate), `m` (message) or unknown.
    #[error("field `op`: Debezium op `{0}` is not supported, expected c, u, r or d")]
    UnsupportedOp(String),
    /// The key or value should be in the schema registry wire format and is not.
    #[error("record {part} is not in the schema registry wire format: {reason}")]
    NotWireFormat {
        /// `key` or `value`.
        part: &'static str,
        /// What is wrong with the header.
        reason: String,
    },
    /// The record is in the wire format but no `[schema_registry]` is configured.
    #[error(
        "record {part} is in the schema registry wire format (schema ID {id}) but no [schema_registry] url is configured"
    )]
    NoRegistry {
        /// `key` or `value`.
        part: &'static str,
        /// The schema ID in the header.
        id: u32,
    },
    /// The registry has no schema with the record's ID.
    #[error("record {part}: the schema registry has no schema with ID {id}")]
    UnknownSchema {
        /// `key` or `value`.
        part: &'static str,
        /// The schema ID in the header.
        id: u32,
    },
    /// The registry could not be reached (after retries with back-off).
    #[error("record {part}: schema ID {id} could not be fetched: {reason}")]
    RegistryUnavailable {
        /// `key` or `value`.
        part: &'static str,
        /// The schema ID in the header.
        id: u32,
        /// The last error.
        reason: String,
    },
    /// The registry's schema cannot be parsed, or is not of the configured kind.
    #[error("record {part}: schema ID {id} cannot be used: {reason}")]
    BadSchema {
        /// `key` or `value`.
        part: &'static str,
        /// The schema ID in the header.
        id: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload does not decode with the schema its header names.
    #[error("record {part} does not match its schema (ID {id}): {reason}")]
    SchemaMismatch {
        /// `key` or `value`.
        part: &'static str,
        /// The schema ID in the header.
        id: u32,
        /// What the decoder said.
        reason: String,
    },
}

/// What kind of [`DecodeError`] it is, without its details: counted per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecodeErrorKind {
    /// [`DecodeError::Oversize`].
    Oversize,
    /// [`DecodeError::NotJson`].
    NotJson,
    /// [`DecodeError::NotObject`].
    NotObject,
    /// [`DecodeError::MissingId`].
    MissingId,
    /// [`DecodeError::BadField`].
    BadField,
    /// [`DecodeError::BadVector`].
    BadVector,
    /// [`DecodeError::UnsupportedOp`].
    UnsupportedOp,
    /// [`DecodeError::NotWireFormat`].
    NotWireFormat,
    /// [`DecodeError::NoRegistry`].
    NoRegistry,
    /// [`DecodeError::UnknownSchema`].
    UnknownSchema,
    /// [`DecodeError::RegistryUnavailable`].
    RegistryUnavailable,
    /// [`DecodeError::BadSchema`].
    BadSchema,
    /// [`DecodeError::SchemaMismatch`].
    SchemaMismatch,
}

impl DecodeErrorKind {
    /// Short stable label for metrics, logs and the dead-letter headers.
    pub fn label(self) -> &'static str {
        match self {
            DecodeErrorKind::Oversize => "oversize",
            DecodeErrorKind::NotJson => "not_json",
            DecodeErrorKind::NotObject => "not_object",
            DecodeErrorKind::MissingId => "missing_id",
            DecodeErrorKind::BadField => "bad_field",
            DecodeErrorKind::BadVector => "bad_vector",
            DecodeErrorKind::UnsupportedOp => "unsupported_op",
            DecodeErrorKind::NotWireFormat => "not_wire_format",
            DecodeErrorKind::NoRegistry => "no_registry",
            DecodeErrorKind::UnknownSchema => "unknown_schema",
            DecodeErrorKind::RegistryUnavailable => "registry_unavailable",
            DecodeErrorKind::BadSchema => "bad_schema",
            DecodeErrorKind::SchemaMismatch => "schema_mismatch",
        }
    }
}

impl DecodeError {
    /// What kind of error this is.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::Oversize { .. } => DecodeErrorKind::Oversize,
            DecodeError::NotJson { .. } => DecodeErrorKind::NotJson,
            DecodeError::NotObject { .. } => DecodeErrorKind::NotObject,
            DecodeError::MissingId { .. } => DecodeErrorKind::MissingId,
            DecodeError::BadField { .. } => DecodeErrorKind::BadField,
            DecodeError::BadVector { .. } => DecodeErrorKind::BadVector,
            DecodeError::UnsupportedOp(_) => DecodeErrorKind::UnsupportedOp,
            DecodeError::NotWireFormat { .. } => DecodeErrorKind::NotWireFormat,
            DecodeError::NoRegistry { .. } => DecodeErrorKind::NoRegistry,
            DecodeError::UnknownSchema { .. } => DecodeErrorKind::UnknownSchema,
            DecodeError::RegistryUnavailable { .. } => DecodeErrorKind::RegistryUnavailable,
            DecodeError::BadSchema { .. } => DecodeErrorKind::BadSchema,
            DecodeError::SchemaMismatch { .. } => DecodeErrorKind::SchemaMismatch,
        }
    }
}

fn missing_id_detail(field: Option<&str>) -> String {
    const KEY: &str = "a JSON key (object, string or number) or UTF-8 key bytes";
    match field {
        Some(field) => {
            format!("field `{field}` is missing, null or empty, and the Kafka key is not {KEY}")
        }
        None => format!("expected {KEY}; set id_field to take the id from the row instead"),
    }
}

/// Why a `Mapping` cannot be used; reported once, when the config is loaded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field path is empty or has an empty segment (`""`, `a.`, `a..b`).
    #[error(
        "`{setting}`: field path `{path}` is empty or has an empty segment, expected names like `a` or `a.b`"
    )]
    BadPath {
        /// The config key, e.g. `text_fields`.
        setting: &'static str,
        /// The path as written.
        path: String,
    },
    /// `max_record_bytes` is 0, which would reject every record.
    #[error("`max_record_bytes`: expected a limit greater than 0")]
    ZeroMaxRecordBytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_expectation() {
        let e = DecodeError::BadField {
            field: "updated_at".into(),
            expected: "a timestamp",
            found: "a boolean".into(),
        };
        assert_eq!(
            e.to_string(),
            "field `updated_at`: expected a timestamp, found a boolean"
        );
        let e = DecodeError::MissingId {
            field: Some("id".into()),
        };
        assert!(
            e.to_string()
                .starts_with("no document id: field `id` is missing")
        );
        let e = DecodeError::MissingId { field: None };
        assert!(e.to_string().contains("set id_field"), "{e}");
        assert_eq!(
            DecodeError::UnsupportedOp("t".into()).to_string(),
            "field `op`: Debezium op `t` is not supported, expected c, u, r or d"
        );
    }

    #[test]
    fn kinds_are_stable_labels() {
        let all = [
            DecodeError::Oversize { size: 2, limit: 1 },
            DecodeError::NotJson {
                reason: String::new(),
            },
            DecodeError::NotObject { found: "an array" },
            DecodeError::MissingId { field: None },
            DecodeError::BadField {
                field: String::new(),
                expected: "",
                found: String::new(),
            },
            DecodeError::BadVector {
                field: String::new(),
                reason: String::new(),
            },
            DecodeError::UnsupportedOp("t".into()),
            DecodeError::NotWireFormat {
                part: "value",
                reason: String::new(),
            },
            DecodeError::NoRegistry {
                part: "value",
                id: 1,
            },
            DecodeError::UnknownSchema { part: "key", id: 1 },
            DecodeError::RegistryUnavailable {
                part: "value",
                id: 1,
                reason: String::new(),
            },
            DecodeError::BadSchema {
                part: "value",
                id: 1,
                reason: String::new(),
            },
            DecodeError::SchemaMismatch {
                part: "value",
                id: 1,
                reason: String::new(),
            },
        ];
        let kinds: Vec<_> = all.iter().map(|e| e.kind().label()).collect();
        assert_eq!(
            kinds,
            [
                "oversize",
                "not_json",
                "not_object",
                "missing_id",
                "bad_field",
                "bad_vector",
                "unsupported_op",
                "not_wire_format",
                "no_registry",
                "unknown_schema",
                "registry_unavailable",
                "bad_schema",
                "schema_mismatch"
            ]
        );
    }
}
