//! Avro payloads → JSON text in the document model every other format uses.
//!
//! The output keeps record fields in schema order (the default text and composite key ids
//! depend on field order) and renders types JSON lacks as text: bytes and fixed as base64,
//! decimals as exact decimal strings, dates as `YYYY-MM-DD`, times of day as
//! `HH:MM:SS.fff`, timestamps as RFC 3339 (`…Z` for UTC instants, no zone for local ones).
//! Unions are their branch's value; enums are their symbol; maps are objects.

use std::collections::HashMap;
use std::fmt::Write;

use apache_avro::Schema as Avro;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use apache_avro::types::Value;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveTime};

use super::schema::SchemaText;

/// Deepest record nesting decoded. Only schemas that refer to named types by name can nest
/// without bound (a record holding itself); the Avro decoder recurses once per level, so such
/// payloads are measured first, and deeper ones refused, rather than overflowing the stack.
const MAX_DEPTH: usize = 32;

/// An Avro writer schema with every named type it defines or references.
#[derive(Debug)]
pub struct AvroSchema {
    writer: Avro,
    /// Referenced schemas, for the reader to resolve names defined outside `writer`.
    referenced: Vec<Avro>,
    /// Named types by full name, for decimal scales behind a name reference.
    named: HashMap<String, Avro>,
    /// Whether a payload's nesting must be measured before decoding (see `MAX_DEPTH`).
    may_recurse: bool,
}

impl AvroSchema {
    /// Parses a schema and the schemas it references (dependencies first).
    pub(crate) fn parse(text: &str, references: &[SchemaText]) -> Result<AvroSchema, String> {
        let (writer, referenced) = if references.is_empty() {
            (
                Avro::parse_str(text).map_err(|e| e.to_string())?,
                Vec::new(),
            )
        } else {
            Avro::parse_str_with_list(text, references.iter().map(|r| r.text.as_str()))
                .map_err(|e| e.to_string())?
        };
        let mut named = HashMap::new();
        let mut refers = false;
        for schema in referenced.iter().chain([&writer]) {
            refers |= collect_names(schema, &mut named);
        }
        Ok(AvroSchema {
            writer,
            referenced,
            named,
            may_recurse: refers,
        })
    }

