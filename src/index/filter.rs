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
    /// An operator object names an operator that does not exist.
    #[error("filter field `{field}`: unknown operator `{op}`; use one of {OPERATORS}")]
    UnknownOperator {
        /// The field as given in the filter.
        field: String,
        /// The operator as given.
        op: String,
    },
    /// `{}` as a field's condition.
    #[error("filter field `{field}` has an empty operator object; use one of {OPERATORS}")]
    NoOperator {
        /// The field as given in the filter.
        field: String,
    },
    /// A range operator on a field that has no order.
    #[error(
        "filter field `{field}` is a {kind} field, so `{op}` does not apply: ranges need a number or \
         time field (declared in the collection's field_types; event_time and indexed_at are times)"
    )]
    NotOrdered {
        /// The field as given in the filter.
        field: String,
        /// The operator as given.
        op: String,
        /// The field's declared type.
        kind: &'static str,
    },
    /// An operand of the wrong type for the field or the operator.
    #[error("filter field `{field}` ({kind}): `{op}` needs {expected}, got {found}")]
    BadOperand {
        /// The field as given in the filter.
        field: String,
        /// The field's declared type.
        kind: &'static str,
        /// The operator (`=` for a plain value).
        op: String,
        /// What would be accepted.
        expected: &'static str,
        /// The value given, as JSON.
        found: String,
    },
}

/// The operators a filter may use, for error messages and the tool's schema.
pub const OPERATORS: &str =
    "eq, in, any, all, ne, exists, gt, gte, lt, lte (gt/gte/lt/lte on number and time fields)";

/// Built-in filterable field: when the document's change happened at the source.
pub const EVENT_TIME: &str = "event_time";
/// Built-in filterable field: when the document's version became searchable.
pub const INDEXED_AT: &str = "indexed_at";

/// Declared type of a filterable field (`field_types` of a collection). Keyword fields are
/// matched by exact value; number and time fields also by range; bool fields by `true` or
/// `false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Exact values (the default).
    #[default]
    Keyword,
    /// Numbers (JSON numbers, or strings holding one).
    Number,
    /// Times: RFC 3339 strings, `YYYY-MM-DD[ HH:MM:SS]`, or epoch numbers (s, ms, µs, ns).
    Time,
    /// `true` / `false`.
    Bool,
}

impl FieldType {
    /// The name used in the config and in messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Number => "number",
            FieldType::Time => "time",
            FieldType::Bool => "bool",
        }
    }

    fn ordered(self) -> bool {
        matches!(self, FieldType::Number | FieldType::Time)
    }
}

/// Where a filterable field's values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldSource {
    /// A metadata field of the document.
    Metadata,
    /// The collection's tenant field.
    Tenant,
    /// The version's event time (built-in `event_time`).
    EventTime,
    /// When the version became searchable (built-in `indexed_at`).
    IndexedAt,
}

/// What a collection lets a filter name, and the type of each field.
#[derive(Clone, Debug, Default)]
pub struct FilterSchema {
    fields: Vec<(String, FieldType, FieldSource)>,
    /// Accept any field name as a keyword metadata field (no collection to check against).
    open: bool,
}

impl FilterSchema {
    /// Any field is a keyword metadata field; no built-ins. For indexes used on their own.
    pub fn open() -> FilterSchema {
        FilterSchema {
            fields: Vec::new(),
            open: true,
        }
    }

    /// The metadata fields with their types, the tenant field, and the built-in
    /// `event_time` and `indexed_at` unless a metadata field has taken the name.
    pub fn new<'a>(
        metadata: impl IntoIterator<Item = (&'a str, FieldType)>,
        tenant_field: Option<&str>,
    ) -> FilterSchema {
        let mut fields: Vec<(String, FieldType, FieldSource)> = metadata
            .into_iter()
            .map(|(name, kind)| (name.to_string(), kind, FieldSource::Metadata))
            .collect();
        if let Some(t) = tenant_field
            && !fields.iter().any(|(name, ..)| name == t)
        {
            fields.push((t.to_string(), FieldType::Keyword, FieldSource::Tenant));
        }
        for (name, source) in [
            (EVENT_TIME, FieldSource::EventTime),
            (INDEXED_AT, FieldSource::IndexedAt),
        ] {
            if !fields.iter().any(|(n, ..)| n == name) {
                fields.push((name.to_string(), FieldType::Time, source));
            }
        }
        FilterSchema {
            fields,
            open: false,
        }
    }

