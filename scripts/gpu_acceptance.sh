#!/usr/bin/env bash
# One prepared acceptance run of the panel on a GPU machine (no internet needed once the models are staged):
# starts a real panel, loads vLLM and llama.cpp, checks GPU memory, sleep/wake, offload, the Monitor and the doctor,
# prints one table and writes it (Markdown + JSON) to --out. See scripts/gpu_acceptance.py for the checks.
#
#   scripts/gpu_acceptance.sh [--out DIR] [--allow-cpu] [...]      (--help for every option)
#
# The Python is the panel's venv: PANEL_VENV if set, else .venv in the repo (launch.sh's default), else the CI one
# (~/.cache/panel/venv-ci-py311).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PANEL_VENV:-}" ]; then
  candidates=("$PANEL_VENV")
else
  candidates=("$REPO/.venv" "$HOME/.cache/panel/venv-ci-py311")
fi
for venv in "${candidates[@]}"; do
  if [ -x "$venv/bin/python" ]; then
    cd "$REPO"
    exec "$venv/bin/python" "$REPO/scripts/gpu_acceptance.py" "$@"
  fi
done
echo "error: no panel venv at ${candidates[*]}: run ./launch.sh setup (or set PANEL_VENV)" >&2
exit 1