    /// Decodes one datum written with this schema and renders it as JSON text. The payload
    /// must hold exactly one datum: leftover bytes mean it was not written with this schema.
    pub(crate) fn to_json(&self, payload: &[u8]) -> Result<String, String> {
        if self.may_recurse {
            let mut budget = payload.len().saturating_mul(8).saturating_add(1024);
            self.measure(&self.writer, &mut &payload[..], 0, &mut budget)?;
        }
        let mut reader = payload;
        let builder = GenericDatumReader::builder(&self.writer);
        let datum_reader = if self.referenced.is_empty() {
            builder.build()
        } else {
            builder
                .writer_schemata(self.referenced.iter().collect())
                .and_then(|b| b.build())
        };
        let value = datum_reader
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| e.to_string())?;
        if !reader.is_empty() {
            return Err(format!("{} bytes left over after the datum", reader.len()));
        }
        let mut out = String::with_capacity(payload.len() * 2);
        self.write(&value, Some(&self.writer), &mut out);
        Ok(out)
    }

    /// Walks a datum without decoding it, failing if records nest deeper than `MAX_DEPTH`,
    /// the bytes run out, or it holds more than `budget` items (arrays of empty items).
    fn measure(
        &self,
        schema: &Avro,
        bytes: &mut &[u8],
        depth: usize,
        budget: &mut usize,
    ) -> Result<(), String> {
        *budget = budget
            .checked_sub(1)
            .ok_or("the datum holds more items than its size allows")?;
        let schema = self
            .resolve(Some(schema))
            .ok_or("a name in the schema refers to no type")?;
        match schema {
            Avro::Null => Ok(()),
            Avro::Boolean => skip(bytes, 1),
            Avro::Float => skip(bytes, 4),
            Avro::Double => skip(bytes, 8),
            Avro::Int
            | Avro::Long
            | Avro::Enum(_)
            | Avro::Date
            | Avro::TimeMillis
            | Avro::TimeMicros
            | Avro::TimestampMillis
            | Avro::TimestampMicros
            | Avro::TimestampNanos
            | Avro::LocalTimestampMillis
            | Avro::LocalTimestampMicros
            | Avro::LocalTimestampNanos => read_long(bytes).map(drop),
            Avro::Bytes
            | Avro::String
            | Avro::BigDecimal
            | Avro::Uuid(UuidSchema::String)
            | Avro::Uuid(UuidSchema::Bytes) => skip_prefixed(bytes),
            Avro::Uuid(UuidSchema::Fixed(f)) | Avro::Fixed(f) | Avro::Duration(f) => {
                skip(bytes, f.size)
            }
            Avro::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => skip_prefixed(bytes),
                InnerDecimalSchema::Fixed(f) => skip(bytes, f.size),
            },
            Avro::Union(union) => {
                let index = read_long(bytes)?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| union.variants().get(i))
                    .ok_or_else(|| format!("union branch {index} does not exist"))?;
                self.measure(variant, bytes, depth, budget)
            }
            Avro::Array(array) => self.measure_blocks(&array.items, false, bytes, depth, budget),
            Avro::Map(map) => self.measure_blocks(&map.types, true, bytes, depth, budget),
            Avro::Record(record) => {
                if depth >= MAX_DEPTH {
                    return Err(format!("records nest deeper than {MAX_DEPTH} levels"));
                }
                for field in &record.fields {
                    self.measure(&field.schema, bytes, depth + 1, budget)?;
                }
                Ok(())
            }
            Avro::Ref { .. } => Err("a name in the schema refers to no type".to_owned()),
        }
    }

    /// The blocks of an array or map: item counts (negative: followed by a byte size), then
    /// the items (map items after their string key), until a zero count.
    fn measure_blocks(
        &self,
        items: &Avro,
        keyed: bool,
        bytes: &mut &[u8],
        depth: usize,
        budget: &mut usize,
    ) -> Result<(), String> {
        loop {
            let count = read_long(bytes)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                read_long(bytes)?;
            }
            for _ in 0..count.unsigned_abs() {
                if keyed {
                    skip_prefixed(bytes)?;
                }
                self.measure(items, bytes, depth, budget)?;
            }
        }
    }

    fn resolve<'s>(&'s self, schema: Option<&'s Avro>) -> Option<&'s Avro> {
        match schema? {
            Avro::Ref { name } => self.named.get(&name.fullname(None)),
            other => Some(other),
        }
    }

    /// Writes `value` as JSON; `schema` (when known) supplies decimal scales.
    fn write(&self, value: &Value, schema: Option<&Avro>, out: &mut String) {
        let schema = self.resolve(schema);
        match value {
            Value::Null => out.push_str("null"),
            Value::Boolean(b) => push_display(out, b),
            Value::Int(n) => push_display(out, n),
            Value::Long(n) => push_display(out, n),
            Value::Float(x) => push_float(out, *x),
            Value::Double(x) => push_float(out, *x),
            Value::Bytes(bytes) | Value::Fixed(_, bytes) => push_str(out, &BASE64.encode(bytes)),
            Value::String(s) | Value::Enum(_, s) => push_str(out, s),
            Value::Uuid(uuid) => push_str(out, &uuid.to_string()),
            Value::Union(index, inner) => {
                let branch = match schema {
                    Some(Avro::Union(union)) => usize::try_from(*index)
                        .ok()
                        .and_then(|i| union.variants().get(i)),
                    _ => None,
                };
                self.write(inner, branch, out);
            }
            Value::Array(items) => {
                let item_schema = match schema {
                    Some(Avro::Array(array)) => Some(array.items.as_ref()),
                    _ => None,
                };
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(item, item_schema, out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                let value_schema = match schema {
                    Some(Avro::Map(map)) => Some(map.types.as_ref()),
                    _ => None,
                };
                // A map has no order of its own: sorted keys keep the output deterministic.
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_str(out, key);
                    out.push(':');
                    if let Some(value) = entries.get(key) {
                        self.write(value, value_schema, out);
                    }
                }
                out.push('}');
            }
            Value::Record(fields) => {
                let field_schemas = match schema {
                    Some(Avro::Record(record)) => Some(&record.fields),
                    _ => None,
                };
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_str(out, name);
                    out.push(':');
                    let field_schema = field_schemas
                        .and_then(|f| f.get(i))
                        .filter(|f| f.name == *name)
                        .map(|f| &f.schema);
                    self.write(value, field_schema, out);
                }
                out.push('}');
            }
            Value::Decimal(decimal) => {
                let scale = match schema {
                    Some(Avro::Decimal(d)) => d.scale,
                    _ => 0,
                };
                match Vec::<u8>::try_from(decimal) {
                    Ok(bytes) => push_str(out, &decimal_text(&bytes, scale)),
                    Err(_) => out.push_str("null"),
                }
            }
            Value::BigDecimal(decimal) => push_str(out, &decimal.to_string()),
            Value::Date(days) => {
                let date = NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|epoch| {
                    epoch.checked_add_signed(chrono::Duration::days(i64::from(*days)))
                });
                push_opt(out, date.map(|d| d.format("%Y-%m-%d").to_string()));
            }
            Value::TimeMillis(ms) => push_opt(out, time_of_day(i64::from(*ms) * 1_000_000, 3)),
            Value::TimeMicros(us) => {
                push_opt(out, us.checked_mul(1_000).and_then(|ns| time_of_day(ns, 6)))
            }
            Value::TimestampMillis(ms) => {
                push_opt(out, instant(i128::from(*ms) * 1_000_000, 3, true))
            }
            Value::TimestampMicros(us) => push_opt(out, instant(i128::from(*us) * 1_000, 6, true)),
            Value::TimestampNanos(ns) => push_opt(out, instant(i128::from(*ns), 9, true)),
            Value::LocalTimestampMillis(ms) => {
                push_opt(out, instant(i128::from(*ms) * 1_000_000, 3, false))
            }
            Value::LocalTimestampMicros(us) => {
                push_opt(out, instant(i128::from(*us) * 1_000, 6, false))
            }
            Value::LocalTimestampNanos(ns) => push_opt(out, instant(i128::from(*ns), 9, false)),
            Value::Duration(d) => {
                let _ = write!(
                    out,
                    r#"{{"months":{},"days":{},"millis":{}}}"#,
                    u32::from(d.months()),
                    u32::from(d.days()),
                    u32::from(d.millis())
                );
            }
        }
    }
}

