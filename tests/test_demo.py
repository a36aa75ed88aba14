"""The README's demo command works: broker, sample data streaming in, server answering a
hybrid search with freshness metadata."""

from __future__ import annotations

import os
import re
import subprocess

from kafka_util import REPO_ROOT, free_port


def test_demo_answers_a_hybrid_search_with_freshness():
    env = {
        **os.environ,
        "FRESHET_DEMO_PROFILE": "dev",  # reuse the debug build the test command made
        "FRESHET_DEMO_BROKER_PORT": str(free_port(4)),
        "FRESHET_DEMO_HTTP_PORT": str(free_port()),
    }
    done = subprocess.run(["bash", "scripts/demo.sh", "--once"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"mode=hybrid caught_up=True", out), out
    hits = re.findall(r"^\d\. \[[0-9.]+\] doc-\d{4}", out, re.M)
    assert len(hits) == 3, out
    assert re.search(r"from articles/\d@\d+\s+event_time=\S+Z\s+age=\d+ ms\s+index_delay=\d+ ms", out), out
    assert "consumer" in out.lower()
