#!/usr/bin/env bash
# Project-local AWS emulator (moto's server) for tests and local runs.
#
#   scripts/emulator.sh install        create .venv and pip-install moto[server]
#   scripts/emulator.sh start [PORT]   start moto on 127.0.0.1 (a free port by
#                                      default); prints http://127.0.0.1:PORT
#   scripts/emulator.sh stop PORT      stop the server started on PORT
#
# `start` prints the endpoint as its only line on stdout, so
#   export MOTO_ENDPOINT=$(scripts/emulator.sh start)
# works; progress and errors go to stderr. Logs and PID files live in
# .emulator/. Each server only ever listens on, and is only contacted at,
# 127.0.0.1. `stop` ends only the process recorded for that port.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STATE="$ROOT/.emulator"
MOTO_SERVER="$VENV/bin/moto_server"
READY_TIMEOUT_SECONDS=30

say() { echo "emulator: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

install() {
    if [[ -x "$MOTO_SERVER" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is needed to install moto"
    say "creating $VENV and installing moto[server] (once)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
    "$VENV/bin/python" -m pip install --quiet 'moto[server]' >&2 \
        || die "pip install 'moto[server]' failed (is a package index reachable?)"
    [[ -x "$MOTO_SERVER" ]] || die "moto installed but $MOTO_SERVER is missing"
}

free_port() {
    "$VENV/bin/python" - <<'PY'
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PY
}

valid_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 ))
}

# 0 when something accepts connections on 127.0.0.1:$1.
port_taken() {
    "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

# 0 when GET /moto-api/ answers on 127.0.0.1:$1.
answers() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2).read()
except Exception:
    sys.exit(1)
PY
}

start() {
    install
    local port="${1:-}"
    if [[ -z "$port" ]]; then
        port="$(free_port)"
    fi
    valid_port "$port" || die "not a port number: $port"
    mkdir -p "$STATE"
    local log="$STATE/moto-$port.log" pid_file="$STATE/moto-$port.pid"

    if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        die "a server started by this script already runs on port $port (PID $(cat "$pid_file")); stop it with: $0 stop $port"
    fi

    # Otherwise another server on the port would answer the readiness check.
    if port_taken "$port"; then
        die "port $port on 127.0.0.1 is already in use by another program"
    fi

    # setsid: the server outlives this script and does not share its
    # terminal's signals; nohup for shells that send SIGHUP on exit.
    setsid nohup "$MOTO_SERVER" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"

    local deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            say "last lines of $log:"
            tail -n 20 "$log" >&2 || true
            die "moto_server exited before answering on 127.0.0.1:$port (port in use?)"
        fi
        if (( SECONDS >= deadline )); then
            kill "$pid" 2>/dev/null || true
            rm -f "$pid_file"
            die "moto_server did not answer GET http://127.0.0.1:$port/moto-api/ within ${READY_TIMEOUT_SECONDS}s; see $log"
        fi
        sleep 0.2
    done
    say "moto_server (PID $pid) ready; log: $log"
    echo "http://127.0.0.1:$port"
}

stop() {
    local port="${1:-}"
    [[ -n "$port" ]] || die "usage: $0 stop PORT"
    # Accept the endpoint printed by start as well as a bare port.
    port="${port##*:}"
    valid_port "$port" || die "not a port number: $port"
    local pid_file="$STATE/moto-$port.pid"
    [[ -f "$pid_file" ]] || die "no server recorded for port $port ($pid_file missing)"
    local pid
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped moto_server on port $port (PID $pid)"
    else
        say "moto_server on port $port (PID $pid) was not running"
    fi
    rm -f "$pid_file"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) usage ;;
esac
