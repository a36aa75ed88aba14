"""freshet's tools in LangChain, through `langchain-mcp-adapters` (0.3.x): load them from a
freshet sidecar (stdio) or a freshet server (streamable HTTP, with a bearer token), then call
`search` the way an agent would. The loaded tools are ordinary LangChain tools: hand them to
any agent (`create_agent(model, tools)`); no LLM is needed to run this file.

    # stdio: spawns `freshet stdio --config CONFIG` as a sidecar (in this directory)
    python examples/langchain_agent.py --stdio --config config/demo.toml "consumer lag"
    # streamable HTTP; the token comes from --token or $FRESHET_TOKEN (sent as a bearer header)
    FRESHET_TOKEN=... python examples/langchain_agent.py --url http://127.0.0.1:8080/mcp "consumer lag"

Needs the adapters' own virtualenv (they need mcp<2): `.venv-langchain/bin/python`, made by
scripts/setup.sh from scripts/requirements-langchain.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_errors import run  # noqa: E402

try:
    from langchain_core.messages import ToolMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools
except ImportError as missing:
    sys.exit(f"error: {missing.name} is not installed here: run `bash scripts/setup.sh` once, then use "
             f"LangChain's virtualenv: .venv-langchain/bin/python examples/langchain_agent.py ...")

REPO = Path(__file__).resolve().parent.parent


def connection(args: argparse.Namespace) -> dict:
    """The adapters' connection config for one freshet."""
    if args.stdio:
        return {
            "transport": "stdio",
            "command": args.freshet,
            "args": ["stdio", "--config", args.config],
            # The MCP SDK passes only a minimal environment to the child: hand on freshet's own
            # settings (FRESHET_SERVER__DATA_DIR, FRESHET_KAFKA__BROKERS, ...) explicitly.
            "env": {**{k: v for k, v in os.environ.items() if k.startswith("FRESHET_")},
                    "PATH": os.environ.get("PATH", "")},
        }
    token = args.token or os.environ.get("FRESHET_TOKEN")
    return {
        "transport": "streamable_http",
        "url": args.url,
        # With auth.mode = "none" (loopback) freshet ignores the header; with "jwt" it is required.
        "headers": {"Authorization": f"Bearer {token}"} if token else {},
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--stdio", action="store_true", help="spawn `freshet stdio` (needs --config)")
    where.add_argument("--url", help="a freshet server's MCP endpoint, e.g. http://127.0.0.1:8080/mcp")
    ap.add_argument("--config", help="freshet config file, for --stdio")
    ap.add_argument("--freshet", default=shutil.which("freshet") or str(REPO / "target" / "debug" / "freshet"),
                    help="the freshet binary, for --stdio (default: freshet on PATH, else target/debug/freshet)")
    ap.add_argument("--token", help="bearer token for --url (default: $FRESHET_TOKEN)")
    ap.add_argument("--collection", help="collection to search (default: all readable)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--mode", default="bm25", choices=["hybrid", "bm25", "vector"])
    ap.add_argument("--json", action="store_true", help="print the tool names and the structured result")
    args = ap.parse_args()
    if args.stdio and not args.config:
        ap.error("--stdio needs --config")
    return args


async def main(args: argparse.Namespace) -> int:
    client = MultiServerMCPClient({"freshet": connection(args)})
    # One session for the whole run: with stdio, `client.get_tools()` would start a new freshet
    # (which then re-reads its topics) for every tool call.
    async with client.session("freshet") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        arguments = {"query": args.query, "k": args.k, "mode": args.mode,
                     # Wait until what was written before this call is searchable (a fresh
                     # sidecar is still catching up).
                     "consistency": "head", "max_wait_ms": 10000}
        if args.collection:
            arguments["collection"] = args.collection
        # Invoked with a tool call, a tool answers with a ToolMessage whose artifact carries
        # MCP's structuredContent; `await tools["search"].ainvoke(arguments)` gives the text.
        message: ToolMessage = await tools["search"].ainvoke(
            {"type": "tool_call", "id": str(uuid.uuid4()), "name": "search", "args": arguments})
    if message.status == "error":
        print(f"search failed: {message.content}", file=sys.stderr)
        return 1
    result = message.artifact["structured_content"]
    if args.json:
        print(json.dumps({"tools": sorted(tools), "search": result}, indent=2))
        return 0
    print(f"loaded tools: {', '.join(sorted(tools))}")
    wm = result["freshness"]
    print(f'search "{args.query}" mode={result["mode"]} caught_up={wm["caught_up"]}')
    for i, hit in enumerate(result["results"], 1):
        f = hit["freshness"]
        print(f"{i}. [{hit['score']:.4f}] {hit['collection']}/{hit['id']}  {hit['title'] or ''}")
        print(f"   from {f['topic']}/{f['partition']}@{f['offset']}  age={f['age_ms']} ms")
    return 0


if __name__ == "__main__":
    cli = parse_args()
    sys.exit(run(lambda: main(cli), cli.url or f"{cli.freshet} stdio"))
