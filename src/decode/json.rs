//! Small helpers over parsed JSON: dotted field paths, type descriptions for error
//! messages, and the source order of an object's keys.
//!
//! freshet builds serde_json without `preserve_order`, so a `Map` iterates its keys sorted.
//! Where order matters (the default text, composite key ids) it is re-read from the raw bytes
//! by a second, allocation-light pass that skips every value it does not need.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON object, as the decoder passes rows around.
pub(crate) type Object = Map<String, Value>;

/// The value at `path` in `row`. A key spelled exactly like the path wins; otherwise the
/// path is split on `.` and followed through nested objects.
pub(crate) fn lookup<'v>(row: &'v Object, path: &str) -> Option<&'v Value> {
    if let Some(value) = row.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = row.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// Like `lookup`, but JSON `null` counts as missing: a nullable column that is null says
/// nothing, it is not a wrong type.
pub(crate) fn lookup_present<'v>(row: &'v Object, path: &str) -> Option<&'v Value> {
    lookup(row, path).filter(|value| !value.is_null())
}

/// "a string", "an object", … for error messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Like `describe`, but shows short scalars so a log line says which value was wrong.
pub(crate) fn found(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::String(s) if s.chars().count() <= MAX_CHARS => format!("the string {value}"),
        Value::String(s) => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            format!("the string {}…", Value::String(head))
        }
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        other => describe(other).to_owned(),
    }
}

/// The keys of `map` in the order they appear in `bytes` at `path` (object keys from the
/// root). Falls back to the map's own order if the bytes disagree, e.g. on duplicate keys.
pub(crate) fn source_order<'m>(map: &'m Object, bytes: &[u8], path: &[&str]) -> Vec<&'m str> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let scanned = KeysAt { path }
        .deserialize(&mut deserializer)
        .ok()
        .flatten()
        .unwrap_or_default();
    let ordered: Vec<&str> = scanned
        .iter()
        .filter_map(|key| map.get_key_value(key.as_str()))
        .map(|(key, _)| key.as_str())
        .collect();
    // Every map key comes from the bytes, so equal lengths mean a permutation without repeats.
    if ordered.len() == map.len() {
        ordered
    } else {
        map.keys().map(String::as_str).collect()
    }
}

/// Walks to the object at `path` and returns its keys; `None` if there is no object there.
struct KeysAt<'p> {
    path: &'p [&'p str],
}

impl<'de> DeserializeSeed<'de> for KeysAt<'_> {
    type Value = Option<Vec<String>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeysAt<'_> {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((head, rest)) = self.path.split_first() else {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            return Ok(Some(keys));
        };
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == *head {
                // The last duplicate wins, as it does in serde_json's Map.
                found = map.next_value_seed(KeysAt { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            _ => Object::new(),
        }
    }

    #[test]
    fn dotted_paths_reach_nested_objects() {
        let row = object(json!({"a": {"b": {"c": 7}}, "x.y": 1, "x": {"y": 2}, "n": null}));
        assert_eq!(lookup(&row, "a.b.c"), Some(&json!(7)));
        assert_eq!(lookup(&row, "a.b"), Some(&json!({"c": 7})));
        assert_eq!(lookup(&row, "a.z"), None);
        assert_eq!(lookup(&row, "a.b.c.d"), None);
        // A literal dotted key wins over the nested path.
        assert_eq!(lookup(&row, "x.y"), Some(&json!(1)));
        assert_eq!(lookup(&row, "n"), Some(&Value::Null));
        assert_eq!(lookup_present(&row, "n"), None);
    }

    #[test]
    fn found_shows_short_values() {
        assert_eq!(found(&json!("soon")), "the string \"soon\"");
        assert_eq!(found(&json!(12.5)), "the number 12.5");
        assert_eq!(found(&json!(true)), "true");
        assert_eq!(found(&json!([1])), "an array");
        let long = "é".repeat(50);
        assert_eq!(
            found(&json!(long)),
            format!("the string \"{}\"…", "é".repeat(40))
        );
    }

    #[test]
    fn source_order_follows_the_bytes() {
        let bytes = br#"{"schema": {"zz": 1}, "payload": {"after": {"title": "t", "body": "b", "author": {"z": 1, "a": 2}}, "op": "c"}}"#;
        let value: Value = serde_json::from_slice(bytes).unwrap();
        let after = value["payload"]["after"].as_object().cloned().unwrap();
        assert_eq!(
            source_order(&after, bytes, &["payload", "after"]),
            ["title", "body", "author"]
        );
        let top = object(value);
        assert_eq!(source_order(&top, bytes, &[]), ["schema", "payload"]);
    }

    #[test]
    fn source_order_falls_back_to_map_order() {
        // Duplicate key: the bytes list `b` twice, the map once.
        let bytes = br#"{"b": 1, "a": 2, "b": 3}"#;
        let map = object(json!({"a": 2, "b": 3}));
        assert_eq!(source_order(&map, bytes, &[]), ["a", "b"]);
        // Path that is not an object in the bytes.
        assert_eq!(
            source_order(&map, br#"{"p": [1, {"a": 1}]}"#, &["p"]),
            ["a", "b"]
        );
        assert_eq!(source_order(&map, b"not json", &[]), ["a", "b"]);
    }
}
