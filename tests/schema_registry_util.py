"""Runs scripts/schema_registry.py for tests and builds the real Confluent serializers
(`confluent_kafka.schema_registry`) that producers use against it."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from kafka_util import REPO_ROOT, _die_with_parent, stop_process

SCRIPT = REPO_ROOT / "scripts" / "schema_registry.py"


@dataclass
class Registry:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.process, 10)


def start(workdir: Path, env: dict[str, str] | None = None, timeout: float = 20.0) -> Registry:
    port_file = workdir / "port"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "registry.log", "wb"),
        env=env,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"schema registry did not start: {(workdir / 'registry.log').read_text()}")
        time.sleep(0.05)
    return Registry(f"http://127.0.0.1:{port_file.read_text().strip()}", process)


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def serialize(serializer, topic: str, value, key: bool = False) -> bytes | None:
    """What a producer configured with `serializer` sends for `value` on `topic`."""
    field = MessageField.KEY if key else MessageField.VALUE
    return serializer(value, SerializationContext(topic, field))
