//! Metadata filters shared by the text and vector retrievers.
//!
//! Both retrievers must apply the same filter *inside* their search (so a filtered top-k is
//! not starved by documents that would be thrown away afterwards), and the tenant claim is
//! added as a mandatory clause. Keeping the normalisation of values in one place guarantees
//! that a value indexed by one retriever matches the same filter in the other.

use serde_json::{Map, Value};

/// Separates field and value in an encoded filter token. A control character, so it cannot
/// collide with anything a user would reasonably put in a field name.
pub const TOKEN_SEPARATOR: char = '\u{1f}';

/// Encode one `(field, value)` pair as the single token stored in the text index's raw
/// `filt` field and in [`FilterTerms`].
pub fn token(field: &str, value: &str) -> String {
    let mut token = String::with_capacity(field.len() + 1 + value.len());
    token.push_str(field);
    token.push(TOKEN_SEPARATOR);
    token.push_str(value);
    token
}

/// Why a tool's `filter` argument was rejected. Messages name the field so an agent can fix
/// its call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An empty array accepts no value at all, which is almost certainly a mistake.
    #[error("filter field `{field}` has an empty array; give at least one value or drop the field")]
    EmptyValues {
        /// The field as given in the filter.
        field: String,
    },
    /// Only strings, numbers and booleans (or arrays of them) can be matched.
    #[error(
        "filter field `{field}` has a {kind} value; use a string, number or boolean, or an array of them"
    )]
    UnsupportedValue {
        /// The field as given in the filter.
        field: String,
        /// The JSON kind found: "null", "object", "nested array".
        kind: &'static str,
    },
    /// Field names are encoded into index tokens; these names cannot be.
    #[error(
        "filter field name {field:?} is invalid: it must be non-empty and contain no control characters"
    )]
    InvalidField {
        /// The field as given in the filter.
        field: String,
    },
}

/// A conjunction over fields of disjunctions over values:
/// `{category: ["a","b"], tenant: "t1"}` means `category ∈ {a,b} AND tenant = t1`.
///
/// A clause with no values matches nothing: that is the safe reading for a mandatory clause
/// built from an empty claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `(field, accepted values)`, all of which must hold.
    pub clauses: Vec<(String, Vec<String>)>,
}

