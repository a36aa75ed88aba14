"""LangChain: examples/langchain_agent.py, run in its own virtualenv (.venv-langchain, with
`langchain-mcp-adapters` 0.3 and mcp<2), loads freshet's tools over stdio and over streamable
HTTP with a bearer token, and calls `search` with them. No LLM: the loaded tools are invoked
directly, as an agent would."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

import kafka_util
from freshet_util import FreshetServer, freshet_bin, mint_token, write_config
from kafka_util import REPO_ROOT, Producer

PYTHON = REPO_ROOT / ".venv-langchain" / "bin" / "python"
EXAMPLE = REPO_ROOT / "examples" / "langchain_agent.py"
TOOLS = ["changes", "document_freshness", "get_document", "list_collections", "search"]
SECRET_ENV = "FRESHET_TEST_LC_SECRET"
SECRET = "langchain-test-secret-" + "a7" * 16
ISSUER, AUDIENCE = "https://issuer.langchain.test", "freshet-langchain"


def run_example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not PYTHON.is_file():
        pytest.fail(f"{PYTHON} not found: run scripts/setup.sh", pytrace=False)
    return subprocess.run([str(PYTHON), str(EXAMPLE), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def corpus(broker, tmp_path_factory):
    """A topic with two matching documents and one that does not match; the search word."""
    topic = kafka_util.unique_topic("langchain")
    kafka_util.create_topic(broker, topic, partitions=1)
    word = "zq" + uuid.uuid4().hex[:8]
    with Producer(broker) as p:
        p.send(topic, key="lc-1", value={"id": "lc-1", "title": "Kafka lag runbook", "body": f"{word} lag grows"})
        p.send(topic, key="lc-2", value={"id": "lc-2", "title": "Another note", "body": f"{word} once"})
        p.send(topic, key="lc-3", value={"id": "lc-3", "title": "Unrelated", "body": "nothing to see"})
    work = tmp_path_factory.mktemp("langchain")
    config = write_config(work / "freshet.toml",
                          {"server": {"data_dir": str(work / "data")}, "kafka": {"brokers": broker.bootstrap}},
                          [{"name": "notes", "topics": [topic], "id_field": "id", "title_field": "title"}])
    return {"topic": topic, "word": word, "config": config, "work": work}


def check(done: subprocess.CompletedProcess, corpus: dict) -> None:
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["tools"] == TOOLS
    result = out["search"]
    assert [h["id"] for h in result["results"]] == ["lc-1", "lc-2"]  # "lag" in the title wins
    hit = result["results"][0]
    assert hit["collection"] == "notes" and hit["title"] == "Kafka lag runbook"
    assert hit["freshness"]["topic"] == corpus["topic"] and hit["freshness"]["offset"] == 0
    assert result["freshness"]["caught_up"] is True


def test_langchain_loads_and_calls_tools_over_stdio(corpus):
    done = run_example("--json", "--stdio", "--config", str(corpus["config"]), "--freshet", str(freshet_bin()),
                       f"{corpus['word']} lag")
    check(done, corpus)
    # The sidecar's data_dir is absolute in the config: its indexes are where it says.
    assert list((corpus["work"] / "data" / "collections").glob("*/text/meta.json"))


def test_langchain_over_http_with_a_bearer_token(corpus):
    auth = {"FRESHET_AUTH__MODE": "jwt", "FRESHET_AUTH__ISSUER": ISSUER, "FRESHET_AUTH__AUDIENCE": AUDIENCE,
            "FRESHET_AUTH__HS256_SECRET_ENV": SECRET_ENV, SECRET_ENV: SECRET}
    server = FreshetServer(corpus["config"], corpus["work"], env=auth)
    try:
        server.wait_ready()
        token = mint_token(SECRET_ENV, SECRET, sub="langchain", collections=["notes"], issuer=ISSUER,
                           audience=AUDIENCE)
        # The token from the environment, as the README shows ...
        check(run_example("--json", "--url", server.mcp_url, f"{corpus['word']} lag",
                          env={"FRESHET_TOKEN": token}), corpus)
        # ... or from the flag.
        check(run_example("--json", "--url", server.mcp_url, "--token", token, f"{corpus['word']} lag"), corpus)
        # Without a token the server refuses the connection (401) and the example fails.
        refused = run_example("--json", "--url", server.mcp_url, "anything", env={"FRESHET_TOKEN": ""})
        assert refused.returncode != 0
        assert "401" in refused.stderr, refused.stderr[-2000:]
    finally:
        assert server.stop() == 0
