"""An embedding server that is down when freshet stops: the wait for it ends on the
pipeline's cancellation (SIGTERM exits cleanly at once), and the records that waited are
read again at the next start — nothing lost. Real binary, real broker, a real HTTP server
speaking the OpenAI embeddings API."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import Producer

pytestmark = pytest.mark.anyio

DIM = 8


def fake_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 + 0.01 for b in digest[:DIM]]


class Embeddings(BaseHTTPRequestHandler):
    """`POST /v1/embeddings` as OpenAI answers it, or 503 while the server is `down`."""

    down = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.down.is_set():
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
        out = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def embeddings():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def wait_for_log(server: FreshetServer, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} in the log:\n{server.log()[-3000:]}")
        time.sleep(0.1)


async def test_sigterm_while_the_embedder_is_down_exits_at_once_and_loses_nothing(broker, embeddings, tmp_path):
    topic = kafka_util.unique_topic("outage")
    kafka_util.create_topic(broker, topic)
    config = write_config(tmp_path / "freshet.toml", {
        "kafka": {"brokers": broker.bootstrap, "watermark_interval_ms": 100},
        "snapshot": {"interval_ms": 300},
    }, [{
        "name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
        "text_fields": ["body"],
        "embedding": {"provider": "openai", "url": embeddings, "model": "fake", "dimensions": DIM},
    }])
    with Producer(broker) as p:
        p.send_many(topic, [(f"d{i}", {"id": f"d{i}", "title": f"t{i}", "body": f"body number {i}"})
                            for i in range(5)])
        Embeddings.down.set()
        server = FreshetServer(config, tmp_path)
        try:
            wait_for_log(server, "embedding request failed, retrying")
            started = time.monotonic()
        finally:
            code = server.stop()  # SIGTERM; killed after 15 s
        took = time.monotonic() - started
        log = server.log()
        assert code == 0, log[-3000:]
        # The client's retries alone would wait 15 s, the pipeline's then up to 30 s each.
        assert took < 10, f"stopped after {took:.1f} s"
        assert "stopped retrying (shutting down)" in log or "stopping while the embedder is unavailable" in log, log
        assert "did not stop within" not in log

        Embeddings.down.clear()
        again = FreshetServer(config, tmp_path)
        try:
            again.wait_ready()
            async with http_client(again.mcp_url) as client:
                res = await call(client, "search", {"query": "body number 3", "collection": "docs", "mode": "vector",
                                                    "consistency": "head", "k": 5})
                assert res["mode"] == "vector" and len(res["results"]) == 5, res
                info = (await call(client, "list_collections", {}))["collections"][0]
            assert info["documents"] == 5, "none skipped as poison, none lost"
        finally:
            assert again.stop() == 0
