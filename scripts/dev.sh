#!/usr/bin/env bash
# One entry point for people and CI:
#   scripts/dev.sh run     install, start PostgreSQL/Redis if needed, migrate, serve on :8000
#   scripts/dev.sh mcode … any `mcode` command (demo, event, import, …) in the environment of `run`
#   scripts/dev.sh test    install, start PostgreSQL/Redis if needed, ruff + mypy + pytest
#   scripts/dev.sh bench   the redirect benchmark (loadtests/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
LOCAL="$ROOT/.local"   # project-local PostgreSQL/Redis data, when this script had to start them

say() { printf '[dev] %s\n' "$*" >&2; }
die() { printf '[dev] %s\n' "$*" >&2; exit 1; }

python_bin() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  die "Python 3.11 or newer is needed (Debian/Ubuntu: apt-get install python3 python3-venv)"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(python_bin)" -m venv "$VENV" || die "could not create a venv (Debian/Ubuntu: apt-get install python3-venv)"
  fi
  local stamp="$VENV/.installed" want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing the project and its dev tools into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 60); do answers "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_postgres() {
  answers 127.0.0.1 5432 && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    say "PostgreSQL is not answering; starting the system cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  if ! answers 127.0.0.1 5432; then
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -z "$bin" ] && bin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    [ -x "$bin/initdb" ] || die "PostgreSQL is not running on 127.0.0.1:5432 and not installed.
  Install it (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15),
  or run everything with Docker: docker compose up"
    say "starting a project-local PostgreSQL in $LOCAL/pg"
    mkdir -p "$LOCAL"
    if [ ! -f "$LOCAL/pg/PG_VERSION" ]; then
      mkdir -p "$LOCAL/pg"
      [ "$(id -u)" = 0 ] && chown postgres "$LOCAL/pg"
      as_postgres "$bin/initdb" -D "$LOCAL/pg" -U postgres --auth=trust >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$LOCAL/pg" -l "$LOCAL/pg/server.log" \
      -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=$LOCAL/pg" start >/dev/null
  fi
  wait_for 127.0.0.1 5432 || die "PostgreSQL did not come up on 127.0.0.1:5432"
}

ensure_redis() {
  answers 127.0.0.1 6379 && return 0
  command -v redis-server >/dev/null 2>&1 || die "Redis is not running on 127.0.0.1:6379 and not installed.
  Install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis),
  or run everything with Docker: docker compose up"
  say "starting a project-local Redis in $LOCAL/redis"
  mkdir -p "$LOCAL/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$LOCAL/redis" --logfile "$LOCAL/redis/redis.log"
  wait_for 127.0.0.1 6379 || die "Redis did not come up on 127.0.0.1:6379"
}

# Only the default local URLs are ours to start; anything else is the operator's.
ensure_services() {
  case "${MCODE_DATABASE_URL:-127.0.0.1}" in *127.0.0.1*|*localhost*) ensure_postgres ;; esac
  case "${MCODE_REDIS_URL:-127.0.0.1}" in *127.0.0.1*|*localhost*) ensure_redis ;; esac
}

