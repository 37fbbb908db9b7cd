#!/usr/bin/env bash
# Control for the login-flood figure: the demo's GET /auth-test latency alone, then while two
# CPU-bound shell loops run (no logins at all), alternating for 3 rounds. If the p99 rises
# about as much as under the login flood, the flood's effect is CPU contention from hashing.
# Needs the release demo and load generator built (compare/run.sh builds both).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$(dirname "$here")/target}
port=${DEMO_PORT:-39090}
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

JWT_GATE_ADDR="127.0.0.1:$port" JWT_GATE_DB="$work/demo.db" \
    JWT_GATE_SECRET="a comparison secret of 32 bytes!" \
    timeout -k 5 900 "$target/release/examples/server" >"$work/demo.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done

measure() {
    timeout 120 "$target/release/compare-load" flood "127.0.0.1:$port" --logins 0 --rounds 1 \
        | grep -E '^\| (4|32) \| alone'
}

echo "| GET connections | phase | requests/s | p50 ms | p99 ms | failures | | p99 again |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |"
for round in 1 2 3; do
    echo "| round $round: no busy loops | | | | | | | |"
    measure
    busy=()
    for _ in 1 2; do
        timeout 60 sh -c 'while :; do :; done' &
        busy+=($!)
    done
    echo "| round $round: two busy loops | | | | | | | |"
    measure
    kill "${busy[@]}" 2>/dev/null || true
    wait "${busy[@]}" 2>/dev/null || true
done
