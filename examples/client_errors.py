"""Turns the failures a command-line MCP client meets most (server not running, wrong URL,
refused token, Ctrl-C) into one line instead of a traceback. Shared by examples/query.py and
examples/langchain_agent.py; works with httpx and httpx2 (their exception names are the same).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator

# Exceptions raised when the server cannot be reached or stops answering (httpx/httpx2 names).
_TRANSPORT_ERRORS = {"TransportError", "ConnectError", "ConnectTimeout", "ReadError", "ReadTimeout",
                     "WriteError", "RemoteProtocolError", "PoolTimeout"}


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """exc and everything inside it: exception-group members, causes, contexts."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(getattr(e, "exceptions", ()) or ())
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                stack.append(linked)


def explain(exc: BaseException, target: str) -> str | None:
    """One line saying what went wrong talking to `target`, or None if exc is something else."""
    for e in _leaves(exc):
        names = {cls.__name__ for cls in type(e).__mro__}
        if names & _TRANSPORT_ERRORS or isinstance(e, ConnectionError):
            return f"cannot reach freshet at {target}: {e or type(e).__name__} (is it running?)"
        if "HTTPStatusError" in names:
            response = getattr(e, "response", None)
            status = getattr(response, "status_code", "?")
            hint = " (a bearer token is needed: --token)" if status == 401 else ""
            return f"freshet at {target} answered HTTP {status}{hint}"
        if "McpError" in names and "onnection closed" in str(e):
            return f"freshet ({target}) closed the connection; its error is above"
    return None


def run(main: Callable[[], Awaitable[int]], target: str) -> int:
    """Runs `main()`; a connection failure (to `target`, a URL or a command) or Ctrl-C ends it
    with one line, not a traceback."""
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 — anything not explained is re-raised below
        line = explain(exc, target)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
