#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes sure the local Redis and PostgreSQL the
# scale-out tests talk to are up (starting or installing them if not), then runs every test with
# every feature, and the build without any crypto backend.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

wait_for() {
    local what=$1; shift
    for _ in $(seq 1 50); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "$what did not come up"; return 1
}

apt_install() {
    log "installing $*"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}

ensure_redis() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting redis on 127.0.0.1:6379"
        mkdir -p /tmp/jwt-gate-redis
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir /tmp/jwt-gate-redis --logfile /tmp/jwt-gate-redis/redis.log
    fi
    wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
}

ensure_postgres() {
    command -v pg_isready >/dev/null 2>&1 || apt_install postgresql
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        log "starting postgresql"
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
        else
            service postgresql start
        fi
    fi
    wait_for postgresql pg_isready -h 127.0.0.1 -p 5432 -q
    # A freshly installed server has no `test` database yet; make it as the postgres superuser.
    if ! psql "postgres://postgres@127.0.0.1:5432/test" -c 'select 1' >/dev/null 2>&1; then
        log "creating database test"
        su postgres -c "createdb test" 2>/dev/null || true
    fi
}

# The forward-auth tests run a real nginx (as the current user, on 127.0.0.1, with its own
# configuration and temporary files): only the binary is needed.
ensure_nginx() {
    [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || apt_install nginx
}

# promtool, Prometheus' own linter, checks the demo's /metrics. Only that one binary is taken
# from Debian's `prometheus` package (no server installed or started): seconds, not minutes.
ensure_promtool() {
    local tools=target/tools
    if command -v promtool >/dev/null 2>&1; then
        PROMTOOL=$(command -v promtool)
    elif [ -x "$tools/promtool" ]; then
        PROMTOOL=$PWD/$tools/promtool
    else
        local start=$SECONDS scratch
        log "extracting promtool from Debian's prometheus package"
        scratch=$(mktemp -d)
        if ! (cd "$scratch" && apt-get download prometheus >/dev/null 2>&1); then
            if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
            (cd "$scratch" && apt-get download prometheus >/dev/null)
        fi
        mkdir -p "$tools"
        dpkg-deb --fsys-tarfile "$scratch"/prometheus_*.deb | tar -x -C "$scratch" ./usr/bin/promtool
        mv "$scratch/usr/bin/promtool" "$tools/promtool"
        rm -rf "$scratch"
        PROMTOOL=$PWD/$tools/promtool
        log "promtool ready in $((SECONDS - start))s"
    fi
    export PROMTOOL
}

# The tests in tests/oidc run panva's oidc-provider, a certified OpenID provider, under node on
# 127.0.0.1. It is installed from npm, exactly as tests/oidc/package-lock.json pins it, into
# target/oidc (node_modules there); reinstalled only when the lock file changes.
ensure_oidc_provider() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    local dir=target/oidc
    if [ -f "$dir/node_modules/oidc-provider/package.json" ] \
        && cmp -s tests/oidc/package-lock.json "$dir/package-lock.json"; then
        return 0
    fi
    log "installing oidc-provider (npm ci into $dir)"
    mkdir -p "$dir"
    cp tests/oidc/package.json tests/oidc/package-lock.json "$dir/"
    npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund >/dev/null
}

# schemathesis checks the demo against its own OpenAPI document. It comes from PyPI, pinned,
# into a virtualenv of its own under target/ so no system Python package is touched.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local venv=target/tools/schemathesis
    if [ -x "$venv/bin/schemathesis" ] \
        && "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
        :
    else
        local start=$SECONDS
        log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
            apt_install python3-venv
        fi
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
        log "schemathesis ready in $((SECONDS - start))s"
    fi
    SCHEMATHESIS=$PWD/$venv/bin/schemathesis
    export SCHEMATHESIS
}

# Headless Chromium, Debian's package, loads the demo's /docs page.
ensure_chromium() {
    if ! command -v chromium >/dev/null 2>&1; then
        local start=$SECONDS
        apt_install chromium
        log "chromium ready in $((SECONDS - start))s"
    fi
    CHROMIUM=$(command -v chromium)
    export CHROMIUM
}

ensure_redis
ensure_postgres
ensure_nginx
ensure_promtool
ensure_oidc_provider
ensure_schemathesis
ensure_chromium

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# Every test's files (databases, keys, nginx and Chromium profiles) go into one directory of
# this run's, removed when the run ends however it ends, so runs leave nothing in /tmp.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/jwt-gate-tests.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

# The demo tests start examples/server.rs as a user runs it; build it here, with the suite's
# features, rather than from inside a test while other tests run.
log "cargo build --all-features --examples"
cargo build --all-features --examples
log "cargo test --all-features"
cargo test --all-features
log "cargo test --no-default-features --lib (no crypto backend: keys are a clear error)"
cargo test --no-default-features --lib
