# Sourced by scripts/setup.sh, demo.sh and test.sh: checks what must be installed by hand
# (README → Prerequisites) and names everything missing at once, before anything is built or
# downloaded; and the cargo profile the demo and the tests share.

# Prints "NAME (Debian/Ubuntu package)" lines for what `require_prereqs WHAT` is missing.
#   WHAT: setup (virtualenv, broker jars) | demo (setup + build + curl) | test (demo + Node)
missing_prereqs() {
  local what="$1" c py_ok=1
  if [[ "$what" != setup ]]; then
    command -v cargo >/dev/null || echo "cargo (Rust >= 1.88: https://rustup.rs)"
    for c in cc c++ make pkg-config; do
      command -v "$c" >/dev/null || case "$c" in
        cc | c++) echo "$c (C/C++ compiler for librdkafka: build-essential)" ;;
        make) echo "make (build-essential)" ;;
        pkg-config) echo "pkg-config (pkg-config)" ;;
      esac
    done
    if command -v pkg-config >/dev/null; then
      pkg-config --exists openssl || echo "OpenSSL headers (libssl-dev)"
      pkg-config --exists zlib || echo "zlib headers (zlib1g-dev)"
    fi
    command -v curl >/dev/null || echo "curl (curl)"
  fi
  local python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null; then
    echo "$python (Python >= 3.10: python3, python3-venv)"
    py_ok=0
  elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "Python >= 3.10 ($("$python" --version 2>&1) found; set PYTHON=/path/to/python3.10+)"
    py_ok=0
  fi
  if ((py_ok)) && ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "Python's venv module (python3-venv)"
  fi
  if ! command -v java >/dev/null; then
    echo "java (Java >= 17 for the Kafka broker and the schema registry: openjdk-17-jre-headless)"
  else
    local version
    version="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    if [[ -n "$version" ]] && ((version < 17)); then
      echo "Java >= 17 (java $version found: openjdk-17-jre-headless)"
    fi
  fi
  command -v mvn >/dev/null || echo "mvn (fetches the Kafka broker's jars and the schema registry: maven)"
  if [[ "$what" == test ]]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "node and npm (Node >= 20, for the test suite's MCP clients: nodejs, npm)"
    else
      local major
      major="$(node --version | sed 's/^v\([0-9]*\).*/\1/')"
      ((major >= 20)) || echo "Node >= 20 (node $(node --version) found)"
    fi
  fi
}

# Exits with a list of everything missing (see missing_prereqs).
require_prereqs() {
  local missing
  missing="$(missing_prereqs "$1")"
  [[ -z "$missing" ]] && return 0
  {
    echo "missing prerequisites (README → Prerequisites):"
    sed 's/^/  - /' <<<"$missing"
  } >&2
  exit 1
}

# The cargo profile the demo and the test command build (one build serves both):
# FRESHET_PROFILE, default dev (see README → Prerequisites for build times).
profile_name() { echo "${FRESHET_PROFILE:-dev}"; }

# Where cargo puts that profile's binaries (absolute; call from the repository root).
profile_dir() {
  local name target="${CARGO_TARGET_DIR:-target}"
  [[ "$target" == /* ]] || target="$PWD/$target"
  name="$(profile_name)"
  [[ "$name" == dev ]] && name=debug
  echo "$target/$name"
}
