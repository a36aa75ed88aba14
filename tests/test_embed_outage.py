"""An embedding server that is down when freshet stops: the wait for it ends on the
pipeline's cancellation (SIGTERM exits cleanly at once), and the records that waited are
read again at the next start — nothing lost. Real binary, real broker, a real HTTP server
speaking the OpenAI embeddings API."""

from __future__ import annotations

import threading
import time

import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import Producer
from test_hardening import DIM, FakeEmbedder, embeddings_server

pytestmark = pytest.mark.anyio


class Embeddings(FakeEmbedder):
    """The hardening tests' OpenAI-compatible embedder, answering 503 while `down`."""

    down = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if not self.down.is_set():
            super().do_POST()
            return
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def embeddings():
    with embeddings_server(Embeddings) as url:
        yield url


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
