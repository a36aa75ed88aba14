"""The MCP clients the README tells people to use, run as it shows them (pinned in
tests/clients/, installed by scripts/setup.sh into .tools/clients/):

- the MCP Inspector CLI listing tools and calling `search`, with and without a bearer token;
- mcp-remote, the stdio-to-HTTP bridge Claude Desktop runs for a remote freshet with a token,
  spawned the way Claude Desktop spawns it (command, args and env verbatim) and driven by a
  real MCP client over stdio.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from mcp import Client, StdioServerParameters

import kafka_util
from freshet_util import FreshetServer, call, mint_token, write_config
from kafka_util import REPO_ROOT, Producer

pytestmark = pytest.mark.anyio
BIN = REPO_ROOT / ".tools" / "clients" / "node_modules" / ".bin"
TOOLS = {"changes", "document_freshness", "get_document", "list_collections", "search"}
SECRET_ENV = "FRESHET_TEST_CLIENTS_SECRET"
SECRET = "clients-test-secret-" + "c3" * 16
ISSUER, AUDIENCE = "https://issuer.clients.test", "freshet-clients"


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} not found: run scripts/setup.sh (it needs Node >= 20 and npm)", pytrace=False)
    return str(path)


@pytest.fixture(scope="module")
def corpus(broker, tmp_path_factory):
    topic = kafka_util.unique_topic("clients")
    kafka_util.create_topic(broker, topic, partitions=1)
    word = "zq" + uuid.uuid4().hex[:8]
    with Producer(broker) as p:
        p.send(topic, key="k1", value={"id": "k1", "title": "Consumer lag runbook", "body": f"{word} consumer lag"})
        p.send(topic, key="k2", value={"id": "k2", "title": "Other", "body": "unrelated"})
    work = tmp_path_factory.mktemp("clients")
    config = write_config(work / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}},
                          [{"name": "articles", "topics": [topic], "id_field": "id", "title_field": "title"}])
    return {"word": word, "config": config, "work": work}


@pytest.fixture(scope="module")
def open_server(corpus):
    srv = FreshetServer(corpus["config"], corpus["work"])
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def jwt_server(corpus):
    env = {"FRESHET_AUTH__MODE": "jwt", "FRESHET_AUTH__ISSUER": ISSUER, "FRESHET_AUTH__AUDIENCE": AUDIENCE,
           "FRESHET_AUTH__HS256_SECRET_ENV": SECRET_ENV, SECRET_ENV: SECRET}
    work = corpus["work"] / "jwt"  # its own data_dir (audit log, persisted indexes)
    work.mkdir()
    srv = FreshetServer(corpus["config"], work, env=env)
    try:
        srv.wait_ready()
        srv.token = mint_token(SECRET_ENV, SECRET, sub="clients", collections=["articles"],
                               issuer=ISSUER, audience=AUDIENCE)
        yield srv
    finally:
        assert srv.stop() == 0


def inspector(*args: str, tmp_path) -> subprocess.CompletedProcess:
    # Its catalog and OAuth storage (~/.mcp-inspector/) go to the test's folder.
    env = {**os.environ, "HOME": str(tmp_path), "MCP_CATALOG_PATH": str(tmp_path / "catalog.json")}
    return subprocess.run([tool("mcp-inspector"), "--cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def search_args(word: str) -> list[str]:
    return ["--method", "tools/call", "--tool-name", "search", "--tool-arg", f"query={word} consumer lag",
            "--tool-arg", "mode=bm25", "--tool-arg", "k=3"]


def test_inspector_cli_lists_tools_and_searches(open_server, corpus, tmp_path):
    listed = inspector(open_server.mcp_url, "--method", "tools/list", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {t["name"] for t in json.loads(listed.stdout)["tools"]} == TOOLS
    called = inspector(open_server.mcp_url, *search_args(corpus["word"]), tmp_path=tmp_path)
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)["structuredContent"]
    assert [h["id"] for h in result["results"]] == ["k1"]  # k=3 arrived as a number
    assert result["mode"] == "bm25" and result["freshness"]["caught_up"] is True


def test_inspector_cli_sends_a_bearer_header(jwt_server, corpus, tmp_path):
    header = ["--header", f"Authorization: Bearer {jwt_server.token}"]
    listed = inspector(jwt_server.mcp_url, "--method", "tools/list", *header, tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {t["name"] for t in json.loads(listed.stdout)["tools"]} == TOOLS
    called = inspector(jwt_server.mcp_url, *search_args(corpus["word"]), *header, tmp_path=tmp_path)
    assert called.returncode == 0, called.stderr
    assert [h["id"] for h in json.loads(called.stdout)["structuredContent"]["results"]] == ["k1"]
    # Without a token freshet answers 401 and points to its OAuth metadata; the Inspector
    # would start an OAuth flow, which needs a terminal.
    refused = inspector(jwt_server.mcp_url, "--method", "tools/list", tmp_path=tmp_path)
    assert refused.returncode != 0 and "auth_required" in refused.stderr, refused.stderr


async def test_mcp_remote_bridges_claude_desktop_to_a_server_with_a_token(jwt_server, corpus, tmp_path):
    # The README's Claude Desktop entry, with the pinned install instead of `npx -y mcp-remote`:
    # the header is given as "Authorization:${AUTH_HEADER}" (no spaces inside args) and
    # mcp-remote expands it from the entry's env.
    params = StdioServerParameters(
        command=tool("mcp-remote"),
        args=[jwt_server.mcp_url, "--header", "Authorization:${AUTH_HEADER}"],
        env={"AUTH_HEADER": f"Bearer {jwt_server.token}", "PATH": os.environ["PATH"],
             # mcp-remote keeps OAuth state under ~/.mcp-auth: not in the real home.
             "HOME": str(tmp_path), "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth")},
    )
    async with Client(params, mode="legacy") as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        result = await call(client, "search", {"query": f"{corpus['word']} consumer lag", "mode": "bm25"})
        assert [h["id"] for h in result["results"]] == ["k1"]
