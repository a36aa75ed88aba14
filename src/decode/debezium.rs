//! Debezium change events: which row changed, how, and when the source says it happened.
//!
//! Three shapes reach a topic, depending on the connector's converter and transforms:
//! - the envelope `{"before","after","source","op","ts_ms",…}`;
//! - the same, wrapped by the JSON converter with `schemas.enable=true` as
//!   `{"schema":…,"payload":{…}}`;
//! - a flat row from the `ExtractNewRecordState` ("unwrap") transform, possibly wrapped too,
//!   with bookkeeping fields such as `__deleted`, `__op`, `__table`, `__source_ts_ms`.

use serde_json::Value;

use super::DecodeError;
use super::json::{self, Object};

/// What a record's value says about its document, before fields are mapped.
pub(crate) struct Message {
    pub(crate) change: Change,
    /// When the source says the change happened (`source.ts_ms`, else the envelope's `ts_ms`;
    /// `__source_ts_ms` / `__ts_ms` on unwrapped rows). Used when the row has no event time.
    pub(crate) source_time_ms: Option<i64>,
    /// Where the row sits in the raw bytes, to recover its field order (see `json`).
    pub(crate) row_path: &'static [&'static str],
    /// The Connect schema of the row, if the record carried one; it marks `Date` columns.
    pub(crate) row_schema: Option<Value>,
}

/// The change a message carries.
pub(crate) enum Change {
    Upsert(Object),
    /// A delete, with the row as it was if the message has one (for `id_field`).
    Delete(Option<Object>),
}

impl Message {
    /// A plain JSON document.
    pub(crate) fn plain(row: Object) -> Message {
        Message {
            change: Change::Upsert(row),
            source_time_ms: None,
            row_path: &[],
            row_schema: None,
        }
    }
}

/// Reads a Debezium-shaped value. `strict` is `format = "debezium"`: any object with `op`
/// and `before`/`after`/`source` is an envelope. Otherwise (`auto`) an envelope also needs a
/// `source` object, and anything else is a plain row; `__deleted` is honoured either way.
pub(crate) fn classify(mut object: Object, strict: bool) -> Result<Message, DecodeError> {
    let mut schema = None;
    let mut wrapped = false;
    if is_connect_wrapper(&object) {
        match object.remove("payload") {
            Some(Value::Object(payload)) => {
                schema = object.remove("schema");
                object = payload;
                wrapped = true;
            }
            // The JSON converter's form of a null value: a tombstone.
            Some(Value::Null) | None => {
                return Ok(Message {
                    change: Change::Delete(None),
                    ..Message::plain(Object::new())
                });
            }
            Some(other) if strict => {
                return Err(DecodeError::BadField {
                    field: "payload".to_owned(),
                    expected: "an object (a Debezium envelope or row)",
                    found: json::found(&other),
                });
            }
            // Not a Connect record after all: a plain document that has these two fields.
            Some(other) => {
                object.insert("payload".to_owned(), other);
            }
        }
    }
    if is_envelope(&object, strict) {
        envelope(object, schema, wrapped)
    } else {
        Ok(unwrapped_row(object, schema, wrapped))
    }
}

/// `{"schema":…,"payload":…}` and nothing else, as the JSON converter writes with schemas on.
pub(crate) fn is_connect_wrapper(object: &Object) -> bool {
    object.len() == 2
        && object.contains_key("payload")
        && matches!(object.get("schema"), Some(Value::Object(_) | Value::Null))
}

fn is_envelope(object: &Object, strict: bool) -> bool {
    let Some(op) = object.get("op") else {
        return false;
    };
    let has_image = object.contains_key("before") || object.contains_key("after");
    if strict {
        return has_image || object.contains_key("source");
    }
    // Truncate and message events have no row images but are still envelopes.
    object.get("source").is_some_and(Value::is_object)
        && (has_image || matches!(op.as_str(), Some("t" | "m")))
}