    /// The fields a filter may name, with their types, in declaration order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, FieldType)> {
        self.fields.iter().map(|(n, k, _)| (n.as_str(), *k))
    }

    /// The type and source of `field`, or `None` when a filter may not name it.
    pub fn lookup(&self, field: &str) -> Option<(FieldType, FieldSource)> {
        match self.fields.iter().find(|(n, ..)| n == field) {
            Some((_, kind, source)) => Some((*kind, source.clone())),
            None if self.open => Some((FieldType::Keyword, FieldSource::Metadata)),
            None => None,
        }
    }
}

/// The values a document version offers to filter conditions.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Its metadata fields.
    pub metadata: &'a Map<String, Value>,
    /// Its tenant, if the collection maps one.
    pub tenant: Option<&'a str>,
    /// Event time, ms since the epoch.
    pub event_time_ms: i64,
    /// When it became searchable, ms since the epoch.
    pub indexed_at_ms: i64,
}

/// A test on one field that the term index cannot answer: ranges, negation, presence, and
/// equality of numbers and times by value. Both retrievers evaluate these per document.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    field: String,
    kind: FieldType,
    source: FieldSource,
    test: Test,
}

#[derive(Clone, Debug, PartialEq)]
enum Test {
    /// Some value equals one of these (numbers and times compare by value).
    NumberIn(Vec<f64>),
    /// No value equals any of these: texts for keyword and bool fields, numbers otherwise.
    NotIn(Vec<String>, Vec<f64>),
    /// The field has (`true`) or lacks (`false`) a value.
    Exists(bool),
    /// Some value lies within the bounds (`(bound, inclusive)`).
    Range {
        lower: Option<(f64, bool)>,
        upper: Option<(f64, bool)>,
    },
}

impl Condition {
    /// True if the document version passes.
    pub fn holds(&self, doc: &Candidate) -> bool {
        let values = self.values(doc);
        match &self.test {
            Test::Exists(wanted) => values.is_empty() != *wanted,
            Test::NumberIn(set) => values
                .iter()
                .filter_map(|v| self.number(v))
                .any(|n| set.contains(&n)),
            Test::NotIn(texts, numbers) => !values.iter().any(|v| {
                if self.kind.ordered() {
                    self.number(v).is_some_and(|n| numbers.contains(&n))
                } else {
                    scalar_text(v).is_some_and(|t| texts.contains(&t))
                }
            }),
            Test::Range { lower, upper } => values
                .iter()
                .filter_map(|v| self.number(v))
                .any(|n| within(n, *lower, *upper)),
        }
    }

    /// The field's non-null scalar values in `doc` (array elements one by one).
    fn values(&self, doc: &Candidate) -> Vec<Value> {
        match self.source {
            FieldSource::EventTime => vec![Value::from(doc.event_time_ms)],
            FieldSource::IndexedAt => vec![Value::from(doc.indexed_at_ms)],
            FieldSource::Tenant => doc.tenant.map(Value::from).into_iter().collect(),
            FieldSource::Metadata => match doc.metadata.get(&self.field) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter(|v| scalar_text(v).is_some())
                    .cloned()
                    .collect(),
                Some(Value::Object(_)) => Vec::new(),
                Some(other) => vec![other.clone()],
            },
        }
    }

    /// A document value as a number of this field's type (times in ms), if it is one.
    fn number(&self, value: &Value) -> Option<f64> {
        match (self.kind, &self.source) {
            (_, FieldSource::EventTime | FieldSource::IndexedAt) => value.as_f64(),
            (FieldType::Time, _) => time_ms(value).map(|ms| ms as f64),
            _ => number_of(value),
        }
    }
}

fn within(n: f64, lower: Option<(f64, bool)>, upper: Option<(f64, bool)>) -> bool {
    let above = match lower {
        None => true,
        Some((b, true)) => n >= b,
        Some((b, false)) => n > b,
    };
    let below = match upper {
        None => true,
        Some((b, true)) => n <= b,
        Some((b, false)) => n < b,
    };
    above && below
}

