#!/usr/bin/env bash
# The main job end to end through the real Lambda binaries, without Docker:
# moto as AWS, `cargo lambda watch` as the Lambda service, and
# scripts/local/router.py in place of the S3 notifications of template.yaml
# (moto fires none): a scheduled event starts rank, rank's manifest starts
# fanout, fanout's jobs start every deliver-* function — the routes read
# from template.yaml itself. Then prints what went where, as scripts/demo.sh.
#
#   bash scripts/local/lambda-e2e.sh
#
# Environment: TRACKS, DAYS (as scripts/demo.sh); RANK_EVENT (default
# events/rank/scheduled-thursday.json; its `time` names the run);
# TEMPLATE (default template.yaml); KEEP_EMULATOR=1 leaves the emulators
# and the self-service console (started at the end) running.
# Exit codes: 0 every routed invocation succeeded; 1 something failed;
# 3 cargo-lambda is missing and could not be installed (a caller may fall
# back to the in-process CLI path).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

RANK_EVENT="${RANK_EVENT:-events/rank/scheduled-thursday.json}"
TEMPLATE="${TEMPLATE:-template.yaml}"
IDLE_SECONDS="${IDLE_SECONDS:-3}"
VENV=.venv
say() { echo "lambda-e2e: $*" >&2; }

# ---------------------------------------------------------------- tools
bash scripts/emulator.sh install
PY="$VENV/bin/python"
export PATH="$PWD/$VENV/bin:$PATH"   # `cargo lambda` finds the venv's cargo-lambda

if ! command -v cargo-lambda >/dev/null 2>&1; then
    say "installing cargo-lambda into $VENV (pip install cargo-lambda; once)"
    if ! "$PY" -m pip install --quiet cargo-lambda >&2 || ! command -v cargo-lambda >/dev/null 2>&1; then
        say "cargo-lambda could not be installed (pip install cargo-lambda failed); the real-binary path is unavailable"
        exit 3
    fi
fi
if ! "$PY" -c 'import yaml' 2>/dev/null; then
    say "installing PyYAML into $VENV (the router reads $TEMPLATE)"
    "$PY" -m pip install --quiet pyyaml >&2 || { say "pip install pyyaml failed"; exit 1; }
fi
[[ -f "$TEMPLATE" ]] || { say "$TEMPLATE is missing: the router reads the S3 routes from it"; exit 1; }
[[ -f "$RANK_EVENT" ]] || { say "$RANK_EVENT is missing"; exit 1; }

# The run is named after the scheduled event's time, as rank does it.
RUN_TIME="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["time"])' "$RANK_EVENT")"
export RUN_TIME
# shellcheck source=../demo/common.sh
source scripts/demo/common.sh

LOG="${CARGO_TARGET_DIR:-target}/lambda-e2e"
mkdir -p "$LOG"
ROUTES="$("$PY" scripts/local/router.py --template "$TEMPLATE" --print-routes)"
say "routes from $TEMPLATE:"
sed 's/^/    /' <<<"$ROUTES" >&2