fn envelope(
    mut object: Object,
    schema: Option<Value>,
    wrapped: bool,
) -> Result<Message, DecodeError> {
    let upsert = match object.get("op") {
        Some(Value::String(op)) => match op.as_str() {
            "c" | "u" | "r" => true,
            "d" => false,
            other => return Err(DecodeError::UnsupportedOp(other.to_owned())),
        },
        other => {
            return Err(DecodeError::BadField {
                field: "op".to_owned(),
                expected: "a string (c, u, r or d)",
                found: other.map_or_else(|| "nothing".to_owned(), json::found),
            });
        }
    };
    let source_ts = object.get("source").and_then(|source| source.get("ts_ms"));
    let source_time_ms = positive_ms(source_ts).or_else(|| positive_ms(object.get("ts_ms")));
    let change = if upsert {
        match object.remove("after") {
            Some(Value::Object(row)) => Change::Upsert(row),
            other => {
                return Err(DecodeError::BadField {
                    field: "after".to_owned(),
                    expected: "an object (the row after a create, update or read)",
                    found: other
                        .as_ref()
                        .map_or_else(|| "nothing".to_owned(), json::found),
                });
            }
        }
    } else {
        match object.remove("before") {
            Some(Value::Object(row)) => Change::Delete(Some(row)),
            _ => Change::Delete(None),
        }
    };
    Ok(Message {
        change,
        source_time_ms,
        row_path: if wrapped {
            &["payload", "after"]
        } else {
            &["after"]
        },
        row_schema: schema.and_then(|schema| struct_field(schema, "after")),
    })
}

fn unwrapped_row(row: Object, schema: Option<Value>, wrapped: bool) -> Message {
    let deleted = match row.get("__deleted") {
        Some(Value::Bool(deleted)) => *deleted,
        Some(Value::String(deleted)) => deleted.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let source_time_ms =
        positive_ms(row.get("__source_ts_ms")).or_else(|| positive_ms(row.get("__ts_ms")));
    Message {
        change: if deleted {
            Change::Delete(Some(row))
        } else {
            Change::Upsert(row)
        },
        source_time_ms,
        row_path: if wrapped { &["payload"] } else { &[] },
        row_schema: schema,
    }
}

/// Debezium writes `ts_ms: 0` when it does not know the time (e.g. some snapshot reads).
fn positive_ms(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64).filter(|ms| *ms > 0)
}

/// The schema of field `name` of a Connect `struct` schema.
fn struct_field(schema: Value, name: &str) -> Option<Value> {
    let Value::Object(mut schema) = schema else {
        return None;
    };
    let Value::Array(fields) = schema.remove("fields")? else {
        return None;
    };
    fields
        .into_iter()
        .find(|field| field.get("field").and_then(Value::as_str) == Some(name))
}

