"""Closed-loop HTTP load for query-latency measurements.

Each simulated client is its own process with one keep-alive `http.client` connection that
sends its next request as soon as the previous answer is read. Processes, not asyncio tasks:
a Python event loop serving 16 clients spends more CPU per request than the server under
test does, and would measure itself. The same generator drives freshet (MCP `tools/call`
POSTs, 2026-07-28 stateless) and the peer (its REST endpoint), so both pay the same client
cost.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

#: The `_meta` a 2026-07-28 client sends with every stateless request.
MCP_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "freshet-bench", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def mcp_headers(tool: str) -> dict[str, str]:
    return {"content-type": "application/json", "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": tool}


def mcp_body(tool: str, arguments: dict[str, Any], request_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments, "_meta": MCP_META}}).encode()


def mcp_result(raw: bytes) -> dict[str, Any]:
    """The JSON-RPC message of a response that may be plain JSON or one SSE event."""
    text = raw.decode()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            return json.loads(line[5:])
    raise ValueError(f"no JSON-RPC message in response: {text[:200]!r}")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    xs = sorted(values)

    def pct(p: float) -> float:
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    return {"n": len(xs), "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": xs[-1],
            "mean": statistics.fmean(xs)}


def _client(host: str, port: int, path: str, headers: dict[str, str], bodies: list[bytes],
            must_contain: bytes, start_at: float, seconds: float, seed: int, out: Any) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    latencies: list[float] = []
    errors: list[str] = []
    i = seed
    # One untimed request opens the connection.
    conn.request("POST", path, bodies[i % len(bodies)], headers)
    conn.getresponse().read()
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        i += 1
        body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        elapsed_ms = (time.perf_counter() - t0) * 1000
        if resp.status == 200 and must_contain in data:
            latencies.append(elapsed_ms)
        elif len(errors) < 5:
            errors.append(f"{resp.status}: {data[:300]!r}")
        else:
            errors.append("")
    conn.close()
    out.put((latencies, errors))


def closed_loop(url_host: str, port: int, path: str, headers: dict[str, str], bodies: list[bytes],
                clients: int, seconds: float, must_contain: bytes = b"") -> dict[str, Any]:
    """Runs `clients` concurrent closed-loop clients for `seconds`; latency percentiles in ms,
    queries/s, and the number of failed requests (with up to five examples)."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5 + 0.05 * clients
    procs = [ctx.Process(target=_client, args=(url_host, port, path, headers, bodies, must_contain,
                                               start_at, seconds, k * 7919, out), daemon=True)
             for k in range(clients)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in procs:
        lat, errs = out.get(timeout=seconds + 120)
        latencies += lat
        errors += errs
    for p in procs:
        p.join(10)
    result = percentiles(latencies)
    result["qps"] = len(latencies) / seconds
    result["errors"] = len(errors)
    if errors:
        result["error_examples"] = [e for e in errors if e][:5]
    return result
