"""An agent's session with the change feed and a subscription, over streamable HTTP with the
Python MCP SDK (2025-11-25 session, so `resources/subscribe` is used):

1. `changes` on a collection: what changed lately, and a cursor;
2. subscribe to one document and to the collection's feed;
3. wait for a notification (something changed upstream);
4. `changes` since the cursor: exactly what changed since step 1.

    python examples/live_session.py [--url http://127.0.0.1:8080/mcp] [--collection articles] [--id doc-0001]

Against the demo (scripts/demo.sh), whose producer changes documents every second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


class Notifications:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    async def __call__(self, message) -> None:
        message = getattr(message, "root", message)
        if getattr(message, "method", None) == "notifications/resources/updated":
            meta = getattr(message.params, "meta", None) or {}
            if not isinstance(meta, dict):
                meta = meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(meta)
            await self.queue.put((message.params.uri, meta))


def show(changes: dict) -> None:
    for c in changes["changes"]:
        f = c["freshness"]
        print(f"  {c['kind']:<6} {c['id']:<10} {str(c['title'])[:40]:<40} "
              f"{f['topic']}/{f['partition']}@{f['offset']}  indexed_at={f['indexed_at']}  current={c['current']}")
    print(f"  next={changes['next'][:24]}…  more={changes['more']}  truncated={changes['truncated']}")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    ap.add_argument("--collection", default="articles")
    ap.add_argument("--id", default="doc-0001", help="a document to subscribe to")
    ap.add_argument("--token", help="bearer token (auth.mode = jwt)")
    ap.add_argument("--wait", type=float, default=30, help="seconds to wait for a notification")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    notes = Notifications()
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        async with Client(streamable_http_client(args.url, http_client=http), mode="legacy",
                          message_handler=notes) as client:
            async def call(tool: str, arguments: dict) -> dict:
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    raise SystemExit(f"{tool}: {result.content[0].text}")
                return result.structured_content

            print(f"> changes {{collection: {args.collection}, limit: 5}}")
            first = await call("changes", {"collection": args.collection, "limit": 5})
            while first["more"]:  # read to the end of the feed: that is "now"
                first = await call("changes", {"collection": args.collection, "since": first["next"],
                                               "limit": 1000})
            show(first)
            doc_uri = f"freshet://{args.collection}/{args.id}"
            feed_uri = f"freshet://{args.collection}/changes"
            for uri in (doc_uri, feed_uri):
                print(f"> resources/subscribe {uri}")
                await client.subscribe_resource(uri)
            print("… waiting for notifications/resources/updated")
            try:
                uri, meta = await asyncio.wait_for(notes.queue.get(), args.wait)
            except TimeoutError:
                print(f"  nothing changed within {args.wait} s")
                return 1
            print(f"< notifications/resources/updated {uri}  {json.dumps(meta)}")
            print(f"> changes {{collection: {args.collection}, since: <next of the first call>}}")
            show(await call("changes", {"collection": args.collection, "since": first["next"]}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
