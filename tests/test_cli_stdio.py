"""The binary's other faces: `check-config`, `freshet stdio` with the real MCP client, a clean
stdout on stdio, and restarts that replay the topic into the same view."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import kafka_util
from freshet_util import FreshetServer, call, freshet_bin, http_client, stdio_client, write_config
from kafka_util import Producer

pytestmark = pytest.mark.anyio


def check_config(path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(freshet_bin()), "check-config", "--config", str(path)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=30)


GOOD = """
[kafka]
brokers = "127.0.0.1:9092"

[[collections]]
name = "articles"
topics = ["articles"]
vector_field = "embedding"
"""


@pytest.mark.parametrize("text, key", [
    (GOOD.replace('name = "articles"', 'name = "articles"\nformat = "xml"'), "collections[0].format"),
    (GOOD.replace('topics = ["articles"]', 'topics = "articles"'), "collections[0].topics"),
    (GOOD + "\nbogus = 1\n", "collections[0]"),
    (GOOD.replace("[kafka]", "[server]\nhttp_addr = \"0.0.0.0:80\"\n[kafka]"), "auth.mode"),
    (GOOD.replace("[kafka]", "[server]\nhttp_addr = \"nowhere\"\n[kafka]"), "server.http_addr"),
    (GOOD + '\n[collections.embedding]\nprovider = "openai"\n', "collections[0].embedding"),
    (GOOD.replace('vector_field = "embedding"', 'id_field = "a..b"'), "collections[0].id_field"),
    ("[kafka\n", "line 1"),
])
def test_check_config_names_the_bad_key_and_exits_2(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = check_config(path)
    assert done.returncode == 2, done
    assert key in done.stderr, done.stderr
    assert done.stdout == ""


def test_check_config_prints_effective_config_with_env_overrides(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    done = check_config(path, {"FRESHET_KAFKA__BROKERS": "kafka-1:9092", "FRESHET_COLLECTIONS__0__CHUNK_TOKENS": "64"})
    assert done.returncode == 0, done.stderr
    assert 'brokers = "kafka-1:9092"' in done.stdout
    assert "chunk_tokens = 64" in done.stdout
    assert 'http_addr = "127.0.0.1:8080"' in done.stdout  # defaults are shown
    bad = check_config(path, {"FRESHET_SERVER__MAX_WAIT_MS": "soon"})
    assert bad.returncode == 2 and "server.max_wait_ms" in bad.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    done = check_config(tmp_path / "nope.toml")
    assert done.returncode == 2 and "nope.toml" in done.stderr


MODEL_DIR = kafka_util.REPO_ROOT / "models" / "all-MiniLM-L6-v2"
LOCAL_MODEL = GOOD.replace('vector_field = "embedding"', '[collections.embedding]\nmodel_dir = "{model_dir}"')


def serve_start(path: Path, tmp_path: Path) -> subprocess.CompletedProcess | None:
    """`freshet serve` on this config: its exit if it stops within 10 s, None if it runs."""
    env = {**os.environ, "FRESHET_SERVER__HTTP_ADDR": "127.0.0.1:0",
           "FRESHET_KAFKA__BROKERS": "127.0.0.1:1"}
    proc = subprocess.Popen([str(freshet_bin()), "serve", "--config", str(path)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=30)
        return None


@pytest.mark.parametrize("case, key", [
    ("missing model", "collections[0].embedding.model_dir"),
    ("bad kafka property", "kafka.properties"),
    ("data dir under a file", "server.data_dir"),
])
def test_check_config_rejects_what_serve_rejects_without_the_network(tmp_path, case, key):
    if case == "missing model":
        text = LOCAL_MODEL.format(model_dir="no-such-model")
    elif case == "bad kafka property":
        text = GOOD + '\n[kafka.properties]\n"securty.protocol" = "SSL"\n'
    else:
        (tmp_path / "afile").write_text("")
        text = "[server]\ndata_dir = \"afile/data\"\n" + GOOD
    path = tmp_path / "bad.toml"
    path.write_text(text)
    checked = check_config(path)
    assert checked.returncode == 2, checked
    assert checked.stderr.startswith(f"freshet: invalid config: {key}"), checked.stderr
    assert checked.stdout == ""
    served = serve_start(path, tmp_path)
    assert served is not None and served.returncode != 0, "serve started with a config check-config refused"


def test_relative_paths_in_a_config_resolve_against_its_directory(tmp_path):
    """A sidecar is started from wherever its client runs: the model directory is found
    relative to the config file, not the working directory."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "model").symlink_to(MODEL_DIR)
    path = config_dir / "freshet.toml"
    path.write_text("[server]\ndata_dir = \"state\"\n" + LOCAL_MODEL.format(model_dir="model"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([str(freshet_bin()), "check-config", "--config", "../etc/freshet.toml"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f'model_dir = "{config_dir}/model"' in done.stdout, done.stdout
    assert f'data_dir = "{config_dir}/state"' in done.stdout, done.stdout
    # serve, started from the same place, opens that model and keeps running.
    assert serve_start(Path("../etc/freshet.toml"), elsewhere) is None
    assert (config_dir / "state").is_dir() and not (elsewhere / "state").exists()


@pytest.mark.parametrize("key", ["server.http_addr", "server.metrics_addr"])
def test_serve_on_a_busy_port_says_so_once_and_at_once(tmp_path, key):
    """Before the pipeline starts: here the broker is unreachable, which would take seconds."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = f"127.0.0.1:{squatter.getsockname()[1]}"
        path = tmp_path / "serve.toml"
        path.write_text(GOOD.replace('"127.0.0.1:9092"', '"127.0.0.1:1"'))
        env = {**os.environ, "FRESHET_SERVER__DATA_DIR": str(tmp_path / "data"),
               "FRESHET_SERVER__HTTP_ADDR": "127.0.0.1:0"}
        env["FRESHET_" + key.upper().replace(".", "__")] = busy
        started = time.monotonic()
        done = subprocess.run([str(freshet_bin()), "serve", "--config", str(path)], capture_output=True,
                              text=True, env=env, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "cannot listen" in line]
    assert lines == [f"freshet: cannot listen on {busy} ({key}): Address already in use (os error 98)"], \
        done.stderr
    assert took < 3, took


@pytest.fixture
def notes_config(broker, tmp_path):
    topic = kafka_util.unique_topic("stdio")
    kafka_util.create_topic(broker, topic, partitions=1)
    config = write_config(tmp_path / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}},
                          [{"name": "notes", "topics": [topic], "title_field": "title"}])
    return topic, config


async def test_stdio_serves_tools_to_the_python_sdk(broker, notes_config):
    topic, config = notes_config
    token = "zq" + uuid.uuid4().hex[:8]
    with Producer(broker) as p:
        p.send(topic, key="n1", value={"title": "Sidecar note", "body": f"stdio carries {token}"})
    async with stdio_client(config) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"search", "get_document", "document_freshness", "changes", "list_collections"}
        res = await call(client, "search", {"query": token, "consistency": "head"})
        assert [h["id"] for h in res["results"]] == ["n1"]
        assert res["results"][0]["freshness"]["topic"] == topic
        doc = await call(client, "get_document", {"collection": "notes", "id": "n1"})
        assert doc["document"]["title"] == "Sidecar note"


@pytest.mark.parametrize("env, stderr_has", [
    ({"FRESHET_LOG": "debug"}, b"DEBUG"),
    # librdkafka's own debug output, from its threads and its built-in logger (before freshet's
    # log callback is installed): all of it must go to stderr.
    ({"FRESHET_LOG": "trace", "FRESHET_KAFKA__PROPERTIES__DEBUG": "all"}, b"librdkafka v"),
    # A broker that refuses connections: librdkafka's connection errors, logged again and again.
    ({"FRESHET_LOG": "debug", "FRESHET_KAFKA__BROKERS": "127.0.0.1:1"}, b"127.0.0.1:1"),
], ids=["debug", "librdkafka-debug-all", "broker-down"])
def test_stdio_writes_only_protocol_to_stdout(notes_config, env, stderr_has, tmp_path):
    """Every stdout line is JSON-RPC (freshet also points fd 1 at stderr for everything but
    the MCP transport, so even a dependency's stray print cannot reach the client)."""
    _, config = notes_config
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "search", "arguments": {"query": "anything", "k": 0}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    # stderr to a file: a pipe nobody drains fills up with librdkafka's debug output and
    # blocks the server.
    err_file = open(tmp_path / "stderr.log", "w+b")
    proc = subprocess.Popen([str(freshet_bin()), "stdio", "--config", str(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file,
                            env={**os.environ, **env}, cwd=config.parent)
    out_lines = []
    try:
        for m in messages:
            proc.stdin.write((json.dumps(m) + "\n").encode())
            proc.stdin.flush()
            if "id" in m:
                out_lines.append(proc.stdout.readline())
        # fd 1 of the server now points at its stderr; the protocol uses a private duplicate.
        fd1 = Path(f"/proc/{proc.pid}/fd/1")
        if fd1.parent.is_dir():
            assert os.readlink(fd1) == str(tmp_path / "stderr.log")
        rest, _ = proc.communicate(input=b"", timeout=20)  # EOF ends the session and the process
    finally:
        if proc.poll() is None:
            proc.kill()
        err_file.seek(0)
        err = err_file.read()
        err_file.close()
    out_lines += [line for line in rest.splitlines(keepends=True) if line.strip()]
    replies = [json.loads(line) for line in out_lines]  # every stdout line is JSON-RPC
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[1]["result"]["isError"] is True
    assert stderr_has in err, "logs go to stderr"
    assert proc.returncode == 0


async def test_restart_replays_to_the_same_view(broker, tmp_path):
    """With snapshots off, a restarted server re-reads the topic from the beginning. Replaying
    upserts, updates and deletes must give the same documents at the same offsets."""
    topic = kafka_util.unique_topic("replay")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = write_config(tmp_path / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}},
                          [{"name": "docs", "topics": [topic], "id_field": "id", "metadata_fields": ["v"]}])
    with Producer(broker) as p:
        # As with keyed producers, one id always lands in one partition.
        for i in range(40):
            key = i % 15
            p.send(topic, key=f"k{key}", partition=key % 2, value={"id": f"k{key}", "body": f"version {i}", "v": i})
        for key in range(0, 15, 4):
            p.send(topic, key=f"k{key}", partition=key % 2, value=None)  # tombstones for some ids
    ids = [f"k{i}" for i in range(15)]

    async def state(server):
        async with http_client(server.mcp_url) as client:
            fresh = await call(client, "document_freshness", {"collection": "docs", "ids": ids})
            listing = await call(client, "list_collections", {})
        return ({d["id"]: (d["status"], d.get("freshness", {}).get("offset")) for d in fresh["documents"]},
                listing["collections"][0]["documents"])

    no_snapshots = {"FRESHET_SNAPSHOT__INTERVAL_MS": "0"}
    first = FreshetServer(config, tmp_path, env=no_snapshots)
    try:
        first.wait_ready()
        before = await state(first)
    finally:
        first.stop()
    second = FreshetServer(config, tmp_path, env=no_snapshots)
    try:
        second.wait_ready()
        after = await state(second)
    finally:
        second.stop()
    assert before == after
    statuses, count = after
    assert count == 11
    assert {k for k, (status, _) in statuses.items() if status == "not_found"} == {"k0", "k4", "k8", "k12"}