impl Filter {
    /// True when the filter accepts every document.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Parse the tool's `filter` argument: `{field: scalar | [scalars]}`.
    pub fn from_json(map: &Map<String, Value>) -> Result<Filter, FilterError> {
        let mut clauses = Vec::with_capacity(map.len());
        for (field, value) in map {
            if !valid_field(field) {
                return Err(FilterError::InvalidField {
                    field: field.clone(),
                });
            }
            let values = match value {
                Value::Array(items) if items.is_empty() => {
                    return Err(FilterError::EmptyValues {
                        field: field.clone(),
                    });
                }
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        scalar_text(item).ok_or_else(|| FilterError::UnsupportedValue {
                            field: field.clone(),
                            kind: kind_in_array(item),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => vec![
                    scalar_text(other).ok_or_else(|| FilterError::UnsupportedValue {
                        field: field.clone(),
                        kind: kind(other),
                    })?,
                ],
            };
            clauses.push((field.clone(), values));
        }
        Ok(Filter { clauses })
    }

    /// Add a mandatory clause (the tenant claim). It is ANDed with whatever the caller asked
    /// for, so a caller's own clause on the same field can only narrow it, never widen it.
    #[must_use]
    pub fn and(mut self, field: &str, values: Vec<String>) -> Filter {
        self.clauses.push((field.to_owned(), values));
        self
    }

    /// True if a document with these filter terms passes.
    pub fn matches(&self, terms: &FilterTerms) -> bool {
        self.clauses.iter().all(|(field, values)| {
            values
                .iter()
                .any(|value| terms.contains(&token(field, value)))
        })
    }

    /// True if some clause has no accepted value, so nothing can match.
    pub fn rejects_everything(&self) -> bool {
        self.clauses.iter().any(|(_, values)| values.is_empty())
    }
}

/// The filterable terms of one document, as encoded tokens (`field` + U+001F + `value`),
/// sorted and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterTerms(Vec<String>);

impl FilterTerms {
    /// Build from a document's metadata plus extra pairs such as `("tenant", "t1")`.
    ///
    /// Scalars are normalised as in [`Filter::from_json`]: strings as-is, numbers as their
    /// JSON text (`1`, `1.5`; note `1.0` stays `1.0`), booleans as `true`/`false`. Arrays give
    /// one term per scalar element. Nulls and objects are skipped: they cannot be filtered on.
    pub fn from_metadata(metadata: &Map<String, Value>, extra: &[(&str, &str)]) -> FilterTerms {
        let mut tokens = Vec::with_capacity(metadata.len() + extra.len());
        for (field, value) in metadata {
            if !valid_field(field) {
                continue;
            }
            match value {
                Value::Array(items) => tokens.extend(
                    items
                        .iter()
                        .filter_map(scalar_text)
                        .map(|text| token(field, &text)),
                ),
                other => tokens.extend(scalar_text(other).map(|text| token(field, &text))),
            }
        }
        tokens.extend(
            extra
                .iter()
                .filter(|(field, _)| valid_field(field))
                .map(|(field, value)| token(field, value)),
        );
        tokens.sort_unstable();
        tokens.dedup();
        FilterTerms(tokens)
    }

    /// The encoded tokens, in sorted order.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True if the document carries this encoded token.
    pub fn contains(&self, token: &str) -> bool {
        self.0
            .binary_search_by(|probe| probe.as_str().cmp(token))
            .is_ok()
    }
}

fn valid_field(field: &str) -> bool {
    !field.is_empty() && !field.chars().any(char::is_control)
}

/// The canonical text of a scalar, or `None` for null, arrays and objects.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn kind_in_array(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "nested array",
        other => kind(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parses_scalars_and_arrays() {
        let filter = Filter::from_json(&obj(
            json!({"category": ["a", "b"], "n": 1, "ok": true, "x": 1.5}),
        ))
        .unwrap();
        let mut clauses = filter.clauses.clone();
        clauses.sort();
        assert_eq!(
            clauses,
            vec![
                ("category".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
                ("n".to_owned(), vec!["1".to_owned()]),
                ("ok".to_owned(), vec!["true".to_owned()]),
                ("x".to_owned(), vec!["1.5".to_owned()]),
            ]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = Filter::from_json(&obj(json!({"category": []}))).unwrap_err();
        assert_eq!(
            err,
            FilterError::EmptyValues {
                field: "category".into()
            }
        );
        assert!(err.to_string().contains("`category`"));

        let err = Filter::from_json(&obj(json!({"meta": {"a": 1}}))).unwrap_err();
        assert_eq!(
            err,
            FilterError::UnsupportedValue {
                field: "meta".into(),
                kind: "object"
            }
        );
        let err = Filter::from_json(&obj(json!({"tags": ["a", ["b"]]}))).unwrap_err();
        assert!(
            err.to_string().contains("`tags` has a nested array"),
            "{err}"
        );
        let err = Filter::from_json(&obj(json!({"gone": null}))).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
        let err = Filter::from_json(&obj(json!({"": "x"}))).unwrap_err();
        assert!(matches!(err, FilterError::InvalidField { .. }));
    }

    #[test]
    fn terms_normalise_metadata() {
        let terms = FilterTerms::from_metadata(
            &obj(json!({"category": "news", "n": 1, "f": 1.5, "b": false,
                         "tags": ["x", 2, null, {"o": 1}], "none": null, "obj": {"a": 1}})),
            &[("tenant", "t1")],
        );
        let tokens: Vec<&str> = terms.tokens().collect();
        assert_eq!(
            tokens,
            vec![
                "b\u{1f}false",
                "category\u{1f}news",
                "f\u{1f}1.5",
                "n\u{1f}1",
                "tags\u{1f}2",
                "tags\u{1f}x",
                "tenant\u{1f}t1",
            ]
        );
    }

    #[test]
    fn matches_is_and_of_ors() {
        let terms = FilterTerms::from_metadata(
            &obj(json!({"category": "news", "tags": ["x", "y"]})),
            &[("tenant", "t1")],
        );
        let parse = |v: Value| Filter::from_json(&obj(v)).unwrap();
        assert!(Filter::default().matches(&terms));
        assert!(parse(json!({"category": ["sport", "news"]})).matches(&terms));
        assert!(parse(json!({"category": "news", "tags": "y"})).matches(&terms));
        assert!(!parse(json!({"category": "news", "tags": "z"})).matches(&terms));
        assert!(!parse(json!({"missing": "news"})).matches(&terms));
        // The mandatory clause narrows; it cannot be widened by the caller's own clause.
        let f = parse(json!({"tenant": ["t1", "t2"]})).and("tenant", vec!["t2".into()]);
        assert!(!f.matches(&terms));
        let f = parse(json!({"category": "news"})).and("tenant", vec!["t1".into()]);
        assert!(f.matches(&terms));
        // An empty mandatory clause denies everything.
        let f = Filter::default().and("tenant", vec![]);
        assert!(f.rejects_everything());
        assert!(!f.matches(&terms));
    }

    #[test]
    fn numbers_match_across_filter_and_metadata() {
        let terms = FilterTerms::from_metadata(&obj(json!({"year": 2024, "score": 0.5})), &[]);
        assert!(
            Filter::from_json(&obj(json!({"year": 2024})))
                .unwrap()
                .matches(&terms)
        );
        assert!(
            Filter::from_json(&obj(json!({"score": [0.5]})))
                .unwrap()
                .matches(&terms)
        );
        // Strings and numbers share one text form, so "2024" matches 2024.
        assert!(
            Filter::from_json(&obj(json!({"year": "2024"})))
                .unwrap()
                .matches(&terms)
        );
    }
}
