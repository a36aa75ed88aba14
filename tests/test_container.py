"""The container files, checked without a container engine (CI has none):

- the Dockerfile builds with the same cargo command CI runs natively (.ci/run);
- the settings examples/docker-compose.yml gives freshet (on top of the image's ENV) pass
  `freshet check-config`, and without JWT auth the 0.0.0.0 listener is refused;
- freshet run natively with exactly those settings answers the image's health check and a
  client holding a token minted as the compose file's comment shows.
"""

from __future__ import annotations

import os
import re
import subprocess

import httpx2
import pytest
import yaml

import kafka_util
from freshet_util import FreshetServer, call, freshet_bin, http_client
from kafka_util import REPO_ROOT, Producer, free_port
from test_cli_stdio import check_config

pytestmark = pytest.mark.anyio
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO_ROOT / "examples" / "docker-compose.yml").read_text())
RELEASE_BUILD = "cargo build --release --locked --bins"


def image_env() -> dict[str, str]:
    """The runtime stage's ENV (`ENV A=1 \\ B=2`)."""
    runtime = DOCKERFILE.split("FROM debian:bookworm-slim", 1)[1]
    block = re.search(r"^ENV (.+?)(?:\n(?!\s)|\Z)", runtime, re.M | re.S).group(1)
    return dict(pair.split("=", 1) for pair in block.replace("\\\n", " ").split())


def compose_env(secret: str) -> dict[str, str]:
    env = {k: str(v) for k, v in COMPOSE["services"]["freshet"]["environment"].items()}
    env["FRESHET_JWT_SECRET"] = secret  # compose takes it from the shell: ${FRESHET_JWT_SECRET:?...}
    return env


def mounted_config():
    """The host file compose mounts at /etc/freshet/freshet.toml."""
    [mount] = [v for v in COMPOSE["services"]["freshet"]["volumes"] if v.endswith(":/etc/freshet/freshet.toml:ro")]
    return (REPO_ROOT / "examples" / mount.split(":")[0]).resolve()


def test_the_image_builds_with_the_command_ci_runs():
    assert f"RUN {RELEASE_BUILD}" in DOCKERFILE
    assert RELEASE_BUILD in (REPO_ROOT / ".ci" / "run").read_text()
    assert COMPOSE["services"]["freshet"]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert 'CMD ["serve", "--config", "/etc/freshet/freshet.toml"]' in DOCKERFILE
    assert "USER freshet" in DOCKERFILE and "EXPOSE 8080" in DOCKERFILE


def test_compose_settings_pass_check_config_and_need_jwt():
    env = {**image_env(), **compose_env("x" * 64)}
    assert env["FRESHET_SERVER__HTTP_ADDR"] == "0.0.0.0:8080"
    done = check_config(mounted_config(), env)
    assert done.returncode == 0, done.stderr
    assert 'http_addr = "0.0.0.0:8080"' in done.stdout and 'mode = "jwt"' in done.stdout
    assert 'brokers = "kafka:19092"' in done.stdout
    # Without auth the public listener is refused, naming the key.
    no_auth = {k: v for k, v in env.items() if not k.startswith("FRESHET_AUTH__")}
    refused = check_config(mounted_config(), no_auth)
    assert refused.returncode == 2 and "auth.mode" in refused.stderr


async def test_compose_settings_serve_the_health_check_and_a_token_holder(broker, tmp_path):
    topic = kafka_util.unique_topic("articles")
    kafka_util.create_topic(broker, topic, partitions=2)
    with Producer(broker) as p:
        p.send(topic, key="doc-1", value={"id": "doc-1", "title": "Consumer lag runbook",
                                          "body": "consumer lag grows", "updated_at": "2026-01-01T00:00:00Z"})
    port = free_port()
    env = {**image_env(), **compose_env("compose-secret-" + "9" * 32),
           # As in the container, with the broker and port of this test.
           "FRESHET_SERVER__HTTP_ADDR": f"0.0.0.0:{port}", "FRESHET_SERVER__DATA_DIR": str(tmp_path / "data"),
           "FRESHET_KAFKA__BROKERS": broker.bootstrap, "FRESHET_COLLECTIONS__0__TOPICS": f'["{topic}"]',
           "FRESHET_AUTH__RESOURCE": f"http://localhost:{port}/mcp"}
    server = FreshetServer(mounted_config(), tmp_path, env=env)
    server.url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready()
        # The image's HEALTHCHECK: curl -fsS http://127.0.0.1:8080/healthz
        assert httpx2.get(f"{server.url}/healthz").text == "ok\n"
        # Other containers call it by its service name.
        assert httpx2.get(f"{server.url}/healthz", headers={"Host": f"freshet:{port}"}).status_code == 200
        token = subprocess.run(
            [str(freshet_bin()), "token", "--secret-env", "FRESHET_JWT_SECRET", "--sub", "me",
             "--collections", "articles", "--config", str(mounted_config())],
            capture_output=True, text=True, timeout=30, env={**os.environ, **env}, check=True,
        ).stdout.strip()
        assert httpx2.post(f"{server.url}/mcp", json={}).status_code == 401
        async with http_client(server.mcp_url, headers={"Authorization": f"Bearer {token}"}) as client:
            found = await call(client, "search", {"query": "consumer lag", "mode": "bm25"})
        assert [h["id"] for h in found["results"]] == ["doc-1"]
    finally:
        assert server.stop() == 0