# The browser tests (tests/test_browser.py) drive the system's Chromium through Playwright: a
# browser download of Playwright's own cannot be had everywhere. As root on Debian, what is missing
# is installed (and a Japanese font, so the error pages' screenshots show text, not boxes);
# anywhere else those tests are skipped, and this says so once.
ensure_browser() {
  local want=() why
  if [ -z "${MCODE_CHROMIUM:-}" ] && [ ! -x /usr/lib/chromium/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    want+=(chromium fonts-ipafont-gothic)
  fi
  if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 &&
     grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
    say "installing ${want[*]} for the browser tests"
    mkdir -p "$LOCAL"
    # a machine whose package lists were never fetched knows no chromium: fetch them, once, then
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >"$LOCAL/apt.log" 2>&1; then
      apt-get update -qq >>"$LOCAL/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >>"$LOCAL/apt.log" 2>&1 ||
        say "apt-get could not install ${want[*]} (see $LOCAL/apt.log)"
    fi
  fi
  why=$("$VENV/bin/python" -c 'from tests.browser import unavailable; print(unavailable() or "")' 2>/dev/null) ||
    why="tests/browser.py does not import (pytest will say why)"
  if [ -n "$why" ]; then
    say "BROWSER TESTS SKIPPED: $why"
  fi
}

# tests/test_deploy.py checks deploy/ with promtool (Debian: prometheus) and docker-compose.yml with
# Compose (`docker compose`, or Debian's docker-compose 1.29: `config` needs no Docker engine), and
# tests/test_qr.py reads QR codes back with zbarimg (Debian: zbar-tools). As root on Debian what is
# missing is installed; anywhere else those tests are skipped, and this says so.
ensure_deploy_tools() {
  local want=() fresh_prometheus=
  command -v promtool >/dev/null 2>&1 || { want+=(prometheus); fresh_prometheus=1; }
  command -v zbarimg >/dev/null 2>&1 || want+=(zbar-tools)
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    want+=(docker-compose)
  fi
  if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 &&
     grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
    say "installing ${want[*]} for the deploy/ tests"
    mkdir -p "$LOCAL"
    # without --no-install-recommends docker-compose brings a Docker engine, prometheus a node exporter
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >>"$LOCAL/apt.log" 2>&1; then
      apt-get update -qq >>"$LOCAL/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >>"$LOCAL/apt.log" 2>&1 ||
        say "apt-get could not install ${want[*]} (see $LOCAL/apt.log)"
    fi
    # only promtool was wanted: the package's server must not stay running on :9090
    if [ -n "$fresh_prometheus" ] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  fi
  command -v promtool >/dev/null 2>&1 ||
    say "DEPLOY TESTS SKIPPED: no promtool (Debian/Ubuntu: apt-get install prometheus)"
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 ||
    say "COMPOSE TEST SKIPPED: no docker compose / docker-compose (Debian: apt-get install docker-compose)"
  command -v zbarimg >/dev/null 2>&1 ||
    say "QR DECODE TEST SKIPPED: no zbarimg (Debian/Ubuntu: apt-get install zbar-tools)"
}

# The suite again against a real Redis Cluster (3 masters, 3 replicas, AOF) started under .local/
# and stopped afterwards. The tests that need one node (a proxy to cut, a database number) skip
# themselves there; the fault tests start clusters of their own.
test_on_cluster() {
  local urls status=0
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    say "CLUSTER TESTS SKIPPED: redis-server and redis-cli are needed (Debian: apt-get install redis-server)"
    return 0
  fi
  urls=$("$VENV/bin/python" -m tests.cluster start "$LOCAL/test-cluster") || die "could not start a local Redis Cluster"
  say "the suite again on a Redis Cluster ($urls)"
  MCODE_TEST_REDIS="$urls" MCODE_TEST_REDIS_CLUSTER=1 "$VENV/bin/pytest" -q -p no:cacheprovider \
    --ignore=tests/test_faults.py --ignore=tests/test_browser.py --ignore=tests/test_deploy.py "$@" || status=$?
  "$VENV/bin/python" -m tests.cluster stop "$LOCAL/test-cluster"
  return $status
}

cmd=${1:-}
shift || true
case "$cmd" in
  run|mcode)
    ensure_venv
    ensure_services
    # A local run is a development run unless told otherwise: shipped secrets are accepted.
    export MCODE_ENV=${MCODE_ENV:-dev}
    # Short links, the demo's steps and `mcode event` name the address `run` serves on (PORT, HOST),
    # unless MCODE_PUBLIC_URL says otherwise (here or in .env).
    if [ -z "${MCODE_PUBLIC_URL:-}" ] && ! grep -Eqsi '^[[:space:]]*(export[[:space:]]+)?MCODE_PUBLIC_URL[[:space:]]*=' .env; then
      public_host=${HOST:-127.0.0.1}
      case "$public_host" in 0.0.0.0) public_host=127.0.0.1 ;; ::|'[::]') public_host='[::1]' ;; *:*) public_host="[$public_host]" ;; esac
      export MCODE_PUBLIC_URL="http://$public_host:${PORT:-8000}"
    fi
    [ "$cmd" = mcode ] && exec "$VENV/bin/mcode" "$@"
    [ "$MCODE_ENV" = dev ] && say "MCODE_ENV=dev: admin token is 'dev-admin-token' (see README)"
    exec "$VENV/bin/mcode" serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --workers "${WORKERS:-2}" "$@"
    ;;
  test)
    ensure_venv
    ensure_services
    ensure_browser
    ensure_deploy_tools
    "$VENV/bin/ruff" check service tests loadtests
    "$VENV/bin/mypy"
    "$VENV/bin/pytest" -q "$@"
    test_on_cluster "$@"
    ;;
  bench)
    ensure_venv
    ensure_services
    exec "$VENV/bin/python" loadtests/bench.py "$@"
    ;;
  *)
    die "usage: scripts/dev.sh run|mcode COMMAND…|test|bench"
    ;;
esac
