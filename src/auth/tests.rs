//! Token verification against real signatures: these also prove that exactly one
//! jsonwebtoken crypto backend is enabled (with both or neither it panics at first use).

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/auth/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/auth/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../../tests/fixtures/auth/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/fixtures/auth/ec-public.pem");
const ISS: &str = "https://issuer.test";
const AUD: &str = "freshet-test";

fn config(auth_keys: &str) -> Config {
    let text = format!(
        r#"
[auth]
mode = "jwt"
issuer = "{ISS}"
audience = "{AUD}"
{auth_keys}

[[collections]]
name = "a"
topics = ["a"]
"#
    );
    Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new()).expect("valid config")
}

fn hs256() -> Authenticator {
    let c = config("hs256_secret_env = \"TEST_SECRET\"");
    Authenticator::from_config_with_env(&c, |_| Some(SECRET.into()))
        .expect("builds")
        .expect("jwt mode")
}

fn claims(extra: Value) -> Value {
    let now = get_current_timestamp();
    let mut c = json!({"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 600});
    if let (Some(map), Value::Object(more)) = (c.as_object_mut(), extra) {
        map.extend(more);
    }
    c
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).expect("signs")
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

fn invalid(r: Result<Caller, Rejection>) -> String {
    match r {
        Err(Rejection::Invalid(why)) => why,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

/// Unpadded base64url, to hand-craft tokens no library would sign.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[test]
fn hs256_round_trip_gives_principal_and_access() {
    let auth = hs256();
    let token = hs(&claims(
        json!({"collections": ["a", "b"], "tenant": "acme"}),
    ));
    let caller = auth.verify(&token).expect("valid token");
    assert_eq!(caller.principal.sub.as_deref(), Some("alice"));
    assert_eq!(caller.principal.iss.as_deref(), Some(ISS));
    assert_eq!(
        caller.access.collections,
        Some(["a".to_string(), "b".to_string()].into())
    );
    assert_eq!(caller.access.tenant, TenantScope::Only("acme".into()));
}

#[test]
fn minted_dev_tokens_verify() {
    let auth = hs256();
    let dev = DevToken {
        sub: "bob".into(),
        issuer: ISS.into(),
        audience: AUD.into(),
        ttl_secs: 60,
        collections: Some(vec!["a".into()]),
        tenant: Some("t1".into()),
        collections_claim: "collections".into(),
        tenant_claim: "tenant".into(),
    };
    let token = mint_hs256(SECRET.as_bytes(), &dev).expect("mints");
    let caller = auth.verify(&token).expect("verifies");
    assert_eq!(caller.principal.sub.as_deref(), Some("bob"));
    assert_eq!(caller.access.tenant, TenantScope::Only("t1".into()));
    assert!(mint_hs256(b"short", &dev).is_err());
}

#[test]
fn bad_claims_are_rejected_with_a_reason() {
    let auth = hs256();
    let now = get_current_timestamp();
    let cases = [
        (json!({"exp": now - 3600}), "expired"),
        (json!({"nbf": now + 3600}), "not yet valid"),
        (json!({"iss": "https://evil.test"}), "issuer"),
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"collections": 7}), "collections"),
        (json!({"tenant": ["a", "b"]}), "tenant"),
    ];
    for (extra, reason) in cases {
        let why = invalid(auth.verify(&hs(&claims(extra.clone()))));
        assert!(why.contains(reason), "{extra}: {why}");
    }
    let mut no_exp = claims(json!({}));
    if let Some(m) = no_exp.as_object_mut() {
        m.remove("exp");
    }
    assert!(invalid(auth.verify(&hs(&no_exp))).contains("exp"));
    // Within the leeway, a just-expired token still passes.
    assert!(auth.verify(&hs(&claims(json!({"exp": now - 5})))).is_ok());
}

#[test]
fn wrong_key_garbage_and_alg_none_are_rejected() {
    let auth = hs256();
    let other = EncodingKey::from_secret(b"another secret of enough length!!");
    let forged = sign(Algorithm::HS256, &other, None, &claims(json!({})));
    assert!(invalid(auth.verify(&forged)).contains("signature"));
    assert!(invalid(auth.verify("not a token")).contains("malformed"));
    let b64 = |v: Value| base64url(v.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(json!({})))
    );
    invalid(auth.verify(&none));
    // Signature stripped from a valid token.
    let valid = hs(&claims(json!({})));
    let stripped = valid
        .rsplit_once('.')
        .map(|(m, _)| format!("{m}."))
        .unwrap_or_default();
    invalid(auth.verify(&stripped));
}

#[test]
fn rs256_and_es256_from_pem() {
    let rsa = config(&format!("public_key_pem = '''{RSA_PUBLIC}'''"));
    let rsa = Authenticator::from_config_with_env(&rsa, |_| None)
        .expect("builds")
        .expect("jwt");
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key");
    let token = sign(Algorithm::RS256, &key, None, &claims(json!({})));
    assert!(rsa.verify(&token).is_ok());

    let ec = config(&format!("public_key_pem = '''{EC_PUBLIC}'''"));
    let ec = Authenticator::from_config_with_env(&ec, |_| None)
        .expect("builds")
        .expect("jwt");
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key");
    let token = sign(Algorithm::ES256, &key, None, &claims(json!({})));
    assert!(ec.verify(&token).is_ok());
    // Keys of the other type do not verify each other's tokens.
    assert!(rsa.verify(&token).is_err());
}

