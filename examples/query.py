"""Asks a running freshet a question over MCP (streamable HTTP) and prints the hits with
their freshness, then the partitions' watermarks.

    .venv/bin/python examples/query.py "consumer lag is growing" --url http://127.0.0.1:8080/mcp

Needs the project's virtualenv (`.venv`, made by `bash scripts/setup.sh`: the `mcp` SDK).
With --state FILE it remembers each hit's Kafka coordinates between runs and says when a
document changed (a newer version, at a newer offset) since the previous search.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_errors import run  # noqa: E402
from sample_data import embed  # noqa: E402

try:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
except ImportError as missing:
    sys.exit(f"error: {missing.name} is not installed here: run `bash scripts/setup.sh` once, "
             f"then use the project's virtualenv: .venv/bin/python examples/query.py ...")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query")
    ap.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    ap.add_argument("--collection", default="articles")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--mode", default="hybrid", choices=["hybrid", "bm25", "vector"])
    ap.add_argument("--dim", type=int, default=64, help="dimensions of the precomputed vectors")
    ap.add_argument("--token", help="bearer token, when auth is on")
    ap.add_argument("--json", action="store_true", help="print only the structured result")
    ap.add_argument("--state", type=Path,
                    help="JSON file remembering hits between runs, to show what changed since")
    return ap.parse_args()


def load_state(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged state file only loses the "changed since" lines


def changed_since(hit: dict, seen: dict) -> str | None:
    """What changed about this document since it was last shown, if anything."""
    before = seen.get(f"{hit['collection']}/{hit['id']}")
    f = hit["freshness"]
    now = {"at": f"{f['topic']}/{f['partition']}@{f['offset']}", "event_time": f["event_time"],
           "revision": hit["metadata"].get("revision")}
    if before is None or before["at"] == now["at"]:
        return None
    line = f"changed since the previous search: {before['at']} -> {now['at']}"
    if before.get("revision") is not None and now["revision"] is not None:
        line += f", revision {before['revision']} -> {now['revision']}"
    return line


def remember(seen: dict, hits: list[dict]) -> None:
    for hit in hits:
        f = hit["freshness"]
        seen[f"{hit['collection']}/{hit['id']}"] = {
            "at": f"{f['topic']}/{f['partition']}@{f['offset']}", "event_time": f["event_time"],
            "revision": hit["metadata"].get("revision")}


async def main(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    arguments = {"query": args.query, "collection": args.collection, "k": args.k, "mode": args.mode,
                 # Read-your-writes: first wait until what the broker had when the call was
                 # made is searchable (bounded by max_wait_ms, 2 s by default).
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
    seen = load_state(args.state)
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
        if (change := changed_since(hit, seen)) is not None:
            print(f"   {change}")
    # applied = offset of the last record applied; end = the log end offset (the offset the
    # next record will get), so a caught-up partition shows applied = end - 1 and lag 0.
    parts = ", ".join(f"{p['topic']}/{p['partition']} applied={p['applied_offset']} "
                      f"end={p['high_watermark']} lag={p['lag']}" for p in wm["partitions"])
    print(f"watermark: {parts}")
    if args.state is not None:
        remember(seen, out["results"])
        args.state.write_text(json.dumps(seen))
    return 0


if __name__ == "__main__":
    cli = parse_args()
    sys.exit(run(lambda: main(cli), cli.url))
