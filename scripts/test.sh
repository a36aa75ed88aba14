#!/usr/bin/env bash
# The test command (README): installs what the tests need (idempotent), builds freshet, and
# runs the Rust unit tests and the integration tests (real broker, real binary, real MCP
# clients). Set FRESHET_TEST_BROKERS=host:port to run the integration tests against an
# existing Kafka cluster instead of a private Apache Kafka.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --locked --bins
cargo test --locked
.venv/bin/python -m pytest -q tests/ "$@"
