use std::path::Path;

use super::*;
use crate::decode::Format;
use crate::index::{FieldType, VectorStorage};

/// The smallest valid config; other modules' config tests build on it too.
pub(crate) const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"

[[collections]]
name = "articles"
topics = ["articles"]
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(
        text,
        Path::new("test.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn relative_paths_in_the_file_resolve_against_its_directory() {
    let text = format!(
        "{MINIMAL}\n[collections.embedding]\nmodel_dir = \"../models/m\"\n\
             [server]\ndata_dir = \"data\"\n[audit]\ncheckpoint_path = \"/abs/cp.jsonl\"\n\
             [auth]\npublic_key_pem = \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\"\n"
    );
    let c = Config::from_toml_with_env(
        &text,
        Path::new("/etc/freshet/freshet.toml"),
        [(
            "FRESHET_AUDIT__PATH".to_string(),
            "logs/audit.jsonl".to_string(),
        )],
    )
    .unwrap();
    assert_eq!(
        c.collections[0].embedding.model_dir.as_deref(),
        Some(Path::new("/etc/models/m"))
    );
    assert_eq!(c.server.data_dir, Path::new("/etc/freshet/data"));
    // Absolute paths, PEM text and values from the environment are left as they are.
    assert_eq!(
        c.audit.checkpoint_path.as_deref(),
        Some(Path::new("/abs/cp.jsonl"))
    );
    assert!(
        c.auth
            .public_key_pem
            .as_deref()
            .is_some_and(|p| p.starts_with("-----BEGIN"))
    );
    assert_eq!(c.audit.path.as_deref(), Some(Path::new("logs/audit.jsonl")));
}

#[test]
fn the_default_data_dir_stays_relative_to_the_working_directory() {
    let c = Config::from_toml_with_env(
        MINIMAL,
        Path::new("/etc/freshet/freshet.toml"),
        std::iter::empty(),
    )
    .unwrap();
    assert_eq!(c.server.data_dir, Path::new("data"));
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.server.http_addr, "127.0.0.1:8080");
    assert_eq!(c.collections[0].chunk_tokens, 256);
    assert_eq!(c.collections[0].provider(), Provider::None);
    assert_eq!(c.auth.mode, AuthMode::None);
}

