#!/bin/sh
# Container entry: prepare the mounted folders, put the embedded model in the library, then run the panel.
#
#   (no arguments) | serve [serve flags]   start the panel on 0.0.0.0:${PANEL_PORT:-8080}
#   users ... | keys ... | any sub-command  run `python -m panel <sub-command>` (e.g. users add admin --role admin)
#
# Without users configured the panel refuses to listen on 0.0.0.0; PANEL_INSECURE=1 allows it (only do that when the
# port is published on the host's loopback, as docker-compose.yml does by default).
set -eu

PANEL_HOME="${PANEL_HOME:-/opt/panel}"
PANEL_PYTHON="${PANEL_PYTHON:-python}"
MODELS_DIR="${PANEL_MODELS_DIR:-/models}"
DATA_DIR="${PANEL_DATA_DIR:-/data}"
BENCH_DIR="${PANEL_BENCHMARKS_DIR:-/benchmarks}"
EMBEDDED="${PANEL_EMBEDDED_MODEL:-}"

mkdir -p "$MODELS_DIR" "$DATA_DIR" "$BENCH_DIR"
if [ -n "$EMBEDDED" ] && [ -f "$EMBEDDED" ] && [ ! -e "$MODELS_DIR/$(basename "$EMBEDDED")" ]; then
    cp "$EMBEDDED" "$MODELS_DIR/" && echo "panel-entrypoint: put the embedded model in $MODELS_DIR"
fi

users_configured() {
    [ -n "${PANEL_USERS:-}" ] || [ -s "${PANEL_USERS_FILE:-$DATA_DIR/users.json}" ]
}

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- serve "$@"
fi
cd "$PANEL_HOME"
if [ "$1" = serve ]; then
    shift
    case "${PANEL_INSECURE:-0}" in 1|true|yes|on) insecure=1 ;; *) insecure=0 ;; esac
    if ! users_configured && [ "$insecure" = 0 ]; then
        echo "panel-entrypoint: no users configured, and the container listens on all its interfaces." >&2
        echo "  add one:   docker compose run --rm panel users add admin --role admin" >&2
        echo "  or accept an open panel published on the host's loopback only: PANEL_INSECURE=1" >&2
        exit 2
    fi
    exec "$PANEL_PYTHON" -m panel serve --host "${PANEL_HOST:-0.0.0.0}" --port "${PANEL_PORT:-8080}" "$@"
fi
exec "$PANEL_PYTHON" -m panel "$@"
