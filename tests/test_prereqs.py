"""The scripts name every missing prerequisite at once, before building or downloading
anything (README → Prerequisites)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kafka_util import REPO_ROOT

# What the scripts themselves run besides the prerequisites.
SHELL_TOOLS = ["bash", "sed", "head", "cat", "dirname", "env"]
PREREQS = ["cargo", "cc", "c++", "make", "pkg-config", "curl", "java", "mvn", "node", "npm"]


def fake_path(tmp_path: Path, drop: set[str], fakes: dict[str, str] | None = None) -> str:
    """A PATH with the real tools except `drop`, plus `fakes` (name → script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SHELL_TOOLS + [p for p in PREREQS if p not in drop]:
        real = shutil.which(name)
        if real is None:
            pytest.skip(f"{name} is not installed here")
        (bin_dir / name).symlink_to(real)
    (bin_dir / "python3").symlink_to(sys.executable)
    for name, script in (fakes or {}).items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def run(script: str, path: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "CARGO_TARGET_DIR")}
    env.update(PATH=path, FRESHET_DEMO_HTTP_PORT="1", FRESHET_DEMO_BROKER_PORT="1")
    return subprocess.run(["bash", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("script", ["scripts/demo.sh", "scripts/test.sh"])
def test_missing_tools_are_all_named_before_anything_runs(tmp_path, script):
    # pkg-config that finds no library: the -dev packages are missing.
    path = fake_path(tmp_path, drop={"java", "mvn", "cc", "node", "npm", "pkg-config"},
                     fakes={"pkg-config": "exit 1"})
    done = run(script, path)
    assert done.returncode == 1, done.stdout + done.stderr
    err = done.stderr
    assert err.startswith("missing prerequisites (README → Prerequisites):"), err
    for named in ("java (Java >= 17", "mvn (", "cc (C/C++ compiler", "(libssl-dev)", "(zlib1g-dev)"):
        assert named in err, err
    # Node is for the tests only.
    assert ("node and npm" in err) == (script == "scripts/test.sh"), err
    assert "building" not in err and "setup:" not in err and done.stdout == ""


def test_an_old_java_is_named_with_its_version(tmp_path):
    path = fake_path(tmp_path, drop={"java"},
                     fakes={"java": "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2"})
    done = run("scripts/setup.sh", path)
    assert done.returncode == 1
    assert "Java >= 17 (java 11 found" in done.stderr, done.stderr


def test_long_installs_say_they_are_still_running():
    """A cold install step reports progress while it runs instead of looking hung, and its
    exit status is passed on."""
    script = (f'source "{REPO_ROOT}/scripts/setup.sh"; '
              'with_progress "installing something" sleep 2.5; echo "status $?"; '
              'with_progress "failing" sh -c "exit 3" || echo "failed $?"')
    env = dict(os.environ, SETUP_PROGRESS_EVERY="1")
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert "setup: still installing something (1 s)" in out.stderr, out.stderr
    assert "setup: still installing something (2 s)" in out.stderr, out.stderr
    assert "status 0" in out.stdout and "failed 3" in out.stdout, out.stdout
