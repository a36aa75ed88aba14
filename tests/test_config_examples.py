"""The config files shipped in config/ are valid, and config/debezium-postgres.toml does what
its comments say with real Debezium PostgreSQL change events: id from the key, text fields,
metadata, event time from source.ts_ms, updates and deletes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import kafka_util
from freshet_util import FreshetServer, ToolError, call, http_client
from kafka_util import REPO_ROOT, Producer
from test_cli_stdio import check_config

pytestmark = pytest.mark.anyio
CONFIG = REPO_ROOT / "config"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "debezium"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG.glob("*.toml")))
def test_shipped_configs_are_valid(name):
    done = check_config(CONFIG / name)
    assert done.returncode == 0, done.stderr


def test_debezium_postgres_config_is_what_it_says():
    done = check_config(CONFIG / "debezium-postgres.toml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'topics = ["dbserver1.inventory.customers"]' in out
    assert 'format = "debezium"' in out
    assert "id_field" not in out and "event_time_field" not in out  # key and source.ts_ms


def key(customer_id: int) -> dict:
    """The Kafka key Debezium's JsonConverter writes for inventory.customers (schemas on)."""
    return {"schema": {"type": "struct", "optional": False, "name": "dbserver1.inventory.customers.Key",
                       "fields": [{"type": "int32", "optional": False, "field": "id"}]},
            "payload": {"id": customer_id}}


def change(template: dict, op: str, before: dict | None, after: dict | None, ts_ms: int) -> dict:
    event = copy.deepcopy(template)
    payload = event["payload"]
    payload.update(op=op, before=before, after=after, ts_ms=ts_ms + 5)
    payload["source"].update(ts_ms=ts_ms, snapshot="false")
    return event


async def test_debezium_postgres_config_serves_cdc_events(broker, tmp_path):
    topic = kafka_util.unique_topic("dbserver1.inventory.customers")
    kafka_util.create_topic(broker, topic, partitions=1)
    create = json.loads((FIXTURES / "postgresql-create-event.docs.json").read_text())  # Anne, id 1
    anne = create["payload"]["after"]
    bob = {"id": 2, "first_name": "Bob", "last_name": "Quimby", "email": "bobq@noanswer.org"}
    anne_moved = {**anne, "email": "anne.k@example.org"}
    with Producer(broker) as p:
        p.send(topic, key=key(1), value=create)  # verbatim from Debezium's docs
        p.send(topic, key=key(2), value=change(create, "c", None, bob, 1559033905000))
        p.send(topic, key=key(1), value=change(create, "u", anne, anne_moved, 1559033999000))
        p.send(topic, key=key(2), value=change(create, "d", bob, None, 1559034000000))
        p.send(topic, key=key(2), value=None)  # the tombstone Debezium writes after a delete
    env = {"FRESHET_KAFKA__BROKERS": broker.bootstrap, "FRESHET_COLLECTIONS__0__TOPICS": json.dumps([topic])}
    server = FreshetServer(CONFIG / "debezium-postgres.toml", tmp_path, env=env)
    try:
        server.wait_ready()
        async with http_client(server.mcp_url) as client:
            found = await call(client, "search", {"query": "Kretchmar", "collection": "customers"})
            [hit] = found["results"]
            assert hit["id"] == "1"  # from the key's payload
            assert hit["title"] == "anne.k@example.org"  # the update won
            assert hit["metadata"] == {"email": "anne.k@example.org"}
            assert hit["freshness"]["event_time"] == "2019-05-28T08:59:59.000Z"  # source.ts_ms of the update
            assert hit["freshness"]["offset"] == 2
            doc = await call(client, "get_document", {"collection": "customers", "id": "1"})
            assert "Anne" in doc["document"]["text"] and "Kretchmar" in doc["document"]["text"]
            assert (await call(client, "search", {"query": "Quimby"}))["results"] == []
            with pytest.raises(ToolError, match="not found|no document"):
                await call(client, "get_document", {"collection": "customers", "id": "2"})
            listing = await call(client, "list_collections", {})
            [customers] = listing["collections"]
            assert customers["documents"] == 1
            assert customers["ingest"]["deletes"] >= 1 and customers["ingest"]["poison"] == {}
    finally:
        assert server.stop() == 0
