#!/usr/bin/env bash
# The demo server against the FastAPI tutorial app, then the demo's protected route under a
# login flood (see docs/performance.md). Both servers listen on 127.0.0.1 only and are stopped on exit.
#
#   compare/run.sh [--seconds S] [--rounds R]      # defaults: 5 s runs, 3 rounds
#
# DEMO_PORT / FASTAPI_PORT pick the ports (defaults 39080 / 39081). The login clients connect
# from 127.0.0.2, 127.0.0.3, ...: the demo throttles per client address and counts attempts
# in flight. FLOOD_ONE_ADDRESS=1 adds a round with all of them on 127.0.0.1 (most get 429);
# FLOOD_FASTAPI=1 floods the FastAPI app too (each of its logins holds its event loop).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
demo_port=${DEMO_PORT:-39080}
fastapi_port=${FASTAPI_PORT:-39081}
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

(cd "$root" && cargo build --release --example server)
(cd "$here/load" && CARGO_TARGET_DIR=$target cargo build --release)
if [ ! -x "$here/fastapi/.venv/bin/uvicorn" ]; then
    python3 -m venv "$here/fastapi/.venv"
    "$here/fastapi/.venv/bin/pip" install -q -r "$here/fastapi/requirements.txt"
fi

JWT_GATE_ADDR="127.0.0.1:$demo_port" JWT_GATE_DB="$work/demo.db" \
    JWT_GATE_SECRET="a comparison secret of 32 bytes!" \
    timeout -k 5 1800 "$target/release/examples/server" >"$work/demo.log" 2>&1 &
pids+=($!)
# One worker and no --reload, as the tutorial runs it; access log off, as one would in
# production (it costs FastAPI, not the demo, which logs nothing per request).
FASTAPI_DB="sqlite:///$work/fastapi.db" \
    timeout -k 5 1800 "$here/fastapi/.venv/bin/uvicorn" --app-dir "$here/fastapi" main:app \
    --host 127.0.0.1 --port "$fastapi_port" --workers 1 --no-access-log >"$work/fastapi.log" 2>&1 &
pids+=($!)
wait_for_port "$demo_port"
wait_for_port "$fastapi_port"

load="$target/release/compare-load"
echo "# $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"$load" versus "127.0.0.1:$demo_port" "127.0.0.1:$fastapi_port" "$@"
echo
"$load" flood "127.0.0.1:$demo_port" "$@"
echo
# The server's pid (its parent is `timeout`), so the bodies run can report its CPU.
SERVER_PID=$(pgrep -P "${pids[0]}" || echo "${pids[0]}") "$load" bodies "127.0.0.1:$demo_port" "$@"
if [ "${FLOOD_ONE_ADDRESS:-0}" = 1 ]; then
    echo
    "$load" flood "127.0.0.1:$demo_port" --rounds 1 --one-address "$@"
fi
if [ "${FLOOD_FASTAPI:-0}" = 1 ]; then
    echo
    "$load" flood "127.0.0.1:$fastapi_port" --rounds 1 "$@"
fi
echo
echo "# done $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
