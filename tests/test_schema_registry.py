"""End to end with schema registry records: real broker, real `freshet serve`, real MCP client,
and producers using the real Confluent serializers (`AvroSerializer`, `ProtobufSerializer`,
`JSONSerializer` from `confluent_kafka.schema_registry`) against the session's registry.

One server for the module reads six topics: Avro values with Avro keys (`avro`), Debezium
envelopes and unwrapped rows written with the Avro converter's schemas (`debezium`),
Protobuf (`proto`), JSON Schema (`jsonschema`), and Protobuf and Avro schemas that reference
other subjects (`protoref`, `avroref`); bad records go to a dead-letter topic.
A second server points at a registry that is not there, to show that records it cannot
decode are poison and never a stall.
"""

from __future__ import annotations

import copy
import decimal
import json
import os
import re
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

import kafka_util
import schema_registry_util
from freshet_util import call, freshet_bin, http_client, serving, tool_error, write_config
from kafka_util import Producer
from schema_registry_util import serialize

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "debezium"
DIM = 8
pytestmark = pytest.mark.anyio

ARTICLE_V1 = {
    "type": "record", "name": "Article", "namespace": "freshet.test",
    "fields": [
        {"name": "title", "type": "string"},
        {"name": "body", "type": ["null", "string"], "default": None},
        {"name": "category", "type": {"type": "enum", "name": "Category", "symbols": ["RUNBOOK", "POSTMORTEM"]}},
        {"name": "views", "type": "int"},
        {"name": "legacy", "type": "string", "default": "-"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
    ],
}
# The evolution steps: `lang` added (optional), `legacy` removed (it had a default), `views`
# widened from int to long.
ARTICLE_V2 = copy.deepcopy(ARTICLE_V1)
ARTICLE_V2["fields"] = [f for f in ARTICLE_V2["fields"] if f["name"] != "legacy"]
ARTICLE_V2["fields"][3] = {"name": "views", "type": "long"}
ARTICLE_V2["fields"].append({"name": "lang", "type": ["null", "string"], "default": None})
ARTICLE_KEY = {"type": "record", "name": "ArticleKey", "namespace": "freshet.test",
               "fields": [{"name": "id", "type": "string"}]}


def word() -> str:
    return "zq" + uuid.uuid4().hex[:10]


def unit(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    return v


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


def ids(result: dict) -> list[str]:
    return [h["id"] for h in result["results"]]


async def search(client, **args) -> dict:
    args.setdefault("consistency", "head")
    return await call(client, "search", args)


async def ingest(server, name: str) -> dict:
    async with http_client(server.mcp_url) as client:
        collections = (await call(client, "list_collections", {}))["collections"]
    return next(c for c in collections if c["name"] == name)["ingest"]


# ----------------------------------------------------------------------------- Debezium


def connect_to_avro(schema: dict, defined: set[str]) -> dict | str | list:
    """The Avro schema Debezium's Avro converter derives from a Connect schema: structs are
    records named after the Connect name, optional fields are unions with null (default
    null), Connect's semantic names are kept as `connect.name`."""
    primitive = {"int8": "int", "int16": "int", "int32": "int", "int64": "long", "float32": "float",
                 "float64": "double", "boolean": "boolean", "string": "string", "bytes": "bytes"}
    if schema["type"] == "struct":
        # Debezium's schema.name.adjustment.mode=avro: characters Avro names cannot hold
        # become `_` (`mysql-server-1` → `mysql_server_1`).
        name = re.sub(r"[^A-Za-z0-9_.]", "_", schema.get("name", "ConnectDefault"))
        if name in defined:
            avro: dict | str = name
        else:
            defined.add(name)
            namespace, _, short = name.rpartition(".")
            fields = []
            for field in schema["fields"]:
                avro_field = {"name": field["field"], "type": connect_to_avro(field, defined)}
                if field.get("optional"):
                    avro_field["default"] = None
                fields.append(avro_field)
            avro = {"type": "record", "name": short, "fields": fields}
            if namespace:
                avro["namespace"] = namespace
            avro["connect.name"] = schema.get("name", name)
    else:
        avro = {"type": primitive[schema["type"]]}
        if "name" in schema:
            avro["connect.name"] = schema["name"]
    return ["null", avro] if schema.get("optional") else avro


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def debezium_serializer(registry, connect_schema: dict) -> AvroSerializer:
    return AvroSerializer(registry, json.dumps(connect_to_avro(connect_schema, set())))


# ----------------------------------------------------------------------------- Protobuf

def item_message_class():
    """A generated-style message class for `Item` (what protoc would emit), built from its
    descriptor: sku, name, description, a Timestamp and a repeated float vector."""
    file = descriptor_pb2.FileDescriptorProto(name="freshet/test/item.proto", package="freshet.test",
                                              syntax="proto3",
                                              dependency=["google/protobuf/timestamp.proto"])
    item = file.message_type.add(name="Item")
    f = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind, label, type_name) in enumerate([
        ("sku", f.TYPE_STRING, f.LABEL_OPTIONAL, None),
        ("name", f.TYPE_STRING, f.LABEL_OPTIONAL, None),
        ("description", f.TYPE_STRING, f.LABEL_OPTIONAL, None),
        ("updated_at", f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".google.protobuf.Timestamp"),
        ("vec", f.TYPE_FLOAT, f.LABEL_REPEATED, None),
        ("stock", f.TYPE_INT64, f.LABEL_OPTIONAL, None),
    ], start=1):
        field = item.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("freshet.test.Item"))


