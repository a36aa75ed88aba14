"""Helpers to run the real `freshet` binary in tests and talk to it with the real Python
MCP SDK (`mcp` 2.x) over streamable HTTP and stdio."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from kafka_util import REPO_ROOT, _die_with_parent, free_port


def freshet_bin() -> Path:
    """The binary under test: $FRESHET_BIN, else target/debug/freshet (built by scripts/test.sh)."""
    path = Path(os.environ.get("FRESHET_BIN", REPO_ROOT / "target" / "debug" / "freshet"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `cargo build` (scripts/test.sh does)")
    return path


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_config(path: Path, sections: dict[str, dict[str, Any]], collections: list[dict[str, Any]]) -> Path:
    """Writes a config file: plain `[section]` tables, then `[[collections]]` entries whose
    dict-valued keys (embedding, hnsw) become sub-tables."""
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        for k, v in table.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {toml_value(v)}")
        for sub, items in subtables.items():
            lines.append(f"[{name}.{sub}]")
            for k, v in items.items():
                lines.append(f"{json.dumps(k)} = {toml_value(v)}")
    for c in collections:
        lines.append("[[collections]]")
        for k, v in c.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {toml_value(v)}")
        for sub, items in c.items():
            if isinstance(items, dict):
                lines.append(f"[collections.{sub}]")
                for k, v in items.items():
                    lines.append(f"{k} = {toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


class FreshetServer:
    """`freshet serve` on a free loopback port, its log captured to a file."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.config = config
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"freshet-{self.port}.log"
        self._log = open(self.log_path, "wb")
        full_env = {
            **os.environ,
            "FRESHET_SERVER__HTTP_ADDR": f"127.0.0.1:{self.port}",
            "FRESHET_LOG": os.environ.get("FRESHET_LOG", "info,rmcp=warn"),
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [str(freshet_bin()), "serve", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=workdir,
            preexec_fn=_die_with_parent,
        )

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits for /readyz to answer 200 (caught up with the stream)."""
        deadline = time.monotonic() + timeout
        # One client for the whole wait: a new one per poll costs milliseconds of CPU (TLS
        # set-up), which a long catch-up (benchmarks) would take from the server.
        with httpx2.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"freshet exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx2.HTTPError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"freshet not ready after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def serving(config: Path, workdir: Path, env: dict[str, str] | None = None, timeout: float = 60.0):
    """A ready `freshet serve` for a `with` block; it must stop cleanly on SIGTERM after it."""
    srv = FreshetServer(config, workdir, env)
    try:
        srv.wait_ready(timeout)
        yield srv
    finally:
        code = srv.stop()
        print(srv.log()[-3000:])
        assert code == 0, f"freshet exited with {code} on SIGTERM"


@contextlib.asynccontextmanager
async def http_client(url: str, mode: str = "auto", headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP. `mode="auto"` speaks 2026-07-28 (stateless);
    `mode="legacy"` speaks 2025-11-25 with a session."""
    async with httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


@contextlib.asynccontextmanager
async def stdio_client(config: Path, env: dict[str, str] | None = None, mode: str = "auto") -> AsyncIterator[Client]:
    """An MCP client that spawns `freshet stdio --config CONFIG`."""
    params = StdioServerParameters(
        command=str(freshet_bin()),
        args=["stdio", "--config", str(config)],
        env={**os.environ, "FRESHET_LOG": "warn", **(env or {})},
        # data_dir (audit log, persisted indexes) is relative: keep it beside the config.
        cwd=str(config.parent),
    )
    async with Client(params, mode=mode) as client:
        yield client


def mint_token(secret_env: str, secret: str, sub: str, *, collections: list[str] | None = None,
               tenant: str | None = None, ttl: str = "10m", issuer: str | None = None,
               audience: str | None = None, config: Path | None = None) -> str:
    """A dev HS256 token from `freshet token` (the command the README shows)."""
    args = [str(freshet_bin()), "token", "--secret-env", secret_env, "--sub", sub, "--ttl", ttl]
    if collections is not None:
        args += ["--collections", ",".join(collections)]
    for flag, value in (("--tenant", tenant), ("--issuer", issuer), ("--audience", audience)):
        if value is not None:
            args += [flag, value]
    if config is not None:
        args += ["--config", str(config)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30,
                          env={**os.environ, secret_env: secret})
    if done.returncode != 0:
        raise RuntimeError(f"freshet token failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


class ToolError(Exception):
    """A tool answered with isError: true; the message is what the agent would read."""


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Calls a tool and returns its structuredContent, checking the text copy matches."""
    result = await client.call_tool(tool, args)
    text = result.content[0].text if result.content else ""
    if result.is_error:
        raise ToolError(text)
    assert result.structured_content is not None, f"{tool} returned no structuredContent"
    assert json.loads(text) == result.structured_content, "text content differs from structuredContent"
    return result.structured_content


async def tool_error(client: Client, tool: str, args: dict[str, Any]) -> str:
    """Calls a tool that must fail and returns its error text."""
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool}({args}) should have failed but returned {result.structured_content}"
    return result.content[0].text
