//! Precomputed embeddings carried in the event (`vector_field`).
//!
//! A vector the index cannot use (empty, non-finite, all zeros, which has no direction for
//! cosine similarity) is rejected here, so a bad record never reaches HNSW.

use serde_json::Value;

use super::DecodeError;
use super::json;

/// The embedding in `value` (the non-null value of `field`): a JSON array of numbers, or a
/// string holding one, which is how pgvector columns arrive through Debezium.
pub(crate) fn vector(value: &Value, field: &str) -> Result<Vec<f32>, DecodeError> {
    let bad = |reason: String| DecodeError::BadVector {
        field: field.to_owned(),
        reason,
    };
    let parsed;
    let items = match value {
        Value::Array(items) => items,
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| bad(format!("string is not a JSON array of numbers: {e}")))?;
            match &parsed {
                Value::Array(items) => items,
                other => {
                    return Err(bad(format!(
                        "string holds {}, expected a JSON array of numbers",
                        json::describe(other)
                    )));
                }
            }
        }
        other => {
            return Err(bad(format!(
                "expected an array of numbers (or a string holding one), found {}",
                json::describe(other)
            )));
        }
    };
    if items.is_empty() {
        return Err(bad(
            "expected a non-empty array of numbers, found []".to_owned()
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let x = item.as_f64().ok_or_else(|| {
            bad(format!(
                "element {i} is {}, expected a number",
                json::found(item)
            ))
        })? as f32;
        if !x.is_finite() {
            return Err(bad(format!("element {i} ({item}) is not a finite f32")));
        }
        out.push(x);
    }
    if out.iter().all(|x| *x == 0.0) {
        return Err(bad(
            "all elements are zero; expected a vector with a direction".to_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(value: Value) -> String {
        match vector(&value, "embedding") {
            Err(DecodeError::BadVector { field, reason }) => {
                assert_eq!(field, "embedding");
                reason
            }
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn arrays_and_pgvector_strings() {
        assert_eq!(
            vector(&json!([0.5, -1, 2e-3]), "v").ok(),
            Some(vec![0.5, -1.0, 0.002])
        );
        assert_eq!(
            vector(&json!("[0.5,-1,0.002]"), "v").ok(),
            Some(vec![0.5, -1.0, 0.002])
        );
        assert_eq!(
            vector(&json!([0, 0, 1]), "v").ok(),
            Some(vec![0.0, 0.0, 1.0])
        );
    }

    #[test]
    fn unusable_vectors() {
        assert_eq!(
            reason(json!([])),
            "expected a non-empty array of numbers, found []"
        );
        assert_eq!(
            reason(json!("[]")),
            "expected a non-empty array of numbers, found []"
        );
        assert_eq!(
            reason(json!([0, 0.0, -0.0])),
            "all elements are zero; expected a vector with a direction"
        );
        assert_eq!(
            reason(json!([1, "2"])),
            "element 1 is the string \"2\", expected a number"
        );
        assert_eq!(
            reason(json!([1, null])),
            "element 1 is null, expected a number"
        );
        assert_eq!(
            reason(json!([1, 1e39])),
            "element 1 (1e+39) is not a finite f32"
        );
        assert!(reason(json!("[NaN, 1]")).starts_with("string is not a JSON array of numbers"));
        assert_eq!(
            reason(json!("{\"a\":1}")),
            "string holds an object, expected a JSON array of numbers"
        );
        assert_eq!(
            reason(json!({"values": [1]})),
            "expected an array of numbers (or a string holding one), found an object"
        );
    }
}