/// A JSON number, or a string holding one (decimals often arrive as strings).
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A time value as ms since the epoch, read like event times are.
fn time_ms(value: &Value) -> Option<i64> {
    crate::decode::parse_time_ms(value).ok()
}

/// A conjunction over fields: term clauses (a disjunction of values each, answered by the
/// term index) and conditions (evaluated per document):
/// `{category: ["a","b"], tenant: "t1"}` means `category ∈ {a,b} AND tenant = t1`.
///
/// A clause with no values matches nothing: that is the safe reading for a mandatory clause
/// built from an empty claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// `(field, accepted values)`, all of which must hold.
    pub clauses: Vec<(String, Vec<String>)>,
    /// Tests evaluated on each candidate document, all of which must hold.
    pub conditions: Vec<Condition>,
}

impl Filter {
    /// True when the filter accepts every document.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty() && self.conditions.is_empty()
    }

    /// Parse the tool's `filter` argument with every field taken as a keyword metadata
    /// field: `{field: scalar | [scalars] | {op: operand}}`.
    pub fn from_json(map: &Map<String, Value>) -> Result<Filter, FilterError> {
        Filter::parse(map, &FilterSchema::open())
    }

    /// Parse the tool's `filter` argument against the fields of `schema`. A field the
    /// schema does not know is taken as a keyword metadata field here; the caller checks
    /// names first to say which fields exist.
    pub fn parse(map: &Map<String, Value>, schema: &FilterSchema) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for (field, value) in map {
            if !valid_field(field) {
                return Err(FilterError::InvalidField {
                    field: field.clone(),
                });
            }
            let (kind, source) = schema
                .lookup(field)
                .unwrap_or((FieldType::Keyword, FieldSource::Metadata));
            let mut target = Target {
                filter: &mut filter,
                field,
                kind,
                source,
            };
            match value {
                Value::Object(ops) if ops.is_empty() => {
                    return Err(FilterError::NoOperator {
                        field: field.clone(),
                    });
                }
                Value::Object(ops) => {
                    for (op, operand) in ops {
                        target.operator(op, operand)?;
                    }
                }
                other => target.equals(other, "=")?,
            }
        }
        Ok(filter)
    }

    /// Add a mandatory clause (the tenant claim). It is ANDed with whatever the caller asked
    /// for, so a caller's own clause on the same field can only narrow it, never widen it.
    #[must_use]
    pub fn and(mut self, field: &str, values: Vec<String>) -> Filter {
        self.clauses.push((field.to_owned(), values));
        self
    }

    /// True if a document with these filter terms passes the term clauses. Conditions are
    /// not looked at: see [`Filter::accepts`].
    pub fn matches(&self, terms: &FilterTerms) -> bool {
        self.clauses.iter().all(|(field, values)| {
            values
                .iter()
                .any(|value| terms.contains(&token(field, value)))
        })
    }

    /// True if every condition holds for `doc` (term clauses are not looked at).
    pub fn conditions_hold(&self, doc: &Candidate) -> bool {
        self.conditions.iter().all(|c| c.holds(doc))
    }

    /// True if a document version with these terms and values passes the whole filter.
    pub fn accepts(&self, terms: &FilterTerms, doc: &Candidate) -> bool {
        self.matches(terms) && self.conditions_hold(doc)
    }

    /// True if some clause has no accepted value, so nothing can match.
    pub fn rejects_everything(&self) -> bool {
        self.clauses.iter().any(|(_, values)| values.is_empty())
    }
}

/// One field of a filter being parsed.
struct Target<'a> {
    filter: &'a mut Filter,
    field: &'a str,
    kind: FieldType,
    source: FieldSource,
}

