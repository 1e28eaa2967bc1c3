# Sourced (not run) by scripts/demo/common.sh: the self-service console
# after the demo's deliveries. Starts `popularity console` in the
# background on a free 127.0.0.1 port (its PID recorded in .emulator/ like
# the emulators', so `bash scripts/emulator.sh stop PORT` stops it), creates
# a Cognito user pool on moto, one user per demo tenant and one operator,
# each with a generated password, and writes what scripts and tests need to
# .emulator/console.json:
#
#   {"consoleUrl": "http://127.0.0.1:PORT/",
#    "cognito": {"endpoint": …, "region": …, "userPoolId": …, "clientId": …},
#    "users": [{"email": …, "password": …, "tenantId": …}]}
#
# (the operator's tenantId is null: an operator may act on every tenant).
# Needs ENDPOINT (moto), POPULARITY, and the deliverers' variables exported,
# since the console runs connection tests and retries in its own process.

CONSOLE_STATE=.emulator
CONSOLE_JSON="$CONSOLE_STATE/console.json"
CONSOLE_PID="" CONSOLE_PORT=""
CONSOLE_TENANTS=(acme beta-music gamma sheets-co)
CONSOLE_OPERATOR=operator@popularity.example

# A password Cognito's default policy accepts: upper and lower case, digits, a symbol.
demo_console_password() {
    "$ROOT_PYTHON" -c 'import secrets; print("Demo-" + secrets.token_hex(6) + "-Pw7!")'
}

