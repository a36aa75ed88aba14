"""Runs a real schema registry for tests (Apicurio Registry via scripts/schema_registry.sh,
its Confluent-compatible API) and builds the real Confluent serializers
(`confluent_kafka.schema_registry`) that producers use against it."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from kafka_util import REPO_ROOT, _die_with_parent, free_port, stop_process

SCRIPT = REPO_ROOT / "scripts" / "schema_registry.sh"
# Where Apicurio Registry serves the Confluent Schema Registry REST API.
API_PATH = "/apis/ccompat/v7"


@dataclass
class Registry:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process, 10)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(workdir: Path, user: str | None = None, password: str | None = None,
          timeout: float = 120.0) -> Registry:
    """Start a registry on a free loopback port with its state in `workdir`; with `user` and
    `password`, every API request needs that basic-auth pair. Returns once it is ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMA_REGISTRY_")}
    if user is not None and password is not None:
        env.update(SCHEMA_REGISTRY_USER=user, SCHEMA_REGISTRY_PASSWORD=password)
    log_path = workdir / "registry.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["bash", str(SCRIPT), "run", str(workdir), str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _ready(base):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, 5)
            raise RuntimeError(f"schema registry did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return Registry(base + API_PATH, process, log_path)


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def serialize(serializer, topic: str, value, key: bool = False) -> bytes | None:
    """What a producer configured with `serializer` sends for `value` on `topic`."""
    field = MessageField.KEY if key else MessageField.VALUE
    return serializer(value, SerializationContext(topic, field))
