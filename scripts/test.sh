#!/usr/bin/env bash
# The test command (README): installs what the tests need (idempotent), builds freshet, and
# runs the Rust unit tests and the integration tests (real broker, real binary, real MCP
# clients). Set FRESHET_TEST_BROKERS=host:port to run the integration tests against an
# existing Kafka cluster instead of a private Apache Kafka, and
# FRESHET_TEST_SCHEMA_REGISTRY=URL to use an existing schema registry instead of a private
# Apicurio Registry. Arguments go to pytest.
# FRESHET_PROFILE (default dev) is the cargo profile, the same as the demo's: one build
# serves both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/prereqs.sh

require_prereqs test
bash scripts/setup.sh
echo "test: building freshet ($(profile_name) profile; a first build takes 10-25 minutes on 2 cores)" >&2
cargo build --locked --profile "$(profile_name)" --bins
cargo test --locked --profile "$(profile_name)"
export FRESHET_BIN="${FRESHET_BIN:-$(profile_dir)/freshet}"
.venv/bin/python -m pytest -q tests/ "$@"
