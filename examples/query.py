"""Asks a running freshet a question over MCP (streamable HTTP) and prints the hits with
their freshness, then the raw structured result.

    python examples/query.py "consumer lag is growing" --url http://127.0.0.1:8080/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_data import embed  # noqa: E402


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query")
    ap.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    ap.add_argument("--collection", default="articles")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--mode", default="hybrid", choices=["hybrid", "bm25", "vector"])
    ap.add_argument("--dim", type=int, default=64, help="dimensions of the precomputed vectors")
    ap.add_argument("--token", help="bearer token, when auth is on")
    ap.add_argument("--json", action="store_true", help="print only the structured result")
    args = ap.parse_args()

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    arguments = {"query": args.query, "collection": args.collection, "k": args.k, "mode": args.mode,
                 "consistency": "head"}
    if args.mode != "bm25":
        arguments["vector"] = embed(args.query, args.dim)
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(args.url, http_client=http)) as client:
            result = await client.call_tool("search", arguments)
    if result.is_error:
        print(f"error: {result.content[0].text}", file=sys.stderr)
        return 1
    out = result.structured_content
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    wm = out["freshness"]
    print(f'search "{args.query}" mode={out["mode"]} caught_up={wm["caught_up"]} as_of={wm["as_of"]}')
    for note in out.get("notes", []):
        print(f"  note: {note}")
    for i, hit in enumerate(out["results"], 1):
        f = hit["freshness"]
        print(f"{i}. [{hit['score']:.4f}] {hit['id']}  {hit['title']}")
        print(f"   {' '.join(hit['snippet'].split())[:160]}")
        print(f"   from {f['topic']}/{f['partition']}@{f['offset']}  event_time={f['event_time']}  "
              f"age={f['age_ms']} ms  index_delay={f['index_delay_ms']} ms")
    lag = ", ".join(f"{p['topic']}/{p['partition']} lag={p['lag']}" for p in wm["partitions"])
    print(f"watermark: {lag}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