def order_message_class():
    """`Order` in freshet/test/order.proto, which imports freshet/test/money.proto (`Money`)
    and google/protobuf/timestamp.proto: a schema with references."""
    f = descriptor_pb2.FieldDescriptorProto
    money_file = descriptor_pb2.FileDescriptorProto(name="freshet/test/money.proto",
                                                    package="freshet.test", syntax="proto3")
    money = money_file.message_type.add(name="Money")
    money.field.add(name="currency", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    money.field.add(name="units", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    order_file = descriptor_pb2.FileDescriptorProto(
        name="freshet/test/order.proto", package="freshet.test", syntax="proto3",
        dependency=["freshet/test/money.proto", "google/protobuf/timestamp.proto"])
    order = order_file.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    order.field.add(name="note", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    order.field.add(name="total", number=3, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                    type_name=".freshet.test.Money")
    order.field.add(name="placed_at", number=4, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                    type_name=".google.protobuf.Timestamp")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(money_file)
    pool.Add(order_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("freshet.test.Order"))


# An Avro record type registered under a subject of its own, and a schema that uses it by name.
MONEY_AVRO = {"type": "record", "name": "Money", "namespace": "freshet.test",
              "fields": [{"name": "currency", "type": "string"}, {"name": "units", "type": "long"}]}
INVOICE_AVRO = {"type": "record", "name": "Invoice", "namespace": "freshet.test",
                "fields": [{"name": "id", "type": "string"}, {"name": "note", "type": "string"},
                           {"name": "total", "type": "freshet.test.Money"}]}


NOTE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Note", "type": "object",
    "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "body": {"type": "string"}},
    "required": ["id", "title"],
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def topics(broker):
    names = {k: kafka_util.unique_topic(k)
             for k in ("avro", "debezium", "proto", "jsonschema", "protoref", "avroref", "dlq")}
    for name in names.values():
        kafka_util.create_topic(broker, name, partitions=1)
    return names


@pytest.fixture(scope="module")
def registry(schema_registry):
    return schema_registry_util.client(schema_registry)


@pytest.fixture(scope="module")
def server(broker, schema_registry, topics, tmp_path_factory):
    work = tmp_path_factory.mktemp("schema-registry-e2e")
    config = write_config(
        work / "freshet.toml",
        {
            "kafka": {"brokers": broker.bootstrap, "dead_letter_topic": topics["dlq"]},
            "schema_registry": {"url": schema_registry, "retries": 1, "retry_backoff_ms": 50},
        },
        [
            {
                "name": "avro", "topics": [topics["avro"]], "format": "avro", "key_format": "avro",
                "title_field": "title", "text_fields": ["title", "body"],
                "metadata_fields": ["category", "views", "lang", "price"],
                "event_time_field": "updated_at", "vector_field": "embedding",
                "embedding": {"provider": "precomputed", "dimensions": DIM},
            },
            {
                "name": "debezium", "topics": [topics["debezium"]], "format": "avro", "key_format": "avro",
                "text_fields": ["first_name", "last_name", "email"], "metadata_fields": ["email"],
            },
            {
                "name": "proto", "topics": [topics["proto"]], "format": "protobuf", "key_format": "string",
                "id_field": "sku", "title_field": "name", "text_fields": ["name", "description"],
                "metadata_fields": ["stock", "updated_at"], "event_time_field": "updated_at",
                "vector_field": "vec", "embedding": {"provider": "precomputed", "dimensions": 4},
            },
            {
                "name": "jsonschema", "topics": [topics["jsonschema"]], "format": "json_schema",
                "id_field": "id", "title_field": "title", "text_fields": ["title", "body"],
            },
            {
                "name": "protoref", "topics": [topics["protoref"]], "format": "protobuf",
                "key_format": "string", "id_field": "id", "text_fields": ["note"],
                "metadata_fields": ["total.currency", "total.units", "placed_at"],
            },
            {
                "name": "avroref", "topics": [topics["avroref"]], "format": "avro",
                "key_format": "string", "id_field": "id", "text_fields": ["note"],
                "metadata_fields": ["total.currency", "total.units"],
            },
        ],
    )
    with serving(config, work) as srv:
        yield srv


@pytest.fixture(scope="module")
def producer(broker):
    with Producer(broker) as p:
        yield p


@pytest.fixture(scope="module")
def avro(registry):
    return {
        "v1": AvroSerializer(registry, json.dumps(ARTICLE_V1)),
        "v2": AvroSerializer(registry, json.dumps(ARTICLE_V2)),
        "key": AvroSerializer(registry, json.dumps(ARTICLE_KEY)),
    }


def article(token: str, *, version: int = 1, vec: int = 0, updated_ms: int | None = None, **extra) -> dict:
    value = {
        "title": "Avro article", "body": f"The {token} pump restarts nightly.", "category": "RUNBOOK",
        "views": 3, "price": decimal.Decimal("12.50"),
        "updated_at": datetime.fromtimestamp((updated_ms or now_ms()) / 1000, timezone.utc),
        "embedding": unit(vec),
    }
    if version == 1:
        value["legacy"] = "old"
    else:
        value["lang"] = "en"
        value["views"] = 5_000_000_000
    value.update(extra)
    return value


def send_article(producer, avro, topic: str, doc_id: str, value: dict | None, version: int = 1):
    key = serialize(avro["key"], topic, {"id": doc_id}, key=True)
    payload = None if value is None else serialize(avro[f"v{version}"], topic, value)
    return producer.send(topic, key=key, value=payload)


# ----------------------------------------------------------------------------- Avro


async def test_avro_record_is_searchable_in_every_mode_with_stamps(server, topics, producer, avro):
    token = word()
    doc_id = f"av-{token}"
    event_ms = now_ms() - 1500
    where = send_article(producer, avro, topics["avro"], doc_id, article(token, vec=3, updated_ms=event_ms))
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=token, collection="avro", mode="bm25")
        assert ids(res) == [doc_id]
        hit = res["results"][0]
        assert hit["title"] == "Avro article"
        assert hit["metadata"] == {"category": "RUNBOOK", "views": 3, "price": "12.50"}
        stamp = hit["freshness"]
        assert (stamp["topic"], stamp["partition"], stamp["offset"]) == (topics["avro"], 0, where.offset)
        assert stamp["event_time"] == iso(event_ms)
        res = await search(client, vector=unit(3), collection="avro", mode="vector", k=100)
        assert doc_id in ids(res)
        res = await search(client, query=token, vector=unit(3), collection="avro", mode="hybrid")
        assert ids(res)[0] == doc_id
        res = await search(client, query=token, collection="avro", filter={"category": "RUNBOOK"})
        assert ids(res) == [doc_id]
        doc = await call(client, "get_document", {"collection": "avro", "id": doc_id})
        assert doc["document"]["text"] == f"Avro article\n\nThe {token} pump restarts nightly."


async def test_avro_update_and_tombstone(server, topics, producer, avro):
    old, new = word(), word()
    doc_id = f"au-{old}"
    send_article(producer, avro, topics["avro"], doc_id, article(old, vec=4))
    async with http_client(server.mcp_url) as client:
        assert ids(await search(client, query=old, collection="avro", mode="bm25")) == [doc_id]
        send_article(producer, avro, topics["avro"], doc_id, article(new, vec=5))
        assert ids(await search(client, query=old, collection="avro", mode="bm25")) == []
        assert ids(await search(client, query=new, collection="avro", mode="bm25")) == [doc_id]
        # A tombstone: null value, the Avro key names the document.
        send_article(producer, avro, topics["avro"], doc_id, None)
        assert ids(await search(client, query=new, collection="avro", mode="bm25")) == []
        assert doc_id not in ids(await search(client, vector=unit(5), collection="avro", mode="vector", k=100))
        assert "not found" in await tool_error(client, "get_document", {"collection": "avro", "id": doc_id})


async def test_schema_evolution_old_and_new_versions_in_one_topic(server, topics, producer, avro, registry):
    # The registry checks each step, as deployments configure it (Confluent's default level).
    subject = f"{topics['avro']}-value"
    registry.set_compatibility(subject_name=subject, level="BACKWARD")
    a, b = word(), word()
    send_article(producer, avro, topics["avro"], f"v1-{a}", article(a), version=1)
    send_article(producer, avro, topics["avro"], f"v2-{b}", article(b, version=2), version=2)
    send_article(producer, avro, topics["avro"], f"v1b-{a}", article(a, title="Older writer again"), version=1)
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=a, collection="avro", mode="bm25")
        assert sorted(ids(res)) == sorted([f"v1-{a}", f"v1b-{a}"])
        assert all("lang" not in h["metadata"] and h["metadata"]["views"] == 3 for h in res["results"])
        res = await search(client, query=b, collection="avro", mode="bm25")
        assert ids(res) == [f"v2-{b}"]
        assert res["results"][0]["metadata"]["lang"] == "en"
        assert res["results"][0]["metadata"]["views"] == 5_000_000_000
    assert registry.get_versions(subject) == [1, 2]
    # The check is live: a change old records cannot be read with is refused.
    breaking = copy.deepcopy(ARTICLE_V2)
    breaking["fields"].append({"name": "region", "type": "string"})
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(subject, Schema(json.dumps(breaking), "AVRO"))
    assert refused.value.http_status_code == 409


async def test_undecodable_records_are_poison_counted_and_dead_lettered(server, topics, producer, avro, broker):
    t = topics["avro"]
    before = (await ingest(server, "avro"))["poison"]
    good_1, good_2 = word(), word()
    valid = serialize(avro["v1"], t, article(good_1))
    schema_id = int.from_bytes(valid[1:5], "big")
    key = serialize(avro["key"], t, {"id": "poison"}, key=True)
    sent = producer.send_many(t, [
        (serialize(avro["key"], t, {"id": f"pg1-{good_1}"}, key=True), valid),
        (key, b"\x00" + (999_999).to_bytes(4, "big") + valid[5:]),       # unknown schema ID
        (key, valid[:5] + b"\x02"),                                     # payload does not match
        (key, json.dumps({"title": "plain JSON"}).encode()),            # not the wire format
        (serialize(avro["key"], t, {"id": f"pg2-{good_2}"}, key=True), serialize(avro["v1"], t, article(good_2))),
    ])
    async with http_client(server.mcp_url) as client:
        assert ids(await search(client, query=good_2, collection="avro", mode="bm25")) == [f"pg2-{good_2}"]
        assert ids(await search(client, query=good_1, collection="avro", mode="bm25")) == [f"pg1-{good_1}"]
    after = (await ingest(server, "avro"))["poison"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    assert delta == {"unknown_schema": 1, "schema_mismatch": 1, "not_wire_format": 1}
    log = server.log()
    assert f"offset={sent[1].offset}" in log and "999999" in log
    assert f"(ID {schema_id})" in log
    dead = kafka_util.consume(broker, topics["dlq"], count=3, timeout=20)
    assert sorted(int(dict(r.headers)["freshet.source.offset"]) for r in dead) == [s.offset for s in sent[1:4]]
    assert {dict(r.headers)["freshet.error.kind"].decode() for r in dead} == set(delta)
    assert [r.value for r in sorted(dead, key=lambda r: r.offset)] == [
        b"\x00" + (999_999).to_bytes(4, "big") + valid[5:], valid[:5] + b"\x02",
        json.dumps({"title": "plain JSON"}).encode()]


# ----------------------------------------------------------------------------- Debezium Avro


async def test_debezium_avro_envelopes_unwrapped_rows_and_tombstones(server, topics, producer, registry):
    t = topics["debezium"]
    key_fixture = fixture("serde-unnested-delete-key-withschema.json")
    key_serializer = debezium_serializer(registry, key_fixture["schema"])
    create = fixture("serde-with-schema.json")
    envelope = debezium_serializer(registry, create["schema"])
    delete = fixture("serde-unnested-delete-val-withschema.json")
    delete_serializer = debezium_serializer(registry, delete["schema"])

    token, renamed = word(), word()
    created = copy.deepcopy(create["payload"])
    created["after"]["first_name"] = f"Anne {token}"
    updated = copy.deepcopy(created)
    updated["op"] = "u"
    updated["before"] = copy.deepcopy(created["after"])
    updated["after"]["first_name"] = f"Anne {renamed}"

    def key(row_id: int) -> bytes:
        return serialize(key_serializer, t, {"id": row_id}, key=True)

    async with http_client(server.mcp_url) as client:
        producer.send(t, key=key(1004), value=serialize(envelope, t, created))
        res = await search(client, query=token, collection="debezium", mode="bm25")
        assert ids(res) == ["1004"]
        assert res["results"][0]["metadata"] == {"email": "annek@noanswer.org"}
        # Debezium's source.ts_ms is 0 (unknown) in this event: the envelope's ts_ms is used.
        assert res["results"][0]["freshness"]["event_time"] == iso(created["ts_ms"])

        producer.send(t, key=key(1004), value=serialize(envelope, t, updated))
        assert ids(await search(client, query=token, collection="debezium", mode="bm25")) == []
        assert ids(await search(client, query=renamed, collection="debezium", mode="bm25")) == ["1004"]

        # The genuine delete event (op d, `before` holds the row), then Debezium's tombstone.
        producer.send_many(t, [(key(1004), serialize(delete_serializer, t, delete["payload"])),
                               (key(1004), None)])
        assert ids(await search(client, query=renamed, collection="debezium", mode="bm25")) == []
        assert "not found" in await tool_error(client, "get_document", {"collection": "debezium", "id": "1004"})

        # The unwrapped form (ExtractNewRecordState, delete.handling.mode=rewrite).
        row_schema = next(f for f in create["schema"]["fields"] if f["field"] == "after")
        row_schema = {**row_schema, "optional": False,
                      "fields": row_schema["fields"] + [{"type": "string", "optional": True, "field": "__deleted"}]}
        unwrapped = debezium_serializer(registry, row_schema)
        flat = {**fixture("serde-unwrapped.json"), "id": 1005, "first_name": f"Flat {token}", "__deleted": "false"}
        producer.send(t, key=key(1005), value=serialize(unwrapped, t, flat))
        assert ids(await search(client, query=token, collection="debezium", mode="bm25")) == ["1005"]
        producer.send(t, key=key(1005), value=serialize(unwrapped, t, {**flat, "__deleted": "true"}))
        assert ids(await search(client, query=token, collection="debezium", mode="bm25")) == []
    assert (await ingest(server, "debezium"))["poison"] == {}


# ----------------------------------------------------------------------------- Protobuf, JSON Schema


async def test_protobuf_records_with_timestamps_and_vectors(server, topics, producer, registry):
    t = topics["proto"]
    item_class = item_message_class()
    serializer = ProtobufSerializer(item_class, registry, {"use.deprecated.format": False})
    token, other = word(), word()
    item = item_class(sku=f"sku-{token}", name="Gasket", description=f"Seals the {token} valve",
                      vec=[0.0, 1.0, 0.0, 0.0], stock=9_007_199_254_740_993)
    item.updated_at.seconds, item.updated_at.nanos = 1_704_067_200, 250_000_000
    async with http_client(server.mcp_url) as client:
        where = producer.send(t, key=f"sku-{token}", value=serialize(serializer, t, item))
        res = await search(client, query=token, collection="proto", mode="bm25")
        assert ids(res) == [f"sku-{token}"]
        hit = res["results"][0]
        assert hit["title"] == "Gasket"
        assert hit["metadata"] == {"stock": 9_007_199_254_740_993, "updated_at": "2024-01-01T00:00:00.250Z"}
        assert hit["freshness"]["event_time"] == "2024-01-01T00:00:00.250Z"
        assert hit["freshness"]["offset"] == where.offset
        res = await search(client, vector=[0.0, 1.0, 0.0, 0.0], collection="proto", mode="vector", k=50)
        assert f"sku-{token}" in ids(res)
        # An update, then a tombstone keyed by the string key.
        item.description = f"Seals the {other} valve"
        producer.send(t, key=f"sku-{token}", value=serialize(serializer, t, item))
        assert ids(await search(client, query=token, collection="proto", mode="bm25")) == []
        assert ids(await search(client, query=other, collection="proto", mode="bm25")) == [f"sku-{token}"]
        producer.send(t, key=f"sku-{token}", value=None)
        assert ids(await search(client, query=other, collection="proto", mode="bm25")) == []
        assert (await ingest(server, "proto"))["poison"] == {}
        # Poison: a truncated field, and message indexes naming no message of the schema.
        header = serialize(serializer, t, item)[:5]
        last = word()
        item.sku, item.description = f"sku-{last}", f"after the poison {last}"
        producer.send_many(t, [(f"bad-{token}", header + b"\x00\x0a\xff"),
                               (f"bad2-{token}", header + b"\x02\x0e\x0a\x01x"),
                               (f"sku-{last}", serialize(serializer, t, item))])
        assert ids(await search(client, query=last, collection="proto", mode="bm25")) == [f"sku-{last}"]
    assert (await ingest(server, "proto"))["poison"] == {"schema_mismatch": 2}


async def test_json_schema_records(server, topics, producer, registry):
    t = topics["jsonschema"]
    serializer = JSONSerializer(json.dumps(NOTE_SCHEMA), registry)
    token = word()
    async with http_client(server.mcp_url) as client:
        producer.send(t, key=f"n-{token}", value=serialize(serializer, t, {"id": f"n-{token}", "title": "Note",
                                                                           "body": f"remember {token}"}))
        res = await search(client, query=token, collection="jsonschema", mode="bm25")
        assert ids(res) == [f"n-{token}"] and res["results"][0]["title"] == "Note"
        producer.send(t, key=f"n-{token}", value=None)
        assert ids(await search(client, query=token, collection="jsonschema", mode="bm25")) == []


# ----------------------------------------------------------------------------- schema references


async def test_protobuf_schema_with_references_to_other_subjects(server, topics, producer, registry):
    t = topics["protoref"]
    order_class = order_message_class()
    # skip.known.types off: the Timestamp import is registered as a reference too, as
    # serializers that do not special-case Google's types do.
    serializer = ProtobufSerializer(order_class, registry,
                                    {"use.deprecated.format": False, "skip.known.types": False})
    token = word()
    order = order_class(id=f"o-{token}", note=f"Order for {token} gaskets")
    order.total.currency, order.total.units = "EUR", 1250
    order.placed_at.seconds = 1_704_067_200
    producer.send(t, key=f"o-{token}", value=serialize(serializer, t, order))
    value = registry.get_latest_version(f"{t}-value").schema
    assert sorted(r.name for r in value.references) == ["freshet/test/money.proto",
                                                        "google/protobuf/timestamp.proto"]
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=token, collection="protoref", mode="bm25")
        assert ids(res) == [f"o-{token}"]
        assert res["results"][0]["metadata"] == {"total.currency": "EUR", "total.units": 1250,
                                                 "placed_at": "2024-01-01T00:00:00Z"}
    assert (await ingest(server, "protoref"))["poison"] == {}


async def test_avro_schema_with_a_reference_to_another_subject(server, topics, producer, registry):
    t = topics["avroref"]
    money_subject = f"{t}-freshet.test.Money"
    registry.register_schema(money_subject, Schema(json.dumps(MONEY_AVRO), "AVRO"))
    invoice = Schema(json.dumps(INVOICE_AVRO), "AVRO",
                     [SchemaReference("freshet.test.Money", money_subject, 1)])
    serializer = AvroSerializer(registry, invoice)
    token = word()
    value = {"id": f"i-{token}", "note": f"Invoice for {token}", "total": {"currency": "USD", "units": 7}}
    producer.send(t, key=f"i-{token}", value=serialize(serializer, t, value))
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=token, collection="avroref", mode="bm25")
        assert ids(res) == [f"i-{token}"]
        assert res["results"][0]["metadata"] == {"total.currency": "USD", "total.units": 7}
    assert (await ingest(server, "avroref"))["poison"] == {}


