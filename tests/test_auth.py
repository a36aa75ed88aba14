"""Authentication, authorization and the audit log, end to end: real broker, real `freshet
serve` with `auth.mode = "jwt"`, real MCP client sending bearer tokens.

Three collections share the module's servers: `docs` and `wiki` (JSON with a `tenant` field
and precomputed vectors) and `public` (no tenant field). Tokens are minted with `freshet
token` where it can, and with PyJWT (or by hand) for the malformed and hostile ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import subprocess
import time
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp.shared.exceptions import MCPError

import kafka_util
from freshet_util import (FreshetServer, ToolError, call, freshet_bin, http_client, mint_token,
                          stdio_client, write_config)
from kafka_util import Producer

pytestmark = pytest.mark.anyio

ISSUER = "https://issuer.freshet.test"
AUDIENCE = "freshet-test"
SECRET_ENV = "FRESHET_TEST_JWT_SECRET"
SECRET = "test-only-secret-" + "5f1c" * 8
DIM = 8
TENANTS = ["t1", "t2", "t3"]
TENANTED = ["docs", "wiki"]
ALL_COLLECTIONS = TENANTED + ["public"]
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "raw-test", "version": "1"}}}


# --- tokens ---------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "tester", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, **extra}


def hs256(payload: dict[str, Any], secret: bytes = SECRET.encode(), header: dict | None = None) -> str:
    """Signs by hand, so any bytes can be the secret (PyJWT refuses PEM keys for HMAC)."""
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(payload).encode())}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """RSA and EC key pairs, their public PEMs and a JWKS file holding both."""
    d = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def pem(key) -> str:
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True) | {"kid": "rsa-1", "use": "sig", "alg": "RS256"}
    ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True) | {"kid": "ec-1", "use": "sig"}
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    rsa_pem = d / "rsa.pub.pem"
    rsa_pem.write_text(pem(rsa_key))
    return {"rsa": rsa_key, "ec": ec_key, "rsa_pem_path": rsa_pem, "rsa_pem": pem(rsa_key),
            "ec_pem": pem(ec_key), "jwks": jwks}


@pytest.fixture(scope="module")
def topics(broker):
    names = {c: kafka_util.unique_topic(f"auth-{c}") for c in ALL_COLLECTIONS}
    for c, t in names.items():
        kafka_util.create_topic(broker, t, partitions=2 if c in TENANTED else 1)
    return names


def collections_config(topics: dict[str, str]) -> list[dict[str, Any]]:
    tenanted = [{
        "name": c, "topics": [topics[c]], "format": "json", "id_field": "id", "title_field": "title",
        "text_fields": ["title", "body"], "metadata_fields": ["category", "tenant"], "tenant_field": "tenant",
        "vector_field": "embedding", "embedding": {"provider": "precomputed", "dimensions": DIM},
    } for c in TENANTED]
    return tenanted + [{"name": "public", "topics": [topics["public"]], "format": "json", "id_field": "id",
                        "text_fields": ["body"], "metadata_fields": ["category"]}]


def start(broker, topics, work: Path, auth: dict[str, Any], audit: dict[str, Any] | None = None) -> FreshetServer:
    sections: dict[str, dict[str, Any]] = {"kafka": {"brokers": broker.bootstrap}, "auth": auth}
    if audit:
        sections["audit"] = audit
    config = write_config(work / "freshet.toml", sections, collections_config(topics))
    srv = FreshetServer(config, work, env={SECRET_ENV: SECRET})
    srv.wait_ready()
    return srv


def stop(srv: FreshetServer) -> None:
    code = srv.stop()
    assert code == 0, f"freshet exited with {code}:\n{srv.log()[-3000:]}"


@pytest.fixture(scope="module")
def corpus(broker, topics):
    """~110 documents: 3 tenants x 2 tenanted collections (plus a few without a tenant, and
    ids reused across collections with another tenant), and 10 public ones. Returns
    {(collection, id): tenant-or-None}."""
    rng = random.Random(20261122)
    docs: dict[tuple[str, str], str | None] = {}
    records: dict[str, list[dict[str, Any]]] = {c: [] for c in ALL_COLLECTIONS}

    def add(coll: str, doc_id: str, tenant: str | None) -> None:
        vec = [rng.uniform(-1, 1) for _ in range(DIM)]
        value = {"id": doc_id, "title": f"Doc {doc_id}", "category": rng.choice(["alpha", "beta"]),
                 "body": f"shared words about {doc_id.replace('-', ' ')} in {coll}", "embedding": vec}
        if tenant is not None:
            value["tenant"] = tenant
        docs[(coll, doc_id)] = tenant
        records[coll].append(value)

    for i in range(90):
        coll = rng.choice(TENANTED)
        tenant = None if i % 15 == 0 else rng.choice(TENANTS)
        add(coll, f"d{i}", tenant)
        if i % 9 == 0:  # the same id in the other collection, owned by someone else
            other = "wiki" if coll == "docs" else "docs"
            add(other, f"d{i}", rng.choice([t for t in TENANTS if t != tenant]))
    for i in range(10):
        value = {"id": f"p{i}", "body": f"shared words public note {i}", "category": "alpha"}
        docs[("public", f"p{i}")] = None
        records["public"].append(value)

    with Producer(broker) as p:
        for coll, values in records.items():
            for v in values:
                part = zlib.crc32(v["id"].encode()) % 2 if coll in TENANTED else 0
                p.send(topics[coll], key=v["id"], value=v, partition=part)
    return docs


@pytest.fixture(scope="module")
def server(broker, topics, keys, corpus, tmp_path_factory):
    """HS256 secret and the JWKS file, explicit audience."""
    srv = start(broker, topics, tmp_path_factory.mktemp("auth-main"), {
        "mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
        "hs256_secret_env": SECRET_ENV, "jwks_file": str(keys["jwks"]),
    })
    try:
        yield srv
    finally:
        stop(srv)


def token_for(server: FreshetServer, sub: str = "tester", collections: list[str] | None = None,
              tenant: str | None = None, ttl: str = "10m") -> str:
    return mint_token(SECRET_ENV, SECRET, sub=sub, collections=collections, tenant=tenant, ttl=ttl,
                      issuer=ISSUER, audience=AUDIENCE)


async def wait_until_visible(server: FreshetServer, corpus: dict) -> None:
    """Polls per tenant until every document is applied (the corpus was produced just before)."""
    deadline = time.monotonic() + 60
    groups: dict[tuple[str, str | None], list[str]] = {}
    for (coll, doc_id), tenant in corpus.items():
        if coll == "public" or tenant is not None:
            groups.setdefault((coll, tenant), []).append(doc_id)
    for (coll, tenant), ids in groups.items():
        tok = token_for(server, collections=["*"], tenant=tenant)
        async with http_client(server.mcp_url, headers=bearer(tok)) as client:
            while True:
                res = await call(client, "document_freshness", {"collection": coll, "ids": ids})
                if all(d["status"] == "found" for d in res["documents"]):
                    break
                assert time.monotonic() < deadline, f"{coll}/{tenant} not applied: {res}"
                await anyio.sleep(0.2)


# --- 401s -----------------------------------------------------------------------------

def metadata_url(srv: FreshetServer) -> str:
    return f"{srv.url}/.well-known/oauth-protected-resource/mcp"


def post_mcp(srv: FreshetServer, headers: dict[str, str] | None = None, url: str | None = None) -> httpx2.Response:
    return httpx2.post(url or srv.mcp_url, json=INITIALIZE, headers={**MCP_HEADERS, **(headers or {})}, timeout=10)


BAD_TOKENS = {
    "garbage": lambda k: "not-a-jwt",
    "three garbage parts": lambda k: "abc.def.ghi",
    "expired": lambda k: hs256(claims(exp=int(time.time()) - 3600)),
    "not yet valid": lambda k: hs256(claims(nbf=int(time.time()) + 3600)),
    "wrong issuer": lambda k: hs256(claims(iss="https://evil.test")),
    "wrong audience": lambda k: hs256(claims(aud="someone-else")),
    "no audience": lambda k: hs256({c: v for c, v in claims().items() if c != "aud"}),
    "wrong secret": lambda k: hs256(claims(), secret=b"another-secret-that-is-long-enough!!"),
    "alg none": lambda k: unsigned(claims()),
    "alg NONE": lambda k: unsigned(claims(), alg="NONE"),
    "signature stripped": lambda k: hs256(claims()).rsplit(".", 1)[0] + ".",
    "RS256 by an unknown key": lambda k: jwt.encode(
        claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
        headers={"kid": "rsa-1"}),
    "HS256 signed with the JWKS RSA public key": lambda k: hs256(claims(), secret=k["rsa_pem"].encode()),
    "HS256 with a JWKS kid": lambda k: hs256(claims(), header={"alg": "HS256", "kid": "rsa-1"},
                                             secret=k["rsa_pem"].encode()),
}


def test_request_without_token_gets_the_mcp_challenge(server):
    res = post_mcp(server)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url(server)}"'
    assert res.json()["error"] == "unauthorized"
    assert res.headers.get("x-request-id")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_rejected_with_invalid_token(server, keys, kind):
    res = post_mcp(server, bearer(BAD_TOKENS[kind](keys)))
    assert res.status_code == 401, res.text
    challenge = res.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{metadata_url(server)}", error="invalid_token"'), challenge
    assert "mcp-session-id" not in res.headers


def test_metrics_need_a_token_that_may_read_everything(server):
    # The series name every collection and topic: not for anyone, nor for a narrower token.
    res = httpx2.get(f"{server.url}/metrics")
    assert res.status_code == 401 and "www-authenticate" in res.headers
    narrow = token_for(server, collections=["public"])
    res = httpx2.get(f"{server.url}/metrics", headers=bearer(narrow))
    assert res.status_code == 403 and "every collection" in res.text
    full = token_for(server, collections=["*"])
    res = httpx2.get(f"{server.url}/metrics", headers=bearer(full))
    assert res.status_code == 200 and "freshet_ready" in res.text


def test_rejections_are_counted_in_metrics(server):
    scrape = bearer(token_for(server, collections=["*"]))

    def count(reason: str) -> float:
        for line in httpx2.get(f"{server.url}/metrics", headers=scrape).text.splitlines():
            if line.startswith(f'freshet_auth_rejections_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        return 0.0

    missing, invalid = count("missing_token"), count("invalid_token")
    assert post_mcp(server).status_code == 401
    assert post_mcp(server, bearer("garbage")).status_code == 401
    assert count("missing_token") == missing + 1
    assert count("invalid_token") == invalid + 1


def test_token_only_counts_in_the_authorization_header(server):
    good = token_for(server, collections=["*"], tenant="t1")
    assert post_mcp(server, bearer(good)).status_code == 200
    for url in (f"{server.mcp_url}?access_token={good}", f"{server.mcp_url}?token={good}"):
        res = post_mcp(server, url=url)
        assert res.status_code == 401
        assert "error=" not in res.headers["www-authenticate"]  # treated as no token at all
    for header in ({"Authorization": f"Basic {good}"}, {"Authorization": good},
                   {"Authorization": f"Bearer {good}", "X-Ignored": "1", "Cookie": f"token={good}"}):
        status = post_mcp(server, header).status_code
        assert status == (200 if header["Authorization"].startswith("Bearer") else 401), header


def test_protected_resource_metadata(server):
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        res = httpx2.get(server.url + path, timeout=10)
        assert res.status_code == 200
        meta = res.json()
        assert meta["resource"] == server.mcp_url
        assert meta["authorization_servers"] == [ISSUER]
        assert meta["bearer_methods_supported"] == ["header"]
    assert httpx2.get(server.url + "/healthz", timeout=10).status_code == 200  # probes need no token


def test_origin_validation_still_applies_with_auth(server):
    headers = bearer(token_for(server, collections=["*"], tenant="t1"))
    evil = post_mcp(server, {**headers, "Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert post_mcp(server, {**headers, "Origin": "http://localhost:5173"}).status_code == 200
    assert post_mcp(server, {"Origin": "http://evil.example"}).status_code in (401, 403)


# --- key types ------------------------------------------------------------------------

async def readable(srv: FreshetServer, token: str) -> list[str]:
    async with http_client(srv.mcp_url, headers=bearer(token)) as client:
        res = await call(client, "list_collections", {})
    return sorted(c["name"] for c in res["collections"])


async def test_rs256_and_es256_via_jwks(server, keys):
    rs = jwt.encode(claims(collections=["docs"]), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(collections="wiki public"), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    assert await readable(server, rs) == ["docs"]
    assert await readable(server, es) == ["public", "wiki"]
    # The JWK names RS256: another RSA algorithm with the same key is refused.
    rs384 = jwt.encode(claims(), keys["rsa"], algorithm="RS384", headers={"kid": "rsa-1"})
    assert post_mcp(server, bearer(rs384)).status_code == 401


@pytest.fixture(scope="module")
def pem_servers(broker, topics, keys, corpus, tmp_path_factory):
    """One server per PEM key: RSA from a file, EC inline. Neither sets `audience`, so
    tokens must carry the resource URL (MCP's audience binding)."""
    rsa_srv = start(broker, topics, tmp_path_factory.mktemp("auth-rsa"),
                    {"mode": "jwt", "issuer": ISSUER, "public_key_pem": str(keys["rsa_pem_path"])})
    try:
        ec_srv = start(broker, topics, tmp_path_factory.mktemp("auth-ec"),
                       {"mode": "jwt", "issuer": ISSUER, "public_key_pem": keys["ec_pem"]})
        try:
            yield rsa_srv, ec_srv
        finally:
            stop(ec_srv)
    finally:
        stop(rsa_srv)


async def test_rs256_and_es256_via_pem(pem_servers, keys):
    rsa_srv, ec_srv = pem_servers
    rs = jwt.encode(claims(aud=rsa_srv.mcp_url, collections=["*"]), keys["rsa"], algorithm="RS256")
    es = jwt.encode(claims(aud=ec_srv.mcp_url, collections=["public"]), keys["ec"], algorithm="ES256")
    assert await readable(rsa_srv, rs) == sorted(ALL_COLLECTIONS)
    assert await readable(ec_srv, es) == ["public"]
    # Crossed over, each key refuses the other's tokens; the default audience is the resource.
    assert post_mcp(ec_srv, bearer(rs)).status_code == 401
    assert post_mcp(rsa_srv, bearer(es)).status_code == 401
    wrong_aud = jwt.encode(claims(collections=["*"]), keys["rsa"], algorithm="RS256")
    assert post_mcp(rsa_srv, bearer(wrong_aud)).status_code == 401
    # Algorithm confusion: HS256 "signed" with the server's own public key.
    confused = hs256(claims(aud=rsa_srv.mcp_url), secret=keys["rsa_pem"].encode())
    res = post_mcp(rsa_srv, bearer(confused))
    assert res.status_code == 401 and 'error="invalid_token"' in res.headers["www-authenticate"]


# --- isolation ------------------------------------------------------------------------

def allowed(cols: Any) -> set[str]:
    if cols is None:
        return set()
    names = cols.replace(",", " ").split() if isinstance(cols, str) else cols
    return set(ALL_COLLECTIONS) if "*" in names else set(names) & set(ALL_COLLECTIONS)


def visible(coll: str, doc_tenant: str | None, cols: Any, tenant: str | None) -> bool:
    if coll not in allowed(cols):
        return False
    return coll == "public" or (tenant is not None and doc_tenant == tenant)


async def test_randomized_tenant_and_collection_isolation(server, corpus):
    """Random tokens x random calls over every tool and the resource template: nothing is
    ever returned across a tenant or collection boundary, and what may be seen is seen."""
    await wait_until_visible(server, corpus)
    seed = int(os.environ.get("FRESHET_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"seed {seed} (set FRESHET_TEST_SEED to replay)")
    keys_all = sorted(corpus)
    leaks: list[str] = []
    returned = 0
    checked_complete = 0

    def check(where: str, coll: str, doc_id: str, cols: Any, tenant: str | None) -> None:
        nonlocal returned
        returned += 1
        if (coll, doc_id) not in corpus or not visible(coll, corpus[(coll, doc_id)], cols, tenant):
            leaks.append(f"{where}: {coll}/{doc_id} (tenant {corpus.get((coll, doc_id))}) "
                         f"for collections={cols!r} tenant={tenant!r}")

    col_choices: list[Any] = [None, [], ["docs"], ["wiki"], ["public"], ["docs", "wiki"], ["docs", "public"],
                              ["*"], "docs wiki", "wiki,public", "*"]
    for n in range(24):
        cols = rng.choice(col_choices)
        tenant = rng.choice(TENANTS + [None, "t-nobody"])
        sub = f"rand-{n}"
        if isinstance(cols, list) and rng.random() < 0.6:
            tok = token_for(server, sub=sub, collections=cols, tenant=tenant)
        else:
            extra: dict[str, Any] = {"sub": sub}
            if cols is not None:
                extra["collections"] = cols
            if tenant is not None:
                extra["tenant"] = tenant
            tok = hs256(claims(**extra))
        mode = "legacy" if n % 4 == 0 else "auto"
        async with http_client(server.mcp_url, mode=mode, headers=bearer(tok)) as client:
            listing = await call(client, "list_collections", {})
            assert {c["name"] for c in listing["collections"]} == allowed(cols)

            # Completeness: everything visible in a collection is found by a broad search.
            for coll in sorted(allowed(cols)):
                res = await call(client, "search", {"query": "shared", "collection": coll, "mode": "bm25", "k": 100})
                got = {h["id"] for h in res["results"]}
                want = {i for (c, i), t in corpus.items() if c == coll and visible(c, t, cols, tenant)}
                assert got == want, f"{coll} for tenant {tenant!r}: missing {want - got}, extra {got - want}"
                for h in res["results"]:
                    check("search(complete)", h["collection"], h["id"], cols, tenant)
                checked_complete += 1

            for _ in range(14):
                what = rng.choice(["search", "search", "search", "get", "freshness", "resource"])
                coll, doc_id = rng.choice(keys_all)
                if what == "search":
                    args: dict[str, Any] = {
                        "query": rng.choice(["shared", "words", doc_id, f"{doc_id} shared", "public note"]),
                        "mode": rng.choice(["bm25", "vector", "hybrid"]),
                        "k": rng.choice([3, 10, 100]),
                        "vector": [rng.uniform(-1, 1) for _ in range(DIM)],
                    }
                    target = rng.choice([None, "docs", "wiki", "public"])
                    if target:
                        args["collection"] = target
                    flt = rng.choice([None, {"tenant": rng.choice(TENANTS)}, {"tenant": TENANTS},
                                      {"category": "alpha"}, {"category": ["alpha", "beta"]}])
                    if flt:
                        args["filter"] = flt
                    try:
                        res = await call(client, "search", args)
                    except ToolError as e:
                        assert target is None or target not in allowed(cols) or "filter" in args \
                            or args["mode"] == "vector" or "readable" in str(e), f"{args}: {e}"
                        continue
                    for h in res["results"]:
                        check(f"search {args}", h["collection"], h["id"], cols, tenant)
                elif what == "get":
                    try:
                        res = await call(client, "get_document", {"collection": coll, "id": doc_id})
                    except ToolError as e:
                        assert not visible(coll, corpus[(coll, doc_id)], cols, tenant), f"{coll}/{doc_id}: {e}"
                        continue
                    d = res["document"]
                    check("get_document", d["collection"], d["id"], cols, tenant)
                    assert d["metadata"].get("tenant") == corpus[(coll, doc_id)]
                elif what == "freshness":
                    ids = sorted({i for c, i in rng.sample(keys_all, 6)})
                    try:
                        res = await call(client, "document_freshness", {"collection": coll, "ids": ids})
                    except ToolError:
                        assert coll not in allowed(cols)
                        continue
                    for d in res["documents"]:
                        seen = d["status"] == "found"
                        should = (coll, d["id"]) in corpus and visible(coll, corpus[(coll, d["id"])], cols, tenant)
                        if seen:
                            check("document_freshness", coll, d["id"], cols, tenant)
                        assert seen == should, f"{coll}/{d['id']}: {d['status']}"
                else:
                    uri = f"freshet://{coll}/{doc_id}"
                    try:
                        read = await client.read_resource(uri)
                    except MCPError as e:
                        assert not visible(coll, corpus[(coll, doc_id)], cols, tenant), f"{uri}: {e}"
                        continue
                    body = json.loads(read.contents[0].text)
                    check("resource", body["document"]["collection"], body["document"]["id"], cols, tenant)
    assert leaks == [], "\n".join(leaks[:20])
    assert returned > 100 and checked_complete > 10, (returned, checked_complete)


async def test_a_document_whose_tenant_changes_moves_with_it(server, topics, broker):
    doc_id = f"mover-{uuid.uuid4().hex[:8]}"
    word = "zq" + uuid.uuid4().hex[:10]
    part = zlib.crc32(doc_id.encode()) % 2
    t1 = bearer(token_for(server, collections=["docs"], tenant="t1"))
    t2 = bearer(token_for(server, collections=["docs"], tenant="t2"))

    def value(tenant: str) -> dict[str, Any]:
        return {"id": doc_id, "title": "Mover", "body": f"{word} travels", "tenant": tenant,
                "category": "alpha", "embedding": [1.0] + [0.0] * (DIM - 1)}

    async def sees(headers: dict[str, str]) -> dict[str, bool]:
        async with http_client(server.mcp_url, headers=headers) as client:
            out = {}
            for mode in ("bm25", "vector", "hybrid"):
                res = await call(client, "search", {"query": word, "collection": "docs", "mode": mode, "k": 100,
                                                    "vector": [1.0] + [0.0] * (DIM - 1), "consistency": "head"})
                out[mode] = doc_id in [h["id"] for h in res["results"]]
            try:
                await call(client, "get_document", {"collection": "docs", "id": doc_id})
                out["get"] = True
            except ToolError:
                out["get"] = False
            return out

    with Producer(broker) as p:
        p.send(topics["docs"], key=doc_id, value=value("t1"), partition=part)
        assert set((await sees(t1)).values()) == {True}
        assert set((await sees(t2)).values()) == {False}
        p.send(topics["docs"], key=doc_id, value=value("t2"), partition=part)
        assert set((await sees(t2)).values()) == {True}
        assert set((await sees(t1)).values()) == {False}


async def test_stdio_runs_as_the_configured_principal(broker, topics, corpus, tmp_path):
    config = write_config(tmp_path / "freshet.toml", {
        "kafka": {"brokers": broker.bootstrap},
        "auth": {"stdio": {"sub": "cli-user", "collections": ["docs"], "tenant": "t2"}},
    }, collections_config(topics))
    async with stdio_client(config) as client:
        listing = await call(client, "list_collections", {})
        assert [c["name"] for c in listing["collections"]] == ["docs"]
        want = {i for (c, i), t in corpus.items() if c == "docs" and t == "t2"}
        deadline = time.monotonic() + 30
        while True:
            res = await call(client, "search", {"query": "shared", "collection": "docs", "mode": "bm25", "k": 100,
                                                "consistency": "head"})
            got = {h["id"] for h in res["results"]}
            assert got <= want, f"other tenants leaked: {got - want}"
            if got == want or time.monotonic() > deadline:
                break
        assert got == want
        err = (await client.call_tool("search", {"query": "shared", "collection": "wiki"})).content[0].text
        assert "unknown collection `wiki`" in err
    lines = [json.loads(l) for l in (tmp_path / "data" / "audit.jsonl").read_text().splitlines()]
    calls = [l for l in lines if l["tool"] == "search"]
    assert calls and all(l["transport"] == "stdio" and l["principal"]["sub"] == "cli-user" for l in calls)
    assert calls[-1]["outcome"] == "tool_error" and "unknown collection" in calls[-1]["error"]
    assert calls[0]["arguments"]["query"] == "shared"  # redact_query is off by default
    assert calls[0]["client"]  # the stdio client's clientInfo


# --- audit ----------------------------------------------------------------------------

def audit_files(work: Path) -> list[Path]:
    data = work / "data"
    rotated = sorted(p for p in data.iterdir() if p.name.startswith("audit.jsonl.") and p.name[12:].isdigit())
    return rotated + [data / "audit.jsonl"]


def audit_verify(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(freshet_bin()), "audit", "verify", *map(str, files)],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def audited(broker, topics, corpus, tmp_path_factory):
    """A server with a small audit file (so it rotates) and redacted queries, driven through
    accepted, failing and rejected calls, then stopped so its log is complete. Returns the
    work dir and what the client saw."""
    work = tmp_path_factory.mktemp("auth-audit")
    srv = start(broker, topics, work, {"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                       "hs256_secret_env": SECRET_ENV},
                {"max_bytes": 4096, "redact_query": True})
    tok = token_for(srv, sub="auditor", collections=["docs", "public"], tenant="t1")

    async def drive() -> dict[str, Any]:
        async with http_client(srv.mcp_url, mode="legacy", headers=bearer(tok)) as client:
            found = await call(client, "search", {"query": "shared", "collection": "docs", "mode": "bm25", "k": 5})
            assert found["results"], "the corpus has t1 documents in docs"
            first = found["results"][0]
            await call(client, "get_document", {"collection": "docs", "id": first["id"]})
            await call(client, "document_freshness", {"collection": "docs", "ids": [first["id"], "no-such-id"]})
            await client.read_resource(f"freshet://docs/{quote(first['id'], safe='')}")
            await client.call_tool("search", {"query": "x", "collection": "nope"})
            for _ in range(40):  # enough to rotate a 4 KiB file several times
                await call(client, "list_collections", {})
        return found

    try:
        assert post_mcp(srv).status_code == 401
        assert post_mcp(srv, bearer(hs256(claims(exp=1)))).status_code == 401
        assert post_mcp(srv, {**bearer(tok), "Origin": "http://evil.example"}).status_code == 403
        found = anyio.run(drive)
    finally:
        stop(srv)
    return work, found


def test_audit_lines_record_calls_and_rejections(audited):
    work, found = audited
    files = audit_files(work)
    assert len(files) >= 4, files
    lines = [json.loads(l) for f in files for l in f.read_text().splitlines()]
    assert [l["seq"] for l in lines] == list(range(1, len(lines) + 1))
    for l in lines:
        assert {"time", "request_id", "transport", "principal", "client", "tool", "arguments", "results",
                "latency_ms", "outcome", "seq", "prev"} <= set(l), l
        assert l["transport"] == "http"

    rejected = [l for l in lines if l["outcome"] == "rejected"]
    assert [l["status"] for l in rejected] == [401, 401, 403], rejected
    assert rejected[0]["principal"] is None and rejected[0]["http"] == {"method": "POST", "path": "/mcp"}
    assert "no bearer token" in rejected[0]["error"] and "expired" in rejected[1]["error"]
    # Refused by its Origin before the token is even looked at.
    assert rejected[2]["principal"] is None and "server.allowed_origins" in rejected[2]["error"]

    searches = [l for l in lines if l["tool"] == "search"]
    ok = next(l for l in searches if l["outcome"] == "ok")
    assert ok["principal"] == {"sub": "auditor", "iss": ISSUER}
    assert ok["client"]  # the MCP client's clientInfo name and version
    assert ok["arguments"] == {"query": "[redacted]", "collection": "docs", "mode": "bm25", "k": 5}
    got = [(r["collection"], r["id"], r["topic"], r["partition"], r["offset"]) for r in ok["results"]]
    want = [(h["collection"], h["id"], h["freshness"]["topic"], h["freshness"]["partition"], h["freshness"]["offset"])
            for h in found["results"]]
    assert got == want
    assert ok["latency_ms"] >= 0
    first = (found["results"][0]["collection"], found["results"][0]["id"])
    for tool in ("get_document", "document_freshness", "resources/read"):
        line = next(l for l in lines if l["tool"] == tool)
        assert [(r["collection"], r["id"]) for r in line["results"]] == [first], line
    failed = next(l for l in searches if l["outcome"] == "tool_error")
    assert "unknown collection `nope`" in failed["error"] and failed["results"] == []
    assert len({l["request_id"] for l in lines}) == len(lines)

    done = audit_verify(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"intact: {len(lines)} lines in {len(files)} file(s)" in done.stdout


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "drop file"])
def test_audit_verify_detects_tampering(audited, tmp_path, tamper):
    work, _ = audited
    copies = []
    for f in audit_files(work):
        shutil.copy(f, tmp_path / f.name)
        copies.append(tmp_path / f.name)
    assert audit_verify(*copies).returncode == 0
    target = copies[1]
    text = target.read_text().splitlines(keepends=True)
    assert len(text) >= 3, text
    if tamper == "edit":
        text[1] = text[1].replace('"transport":"http"', '"transport":"stdio"', 1)
        expected_line = 3
    elif tamper == "delete":
        del text[1]
        expected_line = 2
    elif tamper == "reorder":
        text[0], text[1] = text[1], text[0]
        expected_line = 1
    if tamper == "drop file":
        copies.remove(target)
        target, expected_line = copies[1], 1
    else:
        target.write_text("".join(text))
    done = audit_verify(*copies)
    assert done.returncode == 1, done.stdout
    assert done.stdout.startswith(f"broken: {target}:{expected_line}:"), done.stdout


def test_check_config_reports_a_missing_secret(tmp_path, topics):
    config = write_config(tmp_path / "freshet.toml", {
        "kafka": {"brokers": "127.0.0.1:9"},
        "auth": {"mode": "jwt", "issuer": ISSUER, "hs256_secret_env": "FRESHET_TEST_UNSET_SECRET"},
    }, collections_config(topics))
    env = {k: v for k, v in os.environ.items() if k != "FRESHET_TEST_UNSET_SECRET"}
    done = subprocess.run([str(freshet_bin()), "check-config", "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2
    assert "auth.hs256_secret_env" in done.stderr and "FRESHET_TEST_UNSET_SECRET" in done.stderr
