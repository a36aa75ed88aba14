//! Reading a row's configured fields into document parts: id, title, tenant, text, metadata.
//!
//! Missing and null fields are simply absent; a field of the wrong type is a `BadField`
//! naming the path as configured, so the operator can find it in the mapping.

use std::borrow::Cow;

use serde_json::Value;

use super::DecodeError;
use super::json::{self, Object};

/// The id at `field`: strings as-is, numbers as their JSON text. `None` if missing, null or
/// empty, so the caller can fall back to the Kafka key.
pub(crate) fn id(row: &Object, field: &str) -> Result<Option<String>, DecodeError> {
    let id = string_like(row, field, "a string or number (the document id)")?;
    Ok(id.filter(|id| !id.is_empty()))
}

/// The title at `field`: a string, or a number as text.
pub(crate) fn title(row: &Object, field: &str) -> Result<Option<String>, DecodeError> {
    string_like(row, field, "a string or number (the title)")
}

/// The tenant at `field`. A wrong type is an error rather than "no tenant", so a malformed
/// row cannot escape the tenant filter.
pub(crate) fn tenant(row: &Object, field: &str) -> Result<Option<String>, DecodeError> {
    string_like(row, field, "a string or number (the tenant)")
}

fn string_like(
    row: &Object,
    field: &str,
    expected: &'static str,
) -> Result<Option<String>, DecodeError> {
    match json::lookup_present(row, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(bad_field(field, expected, other)),
    }
}

/// The text of `fields`, in config order, joined by a blank line. Missing, null and empty
/// values are skipped so they leave no stray separators.
pub(crate) fn text(row: &Object, fields: &[String]) -> Result<String, DecodeError> {
    let mut out = String::new();
    for field in fields {
        if let Some(value) = json::lookup_present(row, field) {
            push_piece(&mut out, "\n\n", &text_piece(value, field)?);
        }
    }
    Ok(out)
}

/// The default text: every top-level string field in row order (`keys`), except `skip`ped
/// ones and bookkeeping fields (`__op`, `__deleted`, …) that Debezium's unwrap adds.
pub(crate) fn default_text(row: &Object, keys: &[&str], skip: &[&str]) -> String {
    let mut out = String::new();
    for key in keys {
        if key.starts_with("__") || skip.contains(key) {
            continue;
        }
        if let Some(Value::String(s)) = row.get(*key) {
            push_piece(&mut out, "\n\n", s);
        }
    }
    out
}

/// The configured metadata fields that are present and non-null, keyed by the path as written.
pub(crate) fn metadata(row: &Object, fields: &[String]) -> Object {
    let mut out = Object::new();
    for field in fields {
        if let Some(value) = json::lookup_present(row, field) {
            out.insert(field.clone(), value.clone());
        }
    }
    out
}

const TEXT: &str = "text: a string, number, boolean or an array of those";

fn text_piece<'v>(value: &'v Value, field: &str) -> Result<Cow<'v, str>, DecodeError> {
    Ok(match value {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Array(items) => {
            let mut joined = String::new();
            for item in items {
                match item {
                    Value::Null => {}
                    Value::Array(_) | Value::Object(_) => {
                        return Err(DecodeError::BadField {
                            field: field.to_owned(),
                            expected: TEXT,
                            found: format!("an array holding {}", json::describe(item)),
                        });
                    }
                    scalar => push_piece(&mut joined, "\n", &scalar_text(scalar)),
                }
            }
            Cow::Owned(joined)
        }
        Value::Object(_) => return Err(bad_field(field, TEXT, value)),
        scalar => scalar_text(scalar),
    })
}

fn scalar_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

fn push_piece(out: &mut String, separator: &str, piece: &str) {
    if piece.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push_str(separator);
    }
    out.push_str(piece);
}

