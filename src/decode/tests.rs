//! End-to-end tests of `Mapping::decode` on the genuine Debezium fixtures in
//! `tests/fixtures/debezium/` and on hand-written plain JSON. Per-module details are tested
//! next to each module.

use serde_json::{Value, json};

use super::*;

const WITH_SCHEMA: &str = include_str!("../../tests/fixtures/debezium/serde-with-schema.json");
const WITHOUT_SCHEMA: &str =
    include_str!("../../tests/fixtures/debezium/serde-without-schema.json");
const UPDATE: &str = include_str!("../../tests/fixtures/debezium/serde-update.json");
const UNWRAPPED: &str = include_str!("../../tests/fixtures/debezium/serde-unwrapped.json");
const DELETE_VAL: &str =
    include_str!("../../tests/fixtures/debezium/serde-unnested-delete-val-withschema.json");
const DELETE_KEY: &str =
    include_str!("../../tests/fixtures/debezium/serde-unnested-delete-key-withschema.json");
const ORDER_VAL: &str =
    include_str!("../../tests/fixtures/debezium/serde-unnested-order-val-withschema.json");
const ORDER_KEY: &str =
    include_str!("../../tests/fixtures/debezium/serde-unnested-order-key-withschema.json");
const PG_CREATE: &str =
    include_str!("../../tests/fixtures/debezium/postgresql-create-event.docs.json");

/// Kafka timestamp on every test record, so fallbacks to it are visible.
const KAFKA_TS: i64 = 1_700_000_000_000;

fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> RawRecord<'a> {
    RawRecord {
        topic: "dbserver1.inventory.customers",
        partition: 0,
        offset: 42,
        key: key.map(str::as_bytes),
        value: value.map(str::as_bytes),
        timestamp_ms: Some(KAFKA_TS),
    }
}

fn mapping(format: Format) -> Mapping {
    Mapping {
        format,
        ..Mapping::default()
    }
}

fn customers(format: Format) -> Mapping {
    Mapping {
        title_field: Some("email".into()),
        text_fields: vec!["first_name".into(), "last_name".into()],
        metadata_fields: vec!["id".into(), "email".into()],
        ..mapping(format)
    }
}

fn upsert(mapping: &Mapping, key: Option<&str>, value: &str) -> Document {
    match mapping.decode(&record(key, Some(value))) {
        Ok(ChangeEvent::Upsert(document)) => document,
        other => panic!("expected an upsert, got {other:?}"),
    }
}

fn decode_err(mapping: &Mapping, key: Option<&str>, value: &str) -> DecodeError {
    match mapping.decode(&record(key, Some(value))) {
        Err(e) => e,
        Ok(event) => panic!("expected an error, got {event:?}"),
    }
}

fn anne(id: &str, event_time_ms: i64) -> Document {
    Document {
        id: id.into(),
        title: Some("annek@noanswer.org".into()),
        text: "Anne\n\nKretchmar".into(),
        metadata: json!({"id": id.parse::<i64>().unwrap(), "email": "annek@noanswer.org"})
            .as_object()
            .cloned()
            .unwrap(),
        tenant: None,
        vector: None,
        event_time_ms: Some(event_time_ms),
    }
}

// --- Debezium fixtures -------------------------------------------------------------------