#[test]
fn hs256_signed_with_the_public_key_is_algorithm_confusion() {
    let c = config(&format!("public_key_pem = '''{RSA_PUBLIC}'''"));
    let auth = Authenticator::from_config_with_env(&c, |_| None)
        .expect("builds")
        .expect("jwt");
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        None,
        &claims(json!({})),
    );
    assert!(invalid(auth.verify(&confused)).contains("no key accepts"));
}

#[test]
fn jwks_keys_are_picked_by_kid_and_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/jwks.json");
    let c = config(&format!("jwks_file = \"{path}\""));
    let auth = Authenticator::from_config_with_env(&c, |_| None)
        .expect("builds")
        .expect("jwt");
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key");
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key");
    let c0 = claims(json!({}));
    assert!(
        auth.verify(&sign(Algorithm::RS256, &rsa, Some("rsa-1"), &c0))
            .is_ok()
    );
    assert!(
        auth.verify(&sign(Algorithm::ES256, &ec, Some("ec-1"), &c0))
            .is_ok()
    );
    assert!(auth.verify(&sign(Algorithm::ES256, &ec, None, &c0)).is_ok());
    // The JWK says RS256 only.
    assert!(
        auth.verify(&sign(Algorithm::RS384, &rsa, Some("rsa-1"), &c0))
            .is_err()
    );
    assert!(
        auth.verify(&sign(Algorithm::ES256, &ec, Some("rsa-1"), &c0))
            .is_err()
    );
    assert!(
        auth.verify(&sign(Algorithm::RS256, &rsa, Some("unknown"), &c0))
            .is_err()
    );
}

#[test]
fn key_setup_errors_name_the_key() {
    let c = config("hs256_secret_env = \"TEST_SECRET\"");
    let err = |r: Result<Option<Authenticator>, AuthSetupError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected a setup error"),
    };
    let missing = err(Authenticator::from_config_with_env(&c, |_| None));
    assert!(missing.starts_with("auth.hs256_secret_env") && missing.contains("TEST_SECRET"));
    let short = err(Authenticator::from_config_with_env(&c, |_| {
        Some("x".into())
    }));
    assert!(short.contains("at least 32"), "{short}");
    let private = config(&format!("public_key_pem = '''{RSA_PRIVATE}'''"));
    let e = err(Authenticator::from_config_with_env(&private, |_| None));
    assert!(
        e.starts_with("auth.public_key_pem") && e.contains("private"),
        "{e}"
    );
    let nofile = config("jwks_file = \"/nonexistent/jwks.json\"");
    let e = err(Authenticator::from_config_with_env(&nofile, |_| None));
    assert!(e.starts_with("auth.jwks_file"), "{e}");
}

#[test]
fn claims_map_to_access() {
    let set = |names: &[&str]| Some(names.iter().map(|s| s.to_string()).collect());
    assert_eq!(collections_claim(None), Ok(set(&[])));
    assert_eq!(
        collections_claim(Some(&json!("a b,c"))),
        Ok(set(&["a", "b", "c"]))
    );
    assert_eq!(collections_claim(Some(&json!(["a"]))), Ok(set(&["a"])));
    assert_eq!(collections_claim(Some(&json!(["a", "*"]))), Ok(None));
    assert_eq!(collections_claim(Some(&json!("*"))), Ok(None));
    assert!(collections_claim(Some(&json!([1]))).is_err());
    assert_eq!(tenant_claim(None), Ok(TenantScope::NoTenant));
    assert_eq!(tenant_claim(Some(&json!(""))), Ok(TenantScope::NoTenant));
    assert_eq!(
        tenant_claim(Some(&json!(42))),
        Ok(TenantScope::Only("42".into()))
    );
    assert!(tenant_claim(Some(&json!({"a": 1}))).is_err());
}

#[test]
fn challenges_and_metadata_follow_rfc_9728() {
    let auth = hs256();
    assert_eq!(auth.resource(), "http://127.0.0.1:8080/mcp");
    assert_eq!(
        auth.challenge(&Rejection::Missing),
        "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp\""
    );
    let bad = auth.challenge(&Rejection::Invalid("a \"quoted\" reason".into()));
    assert!(bad.ends_with(", error=\"invalid_token\", error_description=\"a quoted reason\""));
    let meta = auth.resource_metadata();
    assert_eq!(meta["resource"], "http://127.0.0.1:8080/mcp");
    assert_eq!(meta["authorization_servers"], json!([ISS]));
    assert_eq!(
        metadata_url("https://f.example/"),
        "https://f.example/.well-known/oauth-protected-resource"
    );
}

#[test]
fn stdio_caller_defaults_to_unrestricted() {
    let c = config("hs256_secret_env = \"S\"");
    assert_eq!(Caller::stdio(&c.auth).access, Access::all());
    let mut auth = c.auth.clone();
    auth.stdio.collections = Some(vec!["a".into()]);
    auth.stdio.tenant = Some("t".into());
    auth.stdio.sub = Some("cli".into());
    let caller = Caller::stdio(&auth);
    assert_eq!(caller.principal.sub.as_deref(), Some("cli"));
    assert_eq!(caller.access.collections, Some(["a".to_string()].into()));
    assert_eq!(caller.access.tenant, TenantScope::Only("t".into()));
    auth.stdio.collections = Some(vec!["*".into()]);
    assert_eq!(Caller::stdio(&auth).access.collections, None);
}

#[test]
fn ttls_parse() {
    assert_eq!(parse_ttl("90"), Ok(90));
    assert_eq!(parse_ttl("15m"), Ok(900));
    assert_eq!(parse_ttl("1h"), Ok(3600));
    assert_eq!(parse_ttl("2d"), Ok(172_800));
    assert!(parse_ttl("0s").is_err());
    assert!(parse_ttl("1w").is_err());
    assert!(parse_ttl("h").is_err());
}