/// Whether the row schema marks top-level field `name` as a date (days since the epoch).
pub(crate) fn is_date_field(row_schema: &Value, name: &str) -> bool {
    let logical = row_schema
        .get("fields")
        .and_then(Value::as_array)
        .and_then(|fields| {
            fields
                .iter()
                .find(|field| field.get("field").and_then(Value::as_str) == Some(name))
        })
        .and_then(|field| field.get("name"))
        .and_then(Value::as_str);
    matches!(
        logical,
        Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify_json(value: Value, strict: bool) -> Result<Message, DecodeError> {
        match value {
            Value::Object(object) => classify(object, strict),
            other => panic!("not an object: {other}"),
        }
    }

    fn fixture(text: &str) -> Object {
        serde_json::from_str(text).expect("fixture is a JSON object")
    }

    #[test]
    fn wrapped_create_gives_after_and_its_schema() {
        let value = fixture(include_str!(
            "../../tests/fixtures/debezium/serde-with-schema.json"
        ));
        let message = classify(value, true).expect("create");
        let Change::Upsert(row) = &message.change else {
            panic!("not an upsert")
        };
        assert_eq!(row.get("first_name"), Some(&json!("Anne")));
        // source.ts_ms is 0 (unknown) here, so the envelope's ts_ms is used.
        assert_eq!(message.source_time_ms, Some(1_465_491_411_815));
        assert_eq!(message.row_path, ["payload", "after"]);
        let schema = message.row_schema.expect("after schema");
        assert_eq!(schema.get("field"), Some(&json!("after")));
    }

    #[test]
    fn snapshot_read_marks_date_fields() {
        let value = fixture(include_str!(
            "../../tests/fixtures/debezium/serde-unnested-order-val-withschema.json"
        ));
        let message = classify(value, false).expect("read");
        assert!(matches!(message.change, Change::Upsert(_)));
        assert_eq!(message.source_time_ms, Some(1_718_461_481_000));
        let schema = message.row_schema.expect("after schema");
        assert!(is_date_field(&schema, "order_date"));
        assert!(!is_date_field(&schema, "order_number"));
        assert!(!is_date_field(&schema, "nope"));
    }

    #[test]
    fn delete_keeps_before() {
        let value = fixture(include_str!(
            "../../tests/fixtures/debezium/serde-unnested-delete-val-withschema.json"
        ));
        let message = classify(value, false).expect("delete");
        let Change::Delete(Some(before)) = &message.change else {
            panic!("not a delete with before")
        };
        assert_eq!(before.get("id"), Some(&json!(1004)));
        assert_eq!(message.source_time_ms, Some(1_718_486_007_000));
    }

    #[test]
    fn detection_strict_vs_auto() {
        // No source: an envelope only when the format says Debezium.
        let bare = json!({"op": "c", "after": {"id": 1}});
        let Change::Upsert(row) = classify_json(bare.clone(), true).expect("strict").change else {
            panic!()
        };
        assert_eq!(row, *json!({"id": 1}).as_object().expect("object"));
        let Change::Upsert(row) = classify_json(bare, false).expect("auto").change else {
            panic!()
        };
        assert_eq!(row.get("op"), Some(&json!("c")));
        // A column named `op` without row images is a row in both modes.
        let row_with_op = json!({"op": "sum", "id": 2});
        assert!(
            matches!(classify_json(row_with_op.clone(), true).expect("strict").change, Change::Upsert(r) if r.len() == 2)
        );
        assert!(
            matches!(classify_json(row_with_op, false).expect("auto").change, Change::Upsert(r) if r.len() == 2)
        );
    }

    #[test]
    fn truncate_message_and_unknown_ops() {
        let source = json!({"ts_ms": 1});
        for (op, strict) in [("t", false), ("m", false), ("t", true), ("x", true)] {
            match classify_json(json!({"op": op, "source": source, "ts_ms": 2}), strict) {
                Err(DecodeError::UnsupportedOp(got)) => assert_eq!(got, op),
                other => panic!("{op}: {:?}", other.map(|m| m.row_path)),
            }
        }
        // Auto: an unknown op without row images is some other JSON document.
        let audit = json!({"op": "login", "source": {"ip": "10.0.0.1"}});
        let message = classify_json(audit, false).expect("plain row");
        assert!(
            matches!(message.change, Change::Upsert(row) if row.get("op") == Some(&json!("login")))
        );
        match classify_json(json!({"op": 1, "after": {}}), true) {
            Err(DecodeError::BadField { field, found, .. }) => {
                assert_eq!((field.as_str(), found.as_str()), ("op", "the number 1"));
            }
            other => panic!("{:?}", other.map(|m| m.row_path)),
        }
    }

    #[test]
    fn upsert_without_after_is_bad_field() {
        for envelope in [
            json!({"op": "u", "after": null, "before": {}}),
            json!({"op": "c", "before": null}),
        ] {
            match classify_json(envelope, true) {
                Err(DecodeError::BadField { field, .. }) => assert_eq!(field, "after"),
                other => panic!("{:?}", other.map(|m| m.row_path)),
            }
        }
    }

    #[test]
    fn unwrapped_rows_and_deleted_flag() {
        for (flag, deleted) in [
            (json!("true"), true),
            (json!(true), true),
            (json!("false"), false),
            (json!(false), false),
        ] {
            let message = classify_json(
                json!({"id": 1, "__deleted": flag, "__source_ts_ms": 5, "__ts_ms": 6}),
                true,
            )
            .expect("row");
            assert_eq!(
                matches!(message.change, Change::Delete(Some(_))),
                deleted,
                "{flag}"
            );
            assert_eq!(message.source_time_ms, Some(5));
            assert_eq!(message.row_path, [] as [&str; 0]);
        }
        let message = classify_json(json!({"id": 1, "__ts_ms": 6}), false).expect("row");
        assert_eq!(message.source_time_ms, Some(6));
    }

    #[test]
    fn connect_wrappers() {
        let wrapped_row = json!({"schema": {"type": "struct", "fields": [{"field": "d", "name": "org.apache.kafka.connect.data.Date"}]}, "payload": {"id": 1, "d": 3}});
        let message = classify_json(wrapped_row, false).expect("row");
        assert_eq!(message.row_path, ["payload"]);
        assert!(is_date_field(&message.row_schema.expect("schema"), "d"));
        // A null payload is the converter's tombstone.
        let message =
            classify_json(json!({"schema": null, "payload": null}), true).expect("tombstone");
        assert!(matches!(message.change, Change::Delete(None)));
        // A scalar payload: an error for Debezium, a plain row for auto.
        assert!(matches!(
            classify_json(json!({"schema": {}, "payload": "x"}), true),
            Err(DecodeError::BadField { .. })
        ));
        let message = classify_json(json!({"schema": {}, "payload": "x"}), false).expect("row");
        assert!(
            matches!(message.change, Change::Upsert(row) if row.get("payload") == Some(&json!("x")))
        );
    }
}