# ----------------------------------------------------------- clean-up
ENDPOINT="" GCS_ENDPOINT="" WATCH_PID="" ROUTER_PID="" TAIL_PID=""
stop_pid() {  # stop_pid PID: TERM, then KILL after 10 s
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    set +e
    stop_pid "$ROUTER_PID"
    stop_pid "$TAIL_PID"
    if [[ -n "$WATCH_PID" ]]; then
        # cargo-lambda ends its function instances on TERM; any it leaves
        # behind (own process groups) are its children, stopped by PID.
        local children
        children="$(ps -o pid= --ppid "$WATCH_PID" 2>/dev/null || true)"
        stop_pid "$WATCH_PID"
        for pid in $children; do stop_pid "$pid"; done
    fi
    demo_stop_emulators
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ------------------------------------------------------------- build
# The same builds `cargo lambda watch` starts on a function's first
# invocation (`cargo run --bin NAME`), done up front so that compile errors
# show here and no invocation waits minutes on a compiler.
T0=$SECONDS
FUNCTIONS=(rank fanout deliver-s3 deliver-email deliver-gcs deliver-sheets notify)
echo "== building the popularity CLI, the local Sheets double and the Lambdas (${FUNCTIONS[*]}) in one cargo invocation" >&2
BUILD_ARGS=(-p popularity-cli -p integration-tests --bin popularity --bin sheets-double-server)
for function in "${FUNCTIONS[@]}"; do BUILD_ARGS+=(-p "$function" --bin "$function"); done
cargo build "${BUILD_ARGS[@]}"
say "builds took $((SECONDS - T0)) s"

# ----------------------------------------------------------- emulator
demo_start_emulators
demo_start_sheets_double
export AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export STAGING_BUCKET TENANT_SECRET_PREFIX SES_SENDER LINK_SIGNER_SECRET
demo_stack_key
demo_keyless_google

# ------------------------------------------------------ cargo lambda watch
# One env file for every function: each reads only its own variables. Flags
# and files only: [package.metadata.lambda.env] in a Cargo.toml would win
# over both, so the functions' manifests must not set any.
cat >"$LOG/lambda.env" <<ENV
AWS_ENDPOINT_URL=$ENDPOINT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY='$AWS_SECRET_ACCESS_KEY'
AWS_SESSION_TOKEN='$AWS_SESSION_TOKEN'
STAGING_BUCKET=$STAGING_BUCKET
DATA_BUCKET=$DATA_BUCKET
DATA_PREFIX=$DATA_PREFIX
TENANT_SECRET_PREFIX=$TENANT_SECRET_PREFIX
TENANT_SECRETS_KMS_KEY_ID=$TENANT_SECRETS_KMS_KEY_ID
SES_SENDER=$SES_SENDER
LINK_SIGNER_SECRET=$LINK_SIGNER_SECRET
STORAGE_EMULATOR_HOST=$STORAGE_EMULATOR_HOST
SHEETS_API_ENDPOINT=$SHEETS_API_ENDPOINT
GOOGLE_EXTERNAL_ACCOUNT_CONFIG='$GOOGLE_EXTERNAL_ACCOUNT_CONFIG'
GOOGLE_PROJECT_ID=$GOOGLE_PROJECT_ID
GOOGLE_IAM_CREDENTIALS_ENDPOINT=$GOOGLE_IAM_CREDENTIALS_ENDPOINT
WEBHOOKS_ALLOW_LOOPBACK=true
ENV
WATCH_PORT="$(free_port)"
INVOKE_URL="http://127.0.0.1:$WATCH_PORT"
echo "== starting cargo lambda watch on $INVOKE_URL (log: $LOG/watch.log)" >&2
# --ignore-changes: a source edit during the run must not rebuild and
# restart a function mid-delivery. setsid: Ctrl-C goes to this script,
# which stops it in order.
setsid cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$WATCH_PORT" \
    --ignore-changes --env-file "$LOG/lambda.env" >"$LOG/watch.log" 2>&1 </dev/null &
WATCH_PID=$!
deadline=$((SECONDS + 60))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$INVOKE_URL/" 2>/dev/null)" != 000 ]]; do
    if ! kill -0 "$WATCH_PID" 2>/dev/null; then
        tail -n 20 "$LOG/watch.log" >&2; say "cargo lambda watch exited"; exit 1
    fi
    if (( SECONDS >= deadline )); then
        tail -n 20 "$LOG/watch.log" >&2; say "cargo lambda watch did not answer on $INVOKE_URL in 60 s"; exit 1
    fi
    sleep 0.2
done

# -------------------------------------------------------- data, tenants
demo_create_buckets
demo_generate
demo_onboard

# ------------------------------------------------------------- router
: >"$LOG/router.out"
"$PY" scripts/local/router.py --template "$TEMPLATE" --bucket "$STAGING_BUCKET" \
    --invoke-url "$INVOKE_URL" --idle-exit "$IDLE_SECONDS" \
    >"$LOG/router.out" 2>"$LOG/router.err" </dev/null &
ROUTER_PID=$!
until grep -q '^router: watching' "$LOG/router.err" 2>/dev/null; do
    if ! kill -0 "$ROUTER_PID" 2>/dev/null; then
        cat "$LOG/router.err" >&2; say "the router exited before watching"; exit 1
    fi
    sleep 0.1
done
tail -n +1 -f --pid="$ROUTER_PID" "$LOG/router.out" | sed 's/^/   routed: /' >&2 &
TAIL_PID=$!

# ---------------------------------------------------------------- run
echo "== cargo lambda invoke rank --data-file $RANK_EVENT (run $RUN_ID, time $RUN_TIME)" >&2
T1=$SECONDS
if ! cargo lambda invoke rank --invoke-address 127.0.0.1 --invoke-port "$WATCH_PORT" \
        --data-file "$RANK_EVENT" >"$LOG/rank.out" 2>&1; then
    cat "$LOG/rank.out" >&2
    tail -n 30 "$LOG/watch.log" >&2
    say "rank failed; nothing to route"
    exit 1
fi
echo "   rank: $(tr -d '\n' <"$LOG/rank.out")" >&2
echo "== waiting for the router to go idle (${IDLE_SECONDS} s without new objects)" >&2
router_rc=0
wait "$ROUTER_PID" || router_rc=$?
ROUTER_PID=""
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""
say "schedule event to last delivery: $((SECONDS - T1)) s"
if (( router_rc != 0 )); then
    grep -v '^router: watching' "$LOG/router.err" >&2 || true
    say "a routed invocation failed (router exit $router_rc); function logs: $LOG/watch.log"
fi

demo_report
echo "-- routed S3 events (scripts/local/router.py, routes from $TEMPLATE)"
cat "$LOG/router.out"

# Every due feed delivered: nothing failed, pending (a job nobody ran) or
# invalid; skipped is a feed fanout decided not to deliver, with its reason.
counts="$("$POPULARITY" status "$RUN_ID" | tail -n 1)"
if ! grep -Eq '^[1-9][0-9]* delivered, 0 failed, 0 pending, 0 in-progress, [0-9]+ skipped, 0 invalid, 0 damaged' <<<"$counts"; then
    say "not every due feed was delivered: $counts"
    (( router_rc != 0 )) || router_rc=1
fi
demo_console_start
demo_console_report
exit "$router_rc"
