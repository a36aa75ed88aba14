"""The README's Python snippets and the example clients, run as a reader would run them: the
snippets verbatim (only the server's URL differs), the examples from the project's
virtualenvs; a stopped server is one line on stderr, not a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

import kafka_util
from freshet_util import freshet_bin, mint_token, serving, write_config
from kafka_util import REPO_ROOT, Producer, free_port

README = REPO_ROOT / "README.md"
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
LANGCHAIN_PYTHON = str(REPO_ROOT / ".venv-langchain" / "bin" / "python")
SECRET_ENV = "FRESHET_TEST_EXAMPLES_SECRET"
SECRET = "examples-test-secret-" + "e5" * 16
ISSUER, AUDIENCE = "https://issuer.example", "freshet"


def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)


@pytest.fixture(scope="module")
def corpus(broker, tmp_path_factory):
    topic = kafka_util.unique_topic("examples")
    kafka_util.create_topic(broker, topic, partitions=1)
    word = "zq" + uuid.uuid4().hex[:8]
    with Producer(broker) as p:
        p.send(topic, key="doc-1", value={"id": "doc-1", "title": "Consumer lag runbook", "tenant": "acme",
                                          "body": f"{word} consumer lag", "revision": 0})
    work = tmp_path_factory.mktemp("examples")
    # The README's names: collection `articles`, tenant field `tenant`.
    config = write_config(work / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}},
                          [{"name": "articles", "topics": [topic], "id_field": "id", "title_field": "title",
                            "tenant_field": "tenant", "metadata_fields": ["revision"]}])
    return {"topic": topic, "word": word, "config": config, "work": work, "broker": broker}


@pytest.fixture(scope="module")
def server(corpus):
    with serving(corpus["config"], corpus["work"]) as srv:
        yield srv


def run_snippet(code: str, url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = code.replace("http://127.0.0.1:8080/mcp", url)
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**(env or {}), "PATH": "/usr/bin:/bin"})


def test_readme_client_snippet_runs_as_written(server):
    snippet = next(b for b in readme_python_blocks() if "Authorization" not in b)
    done = run_snippet(snippet, server.mcp_url)
    assert done.returncode == 0, done.stderr
    assert "'results'" in done.stdout and "doc-1" in done.stdout, done.stdout
    # The server said ready (/readyz 200) before this ran: an answer from the view as it is
    # (consistency "any") says caught up too.
    assert "'caught_up': True" in done.stdout, done.stdout


def test_readme_token_snippet_runs_as_written(corpus):
    snippet = next(b for b in readme_python_blocks() if "Authorization" in b)
    env = {"FRESHET_AUTH__MODE": "jwt", "FRESHET_AUTH__ISSUER": ISSUER, "FRESHET_AUTH__AUDIENCE": AUDIENCE,
           "FRESHET_AUTH__HS256_SECRET_ENV": SECRET_ENV, SECRET_ENV: SECRET}
    work = corpus["work"] / "jwt"
    work.mkdir()
    with serving(corpus["config"], work, env=env) as srv:
        token = mint_token(SECRET_ENV, SECRET, sub="alice", collections=["articles"], tenant="acme",
                           issuer=ISSUER, audience=AUDIENCE)
        done = run_snippet(snippet, srv.mcp_url, env={"TOKEN": token})
    assert done.returncode == 0, done.stderr
    assert "doc-1" in done.stdout, done.stdout


def test_query_example_shows_what_changed_since_the_previous_search(server, corpus, tmp_path):
    state = tmp_path / "hits.json"
    query = [PYTHON, "examples/query.py", corpus["word"], "--url", server.mcp_url, "--mode", "bm25",
             "--state", str(state)]
    first = subprocess.run(query, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "doc-1" in first.stdout and "changed since" not in first.stdout, first.stdout
    with Producer(corpus["broker"]) as p:
        at = p.send(corpus["topic"], key="doc-1",
                    value={"id": "doc-1", "title": "Consumer lag runbook", "tenant": "acme",
                           "body": f"{corpus['word']} consumer lag, revised", "revision": 1})
    # consistency=head: the update is searchable by the time this answers.
    second = subprocess.run(query, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert (f"changed since the previous search: {corpus['topic']}/0@0 -> {corpus['topic']}/0@{at.offset}, "
            "revision 0 -> 1") in second.stdout, second.stdout
    # The watermark line says what its numbers are.
    assert re.search(rf"{corpus['topic']}/0 applied={at.offset} end={at.offset + 1} lag=0", second.stdout), \
        second.stdout


@pytest.mark.parametrize("client", ["query", "langchain"])
def test_example_against_a_stopped_server_says_so_in_one_line(client):
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    if client == "query":
        args = [PYTHON, "examples/query.py", "consumer lag", "--url", url]
    else:
        args = [LANGCHAIN_PYTHON, "examples/langchain_agent.py", "--url", url, "consumer lag"]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach freshet at {url}: All connection attempts failed (is it running?)"], done.stderr


def test_query_example_outside_its_virtualenv_says_which_python_to_use():
    # The interpreter running pytest is the venv's; a bare one with no site packages stands in
    # for a system Python without the mcp SDK.
    done = subprocess.run([sys.executable, "-S", "-I", "examples/query.py", "x"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "bash scripts/setup.sh" in done.stderr and ".venv/bin/python" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_readme_audit_verify_command_runs_as_written(server, corpus):
    """The README's `audit verify` line, with its shell glob, in a data directory whose writer
    is running (so the lock file `audit.jsonl.lock` is there for the glob to match)."""
    command = next(line.split("#")[0].strip() for line in README.read_text().splitlines()
                   if line.startswith("freshet audit verify data/audit.jsonl.*"))
    done = subprocess.run([PYTHON, "examples/query.py", corpus["word"], "--url", server.mcp_url,
                           "--mode", "bm25"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = corpus["work"] / "data"
    assert (data / "audit.jsonl.lock").exists()
    bin_dir = str(freshet_bin().parent)
    done = subprocess.run(["bash", "-c", command], cwd=corpus["work"], capture_output=True, text=True,
                          timeout=60, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("intact: "), done.stdout
    assert "skipped data/audit.jsonl.lock" in done.stderr, done.stderr