fn bad_field(field: &str, expected: &'static str, value: &Value) -> DecodeError {
    DecodeError::BadField {
        field: field.to_owned(),
        expected,
        found: json::found(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Object {
        match json!({
            "id": 17, "sku": "A-1", "empty": "", "n": null, "flag": true,
            "title": "Pumps", "body": "Check valves.", "tags": ["water", 3, null, false],
            "doc": {"lang": "en", "meta": {"pages": 4}}, "nested": [["x"]], "obj": {"a": 1},
            "__op": "c", "__deleted": "false"
        }) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn bad(result: Result<impl std::fmt::Debug, DecodeError>) -> (String, String) {
        match result {
            Err(DecodeError::BadField { field, found, .. }) => (field, found),
            other => panic!("expected BadField, got {other:?}"),
        }
    }

    #[test]
    fn ids_strings_numbers_and_fallbacks() {
        let row = row();
        assert_eq!(id(&row, "id").ok().flatten().as_deref(), Some("17"));
        assert_eq!(id(&row, "sku").ok().flatten().as_deref(), Some("A-1"));
        assert_eq!(id(&row, "doc.lang").ok().flatten().as_deref(), Some("en"));
        assert_eq!(id(&row, "missing").ok(), Some(None));
        assert_eq!(id(&row, "n").ok(), Some(None));
        assert_eq!(id(&row, "empty").ok(), Some(None));
        assert_eq!(
            bad(id(&row, "flag")),
            ("flag".to_owned(), "true".to_owned())
        );
        assert_eq!(
            bad(id(&row, "obj")),
            ("obj".to_owned(), "an object".to_owned())
        );
    }

    #[test]
    fn titles_and_tenants() {
        let row = row();
        assert_eq!(
            title(&row, "title").ok().flatten().as_deref(),
            Some("Pumps")
        );
        assert_eq!(
            title(&row, "doc.meta.pages").ok().flatten().as_deref(),
            Some("4")
        );
        assert_eq!(title(&row, "n").ok(), Some(None));
        assert_eq!(bad(title(&row, "tags")).1, "an array");
        assert_eq!(tenant(&row, "sku").ok().flatten().as_deref(), Some("A-1"));
        assert_eq!(
            bad(tenant(&row, "flag")),
            ("flag".to_owned(), "true".to_owned())
        );
    }

    #[test]
    fn text_joins_fields_in_config_order() {
        let row = row();
        let fields = [
            "body",
            "n",
            "missing",
            "empty",
            "title",
            "tags",
            "flag",
            "doc.meta.pages",
        ]
        .map(String::from);
        assert_eq!(
            text(&row, &fields).ok().as_deref(),
            Some("Check valves.\n\nPumps\n\nwater\n3\nfalse\n\ntrue\n\n4")
        );
        assert_eq!(text(&row, &[]).ok().as_deref(), Some(""));
        assert_eq!(
            bad(text(&row, &["obj".into()])),
            ("obj".to_owned(), "an object".to_owned())
        );
        assert_eq!(
            bad(text(&row, &["nested".into()])),
            ("nested".to_owned(), "an array holding an array".to_owned())
        );
    }

    #[test]
    fn default_text_takes_top_level_strings_in_row_order() {
        let row = row();
        let keys = [
            "__op",
            "sku",
            "title",
            "id",
            "body",
            "empty",
            "doc",
            "__deleted",
        ];
        assert_eq!(
            default_text(&row, &keys, &[]),
            "A-1\n\nPumps\n\nCheck valves."
        );
        assert_eq!(
            default_text(&row, &keys, &["sku"]),
            "Pumps\n\nCheck valves."
        );
    }

    #[test]
    fn metadata_keeps_present_values_by_path() {
        let row = row();
        let fields = ["doc.lang", "n", "missing", "tags", "obj"].map(String::from);
        let meta = metadata(&row, &fields);
        assert_eq!(
            Value::Object(meta),
            json!({"doc.lang": "en", "tags": ["water", 3, null, false], "obj": {"a": 1}})
        );
    }
}