#[test]
fn server_limits_are_checked_and_named() {
    for (key, value) in [
        ("max_query_bytes", "10"),
        ("max_query_terms", "0"),
        ("tool_timeout_ms", "5"),
        ("max_request_bytes", "100"),
        ("max_header_bytes", "100"),
        ("header_read_timeout_ms", "0"),
        ("max_connections", "0"),
        ("max_sessions", "0"),
        ("max_sessions_per_principal", "0"),
        ("session_idle_timeout_ms", "10"),
        ("shutdown_drain_ms", "86400000"),
        ("metrics_addr", "\"localhost\""),
    ] {
        let text = format!("[server]\n{key} = {value}\n{MINIMAL}");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("server.{key}")), "{err}");
    }
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.server.max_query_bytes, 16 * 1024);
    assert_eq!(c.audit.on_failure, AuditOnFailure::Refuse);
    let text = format!("[audit]\non_failure = \"ignore\"\n{MINIMAL}");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("audit.on_failure"), "{err}");
    let text = format!("[audit]\nhmac_key_env = \"FRESHET_TEST_SURELY_UNSET\"\n{MINIMAL}");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("audit.hmac_key_env"), "{err}");
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let text = format!("{MINIMAL}\nformat = \"json\"\nbogus = 1\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[0]"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn bad_enum_value_names_the_key() {
    let text = format!("{MINIMAL}\nformat = \"xml\"\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[0].format"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let text = MINIMAL.replace("topics = [\"articles\"]", "topics = \"articles\"");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[0].topics"), "{err}");
}

#[test]
fn env_overrides_keep_types_and_reach_arrays() {
    let c = parse(
        MINIMAL,
        &[
            ("FRESHET_KAFKA__BROKERS", "10.0.0.1:9092"),
            ("FRESHET_SERVER__MAX_WAIT_MS", "500"),
            ("FRESHET_COLLECTIONS__0__CHUNK_TOKENS", "64"),
            ("FRESHET_KAFKA__PROPERTIES__SECURITY.PROTOCOL", "SASL_SSL"),
            ("FRESHET_KAFKA__PROPERTIES__FETCH.WAIT.MAX.MS", "5"),
            ("FRESHET_JWT_SECRET", "ignored: no double underscore"),
        ],
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
    assert_eq!(c.server.max_wait_ms, 500);
    assert_eq!(c.collections[0].chunk_tokens, 64);
    assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    assert_eq!(c.kafka.properties["fetch.wait.max.ms"], "5");
}

#[test]
fn env_override_of_wrong_type_names_the_key() {
    let err = parse(MINIMAL, &[("FRESHET_SERVER__MAX_WAIT_MS", "soon")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("server.max_wait_ms"), "{err}");
}

#[test]
fn env_override_past_array_end_is_an_error() {
    let err = parse(MINIMAL, &[("FRESHET_COLLECTIONS__3__NAME", "x")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("collections.3.name"), "{err}");
}

#[test]
fn vector_storage_defaults_to_int8_and_a_bad_value_names_the_key() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.collections[0].vector_storage, VectorStorage::Int8);
    let c = parse(&format!("{MINIMAL}vector_storage = \"f32\"\n"), &[]).unwrap();
    assert_eq!(c.collections[0].vector_storage, VectorStorage::F32);
    let err = parse(&format!("{MINIMAL}vector_storage = \"int4\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("vector_storage"), "{err}");
    assert!(err.contains("int4") && err.contains("int8"), "{err}");
}

#[test]
fn min_recall_defaults_to_the_index_default_and_out_of_range_names_the_key() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(
        c.collections[0].hnsw.min_recall as f32,
        crate::index::vector::DEFAULT_MIN_RECALL
    );
    let c = parse(
        &format!("{MINIMAL}[collections.hnsw]\nmin_recall = 0\n"),
        &[],
    )
    .unwrap();
    assert_eq!(c.collections[0].hnsw.min_recall, 0.0);
    for bad in ["1.5", "-0.1", "nan"] {
        let err = parse(
            &format!("{MINIMAL}[collections.hnsw]\nmin_recall = {bad}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("collections[0].hnsw.min_recall"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn field_types_and_change_history_are_checked_naming_the_key() {
    let ok = format!(
        "{MINIMAL}metadata_fields = [\"price\", \"at\"]\n\
             [collections.field_types]\nprice = \"number\"\nat = \"time\"\n\
             [collections.changes]\nmax_entries = 5\n"
    );
    let c = parse(&ok, &[]).unwrap();
    assert_eq!(c.collections[0].field_types["price"], FieldType::Number);
    assert_eq!(c.collections[0].changes.max_entries, 5);
    assert_eq!(c.collections[0].changes.max_age_ms, 24 * 3_600_000);
    let schema = c.collections[0].filter_schema();
    assert_eq!(
        schema.fields().collect::<Vec<_>>(),
        [
            ("price", FieldType::Number),
            ("at", FieldType::Time),
            ("event_time", FieldType::Time),
            ("indexed_at", FieldType::Time)
        ]
    );

    let text = format!("{MINIMAL}[collections.field_types]\nprice = \"number\"\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[0].field_types.price"), "{err}");
    assert!(err.contains("not one of metadata_fields"), "{err}");
    let text = format!(
        "{MINIMAL}metadata_fields = [\"price\"]\n[collections.field_types]\nprice = \"money\"\n"
    );
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("field_types.price"), "{err}");
    let text = format!("{MINIMAL}[collections.changes]\nmax_entries = 0\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("collections[0].changes.max_entries"),
        "{err}"
    );
}

#[test]
fn duplicate_collection_and_shared_topic_are_refused() {
    let text = format!("{MINIMAL}\n[[collections]]\nname = \"articles\"\ntopics = [\"b\"]\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[1].name"), "{err}");
    let text = format!("{MINIMAL}\n[[collections]]\nname = \"b\"\ntopics = [\"articles\"]\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("collections[1].topics[0]"), "{err}");
}

#[test]
fn schema_registry_settings_are_checked() {
    let registry = "[schema_registry]\nurl = \"http://127.0.0.1:8081\"\n";
    for (format, key) in [
        ("format", "collections[0].format"),
        ("key_format", "collections[0].key_format"),
    ] {
        let text = format!("{MINIMAL}\n{format} = \"avro\"\n");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(key) && err.contains("[schema_registry]"),
            "{err}"
        );
        let ok = parse(&format!("{registry}{MINIMAL}\n{format} = \"avro\"\n"), &[]).unwrap();
        assert!(ok.schema_registry.is_some());
    }
    let ok = parse(
        &format!("{registry}{MINIMAL}\nformat = \"json_schema\"\n"),
        &[],
    )
    .unwrap();
    assert_eq!(ok.collections[0].format, Format::JsonSchema);
    let cases = [
        ("url = \"localhost:8081\"", "schema_registry.url"),
        (
            "url = \"http://r\"\nusername_env = \"U\"",
            "schema_registry.password_env",
        ),
        (
            "url = \"http://r\"\npassword_env = \"P\"",
            "schema_registry.username_env",
        ),
        (
            "url = \"http://r\"\nusername_env = \"U\"\npassword_env = \"P\"\ntoken_env = \"T\"",
            "schema_registry.token_env",
        ),
        (
            "url = \"http://r\"\ntoken_env = \" \"",
            "schema_registry.token_env",
        ),
        (
            "url = \"http://r\"\nclient_cert_file = \"c.pem\"",
            "schema_registry.client_cert_file",
        ),
        (
            "url = \"http://r\"\ncache_capacity = 0",
            "schema_registry.cache_capacity",
        ),
        (
            "url = \"http://r\"\ntimeout_ms = 0",
            "schema_registry.timeout_ms",
        ),
        ("url = \"http://r\"\nbogus = 1", "schema_registry"),
    ];
    for (table, key) in cases {
        let text = format!("[schema_registry]\n{table}\n{MINIMAL}");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with(key), "{table}: {err}");
    }
}

#[test]
fn provider_requirements_are_checked() {
    let text = format!("{MINIMAL}\n[collections.embedding]\nprovider = \"precomputed\"\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("collections[0].embedding.provider"),
        "{err}"
    );
    let text = format!("{MINIMAL}\nvector_field = \"embedding\"\n");
    assert_eq!(
        parse(&text, &[]).unwrap().collections[0].provider(),
        Provider::Precomputed
    );
}

#[test]
fn title_boost_defaults_depend_on_the_title_being_text() {
    let with = |extra: &str| {
        parse(&format!("{MINIMAL}{extra}"), &[]).map(|c| c.collections[0].title_boost())
    };
    assert_eq!(with("title_field = \"t\"\n").unwrap(), 0.1);
    assert_eq!(
        with("title_field = \"t\"\ntext_fields = [\"t\", \"b\"]\n").unwrap(),
        0.1
    );
    assert_eq!(
        with("title_field = \"t\"\ntext_fields = [\"b\"]\n").unwrap(),
        2.0
    );
    assert_eq!(
        with("title_field = \"t\"\ntitle_boost = 3.5\n").unwrap(),
        3.5
    );
    let err = with("title_boost = -1.0\n").unwrap_err().to_string();
    assert!(err.starts_with("collections[0].title_boost"), "{err}");
}

#[test]
fn fusion_defaults_to_scores_and_checks_its_weight() {
    let with = |extra: &str| {
        parse(&format!("{MINIMAL}{extra}"), &[])
            .map(|c| (c.collections[0].fusion, c.collections[0].fusion_bm25_weight))
    };
    assert_eq!(with("").unwrap(), (Fusion::Score, 0.55));
    assert_eq!(
        with("fusion = \"rrf\"\nfusion_bm25_weight = 0.3\n").unwrap(),
        (Fusion::Rrf, 0.3)
    );
    let err = with("fusion_bm25_weight = 1.5\n").unwrap_err().to_string();
    assert!(
        err.starts_with("collections[0].fusion_bm25_weight"),
        "{err}"
    );
    let err = with("fusion = \"max\"\n").unwrap_err().to_string();
    assert!(err.contains("fusion"), "{err}");
}

#[test]
fn auth_none_is_refused_off_loopback() {
    let text = format!("[server]\nhttp_addr = \"0.0.0.0:8080\"\n{MINIMAL}");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("auth.mode"), "{err}");
    let text = format!(
        "[server]\nhttp_addr = \"10.1.2.3:8080\"\n[auth]\nmode = \"jwt\"\nissuer = \"https://i\"\n\
             hs256_secret_env = \"S\"\n{MINIMAL}"
    );
    let c = parse(&text, &[]).unwrap();
    assert_eq!(c.resource_url(), "http://10.1.2.3:8080/mcp");
    assert_eq!(c.audience(), "http://10.1.2.3:8080/mcp");
    assert_eq!(c.authorization_servers(), ["https://i"]);
}

#[test]
fn jwt_mode_needs_issuer_key_and_a_resource_on_wildcard_addresses() {
    let jwt = |extra: &str| {
        format!(
            "[server]\nhttp_addr = \"0.0.0.0:8080\"\n[auth]\nmode = \"jwt\"\n{extra}\n{MINIMAL}"
        )
    };
    let err = |text: String| parse(&text, &[]).unwrap_err().to_string();
    assert!(err(jwt("hs256_secret_env = \"S\"")).starts_with("auth.issuer"));
    assert!(err(jwt("issuer = \"https://i\"")).starts_with("auth:"));
    let keyed = "issuer = \"https://i\"\nhs256_secret_env = \"S\"";
    assert!(err(jwt(keyed)).starts_with("auth.resource"));
    let bad_url = format!("{keyed}\nresource = \"freshet.example/mcp\"");
    assert!(err(jwt(&bad_url)).starts_with("auth.resource"));
    let good = format!("{keyed}\nresource = \"https://f.example/mcp\"\naudience = \"freshet\"");
    let c = parse(&jwt(&good), &[]).unwrap();
    assert_eq!(c.resource_url(), "https://f.example/mcp");
    assert_eq!(c.audience(), "freshet");
}

#[test]
fn stdio_principal_names_known_collections() {
    let text = format!("{MINIMAL}\n[auth.stdio]\ncollections = [\"articles\", \"nope\"]\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("auth.stdio.collections[1]"), "{err}");
    let c = parse(MINIMAL, &[("FRESHET_AUTH__STDIO__TENANT", "acme")]).unwrap();
    assert_eq!(c.auth.stdio.tenant.as_deref(), Some("acme"));
}

#[test]
fn audit_defaults_to_the_data_dir() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.audit_path(), Path::new("data/audit.jsonl"));
    assert!(!c.audit.redact_query);
    let err = parse(MINIMAL, &[("FRESHET_AUDIT__MAX_BYTES", "10")]).unwrap_err();
    assert!(err.to_string().starts_with("audit.max_bytes"), "{err}");
}

#[test]
fn bad_toml_reports_position() {
    let err = parse("[kafka\nbrokers=1", &[]).unwrap_err().to_string();
    assert!(err.contains("test.toml") && err.contains("line"), "{err}");
}

#[test]
fn effective_config_round_trips() {
    let c = parse(MINIMAL, &[]).unwrap();
    let again = parse(&c.to_toml(), &[]).unwrap();
    assert_eq!(again.collections[0].name, "articles");
}