/// Records every named type (record, enum, fixed) reachable from `schema` by full name;
/// true if `schema` refers to a named type by name anywhere.
fn collect_names(schema: &Avro, named: &mut HashMap<String, Avro>) -> bool {
    match schema {
        Avro::Record(record) => {
            named.insert(record.name.fullname(None), schema.clone());
            let mut refers = false;
            for field in &record.fields {
                refers |= collect_names(&field.schema, named);
            }
            refers
        }
        Avro::Enum(e) => {
            named.insert(e.name.fullname(None), schema.clone());
            false
        }
        Avro::Fixed(f) => {
            named.insert(f.name.fullname(None), schema.clone());
            false
        }
        Avro::Decimal(d) => {
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                named.insert(f.name.fullname(None), schema.clone());
            }
            false
        }
        Avro::Array(array) => collect_names(&array.items, named),
        Avro::Map(map) => collect_names(&map.types, named),
        Avro::Union(union) => {
            let mut refers = false;
            for variant in union.variants() {
                refers |= collect_names(variant, named);
            }
            refers
        }
        Avro::Ref { .. } => true,
        _ => false,
    }
}

/// A zigzag varint `long` (at most 10 bytes).
fn read_long(bytes: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = bytes.split_first().ok_or("the datum ends early")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("a number is longer than 10 bytes".to_owned())
}

fn skip(bytes: &mut &[u8], n: usize) -> Result<(), String> {
    if bytes.len() < n {
        return Err("the datum ends early".to_owned());
    }
    *bytes = &bytes[n..];
    Ok(())
}

/// Bytes or a string: a length, then that many bytes.
fn skip_prefixed(bytes: &mut &[u8]) -> Result<(), String> {
    let len = read_long(bytes)?;
    let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
    skip(bytes, len)
}

/// The exact decimal text of a big-endian two's-complement unscaled value with `scale`.
fn decimal_text(bytes: &[u8], scale: usize) -> String {
    let unscaled = num_bigint::BigInt::from_signed_bytes_be(bytes);
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// `HH:MM:SS` with `digits` fractional digits, from nanoseconds after midnight.
fn time_of_day(nanos: i64, digits: usize) -> Option<String> {
    let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let nano = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, nano)?;
    Some(match digits {
        3 => time.format("%H:%M:%S%.3f").to_string(),
        _ => time.format("%H:%M:%S%.6f").to_string(),
    })
}

