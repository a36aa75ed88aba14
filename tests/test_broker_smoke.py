"""The broker fixture and Kafka helpers work end to end: this is what every
integration test builds on, so a failure here points at the environment."""

from kafka_util import Delivered, Producer, consume, create_topic, high_watermarks


def test_produce_and_consume_back(broker, topic):
    create_topic(broker, topic, partitions=2)

    with Producer(broker) as producer:
        upsert = producer.send(
            topic, key="doc-1", value={"id": "doc-1", "title": "Hello"}, partition=0,
            headers={"source": "smoke"},
        )
        raw = producer.send(topic, key=b"doc-2", value=b"\x00not json", partition=1)
        tombstone = producer.send(topic, key="doc-1", value=None, partition=0)

    assert (upsert, raw, tombstone) == (Delivered(0, 0), Delivered(1, 0), Delivered(0, 1))
    assert high_watermarks(broker, topic) == {0: 2, 1: 1}

    # consume() assigns both partitions from OFFSET_BEGINNING with fetch.wait.max.ms=10.
    records = {(r.partition, r.offset): r for r in consume(broker, topic, count=3)}
    assert sorted(records) == [(0, 0), (0, 1), (1, 0)]

    first = records[(0, 0)]
    assert first.key == b"doc-1"
    assert first.json() == {"id": "doc-1", "title": "Hello"}
    assert first.headers == [("source", b"smoke")]
    assert first.timestamp_ms > 0

    assert records[(1, 0)].key == b"doc-2"
    assert records[(1, 0)].value == b"\x00not json"

    assert records[(0, 1)].key == b"doc-1"
    assert records[(0, 1)].value is None


def test_create_topic_is_idempotent(broker, topic):
    create_topic(broker, topic, partitions=3)
    create_topic(broker, topic, partitions=3)
    assert high_watermarks(broker, topic) == {0: 0, 1: 0, 2: 0}


def test_send_many_keeps_order_and_reports_offsets(broker, topic):
    create_topic(broker, topic)
    with Producer(broker) as producer:
        delivered = producer.send_many(topic, [(f"k{i}", {"n": i}) for i in range(5)])
    assert delivered == [Delivered(0, i) for i in range(5)]
    values = [r.json()["n"] for r in consume(broker, topic, count=5)]
    assert values == list(range(5))
