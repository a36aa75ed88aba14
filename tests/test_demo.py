"""The README's demo command works: broker, sample data streaming in, server answering a
hybrid search with freshness metadata; Ctrl-C stops it quietly; a busy port is named at once."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from kafka_util import REPO_ROOT, free_port


def demo_env() -> dict[str, str]:
    # The test command built the same cargo profile (FRESHET_PROFILE) the demo builds, so its
    # build step is a no-op here.
    return {
        **os.environ,
        "FRESHET_DEMO_BROKER_PORT": str(free_port(4)),
        "FRESHET_DEMO_HTTP_PORT": str(free_port()),
    }


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_demo_answers_a_hybrid_search_with_freshness():
    done = subprocess.run(["bash", "scripts/demo.sh", "--once"], cwd=REPO_ROOT, env=demo_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"mode=hybrid caught_up=True", out), out
    hits = re.findall(r"^\d\. \[[0-9.]+\] doc-\d{4}", out, re.M)
    assert len(hits) == 3, out
    assert re.search(r"from articles/\d@\d+\s+event_time=\S+Z\s+age=\d+ ms\s+index_delay=\d+ ms", out), out
    assert "consumer" in out.lower()
    # A caught-up partition: the last applied offset is just below the log end.
    for applied, end, lag in re.findall(r"applied=(\d+) end=(\d+) lag=(\d+)", out):
        assert int(applied) < int(end) and int(lag) == 0, out
    assert "Traceback" not in done.stdout + done.stderr


def test_demo_ctrl_c_while_a_query_runs_stops_everything_quietly():
    """Ctrl-C in a terminal signals the whole foreground process group: the script, the query
    client in flight, and whatever else shares the group."""
    env = demo_env()
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out: list[str] = []
    try:
        answers = 0
        deadline = time.monotonic() + 300
        while answers < 2:
            assert time.monotonic() < deadline, "".join(out)
            line = proc.stdout.readline()
            assert line, "demo ended early: " + "".join(out) + proc.stderr.read()
            out.append(line)
            # Each answer starts with an empty line, printed as its query starts.
            if line == "\n":
                answers += 1
        # The second query was just started: interrupt it mid-flight (importing the client
        # alone takes longer than this).
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(out) + rest + err
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "demo: stopped" in err, err
    # The first answer was complete and caught up (a head-consistency read after /readyz).
    assert "caught_up=True" in "".join(out), text
    # Nothing it started is left: the broker's and freshet's ports are free again.
    assert port_free(int(env["FRESHET_DEMO_HTTP_PORT"])), text
    broker_port = int(env["FRESHET_DEMO_BROKER_PORT"])
    deadline = time.monotonic() + 10
    while not port_free(broker_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert port_free(broker_port), text


@pytest.mark.parametrize("variable", ["FRESHET_DEMO_HTTP_PORT", "FRESHET_DEMO_BROKER_PORT"])
def test_demo_names_a_busy_port_and_its_variable_at_once(variable):
    env = demo_env()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env[variable] = str(port)
        started = time.monotonic()
        done = subprocess.run(["bash", "scripts/demo.sh", "--once"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port}" in done.stderr and variable in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # Before any setup, build or broker start.
    assert "building" not in done.stderr and "kafka:" not in done.stdout + done.stderr
    assert took < 15, took
