//! Document ids from Kafka keys, used when no `id_field` is configured or the row lacks it,
//! and always for tombstones, which have nothing else.
//!
//! Debezium keys are the primary-key columns, `{"schema":…,"payload":{…}}` with the JSON
//! converter's schemas on or the bare object without. The id must be identical for every
//! event of a row (upsert, delete, tombstone), so it depends only on the key bytes.

use serde_json::Value;

use super::debezium::is_connect_wrapper;
use super::json::{self, Object};

/// The id a Kafka key stands for, or `None` if it gives none (absent, empty, JSON null,
/// an empty object, or bytes that are neither JSON nor UTF-8).
///
/// - key object (bare or Connect-wrapped): one field → that value's string form; several →
///   compact JSON of the object with its fields in key order, e.g. `{"order":7,"line":2}`;
/// - JSON string or number → its string form (`"abc"` → `abc`, `42` → `42`);
/// - other bytes that are valid UTF-8 → the raw string.
pub(crate) fn id_from_key(key: Option<&[u8]>) -> Option<String> {
    let bytes = key.filter(|bytes| !bytes.is_empty())?;
    let id = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => from_object(object, bytes)?,
        Ok(value) => string_form(value)?,
        Err(_) => std::str::from_utf8(bytes).ok()?.to_owned(),
    };
    (!id.is_empty()).then_some(id)
}

fn from_object(mut object: Object, bytes: &[u8]) -> Option<String> {
    let mut path: &[&str] = &[];
    if is_connect_wrapper(&object) {
        match object.remove("payload")? {
            Value::Object(payload) => {
                object = payload;
                path = &["payload"];
            }
            // A primitive key schema (string, int64) wraps a bare value.
            scalar => return string_form(scalar),
        }
    }
    if object.len() == 1 {
        let (_, value) = object.into_iter().next()?;
        return string_form(value);
    }
    if object.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (i, name) in json::source_order(&object, bytes, path)
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(name).ok()?);
        out.push(':');
        out.push_str(&object.get(name)?.to_string());
    }
    out.push('}');
    Some(out)
}

/// Strings as-is, null as nothing, everything else as compact JSON.
fn string_form(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &[u8]) -> Option<String> {
        id_from_key(Some(key))
    }

    #[test]
    fn debezium_keys_with_schema() {
        let delete_key =
            include_str!("../../tests/fixtures/debezium/serde-unnested-delete-key-withschema.json");
        assert_eq!(id(delete_key.as_bytes()).as_deref(), Some("1004"));
        let order_key =
            include_str!("../../tests/fixtures/debezium/serde-unnested-order-key-withschema.json");
        assert_eq!(id(order_key.as_bytes()).as_deref(), Some("10004"));
    }

    #[test]
    fn single_field_objects_give_the_field_value() {
        assert_eq!(id(br#"{"id": 1004}"#).as_deref(), Some("1004"));
        assert_eq!(id(br#"{"sku": "A-1"}"#).as_deref(), Some("A-1"));
        assert_eq!(
            id(br#"{"uuid": {"hi": 1}}"#).as_deref(),
            Some(r#"{"hi":1}"#)
        );
        assert_eq!(
            id(br#"{"schema": {"type": "string"}, "payload": "k-9"}"#).as_deref(),
            Some("k-9")
        );
    }

    #[test]
    fn composite_keys_keep_key_order() {
        assert_eq!(
            id(br#"{"order_id": 7, "line": 2, "region": "eu"}"#).as_deref(),
            Some(r#"{"order_id":7,"line":2,"region":"eu"}"#)
        );
        let wrapped = br#"{"schema": {"type": "struct"}, "payload": {"z": "a\"b", "a": 1}}"#;
        assert_eq!(id(wrapped).as_deref(), Some(r#"{"z":"a\"b","a":1}"#));
    }

    #[test]
    fn scalar_and_raw_keys() {
        assert_eq!(id(br#""user-1""#).as_deref(), Some("user-1"));
        assert_eq!(id(b"42").as_deref(), Some("42"));
        assert_eq!(id(b"-1.5").as_deref(), Some("-1.5"));
        assert_eq!(id(b"user-1").as_deref(), Some("user-1"));
        assert_eq!(id("clé".as_bytes()).as_deref(), Some("clé"));
    }

    #[test]
    fn unusable_keys_give_none() {
        assert_eq!(id_from_key(None), None);
        assert_eq!(id(b""), None);
        assert_eq!(id(b"null"), None);
        assert_eq!(id(br#""""#), None);
        assert_eq!(id(b"{}"), None);
        assert_eq!(id(br#"{"id": null}"#), None);
        assert_eq!(id(br#"{"schema": null, "payload": null}"#), None);
        assert_eq!(id(&[0xff, 0xfe, 0x00]), None);
    }
}