/// RFC 3339 from nanoseconds since the epoch; `utc` adds the `Z` (local timestamps have no
/// zone).
fn instant(nanos: i128, digits: usize, utc: bool) -> Option<String> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let nano = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    let at = DateTime::from_timestamp(secs, nano)?.naive_utc();
    let text = match digits {
        3 => at.format("%Y-%m-%dT%H:%M:%S%.3f"),
        6 => at.format("%Y-%m-%dT%H:%M:%S%.6f"),
        _ => at.format("%Y-%m-%dT%H:%M:%S%.9f"),
    };
    Some(if utc {
        format!("{text}Z")
    } else {
        text.to_string()
    })
}

fn push_display(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

/// JSON has no NaN or infinity: such values become null (a vector holding one is rejected).
/// Finite floats print as Rust's shortest round-trip decimal, which is valid JSON (no
/// exponent); an `f32` keeps its own short form rather than widening to 17 digits.
fn push_float<F: std::fmt::Display + Into<f64> + Copy>(out: &mut String, x: F) {
    if x.into().is_finite() {
        push_display(out, x);
    } else {
        out.push_str("null");
    }
}

fn push_str(out: &mut String, s: &str) {
    // Serialising a str into JSON cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

fn push_opt(out: &mut String, text: Option<String>) {
    match text {
        Some(text) => push_str(out, &text),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Record;

    const ARTICLE: &str = r#"{
      "type": "record", "name": "Article", "namespace": "shop",
      "fields": [
        {"name": "id", "type": "long"},
        {"name": "title", "type": "string"},
        {"name": "body", "type": ["null", "string"], "default": null},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["DRAFT", "LIVE"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "int"}},
        {"name": "blob", "type": "bytes"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "author", "type": {"type": "record", "name": "Author", "fields": [{"name": "name", "type": "string"}]}},
        {"name": "editor", "type": ["null", "Author"], "default": null}
      ]}"#;

    fn encode(schema: &Avro, fill: impl FnOnce(&mut Record)) -> Vec<u8> {
        let mut record = Record::new(schema).expect("record schema");
        fill(&mut record);
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(record))
            .expect("encodes")
    }

    fn article_bytes(schema: &Avro) -> Vec<u8> {
        encode(schema, |r| {
            r.put("id", 7i64);
            r.put("title", "Pumps");
            r.put(
                "body",
                Value::Union(1, Box::new(Value::String("Check valves.".into()))),
            );
            r.put("status", Value::Enum(1, "LIVE".into()));
            r.put("tags", Value::Array(vec!["water".into(), "valve".into()]));
            r.put(
                "attrs",
                Value::Map(
                    [
                        ("b".to_owned(), Value::Int(2)),
                        ("a".to_owned(), Value::Int(1)),
                    ]
                    .into(),
                ),
            );
            r.put("blob", Value::Bytes(vec![0, 1, 2]));
            r.put(
                "price",
                Value::Decimal(apache_avro::Decimal::from(vec![0xfb, 0x2e])),
            );
            r.put("day", Value::Date(19_723));
            r.put("at", Value::TimestampMillis(1_704_067_200_123));
            r.put(
                "embedding",
                Value::Array(vec![Value::Float(0.5), Value::Float(-1.0)]),
            );
            r.put(
                "author",
                Value::Record(vec![("name".into(), Value::String("Ada".into()))]),
            );
            r.put(
                "editor",
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![("name".into(), "Bo".into())])),
                ),
            );
        })
    }

    #[test]
    fn renders_every_type_in_field_order() {
        let schema = AvroSchema::parse(ARTICLE, &[]).expect("parses");
        let json = schema
            .to_json(&article_bytes(&schema.writer))
            .expect("decodes");
        assert_eq!(
            json,
            concat!(
                r#"{"id":7,"title":"Pumps","body":"Check valves.","status":"LIVE","#,
                r#""tags":["water","valve"],"attrs":{"a":1,"b":2},"blob":"AAEC","#,
                r#""price":"-12.34","day":"2024-01-01","at":"2024-01-01T00:00:00.123Z","#,
                r#""embedding":[0.5,-1],"author":{"name":"Ada"},"editor":{"name":"Bo"}}"#
            )
        );
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["editor"]["name"], "Bo");
    }

    #[test]
    fn rejects_payloads_that_do_not_match() {
        let schema = AvroSchema::parse(ARTICLE, &[]).expect("parses");
        let bytes = article_bytes(&schema.writer);
        assert!(schema.to_json(&bytes[..bytes.len() - 3]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(schema.to_json(&longer).unwrap_err().contains("left over"));
        assert!(schema.to_json(&[0xff; 16]).is_err());
        assert!(schema.to_json(&[]).is_err());
    }

    #[test]
    fn references_resolve_named_types() {
        let author = SchemaText {
            name: "shop.Author".into(),
            text: r#"{"type": "record", "name": "Author", "namespace": "shop",
                      "fields": [{"name": "name", "type": "string"},
                                 {"name": "fee", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 3}}]}"#
                .into(),
        };
        let text = r#"{"type": "record", "name": "Post", "namespace": "shop",
                       "fields": [{"name": "by", "type": "Author"}]}"#;
        let schema = AvroSchema::parse(text, &[author]).expect("parses with reference");
        let mut payload = Vec::new();
        // by.name = "Al" (length 2 zigzag → 4), by.fee = 1500 → 0x05dc as bytes(2).
        payload.extend([4, b'A', b'l', 4, 0x05, 0xdc]);
        assert_eq!(
            schema.to_json(&payload).as_deref(),
            Ok(r#"{"by":{"name":"Al","fee":"1.500"}}"#)
        );
        assert!(AvroSchema::parse(text, &[]).is_err());
    }

    #[test]
    fn recursive_records_are_measured_before_decoding() {
        // The prepare thread's stack (runtime::PREPARE_STACK_BYTES), not the test harness's.
        std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(recursive_records)
            .expect("thread")
            .join()
            .expect("no panic");
    }

    fn recursive_records() {
        let schema = AvroSchema::parse(
            r#"{"type": "record", "name": "Node", "fields": [
                {"name": "tags", "type": {"type": "array", "items": "null"}},
                {"name": "next", "type": ["null", "Node"]}]}"#,
            &[],
        )
        .expect("parses");
        assert!(schema.may_recurse);
        // Each level: an empty array (0), then union branch 1 (2); the last has branch 0.
        let nested = |levels: usize| {
            let mut payload = [0u8, 2].repeat(levels - 1);
            payload.extend([0, 0]);
            payload
        };
        let json = schema.to_json(&nested(3)).expect("shallow");
        assert_eq!(
            json,
            r#"{"tags":[],"next":{"tags":[],"next":{"tags":[],"next":null}}}"#
        );
        assert!(schema.to_json(&nested(MAX_DEPTH)).is_ok());
        // Deep enough to overflow the decoder's stack if it were decoded.
        let err = schema.to_json(&nested(200_000)).unwrap_err();
        assert!(err.contains("deeper than 32"), "{err}");
        // A block of 2^62 empty items is refused, not looped over.
        let mut huge = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f];
        huge.extend([0, 0]);
        assert!(schema.to_json(&huge).unwrap_err().contains("more items"));
        let flat =
            r#"{"type": "record", "name": "K", "fields": [{"name": "id", "type": "string"}]}"#;
        assert!(!AvroSchema::parse(flat, &[]).expect("parses").may_recurse);
    }

    #[test]
    fn decimals_and_times() {
        assert_eq!(decimal_text(&[0x04, 0xd2], 2), "12.34");
        assert_eq!(decimal_text(&[0x05], 3), "0.005");
        assert_eq!(decimal_text(&[0xff], 1), "-0.1");
        assert_eq!(decimal_text(&[0x00], 0), "0");
        assert_eq!(
            time_of_day(3_723_004_000_000, 3).as_deref(),
            Some("01:02:03.004")
        );
        assert_eq!(time_of_day(-1, 3), None);
        assert_eq!(
            instant(-1_000_000, 3, true).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(
            instant(1_000, 6, false).as_deref(),
            Some("1970-01-01T00:00:00.000001")
        );
        assert_eq!(instant(i128::MAX, 3, true), None);
    }
}