#[test]
fn create_with_and_without_schema_agree() {
    for format in [Format::Debezium, Format::Auto] {
        let m = customers(format);
        let key = Some(r#"{"id": 1004}"#);
        // source.ts_ms is 0 (unknown) in these fixtures: the envelope ts_ms is the event time.
        assert_eq!(
            upsert(&m, key, WITH_SCHEMA),
            anne("1004", 1_465_491_411_815)
        );
        assert_eq!(
            upsert(&m, key, WITHOUT_SCHEMA),
            anne("1004", 1_465_491_411_815)
        );
    }
}

#[test]
fn update_takes_after() {
    let m = Mapping {
        id_field: Some("id".into()),
        ..customers(Format::Debezium)
    };
    // before.first_name is "Anne-Marie"; the document must be the after image. No key needed.
    assert_eq!(upsert(&m, None, UPDATE), anne("1004", 1_465_491_411_815));
}

#[test]
fn postgres_create() {
    let m = Mapping {
        id_field: Some("id".into()),
        ..customers(Format::Auto)
    };
    let document = upsert(&m, None, PG_CREATE);
    assert_eq!(document, anne("1", 1_559_033_904_863));
}

#[test]
fn snapshot_read_with_key_and_date_column() {
    let m = Mapping {
        metadata_fields: vec!["purchaser".into(), "quantity".into()],
        event_time_field: Some("order_date".into()),
        ..mapping(Format::Auto)
    };
    let document = upsert(&m, Some(ORDER_KEY), ORDER_VAL);
    assert_eq!(document.id, "10004");
    // The row has no string fields, so no default text.
    assert_eq!(document.text, "");
    assert_eq!(
        Value::Object(document.metadata),
        json!({"purchaser": 1003, "quantity": 1})
    );
    // order_date 16852 is an io.debezium.time.Date in the schema: 2016-02-21T00:00:00Z.
    assert_eq!(document.event_time_ms, Some(1_456_012_800_000));

    let m = Mapping {
        event_time_field: None,
        ..m
    };
    assert_eq!(
        upsert(&m, Some(ORDER_KEY), ORDER_VAL).event_time_ms,
        Some(1_718_461_481_000)
    );
}

#[test]
fn delete_with_its_key() {
    let event = mapping(Format::Debezium).decode(&record(Some(DELETE_KEY), Some(DELETE_VAL)));
    assert_eq!(
        event.ok(),
        Some(ChangeEvent::Delete {
            id: "1004".into(),
            event_time_ms: Some(1_718_486_007_000),
        })
    );
}

#[test]
fn delete_id_from_before_without_key() {
    for format in [Format::Debezium, Format::Auto] {
        let m = Mapping {
            id_field: Some("email".into()),
            // A delete's event time is when it happened, not a field of the old row.
            event_time_field: Some("id".into()),
            ..mapping(format)
        };
        let event = m.decode(&record(None, Some(DELETE_VAL)));
        assert_eq!(
            event.ok(),
            Some(ChangeEvent::Delete {
                id: "annek@noanswer.org".into(),
                event_time_ms: Some(1_718_486_007_000),
            })
        );
    }
}

#[test]
fn delete_without_key_or_id_field_is_missing_id() {
    let e = decode_err(&mapping(Format::Debezium), None, DELETE_VAL);
    assert!(matches!(e, DecodeError::MissingId { field: None }), "{e:?}");
}

#[test]
fn tombstone_after_delete() {
    for format in [Format::Auto, Format::Json, Format::Debezium] {
        let m = Mapping {
            id_field: Some("id".into()),
            ..mapping(format)
        };
        for value in [None, Some("")] {
            let event = m.decode(&record(Some(DELETE_KEY), value));
            assert_eq!(
                event.ok(),
                Some(ChangeEvent::Delete {
                    id: "1004".into(),
                    event_time_ms: Some(KAFKA_TS),
                })
            );
        }
    }
    let e = mapping(Format::Auto).decode(&record(None, None));
    assert!(matches!(e, Err(DecodeError::MissingId { .. })), "{e:?}");
    let e = mapping(Format::Auto).decode(&record(Some("null"), None));
    assert!(matches!(e, Err(DecodeError::MissingId { .. })), "{e:?}");
}

#[test]
fn unwrapped_row() {
    let m = Mapping {
        id_field: Some("id".into()),
        ..mapping(Format::Debezium)
    };
    let document = upsert(&m, None, UNWRAPPED);
    assert_eq!(document.id, "1004");
    // Default text: string fields in row order; no event time in the row → Kafka timestamp.
    assert_eq!(document.text, "Anne\n\nKretchmar\n\nannek@noanswer.org");
    assert_eq!(document.event_time_ms, Some(KAFKA_TS));
    assert_eq!(
        upsert(&mapping(Format::Auto), Some("1004"), UNWRAPPED).text,
        document.text
    );
}

#[test]
fn unwrapped_rewrite_delete_and_bookkeeping_fields() {
    let m = mapping(Format::Auto);
    let row = r#"{"id": 7, "name": "pump", "__op": "c", "__table": "parts", "__source_ts_ms": 1718486007000, "__deleted": "false"}"#;
    let document = upsert(&m, Some(r#"{"id": 7}"#), row);
    assert_eq!(
        (document.id.as_str(), document.text.as_str()),
        ("7", "pump")
    );
    assert_eq!(document.event_time_ms, Some(1_718_486_007_000));

    for deleted in [r#""true""#, "true"] {
        let row = format!(r#"{{"id": 7, "name": "pump", "__op": "d", "__deleted": {deleted}}}"#);
        for format in [Format::Auto, Format::Debezium] {
            let m = Mapping {
                id_field: Some("id".into()),
                ..mapping(format)
            };
            assert_eq!(
                m.decode(&record(None, Some(&row))).ok(),
                Some(ChangeEvent::Delete {
                    id: "7".into(),
                    event_time_ms: Some(KAFKA_TS),
                })
            );
        }
        // format = json does not interpret bookkeeping fields.
        let m = mapping(Format::Json);
        assert_eq!(upsert(&m, Some("7"), &row).text, "pump");
    }
}

#[test]
fn json_format_does_not_unwrap_envelopes() {
    let m = Mapping {
        metadata_fields: vec!["op".into(), "after.first_name".into()],
        ..mapping(Format::Json)
    };
    let document = upsert(&m, Some("k"), WITHOUT_SCHEMA);
    assert_eq!(document.id, "k");
    assert_eq!(
        Value::Object(document.metadata),
        json!({"op": "c", "after.first_name": "Anne"})
    );
    assert_eq!(document.event_time_ms, Some(KAFKA_TS));
}

// --- Plain JSON and ids --------------------------------------------------------------------

const ARTICLE: &str = r#"{
    "title": "Flood gates", "body": "Open at dawn.", "id": "a-1", "tenant": "acme",
    "author": {"name": "Kim", "org": {"id": 9}}, "tags": ["water", "ops"],
    "updated_at": "2024-01-02T03:04:05.678Z", "embedding": [0.25, -1, 3], "views": null
}"#;

fn articles() -> Mapping {
    Mapping {
        format: Format::Auto,
        key_format: KeyFormat::Auto,
        id_field: Some("id".into()),
        title_field: Some("title".into()),
        text_fields: vec![
            "title".into(),
            "author.name".into(),
            "body".into(),
            "views".into(),
            "tags".into(),
        ],
        metadata_fields: vec![
            "tenant".into(),
            "author.org.id".into(),
            "views".into(),
            "missing".into(),
        ],
        tenant_field: Some("tenant".into()),
        event_time_field: Some("updated_at".into()),
        vector_field: Some("embedding".into()),
        max_record_bytes: 4096,
    }
}

#[test]
fn plain_json_document() {
    for format in [Format::Auto, Format::Json] {
        let m = Mapping {
            format,
            ..articles()
        };
        assert_eq!(
            upsert(&m, Some("ignored"), ARTICLE),
            Document {
                id: "a-1".into(),
                title: Some("Flood gates".into()),
                text: "Flood gates\n\nKim\n\nOpen at dawn.\n\nwater\nops".into(),
                metadata: json!({"tenant": "acme", "author.org.id": 9})
                    .as_object()
                    .cloned()
                    .unwrap(),
                tenant: Some("acme".into()),
                vector: Some(vec![0.25, -1.0, 3.0]),
                event_time_ms: Some(1_704_164_645_678),
            }
        );
    }
}

#[test]
fn default_text_skips_id_vector_and_non_strings() {
    let m = Mapping {
        text_fields: Vec::new(),
        ..articles()
    };
    // Row order, not alphabetical: title before body; "id", "embedding", objects skipped.
    assert_eq!(
        upsert(&m, None, ARTICLE).text,
        "Flood gates\n\nOpen at dawn.\n\nacme\n\n2024-01-02T03:04:05.678Z"
    );
    let wrapped = r#"{"schema": null, "payload": {"b": "second?", "a": "first?"}}"#;
    assert_eq!(
        upsert(&mapping(Format::Auto), Some("k"), wrapped).text,
        "second?\n\nfirst?"
    );
}

#[test]
fn ids_from_id_field_and_key() {
    let by_field = |field: &str| Mapping {
        id_field: Some(field.into()),
        ..mapping(Format::Json)
    };
    let row =
        r#"{"id": 12, "code": "X", "f": 1.5, "deep": {"pk": "d-1"}, "none": null, "empty": ""}"#;
    assert_eq!(upsert(&by_field("id"), Some("key"), row).id, "12");
    assert_eq!(upsert(&by_field("code"), Some("key"), row).id, "X");
    assert_eq!(upsert(&by_field("f"), Some("key"), row).id, "1.5");
    assert_eq!(upsert(&by_field("deep.pk"), Some("key"), row).id, "d-1");
    // Missing, null or empty → the key.
    assert_eq!(upsert(&by_field("absent"), Some("key"), row).id, "key");
    assert_eq!(upsert(&by_field("none"), Some(r#""k2""#), row).id, "k2");
    assert_eq!(upsert(&by_field("empty"), Some("7"), row).id, "7");
    let e = decode_err(&by_field("absent"), None, row);
    assert!(
        matches!(&e, DecodeError::MissingId { field: Some(f) } if f == "absent"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`absent`"), "{e}");
    let e = decode_err(&by_field("deep"), Some("key"), row);
    assert!(
        matches!(&e, DecodeError::BadField { field, .. } if field == "deep"),
        "{e:?}"
    );

    let by_key = mapping(Format::Json);
    assert_eq!(upsert(&by_key, Some(r#"{"id": 5}"#), row).id, "5");
    assert_eq!(
        upsert(&by_key, Some(r#"{"order": 5, "line": 1}"#), row).id,
        r#"{"order":5,"line":1}"#
    );
    assert_eq!(upsert(&by_key, Some(r#""s-1""#), row).id, "s-1");
    assert_eq!(upsert(&by_key, Some("raw key"), row).id, "raw key");
    let non_utf8 = RawRecord {
        key: Some(&[0xc3, 0x28]),
        ..record(None, Some(row))
    };
    assert!(matches!(
        by_key.decode(&non_utf8),
        Err(DecodeError::MissingId { field: None })
    ));
}

// --- Errors ----------------------------------------------------------------------------------

#[test]
fn oversize_is_checked_before_parsing() {
    let m = Mapping {
        max_record_bytes: 8,
        ..mapping(Format::Auto)
    };
    let e = decode_err(&m, Some("k"), "not json at all");
    assert!(
        matches!(e, DecodeError::Oversize { size: 15, limit: 8 }),
        "{e:?}"
    );
    assert_eq!(e.kind().label(), "oversize");
    assert_eq!(upsert(&m, Some("k"), r#"{"a":1}"#).id, "k");
}

#[test]
fn not_json_and_not_object() {
    let m = mapping(Format::Auto);
    let e = decode_err(&m, Some("k"), "{\"a\": ");
    assert_eq!(e.kind().label(), "not_json");
    assert!(
        e.to_string().starts_with("record value is not valid JSON"),
        "{e}"
    );
    let invalid_utf8 = RawRecord {
        value: Some(b"{\"a\": \"\xff\"}"),
        ..record(Some("k"), None)
    };
    assert_eq!(
        m.decode(&invalid_utf8).map_err(|e| e.kind().label()).err(),
        Some("not_json")
    );
    for (value, found) in [
        ("[1, 2]", "an array"),
        ("\"text\"", "a string"),
        ("3", "a number"),
        ("null", "null"),
    ] {
        let e = decode_err(&m, Some("k"), value);
        assert!(
            matches!(e, DecodeError::NotObject { found: f } if f == found),
            "{value}: {e:?}"
        );
    }
}

#[test]
fn bad_fields_name_the_path() {
    let row = r#"{"id": "x", "t": {"a": 1}, "when": "soon", "body": {"p": 1}, "tenant": [1], "v": [1, "a"]}"#;
    let cases = [
        (
            Mapping {
                title_field: Some("t".into()),
                ..mapping(Format::Json)
            },
            "t",
        ),
        (
            Mapping {
                event_time_field: Some("when".into()),
                ..mapping(Format::Json)
            },
            "when",
        ),
        (
            Mapping {
                text_fields: vec!["id".into(), "body".into()],
                ..mapping(Format::Json)
            },
            "body",
        ),
        (
            Mapping {
                tenant_field: Some("tenant".into()),
                ..mapping(Format::Json)
            },
            "tenant",
        ),
    ];
    for (m, path) in cases {
        let e = decode_err(&m, Some("k"), row);
        assert!(
            matches!(&e, DecodeError::BadField { field, .. } if field == path),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("field `{path}`: expected ")),
            "{e}"
        );
        assert_eq!(e.kind().label(), "bad_field");
    }
    let m = Mapping {
        vector_field: Some("v".into()),
        ..mapping(Format::Json)
    };
    let e = decode_err(&m, Some("k"), row);
    assert_eq!(e.kind().label(), "bad_vector");
    assert_eq!(
        e.to_string(),
        "vector field `v`: element 1 is the string \"a\", expected a number"
    );
}

#[test]
fn debezium_errors() {
    let m = mapping(Format::Debezium);
    let e = decode_err(&m, Some("k"), r#"{"op": "c", "after": null, "source": {}}"#);
    assert!(
        matches!(&e, DecodeError::BadField { field, found, .. } if field == "after" && found == "null"),
        "{e:?}"
    );
    let truncate = r#"{"op": "t", "source": {"ts_ms": 1}, "ts_ms": 2}"#;
    for format in [Format::Debezium, Format::Auto] {
        let e = decode_err(&mapping(format), Some("k"), truncate);
        assert!(
            matches!(&e, DecodeError::UnsupportedOp(op) if op == "t"),
            "{e:?}"
        );
        assert_eq!(e.kind().label(), "unsupported_op");
    }
}

// --- Vectors and times -----------------------------------------------------------------------

#[test]
fn vectors_in_records() {
    let m = Mapping {
        vector_field: Some("embedding".into()),
        ..mapping(Format::Auto)
    };
    let pgvector = r#"{"op": "c", "source": {"ts_ms": 5}, "after": {"embedding": "[1,2.5,-3]"}}"#;
    assert_eq!(
        upsert(&m, Some("k"), pgvector).vector,
        Some(vec![1.0, 2.5, -3.0])
    );
    assert_eq!(
        upsert(&m, Some("k"), r#"{"embedding": [0, 1]}"#).vector,
        Some(vec![0.0, 1.0])
    );
    assert_eq!(upsert(&m, Some("k"), r#"{"embedding": null}"#).vector, None);
    assert_eq!(upsert(&m, Some("k"), r#"{"other": 1}"#).vector, None);
    for bad in [
        r#"[]"#,
        r#"[0, 0]"#,
        r#""[NaN]""#,
        r#"[1e39]"#,
        r#"{"a": 1}"#,
    ] {
        let e = decode_err(&m, Some("k"), &format!(r#"{{"embedding": {bad}}}"#));
        assert!(
            matches!(&e, DecodeError::BadVector { field, .. } if field == "embedding"),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn event_time_heuristics_in_records() {
    let m = Mapping {
        event_time_field: Some("at".into()),
        ..mapping(Format::Json)
    };
    let at = |v: &str| upsert(&m, Some("k"), &format!(r#"{{"at": {v}}}"#)).event_time_ms;
    assert_eq!(at("1704164645"), Some(1_704_164_645_000));
    assert_eq!(at("1704164645678"), Some(1_704_164_645_678));
    assert_eq!(at("1704164645678123"), Some(1_704_164_645_678));
    assert_eq!(at("1704164645678123456"), Some(1_704_164_645_678));
    assert_eq!(at("1704164645.5"), Some(1_704_164_645_500));
    assert_eq!(at(r#""2024-01-02 03:04:05.678""#), Some(1_704_164_645_678));
    assert_eq!(at(r#""2024-01-02""#), Some(1_704_153_600_000));
    // Missing or null → Kafka timestamp (plain JSON has no source time).
    assert_eq!(at("null"), Some(KAFKA_TS));
}

#[test]
fn event_time_fallback_order() {
    let m = Mapping {
        event_time_field: Some("at".into()),
        ..mapping(Format::Debezium)
    };
    let envelope = |after: &str, source_ts: &str, ts: &str| {
        format!(
            r#"{{"op": "u", "after": {after}, "source": {{"ts_ms": {source_ts}}}, "ts_ms": {ts}}}"#
        )
    };
    let time = |value: String, kafka: Option<i64>| {
        let r = RawRecord {
            timestamp_ms: kafka,
            ..record(Some("k"), Some(&value))
        };
        match m.decode(&r) {
            Ok(event) => event.event_time_ms(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        time(envelope(r#"{"at": 1000000000000}"#, "20", "30"), Some(40)),
        Some(1_000_000_000_000)
    );
    assert_eq!(time(envelope("{}", "20", "30"), Some(40)), Some(20));
    assert_eq!(time(envelope("{}", "0", "30"), Some(40)), Some(30));
    assert_eq!(time(envelope("{}", "null", "null"), Some(40)), Some(40));
    assert_eq!(time(envelope("{}", "null", "null"), None), None);
}

// --- Mapping checks and robustness -----------------------------------------------------------

#[test]
fn mapping_check() {
    assert_eq!(Mapping::default().check(), Ok(()));
    assert_eq!(articles().check(), Ok(()));
    assert_eq!(
        Mapping {
            max_record_bytes: 0,
            ..Mapping::default()
        }
        .check(),
        Err(MappingError::ZeroMaxRecordBytes)
    );
    for (m, setting, path) in [
        (
            Mapping {
                id_field: Some(String::new()),
                ..Mapping::default()
            },
            "id_field",
            "",
        ),
        (
            Mapping {
                metadata_fields: vec!["a".into(), "a..b".into()],
                ..Mapping::default()
            },
            "metadata_fields",
            "a..b",
        ),
        (
            Mapping {
                vector_field: Some("v.".into()),
                ..Mapping::default()
            },
            "vector_field",
            "v.",
        ),
    ] {
        assert_eq!(
            m.check(),
            Err(MappingError::BadPath {
                setting,
                path: path.into()
            })
        );
    }
    let e = Mapping {
        text_fields: vec![".x".into()],
        ..Mapping::default()
    }
    .check();
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("`text_fields`: field path `.x` is empty or has an empty segment, expected names like `a` or `a.b`".into())
    );
}

#[test]
fn format_config_names() {
    #[derive(serde::Deserialize)]
    struct C {
        format: Format,
    }
    let parse = |s: &str| serde_json::from_str::<C>(s).map(|c| c.format).ok();
    assert_eq!(parse(r#"{"format": "auto"}"#), Some(Format::Auto));
    assert_eq!(parse(r#"{"format": "json"}"#), Some(Format::Json));
    assert_eq!(parse(r#"{"format": "debezium"}"#), Some(Format::Debezium));
    assert_eq!(parse(r#"{"format": "Debezium"}"#), None);
    assert_eq!(
        serde_json::to_string(&Format::Debezium).ok().as_deref(),
        Some("\"debezium\"")
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let m = articles();
    let samples: [&[u8]; 8] = [
        b"\x00\x01\x02",
        b"{\"op\": \"c\", \"after\": [], \"source\": {}}",
        b"{\"schema\": {}, \"payload\": {\"op\": \"d\", \"before\": 5, \"source\": {}}}",
        b"{\"id\": {\"a\": [[[[]]]]}}",
        b"{\"embedding\": \"[[1]]\", \"id\": 1}",
        b"{\"updated_at\": 1e308, \"id\": 1}",
        b"{\"updated_at\": -9223372036854775808, \"id\": 1}",
        b"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]",
    ];
    for value in samples {
        for key in [
            None,
            Some(&b"\xff"[..]),
            Some(&b"{\"schema\": 1, \"payload\": 2}"[..]),
        ] {
            let r = RawRecord {
                key,
                value: Some(value),
                ..record(None, None)
            };
            let _ = m.decode(&r);
        }
    }
    // The prefixes of a real envelope exercise every truncation point of the parser.
    for end in 0..WITH_SCHEMA.len() {
        let value = WITH_SCHEMA.get(..end).unwrap_or_default();
        let _ = mapping(Format::Auto).decode(&record(Some(DELETE_KEY), Some(value)));
    }
}
