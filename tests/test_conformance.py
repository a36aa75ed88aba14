"""The official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
tests/conformance/) against `freshet serve`: auth off, loopback, fed by a real broker.

tests/conformance/scenarios.toml lists every server scenario of the suite as run (must pass)
or skipped (needs the suite's own fixtures, with the reason). The whole suite runs in one
process; skipped scenarios must fail for exactly their stated reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

import kafka_util
from freshet_util import FreshetServer, write_config
from kafka_util import REPO_ROOT, Producer

SCENARIOS = REPO_ROOT / "tests" / "conformance" / "scenarios.toml"
SUITE = REPO_ROOT / ".tools" / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def suite(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if not SUITE.is_file():
        pytest.fail(f"{SUITE} not found: run scripts/setup.sh (it needs Node >= 20 and npm)", pytrace=False)
    return subprocess.run(["node", str(SUITE), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plan() -> dict:
    return tomllib.loads(SCENARIOS.read_text())


@pytest.fixture(scope="module")
def server(broker, tmp_path_factory):
    work = tmp_path_factory.mktemp("conformance")
    topic = kafka_util.unique_topic("conformance")
    kafka_util.create_topic(broker, topic, partitions=1)
    with Producer(broker) as p:
        p.send(topic, key="c1", value={"id": "c1", "title": "Conformance", "body": "a document to serve"})
    config = write_config(work / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}},
                          [{"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title"}])
    srv = FreshetServer(config, work)
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()[-3000:]


def test_every_suite_scenario_is_run_or_skipped_with_a_reason(plan):
    listed = suite("list", "--server")
    assert listed.returncode == 0, listed.stderr
    in_suite = set(re.findall(r"^\s+- (\S+)", listed.stdout, re.M))
    run = [s["name"] for s in plan["run"]]
    skip = [s["name"] for s in plan["skip"]]
    assert len(run + skip) == len(set(run + skip)), "a scenario is listed twice"
    assert set(run) | set(skip) == in_suite, "scenarios.toml and the suite disagree"
    assert all(s.get("why") and s.get("fails_with") for s in plan["skip"])
    # The scenarios the issue names must stay in the run list.
    assert {"server-initialize", "tools-list", "ping", "resources-list", "dns-rebinding-protection"} <= set(run)


def results(out: Path) -> dict[str, list[dict]]:
    """{scenario: checks} from the suite's output directory (`server-<scenario>-<time>/checks.json`)."""
    found = {}
    for checks in out.glob("server-*/checks.json"):
        name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks.parent.name.removeprefix("server-"))
        found[name] = json.loads(checks.read_text())
    return found


def test_suite_passes_against_freshet_serve(plan, server, tmp_path):
    # --suite all: also the pending scenarios (server-sse-polling, json-schema-2020-12).
    done = suite("server", "--url", server.mcp_url, "--suite", "all", "-o", str(tmp_path))
    got = results(tmp_path)
    assert got, f"no results from the suite:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    problems = []
    for s in plan["run"]:
        checks = got.get(s["name"])
        if not checks:
            problems.append(f"{s['name']}: not run")
            continue
        allowed = set(s.get("allow_warnings", []))
        for c in checks:
            ok = c["status"] in ("SUCCESS", "INFO") or (c["status"] == "WARNING" and c["id"] in allowed)
            if not ok:
                problems.append(f"{s['name']}: {c['id']} {c['status']}: {c.get('errorMessage')}")
        if not any(c["status"] == "SUCCESS" for c in checks):
            problems.append(f"{s['name']}: no successful check")
    for s in plan["skip"]:
        failures = [c.get("errorMessage") or "" for c in got.get(s["name"], []) if c["status"] == "FAILURE"]
        if not failures:
            problems.append(f"{s['name']}: skipped but passes now: move it to [[run]]")
        elif not any(s["fails_with"] in m for m in failures):
            problems.append(f"{s['name']}: fails for another reason than the skip says: {failures}")
    assert not problems, "\n".join(problems) + f"\n\nsuite output:\n{done.stdout[-4000:]}"