# ----------------------------------------------------------------------------- registry down


async def test_unreachable_registry_makes_poison_not_a_stall(broker, tmp_path_factory, producer, avro):
    work = tmp_path_factory.mktemp("registry-down")
    t, dlq = kafka_util.unique_topic("down"), kafka_util.unique_topic("down-dlq")
    for name in (t, dlq):
        kafka_util.create_topic(broker, name)
    token = word()
    valid = serialize(avro["v1"], t, article(token))
    # Three records whose schemas the server has never seen, then readiness must still come.
    producer.send_many(t, [(f"k{i}", valid) for i in range(3)])
    config = write_config(
        work / "freshet.toml",
        {"kafka": {"brokers": broker.bootstrap, "dead_letter_topic": dlq},
         "schema_registry": {"url": f"http://127.0.0.1:{kafka_util.free_port()}", "retries": 2,
                             "retry_backoff_ms": 50, "timeout_ms": 1000}},
        [{"name": "down", "topics": [t], "format": "avro", "key_format": "string"}],
    )
    with serving(config, work, timeout=30) as srv:
        assert (await ingest(srv, "down"))["poison"] == {"registry_unavailable": 3}
        dead = kafka_util.consume(broker, dlq, count=3, timeout=20)
        assert {dict(r.headers)["freshet.error.kind"] for r in dead} == {b"registry_unavailable"}
        log = srv.log()
        assert "schema registry request failed, retrying" in log
        assert "could not be fetched" in log


