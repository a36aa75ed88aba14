//! Event times from row values, as epoch milliseconds (UTC).
//!
//! Producers write times in many shapes: epoch seconds, ms, µs or ns (Debezium's
//! `io.debezium.time.*Timestamp` are such integers), RFC 3339 strings, SQL-style
//! `YYYY-MM-DD HH:MM:SS`. Epoch numbers carry no unit, so the unit is guessed from the
//! magnitude, which is unambiguous for any date between 1973 and 5138.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::DecodeError;
use super::json;

const EXPECTED: &str = "a timestamp: epoch number (s, ms, µs or ns), RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` or `YYYY-MM-DD`";
const MS_PER_DAY: i64 = 86_400_000;

/// The event time in `value` (the non-null value of `field`). `days` says the schema marks it
/// as a date (days since the epoch), which the magnitude heuristic would read as seconds.
pub(crate) fn event_time_ms(value: &Value, field: &str, days: bool) -> Result<i64, DecodeError> {
    let parsed = match value {
        Value::Number(n) if days => n.as_i64().and_then(|d| d.checked_mul(MS_PER_DAY)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => from_epoch(i128::from(i)),
            (None, Some(u)) => from_epoch(i128::from(u)),
            (None, None) => n.as_f64().and_then(from_epoch_float),
        },
        Value::String(s) => parse_str(s.trim()),
        _ => None,
    };
    parsed.ok_or_else(|| DecodeError::BadField {
        field: field.to_owned(),
        expected: EXPECTED,
        found: json::found(value),
    })
}

/// Epoch integer in s / ms / µs / ns, told apart by magnitude.
fn from_epoch(n: i128) -> Option<i64> {
    let magnitude = n.unsigned_abs();
    let ms = if magnitude < 100_000_000_000 {
        n * 1_000
    } else if magnitude < 100_000_000_000_000 {
        n
    } else if magnitude < 100_000_000_000_000_000 {
        n / 1_000
    } else {
        n / 1_000_000
    };
    i64::try_from(ms).ok()
}

/// Epoch float, same thresholds; fractions below a millisecond are rounded.
fn from_epoch_float(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let magnitude = f.abs();
    let ms = if magnitude < 1e11 {
        f * 1e3
    } else if magnitude < 1e14 {
        f
    } else if magnitude < 1e17 {
        f / 1e3
    } else {
        f / 1e6
    }
    .round();
    // Beyond ±2^63 ms the `as` cast would saturate into a wrong time.
    (ms.abs() < 9.2e18).then_some(ms as i64)
}

fn parse_str(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // Offsets without minutes (`+00`, as Postgres prints them) and a space separator.
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.timestamp_millis());
        }
    }
    // No offset: UTC assumed.
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    // Epoch numbers that arrived as strings.
    if let Ok(i) = s.parse::<i64>() {
        return from_epoch(i128::from(i));
    }
    s.parse::<f64>().ok().and_then(from_epoch_float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // 2024-01-02T03:04:05.678Z
    const T: i64 = 1_704_164_645_678;

    fn ms(value: Value) -> Result<i64, DecodeError> {
        event_time_ms(&value, "updated_at", false)
    }

    #[test]
    fn integer_units_by_magnitude() {
        assert_eq!(ms(json!(1_704_164_645)).ok(), Some(T - 678));
        assert_eq!(ms(json!(T)).ok(), Some(T));
        assert_eq!(ms(json!(T * 1_000 + 999)).ok(), Some(T));
        assert_eq!(ms(json!(T * 1_000_000 + 1)).ok(), Some(T));
        assert_eq!(ms(json!(u64::MAX)).ok(), Some(18_446_744_073_709));
        assert_eq!(ms(json!(0)).ok(), Some(0));
        // Before 1970: seconds, by magnitude.
        assert_eq!(ms(json!(-86_400)).ok(), Some(-MS_PER_DAY));
    }

    #[test]
    fn float_seconds_or_ms() {
        assert_eq!(ms(json!(1_704_164_645.678)).ok(), Some(T));
        assert_eq!(ms(json!(1_704_164_645_678.4)).ok(), Some(T));
        assert_eq!(ms(json!(1e300)).ok(), None);
    }

    #[test]
    fn strings() {
        for s in [
            "2024-01-02T03:04:05.678Z",
            "2024-01-02T05:04:05.678+02:00",
            "2024-01-02 03:04:05.678Z",
            "2024-01-02 03:04:05.678+00",
            "2024-01-02 03:04:05.678",
            "2024-01-02T03:04:05.678",
            "1704164645678",
            "1704164645.678",
            " 2024-01-02T03:04:05.678Z ",
        ] {
            assert_eq!(ms(json!(s)).ok(), Some(T), "{s}");
        }
        assert_eq!(ms(json!("2024-01-02 03:04:05")).ok(), Some(T - 678));
        assert_eq!(ms(json!("2024-01-02")).ok(), Some(T - 678 - 11_045_000));
    }

    #[test]
    fn days_when_the_schema_says_date() {
        // io.debezium.time.Date 16852 = 2016-02-21.
        assert_eq!(
            event_time_ms(&json!(16852), "d", true).ok(),
            Some(1_456_012_800_000)
        );
        assert_eq!(
            event_time_ms(&json!(16852), "d", false).ok(),
            Some(16_852_000)
        );
        assert!(event_time_ms(&json!(i64::MAX), "d", true).is_err());
    }

    #[test]
    fn unparsable_values_are_bad_fields() {
        for value in [
            json!("yesterday"),
            json!("2024-13-01"),
            json!(true),
            json!([1]),
            json!({}),
        ] {
            match ms(value.clone()) {
                Err(DecodeError::BadField { field, found, .. }) => {
                    assert_eq!(field, "updated_at");
                    assert_eq!(found, json::found(&value));
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }
}