impl Target<'_> {
    fn condition(&mut self, test: Test) {
        self.filter.conditions.push(Condition {
            field: self.field.to_string(),
            kind: self.kind,
            source: self.source.clone(),
            test,
        });
    }

    fn bad(&self, op: &str, expected: &'static str, found: &Value) -> FilterError {
        FilterError::BadOperand {
            field: self.field.to_string(),
            kind: self.kind.name(),
            op: op.to_string(),
            expected,
            found: found.to_string(),
        }
    }

    /// The operand's values: a scalar, or the scalars of a non-empty array.
    fn values<'v>(&self, operand: &'v Value) -> Result<Vec<&'v Value>, FilterError> {
        let field = self.field.to_string();
        match operand {
            Value::Array(items) if items.is_empty() => Err(FilterError::EmptyValues { field }),
            Value::Array(items) => items
                .iter()
                .map(|item| match scalar_text(item) {
                    Some(_) => Ok(item),
                    None => Err(FilterError::UnsupportedValue {
                        field: field.clone(),
                        kind: kind_in_array(item),
                    }),
                })
                .collect(),
            other if scalar_text(other).is_some() => Ok(vec![other]),
            other => Err(FilterError::UnsupportedValue {
                field,
                kind: kind(other),
            }),
        }
    }

    /// A value compared by equality, as the term index holds it (keyword and bool fields).
    fn text(&self, op: &str, value: &Value) -> Result<String, FilterError> {
        match self.kind {
            FieldType::Bool => match value {
                Value::Bool(b) => Ok(b.to_string()),
                Value::String(s) if s == "true" || s == "false" => Ok(s.clone()),
                other => Err(self.bad(op, "true or false", other)),
            },
            _ => scalar_text(value).ok_or_else(|| self.bad(op, "a string or number", value)),
        }
    }

    /// A value of a number or time field as a number (times in ms).
    fn number(&self, op: &str, value: &Value) -> Result<f64, FilterError> {
        match self.kind {
            FieldType::Time => time_operand(value)
                .map(|ms| ms as f64)
                .ok_or_else(|| self.bad(op, TIME_OPERAND, value)),
            _ => number_of(value).ok_or_else(|| self.bad(op, "a number", value)),
        }
    }

    /// `field: v | [v, ...]` (also `eq`, `in`, `any`): some value equals one of these.
    fn equals(&mut self, operand: &Value, op: &str) -> Result<(), FilterError> {
        let values = self.values(operand)?;
        if self.kind.ordered() {
            let numbers = values
                .iter()
                .map(|v| self.number(op, v))
                .collect::<Result<Vec<_>, _>>()?;
            self.condition(Test::NumberIn(numbers));
        } else {
            let texts = values
                .iter()
                .map(|v| self.text(op, v))
                .collect::<Result<Vec<_>, _>>()?;
            self.filter.clauses.push((self.field.to_string(), texts));
        }
        Ok(())
    }

    fn operator(&mut self, op: &str, operand: &Value) -> Result<(), FilterError> {
        match op {
            "eq" | "in" | "any" => self.equals(operand, op),
            "all" => {
                // Every value must be present: one single-valued clause each.
                for value in self.values(operand)? {
                    self.equals(value, op)?;
                }
                Ok(())
            }
            "ne" => {
                let values = self.values(operand)?;
                let (mut texts, mut numbers) = (Vec::new(), Vec::new());
                for v in values {
                    if self.kind.ordered() {
                        numbers.push(self.number(op, v)?);
                    } else {
                        texts.push(self.text(op, v)?);
                    }
                }
                self.condition(Test::NotIn(texts, numbers));
                Ok(())
            }
            "exists" => match operand {
                Value::Bool(b) => {
                    self.condition(Test::Exists(*b));
                    Ok(())
                }
                other => Err(self.bad(op, "true or false", other)),
            },
            "gt" | "gte" | "lt" | "lte" => {
                if !self.kind.ordered() {
                    return Err(FilterError::NotOrdered {
                        field: self.field.to_string(),
                        op: op.to_string(),
                        kind: self.kind.name(),
                    });
                }
                let bound = (self.number(op, operand)?, op.ends_with('e'));
                let test = match op {
                    "gt" | "gte" => Test::Range {
                        lower: Some(bound),
                        upper: None,
                    },
                    _ => Test::Range {
                        lower: None,
                        upper: Some(bound),
                    },
                };
                self.condition(test);
                Ok(())
            }
            other => Err(FilterError::UnknownOperator {
                field: self.field.to_string(),
                op: other.to_string(),
            }),
        }
    }
}