# ----------------------------------------------------------------------------- check-config --online


def test_check_config_online_with_basic_auth(broker, tmp_path):
    registry = schema_registry_util.start(tmp_path, user="reader", password="s3cret")
    try:
        config = write_config(
            tmp_path / "freshet.toml",
            {"kafka": {"brokers": broker.bootstrap},
             "schema_registry": {"url": registry.url, "username_env": "SR_USER", "password_env": "SR_PASS"}},
            [{"name": "c", "topics": ["orders"], "format": "avro"}],
        )
        run = lambda env: subprocess.run(  # noqa: E731
            [str(freshet_bin()), "check-config", "--config", str(config), "--online"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        done = run({"SR_USER": "reader", "SR_PASS": "s3cret"})
        assert done.returncode == 0, done.stderr
        assert "reachable, 0 subjects" in done.stdout
        assert "orders-value not registered yet (avro)" in done.stdout
        done = run({"SR_USER": "reader"})
        assert done.returncode == 2 and "schema_registry.password_env" in done.stderr
        done = run({"SR_USER": "reader", "SR_PASS": "wrong"})
        assert done.returncode == 2 and "HTTP 401" in done.stderr
    finally:
        registry.stop()



def test_check_config_online_lists_subjects(schema_registry, topics, server, tmp_path):
    config = server.config
    done = subprocess.run([str(freshet_bin()), "check-config", "--config", str(config), "--online"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{topics['avro']}-value" in done.stdout
    assert f"{topics['avro']}-key" in done.stdout
    down = tmp_path / "down.toml"
    down.write_text(config.read_text().replace(schema_registry, f"http://127.0.0.1:{kafka_util.free_port()}"))
    done = subprocess.run([str(freshet_bin()), "check-config", "--config", str(down), "--online"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "schema registry" in done.stderr