demo_console_start() {
    echo "== starting the self-service console (popularity console) on 127.0.0.1" >&2
    mkdir -p "$CONSOLE_STATE"
    local pool
    pool="$("$POPULARITY" portal create-pool --name popularity-reports-demo-console)"
    local pool_id client_id
    pool_id="$("$ROOT_PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["userPoolId"])' "$pool")"
    client_id="$("$ROOT_PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["clientId"])' "$pool")"
    echo "   user pool $pool_id (app client $client_id) on moto's Cognito at $ENDPOINT" >&2

    local log="$CONSOLE_STATE/console-starting-$$.log"
    : >"$log"   # exists before the first poll below reads it
    # The console's own variables (docs/deploy.md), then the deliverers'
    # (already exported) for the connection tests it runs in process.
    # setsid: like the emulators, it outlives this script with KEEP_EMULATOR=1.
    COGNITO_USER_POOL_ID="$pool_id" COGNITO_CLIENT_ID="$client_id" \
        COGNITO_JWKS_URL="$ENDPOINT/$pool_id/.well-known/jwks.json" \
        DATA_BUCKET="$DATA_BUCKET" GOOGLE_SHARE_ADDRESS="$OUR_GOOGLE_ACCOUNT" \
        DELIVERY_PRINCIPAL_ARN="arn:aws:iam::123456789012:role/popularity-reports-deliver-s3" \
        setsid nohup "$POPULARITY" console --listen 127.0.0.1:0 >"$log" 2>&1 </dev/null &
    CONSOLE_PID=$!
    local deadline=$((SECONDS + 30)) address=""
    until address="$(sed -n 's|^console listening on http://\([0-9.:]*\)/$|\1|p' "$log" | head -n 1)" && [[ -n "$address" ]]; do
        if ! kill -0 "$CONSOLE_PID" 2>/dev/null; then
            tail -n 20 "$log" >&2
            echo "the console exited before listening; see $log" >&2
            CONSOLE_PID=""
            return 1
        fi
        (( SECONDS < deadline )) || { echo "the console did not listen within 30 s; see $log" >&2; return 1; }
        sleep 0.1
    done
    CONSOLE_PORT="${address##*:}"
    echo "$CONSOLE_PID" >"$CONSOLE_STATE/server-$CONSOLE_PORT.pid"
    mv "$log" "$CONSOLE_STATE/console-$CONSOLE_PORT.log"   # it keeps writing there
    local url="http://127.0.0.1:$CONSOLE_PORT/"

    # One user per demo tenant and an operator, each with a generated
    # password (kept in a shell variable, never on a command line).
    local users="" tenant email password
    for tenant in "${CONSOLE_TENANTS[@]}"; do
        email="demo@$tenant.example"
        password="$(demo_console_password)"
        COGNITO_USER_POOL_ID="$pool_id" "$POPULARITY" portal invite "$tenant" "$email" --password-stdin <<<"$password" >&2
        users+="$email"$'\t'"$password"$'\t'"$tenant"$'\n'
    done
    password="$(demo_console_password)"
    COGNITO_USER_POOL_ID="$pool_id" "$POPULARITY" portal invite-operator "$CONSOLE_OPERATOR" --password-stdin <<<"$password" >&2
    users+="$CONSOLE_OPERATOR"$'\t'"$password"$'\t'$'\n'

    # The facts scripts and tests read; it holds passwords, so only we may read it.
    (umask 077 && "$ROOT_PYTHON" -c '
import json, sys
url, endpoint, region, pool_id, client_id = sys.argv[1:6]
users = []
for line in sys.stdin.read().splitlines():
    email, password, tenant = line.split("\t")
    users.append({"email": email, "password": password, "tenantId": tenant or None})
print(json.dumps({"consoleUrl": url,
                  "cognito": {"endpoint": endpoint, "region": region, "userPoolId": pool_id, "clientId": client_id},
                  "users": users}, indent=2))
' "$url" "$ENDPOINT" "${AWS_REGION:-us-east-1}" "$pool_id" "$client_id" <<<"${users%$'\n'}" >"$CONSOLE_JSON.new" \
        && mv "$CONSOLE_JSON.new" "$CONSOLE_JSON")
    # The page answers, and a tenant's user signs in through it.
    "$ROOT_PYTHON" - "$CONSOLE_JSON" <<'PY'
import json, sys, urllib.request
facts = json.load(open(sys.argv[1]))
url, user = facts["consoleUrl"], facts["users"][0]
page = urllib.request.urlopen(url, timeout=10).read().decode()
assert "/assets/app.js" in page, "the console's page does not load its script"
body = json.dumps({"email": user["email"], "password": user["password"]}).encode()
request = urllib.request.Request(url + "auth/sign-in", data=body, headers={"Content-Type": "application/json"})
token = json.load(urllib.request.urlopen(request, timeout=10))["idToken"]
me = urllib.request.Request(url + "v1/me", headers={"Authorization": "Bearer " + token})
tenant = json.load(urllib.request.urlopen(me, timeout=10))["tenantId"]
assert tenant == user["tenantId"], (tenant, user["tenantId"])
print(f"   checked: {user['email']} signs in and GET /v1/me answers for tenant {tenant}", file=sys.stderr)
PY
}

demo_console_report() {
    [[ -n "$CONSOLE_PORT" ]] || return 0
    echo
    echo "-- the self-service console (moto's Cognito; facts in $CONSOLE_JSON)"
    echo "open http://127.0.0.1:$CONSOLE_PORT/ and sign in as one of:"
    "$ROOT_PYTHON" - "$CONSOLE_JSON" <<'PY'
import json, sys
for user in json.load(open(sys.argv[1]))["users"]:
    who = f"tenant {user['tenantId']}" if user["tenantId"] else "operator, any tenant"
    print(f"  {user['email']:<34} password {user['password']:<24} ({who})")
PY
    if [[ "${KEEP_EMULATOR:-0}" == 1 ]]; then
        echo "it keeps running (PID $CONSOLE_PID); stop it with: bash scripts/emulator.sh stop $CONSOLE_PORT"
    else
        echo "it stops when this script ends; KEEP_EMULATOR=1 keeps it (and the emulators) running"
    fi
}

demo_console_stop() {
    [[ -n "$CONSOLE_PID" ]] || return 0
    [[ "${KEEP_EMULATOR:-0}" == 1 ]] && return 0
    if [[ -n "$CONSOLE_PORT" ]]; then
        bash scripts/emulator.sh stop "$CONSOLE_PORT" || true
    else
        kill "$CONSOLE_PID" 2>/dev/null || true
    fi
    CONSOLE_PID=""
}