const TIME_OPERAND: &str =
    "a time: RFC 3339, epoch milliseconds, \"now\" or \"now-<n><unit>\" (units ms, s, m, h, d, w)";

/// A time bound: what [`time_ms`] reads, or `now`, `now-1h`, `now+15m`.
fn time_operand(value: &Value) -> Option<i64> {
    if let Value::String(s) = value {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("now") {
            let now = crate::time::now_ms();
            let rest = rest.trim();
            if rest.is_empty() {
                return Some(now);
            }
            let (sign, amount) = match rest.split_at(1) {
                ("-", a) => (-1, a),
                ("+", a) => (1, a),
                _ => return None,
            };
            return duration_ms(amount.trim()).and_then(|d| now.checked_add(sign * d));
        }
    }
    time_ms(value)
}

/// `90s`, `15m`, `6h`, `7d`, `2w`, `500ms` in milliseconds.
pub fn duration_ms(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
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

        // An object is read as operators.
        let err = Filter::from_json(&obj(json!({"meta": {"a": 1}}))).unwrap_err();
        assert_eq!(
            err,
            FilterError::UnknownOperator {
                field: "meta".into(),
                op: "a".into()
            }
        );
        let err = Filter::from_json(&obj(json!({"meta": {"eq": {"a": 1}}}))).unwrap_err();
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

    fn schema() -> FilterSchema {
        FilterSchema::new(
            [
                ("category", FieldType::Keyword),
                ("tags", FieldType::Keyword),
                ("price", FieldType::Number),
                ("updated", FieldType::Time),
                ("published", FieldType::Bool),
            ],
            Some("tenant"),
        )
    }

    fn typed(value: Value) -> Result<Filter, FilterError> {
        Filter::parse(&obj(value), &schema())
    }

    fn doc_passes(filter: &Filter, metadata: Value, event_time_ms: i64) -> bool {
        let metadata = obj(metadata);
        let terms = FilterTerms::from_metadata(&metadata, &[("tenant", "t1")]);
        filter.accepts(
            &terms,
            &Candidate {
                metadata: &metadata,
                tenant: Some("t1"),
                event_time_ms,
                indexed_at_ms: event_time_ms + 5,
            },
        )
    }

    #[test]
    fn ranges_on_numbers_and_times() {
        let f = typed(json!({"price": {"gte": 10, "lt": 20}})).unwrap();
        assert!(f.clauses.is_empty(), "ranges are conditions, not terms");
        assert!(doc_passes(&f, json!({"price": 10}), 0));
        assert!(
            doc_passes(&f, json!({"price": "19.5"}), 0),
            "numeric strings count"
        );
        assert!(!doc_passes(&f, json!({"price": 20}), 0));
        assert!(!doc_passes(&f, json!({"price": 9.99}), 0));
        assert!(!doc_passes(&f, json!({}), 0), "no value is not in range");
        assert!(
            doc_passes(&f, json!({"price": [1, 15]}), 0),
            "any list element"
        );

        let f = typed(json!({"updated": {"gt": "2026-01-01T00:00:00Z"}})).unwrap();
        assert!(doc_passes(
            &f,
            json!({"updated": "2026-01-02T00:00:00Z"}),
            0
        ));
        assert!(
            doc_passes(&f, json!({"updated": 1_780_000_000_000_i64}), 0),
            "epoch ms"
        );
        assert!(!doc_passes(
            &f,
            json!({"updated": "2025-12-31 23:59:59"}),
            0
        ));

        let day = 86_400_000;
        let now = crate::time::now_ms();
        let f = typed(json!({"event_time": {"gte": "now-1d"}})).unwrap();
        assert!(doc_passes(&f, json!({}), now - day / 2));
        assert!(!doc_passes(&f, json!({}), now - 2 * day));
        let f = typed(json!({"indexed_at": {"lte": now - day}})).unwrap();
        assert!(doc_passes(&f, json!({}), now - 2 * day));
        assert!(!doc_passes(&f, json!({}), now));
    }

    #[test]
    fn negation_presence_and_lists() {
        let f = typed(json!({"category": {"ne": "archived"}})).unwrap();
        assert!(doc_passes(&f, json!({"category": "news"}), 0));
        assert!(doc_passes(&f, json!({}), 0), "a missing field is not equal");
        assert!(!doc_passes(&f, json!({"category": "archived"}), 0));
        let f = typed(json!({"price": {"ne": [1, 2]}})).unwrap();
        assert!(
            !doc_passes(&f, json!({"price": 2.0}), 0),
            "numbers compare by value"
        );
        assert!(doc_passes(&f, json!({"price": 3}), 0));

        let f = typed(json!({"tags": {"exists": true}})).unwrap();
        assert!(doc_passes(&f, json!({"tags": ["a"]}), 0));
        assert!(!doc_passes(&f, json!({"tags": null}), 0));
        assert!(!doc_passes(&f, json!({"tags": []}), 0));
        let f = typed(json!({"tags": {"exists": false}})).unwrap();
        assert!(doc_passes(&f, json!({}), 0));

        let f = typed(json!({"tags": {"all": ["a", "b"]}})).unwrap();
        assert_eq!(f.clauses.len(), 2, "all: one term clause per value");
        assert!(doc_passes(&f, json!({"tags": ["b", "c", "a"]}), 0));
        assert!(!doc_passes(&f, json!({"tags": ["a", "c"]}), 0));
        let f = typed(json!({"tags": {"any": ["a", "b"]}})).unwrap();
        assert!(doc_passes(&f, json!({"tags": ["b"]}), 0));
        assert!(!doc_passes(&f, json!({"tags": ["c"]}), 0));

        let f = typed(json!({"price": 5, "published": true})).unwrap();
        assert!(doc_passes(&f, json!({"price": 5.0, "published": true}), 0));
        assert!(!doc_passes(&f, json!({"price": 5, "published": false}), 0));
        // The tenant field is filterable like a keyword.
        let f = typed(json!({"tenant": {"ne": "t1"}})).unwrap();
        assert!(!doc_passes(&f, json!({}), 0));
    }

    #[test]
    fn operator_errors_name_the_field_and_what_fits() {
        let err = typed(json!({"category": {"gt": "a"}})).unwrap_err();
        assert!(
            matches!(&err, FilterError::NotOrdered { field, kind: "keyword", .. } if field == "category"),
            "{err}"
        );
        assert!(err.to_string().contains("field_types"), "{err}");
        let err = typed(json!({"price": {"gte": "cheap"}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "filter field `price` (number): `gte` needs a number, got \"cheap\""
        );
        let err = typed(json!({"updated": {"lt": "yesterday"}})).unwrap_err();
        assert!(
            err.to_string()
                .contains("`updated` (time): `lt` needs a time"),
            "{err}"
        );
        let err = typed(json!({"price": "ten"})).unwrap_err();
        assert!(err.to_string().contains("`=` needs a number"), "{err}");
        let err = typed(json!({"published": "yes"})).unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = typed(json!({"category": {"like": "a"}})).unwrap_err();
        assert!(err.to_string().contains("unknown operator `like`"), "{err}");
        assert!(typed(json!({"category": {}})).is_err());
        assert!(typed(json!({"tags": {"exists": "yes"}})).is_err());
        assert!(typed(json!({"tags": {"all": []}})).is_err());
        assert!(typed(json!({"event_time": {"gt": "now-3x"}})).is_err());
        // Far beyond the range of times: an error, not an overflow.
        assert!(typed(json!({"event_time": {"gt": "now+9223372036854775807ms"}})).is_err());
        assert!(typed(json!({"event_time": {"gt": "now+99999999999999999w"}})).is_err());
    }

    #[test]
    fn a_metadata_field_shadows_a_built_in_name() {
        let schema = FilterSchema::new([("event_time", FieldType::Keyword)], None);
        assert_eq!(
            schema.lookup("event_time"),
            Some((FieldType::Keyword, FieldSource::Metadata))
        );
        assert_eq!(
            schema.lookup("indexed_at"),
            Some((FieldType::Time, FieldSource::IndexedAt))
        );
        assert_eq!(schema.lookup("other"), None);
        assert_eq!(duration_ms("90s"), Some(90_000));
        assert_eq!(duration_ms("2w"), Some(14 * 86_400_000));
        assert_eq!(duration_ms("h"), None);
    }
}
