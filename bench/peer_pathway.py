"""Pathway peer for freshet's benchmark: a live hybrid index fed from Kafka, queried over HTTP.

Runs in its own virtualenv (.venv-pathway, see bench/requirements-pathway.txt); the harness
starts it through bench/peer_client.py. The pipeline:

    Kafka topic (JSON docs, all partitions, from the beginning)
      -> newest record per id (max (produced_at, offset)): pw.io.kafka.read does not upsert,
         and two rows with one id would be two hits in the index
      -> TantivyBM25 over title + " " + body, USearchKnn (cosine) over the precomputed vector,
         fused by HybridIndex (RRF, k = 60) with each retriever fed its own query column
      -> POST /query {"query": str, "vector": [float] | null, "k": int, "mode": str}
         answers {"ids": [...], "scores": [...]}, best first.

Queries are answered "as of now": once every input's frontier passes the query, so the inputs'
autocommit intervals bound both freshness and query latency.
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys
import threading
import time

import pathway as pw
from pathway.stdlib.indexing import DataIndex, HybridIndex, TantivyBM25, USearchKnn
from pathway.stdlib.indexing.colnames import _SCORE
from pathway.stdlib.indexing.data_index import InnerIndex


class DocSchema(pw.Schema):
    doc_id: str  # the record's "id" ("id" is reserved for Pathway's row key)
    title: str
    body: str
    # Optional so that a record without them is still indexed (by BM25 only), not dropped.
    embedding: list[float] | None = pw.column_definition(default_value=None)
    produced_at: int = pw.column_definition(default_value=0)


class QuerySchema(pw.Schema):
    query: str = pw.column_definition(default_value="")
    vector: list[float] | None = pw.column_definition(default_value=None)
    k: int = pw.column_definition(default_value=10)
    mode: str = pw.column_definition(default_value="hybrid")


class StatsSchema(pw.Schema):
    probe: int = pw.column_definition(default_value=0)


class RoutedHybridIndex(HybridIndex):
    """HybridIndex whose retrievers each read their own column of the query table.

    The stock HybridIndex sends one query column to every retriever; with precomputed
    vectors BM25 needs the text and USearch the vector."""

    def __init__(self, routes: list[tuple[InnerIndex, str]], k: float = 60):
        super().__init__([retriever for retriever, _ in routes], k)
        self.columns = {id(retriever): column for retriever, column in routes}

    def query_as_of_now(self, query_column, *, number_of_matches=3, metadata_filter=None):
        queries = query_column.table

        def query_retriever(retriever: InnerIndex) -> pw.Table:
            return retriever.query_as_of_now(
                queries[self.columns[id(retriever)]],
                number_of_matches=number_of_matches,
                metadata_filter=metadata_filter,
            )

        return self._combine_results(
            query_retriever, queries, number_of_matches, as_of_now=True
        )


_NOT_WORD = re.compile(r"[^0-9a-z]+")
# Matches nothing (the index text never has it): tantivy rejects an empty query.
_EMPTY_QUERY = "zzqqxxnomatch"


@pw.udf(deterministic=True)
def safe_query(text: str) -> str:
    """Lowercase words only: tantivy's query syntax (field:, quotes, AND/OR, +/-) would make a
    parse error, and a parse error stops the engine."""
    words = _NOT_WORD.sub(" ", text.lower()).split()
    return " ".join(words) or _EMPTY_QUERY


def has_length(dim: int) -> pw.UDF:
    @pw.udf(deterministic=True)
    def has_dim(vector: list[float] | None) -> bool:
        return vector is not None and len(vector) == dim

    return has_dim


@pw.udf(deterministic=True)
def route(mode: str, has_vector: bool) -> str:
    """hybrid | bm25 | vector | none. Without a usable vector (missing, or of a length USearch
    would fail on, stopping the engine) hybrid becomes bm25 and vector becomes none."""
    mode = mode.lower()
    if mode == "bm25":
        return "bm25"
    if mode == "vector":
        return "vector" if has_vector else "none"
    return "hybrid" if has_vector else "bm25"


@pw.udf(deterministic=True)
def reply(ids: tuple | None, scores: tuple | None) -> pw.Json:
    ids = [i for i in (ids or ()) if i is not None]
    return pw.Json({"ids": list(ids), "scores": [float(s) for s in (scores or ())][: len(ids)]})


@pw.udf(deterministic=True)
def stats_reply(n: int | None) -> pw.Json:
    return pw.Json({"docs": n or 0})


def build(args: argparse.Namespace) -> None:
    rdkafka = {
        "bootstrap.servers": args.brokers,
        "group.id": f"pathway-peer-{int(time.time() * 1000)}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
        "session.timeout.ms": "6000",
        "fetch.wait.max.ms": str(args.fetch_wait_ms),
    }
    raw = pw.io.kafka.read(
        rdkafka,
        topic=args.topic,
        format="json",
        schema=DocSchema,
        json_field_paths={"doc_id": "/id"},
        autocommit_duration_ms=args.autocommit_ms,
        with_metadata=True,
        name="docs",
        max_backlog_size=args.max_backlog or None,
    )
    has_dim = has_length(args.dim)
    raw = raw.select(
        pw.this.doc_id,
        text=pw.this.title + " " + pw.this.body,
        vector=pw.this.embedding,
        order=pw.make_tuple(pw.this.produced_at, pw.this._metadata["offset"].as_int()),
    )
    newest = raw.groupby(pw.this.doc_id).reduce(row=pw.reducers.argmax(pw.this.order))
    picked = raw.ix(newest.row)
    docs = newest.select(doc_id=picked.doc_id, text=picked.text, vector=picked.vector)

    # Only vectors of the index's length: USearch would fail on another, stopping the engine.
    vectors = docs.filter(has_dim(pw.this.vector)).select(vector=pw.unwrap(pw.this.vector))

    bm25 = TantivyBM25(docs.text, None)
    knn = USearchKnn(
        data_column=vectors.vector,
        metadata_column=None,
        dimensions=args.dim,
        reserved_space=args.reserved,
        metric=pw.engine.USearchMetricKind.COS,
    )
    hybrid = RoutedHybridIndex([(bm25, "text"), (knn, "vec")], k=60)

    webserver = pw.io.http.PathwayWebserver(host="127.0.0.1", port=args.port)
    queries, respond = pw.io.http.rest_connector(
        webserver=webserver,
        route="/query",
        schema=QuerySchema,
        autocommit_duration_ms=args.rest_autocommit_ms,
        delete_completed_queries=False,
    )
    queries = queries.with_columns(
        route=route(pw.this.mode, has_dim(pw.this.vector)),
        text=safe_query(pw.this.query),
    )

    # Only the id travels with a hit: DataIndex packs every column of its data table.
    ids = docs.select(pw.this.doc_id)

    def answer(index: InnerIndex, mode: str, column: str) -> pw.Table:
        q = queries.filter(pw.this.route == mode)
        if mode == "bm25":
            q = q.select(pw.this.k, pw.this.text)
        else:  # these routes only take queries with a vector
            q = q.select(pw.this.k, pw.this.text, vec=pw.unwrap(pw.this.vector))
        hits = DataIndex(ids, index).query_as_of_now(
            q[column], number_of_matches=q.k, collapse_rows=True
        )
        return hits.select(result=reply(pw.right.doc_id, pw.right[_SCORE]))

    parts = [
        answer(hybrid, "hybrid", "text"),
        answer(bm25, "bm25", "text"),
        answer(knn, "vector", "vec"),
        queries.filter(pw.this.route == "none").select(result=reply(None, None)),
    ]
    pw.universes.promise_are_pairwise_disjoint(*parts)
    respond(parts[0].concat(*parts[1:]))

    # GET|POST /stats -> {"docs": distinct ids indexed}, as of now: lets a client see catch-up.
    stats, respond_stats = pw.io.http.rest_connector(
        webserver=webserver,
        route="/stats",
        schema=StatsSchema,
        methods=("GET", "POST"),
        autocommit_duration_ms=args.rest_autocommit_ms,
        delete_completed_queries=False,
    )
    count = docs.reduce(n=pw.reducers.count(), one=0)
    respond_stats(
        stats.with_columns(one=0)
        .asof_now_join(count, pw.left.one == pw.right.one, how=pw.JoinMode.LEFT, id=pw.left.id)
        .select(result=stats_reply(pw.right.n))
    )


def quiet_access_logs() -> None:
    """Drop the per-request log lines (Pathway's JSON payload and access records, aiohttp's
    access line) and tantivy's per-commit INFO lines: at benchmark rates they cost CPU (each
    goes through Python logging) and bury the connector statistics in the log."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("tantivy").setLevel(logging.WARNING)
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith('{"_type": "'))


def announce_when_listening(port: int) -> None:
    """Print one line on stderr once the REST server accepts connections."""

    def watch() -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    print("pathway peer ready", file=sys.stderr, flush=True)
                    return
            except OSError:
                time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--reserved", type=int, default=10_000,
                        help="initial USearch capacity (entries)")
    parser.add_argument("--max-backlog", type=int, default=2000,
                        help="records in flight from Kafka (0: unlimited); bounds minibatches")
    parser.add_argument("--autocommit-ms", type=int, default=10)
    parser.add_argument("--rest-autocommit-ms", type=int, default=5)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    args = parser.parse_args()

    quiet_access_logs()
    build(args)
    announce_when_listening(args.port)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
