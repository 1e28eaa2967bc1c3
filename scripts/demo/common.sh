# Sourced (not run) by scripts/demo.sh and scripts/local/lambda-e2e.sh from
# the repository root: the demo's settings and the steps both paths share —
# buckets, sample data, example tenants, and printing what went where.
#
# Settings (environment): TRACKS (default 100000), DAYS (35), RUN_TIME
# (2026-11-19T03:00:00Z), END_DATE (the day before RUN_TIME).

TRACKS="${TRACKS:-100000}"
DAYS="${DAYS:-35}"
RUN_TIME="${RUN_TIME:-2026-11-19T03:00:00Z}"
END_DATE="${END_DATE:-$(date -u -d "${RUN_TIME%%T*} -1 day" +%Y-%m-%d)}"
DATA_BUCKET=popularity-data
DATA_PREFIX=warehouse/
STAGING_BUCKET=popularity-staging
TENANT_SECRET_PREFIX=popularity-reports/tenants/
SES_SENDER=reports@popularity.example
LINK_SIGNER_SECRET=popularity-reports/link-signer
ROOT_PYTHON=.venv/bin/python
POPULARITY="${CARGO_TARGET_DIR:-target}/debug/popularity"
# Google Sheets has no emulator: the project's own Sheets API double, as a
# process (tests/src/bin/sheets_double_server.rs), stands in for Google.
SHEETS_DOUBLE="${CARGO_TARGET_DIR:-target}/debug/sheets-double-server"
SHEET_ID=1DemoSpreadsheetOfSheetsCo
OUR_GOOGLE_ACCOUNT=popularity-feeds@popularity-ops.iam.gserviceaccount.com
# Keyless Google: our project (where each tenant's identity lives) and the
# workload identity provider our AWS roles federate through, both served
# by the project's Google identity double.
GOOGLE_PROJECT_ID=popularity-tenants-demo
GOOGLE_AUDIENCE=//iam.googleapis.com/projects/100000000042/locations/global/workloadIdentityPools/popularity/providers/aws
SHEETS_PID="" SHEETS_FD=""
# beta-music's webhook: tests/python/webhook_receiver.py on 127.0.0.1, which
# checks each signature with Python's hmac (the notifier runs with
# WEBHOOKS_ALLOW_LOOPBACK=true, for local runs only).
RECEIVER_PID="" WEBHOOK_URL="" WEBHOOK_SECRET=""
DEMO="${CARGO_TARGET_DIR:-target}/demo"
RUN_ID="$(date -u -d "$RUN_TIME" +%Y%m%d%H%M%S)"

# The self-service console, started after the deliveries.
# shellcheck source=console.sh
source scripts/demo/console.sh

# The CLI and the Sheets double, in one cargo invocation.
demo_build_cli() {
    echo "== building the popularity CLI and the local Sheets double" >&2
    cargo build --quiet -p popularity-cli -p integration-tests --bin popularity --bin sheets-double-server
}

# Google's side (after the build and the emulators): the Sheets double with
# one spreadsheet, the Google identity double (STS verifying against moto,
# IAM, IAM Credentials) and the GCS guard in front of fake-gcs-server;
# exports SHEETS_API_ENDPOINT, GOOGLE_IAM_ENDPOINT,
# GOOGLE_IAM_CREDENTIALS_ENDPOINT and STORAGE_EMULATOR_HOST (the guard) for
# the deliverers. It serves until its stdin (a pipe this shell holds)
# closes; lines written there stand for the customers' grants.
demo_start_sheets_double() {
    mkdir -p "$DEMO"
    rm -f "$DEMO/sheets.in"
    mkfifo "$DEMO/sheets.in"
    "$SHEETS_DOUBLE" --key-file "$DEMO/our-google-key.json" --spreadsheet "$SHEET_ID" \
        --client-email "$OUR_GOOGLE_ACCOUNT" --identity-sts "$ENDPOINT" --audience "$GOOGLE_AUDIENCE" \
        --gcs-upstream "$GCS_ENDPOINT" <"$DEMO/sheets.in" >"$DEMO/sheets.out" 2>&1 &
    SHEETS_PID=$!
    exec {SHEETS_FD}>"$DEMO/sheets.in"
    local deadline=$((SECONDS + 30))
    until grep -q '^endpoint ' "$DEMO/sheets.out" 2>/dev/null; do
        kill -0 "$SHEETS_PID" 2>/dev/null || { cat "$DEMO/sheets.out" >&2; echo "the Sheets double exited" >&2; return 1; }
        (( SECONDS < deadline )) || { echo "the Sheets double did not start in 30 s" >&2; return 1; }
        sleep 0.1
    done
    until grep -q '^gcs ' "$DEMO/sheets.out" 2>/dev/null; do sleep 0.1; done
    SHEETS_API_ENDPOINT="$(sed -n 's/^endpoint //p' "$DEMO/sheets.out" | head -n 1)"
    GOOGLE_IAM_ENDPOINT="$(sed -n 's/^identity //p' "$DEMO/sheets.out" | head -n 1)"
    GOOGLE_IAM_CREDENTIALS_ENDPOINT="$GOOGLE_IAM_ENDPOINT"
    STORAGE_EMULATOR_HOST="$(sed -n 's/^gcs //p' "$DEMO/sheets.out" | head -n 1)"
    export SHEETS_API_ENDPOINT GOOGLE_IAM_ENDPOINT GOOGLE_IAM_CREDENTIALS_ENDPOINT STORAGE_EMULATOR_HOST
    echo "== the local Sheets API double (not Google) serves $SHEETS_API_ENDPOINT, Google's STS, IAM and IAM Credentials doubles $GOOGLE_IAM_ENDPOINT, the GCS guard $STORAGE_EMULATOR_HOST (PID $SHEETS_PID)" >&2
}

# One line to Google's side (see demo_start_sheets_double), waiting for its "ok".
demo_google_says() {
    local seen
    seen="$(grep -c '^ok ' "$DEMO/sheets.out" || true)"
    echo "$*" >&"$SHEETS_FD"
    local deadline=$((SECONDS + 10))
    until (( $(grep -c '^ok ' "$DEMO/sheets.out" || true) > seen )); do
        (( SECONDS < deadline )) || { echo "Google's side did not answer: $*" >&2; return 1; }
        sleep 0.05
    done
}

# Keyless Google (after the AWS settings are exported): our deliverers'
# AWS role on moto, whose session every function and command of the demo
# then runs as (federating from it to Google, never with a Google key); the
# workload identity provider admits it. Exports the session and the
# GOOGLE_* settings.
demo_keyless_google() {
    local session
    session="$("$ROOT_PYTHON" - "$ENDPOINT" <<'PY'
import json, sys
import boto3
c = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="demo", aws_secret_access_key="demo")
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]}
arn = boto3.client("iam", **c).create_role(RoleName="popularity-demo-deliverers",
                                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
creds = boto3.client("sts", **c).assume_role(RoleArn=arn, RoleSessionName="demo")["Credentials"]
print(arn, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
PY
)"
    read -r GOOGLE_DELIVERER_ROLE_ARNS AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN <<<"$session"
    GOOGLE_EXTERNAL_ACCOUNT_CONFIG="$("$ROOT_PYTHON" -c 'import json, sys; print(json.dumps({"type": "external_account", "audience": sys.argv[1], "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": sys.argv[2] + "/v1/token", "credential_source": {"environment_id": "aws1", "regional_cred_verification_url": sys.argv[3] + "/?Action=GetCallerIdentity&Version=2011-06-15"}}))' "$GOOGLE_AUDIENCE" "$GOOGLE_IAM_ENDPOINT" "$ENDPOINT")"
    export GOOGLE_DELIVERER_ROLE_ARNS AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
    export GOOGLE_EXTERNAL_ACCOUNT_CONFIG GOOGLE_PROJECT_ID
    demo_google_says allow-role "$GOOGLE_DELIVERER_ROLE_ARNS"
    echo "== keyless Google: the functions run as $GOOGLE_DELIVERER_ROLE_ARNS and federate from it; no Google key anywhere" >&2
}

# Needs ENDPOINT (moto).
demo_create_buckets() {
    local bucket
    for bucket in "$DATA_BUCKET" "$STAGING_BUCKET"; do
        curl -fsS -X PUT "$ENDPOINT/$bucket" >/dev/null
    done
}

demo_generate() {
    echo "== generating $TRACKS tracks x $DAYS days into s3://$DATA_BUCKET/$DATA_PREFIX" >&2
    "$POPULARITY" generate --tracks "$TRACKS" --days "$DAYS" --end-date "$END_DATE" --seed 42 \
        --out "s3://$DATA_BUCKET/$DATA_PREFIX"
}

# Both emulators: moto (ENDPOINT) and fake-gcs-server (GCS_ENDPOINT, which
# deliver-gcs reaches as STORAGE_EMULATOR_HOST); KEEP_EMULATOR=1 leaves them
# (and the console) running afterwards.
demo_start_emulators() {
    bash scripts/emulator.sh install
    ENDPOINT="$(bash scripts/emulator.sh start)"
    GCS_ENDPOINT="$(bash scripts/emulator.sh start-gcs)"
    export STORAGE_EMULATOR_HOST="$GCS_ENDPOINT"
}

demo_stop_emulators() {
    if [[ -n "$SHEETS_FD" ]]; then
        exec {SHEETS_FD}>&-   # the double exits when its stdin closes
        SHEETS_FD=""
    fi
    [[ -n "$SHEETS_PID" ]] && kill "$SHEETS_PID" 2>/dev/null || true
    [[ -n "$RECEIVER_PID" ]] && kill "$RECEIVER_PID" 2>/dev/null || true
    demo_console_stop
    [[ "${KEEP_EMULATOR:-0}" == 1 ]] && return 0
    local endpoint
    for endpoint in "${ENDPOINT:-}" "${GCS_ENDPOINT:-}"; do
        [[ -n "$endpoint" ]] && bash scripts/emulator.sh stop "${endpoint##*:}" || true
    done
}

# The stack's tenant secrets key (TenantSecretsKey), made on moto's KMS:
# `tenant add` stores every tenant secret under it and the functions refuse
# a tenant secret under any other key. Exports TENANT_SECRETS_KMS_KEY_ID.
# Needs ENDPOINT.
demo_stack_key() {
    TENANT_SECRETS_KMS_KEY_ID="$("$ROOT_PYTHON" - "$ENDPOINT" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="demo", aws_secret_access_key="demo")
print(kms.create_key(Description="popularity-reports tenant secrets (demo)")["KeyMetadata"]["Arn"])
PY
)"
    export TENANT_SECRETS_KMS_KEY_ID
    echo "== tenant secrets are stored under the stack's KMS key $TENANT_SECRETS_KMS_KEY_ID" >&2
}

# beta-music's webhook endpoint, with a signing secret made as an operator
# makes one (`popularity tenant webhook-secret`); sets WEBHOOK_URL.
demo_start_webhook_receiver() {
    mkdir -p "$DEMO"
    WEBHOOK_SECRET="$("$POPULARITY" tenant webhook-secret)"
    "$ROOT_PYTHON" tests/python/webhook_receiver.py --secret "$WEBHOOK_SECRET" >"$DEMO/receiver.out" 2>&1 &
    RECEIVER_PID=$!
    local deadline=$((SECONDS + 30))
    until grep -q '^PORT ' "$DEMO/receiver.out" 2>/dev/null; do
        kill -0 "$RECEIVER_PID" 2>/dev/null || { cat "$DEMO/receiver.out" >&2; echo "the webhook receiver exited" >&2; return 1; }
        (( SECONDS < deadline )) || { echo "the webhook receiver did not start in 30 s" >&2; return 1; }
        sleep 0.1
    done
    WEBHOOK_URL="http://127.0.0.1:$(sed -n 's/^PORT //p' "$DEMO/receiver.out" | head -n 1)/hooks/popularity"
    echo "== beta-music's webhook receiver listens at $WEBHOOK_URL (PID $RECEIVER_PID)" >&2
}

# The customers' side (their accounts, buckets, role and keys), the
# operator's SES sender, link-signing key and Google service account key,
# and four example tenants: acme (s3-role + email), beta-music (s3-keys, a webhook,
# Parquet), gamma (gcs), sheets-co (google-sheets, on the local Sheets
# double). Each `tenant add` tests the tenant's connectors in this process
# (--local) and prints the checks. Needs ENDPOINT, GCS_ENDPOINT and the
# Sheets double, and the deliverers' variables exported.
demo_onboard() {
    mkdir -p "$DEMO"
    demo_start_webhook_receiver
    echo "== onboarding example tenants (customer accounts 222222222222 and 333333333333 on moto, a GCS bucket on fake-gcs-server)" >&2
    # acme's externalId is ours, generated for it; acme puts it in the
    # trust policy of the role it creates for deliver-s3's role.
    local acme_external_id
    acme_external_id="$("$POPULARITY" tenant external-id acme)"
    "$ROOT_PYTHON" scripts/demo/customers.py "$ENDPOINT" 123456789012 "$GCS_ENDPOINT" \
        - - "$acme_external_id" >"$DEMO/customers.json"
    field() { "$ROOT_PYTHON" -c 'import json,sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(v if isinstance(v, str) else json.dumps(v))' "$DEMO/customers.json" "$1"; }
    cat >"$DEMO/acme.json" <<JSON
{"schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
 "connectors": {
   "inbox": {"type": "email", "recipients": ["data@acme.example"]},
   "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data-demo", "region": "us-east-1",
            "prefix": "massive/", "roleArn": "$(field acmeRoleArn)", "externalId": "$acme_external_id"}},
 "feeds": [
   {"id": "all", "connector": "lake"},
   {"id": "weekly-tracks", "connector": "inbox", "reports": ["track"], "format": "tsv", "intervalSeconds": 604800}]}
JSON
    cat >"$DEMO/beta-music.json" <<JSON
{"schemaVersion": 1, "tenantId": "beta-music", "plan": "trial", "enabled": true,
 "connectors": {
   "lake": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::beta-data-demo", "region": "us-east-1", "prefix": "",
            "accessKeyId": "$(field betaAccessKeyId)", "secretAccessKey": "$(field betaSecretAccessKey)"}},
 "feeds": [{"id": "lake-parquet", "connector": "lake", "format": "parquet"}],
 "notifications": [{"type": "webhook", "url": "$WEBHOOK_URL", "signingSecret": "$WEBHOOK_SECRET"}]}
JSON
    cat >"$DEMO/gamma.json" <<JSON
{"schemaVersion": 1, "tenantId": "gamma", "plan": "trial", "enabled": true,
 "connectors": {
   "feeds": {"type": "gcs", "bucket": "gamma-feeds-demo", "prefix": "popularity/"}},
 "feeds": [{"id": "daily-tsv", "connector": "feeds", "format": "tsv", "compression": "gzip"}]}
JSON
    cat >"$DEMO/sheets-co.json" <<JSON
{"schemaVersion": 1, "tenantId": "sheets-co", "plan": "trial", "enabled": true,
 "connectors": {
   "sheet": {"type": "google-sheets", "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/$SHEET_ID/edit",
             "maxRows": 1000}},
 "feeds": [{"id": "top-1000", "connector": "sheet", "reports": ["track", "artist"]}]}
JSON
    local tenant
    for tenant in acme beta-music; do
        "$POPULARITY" tenant add "$DEMO/$tenant.json" --local
    done
    # Keyless Google: onboarding creates each tenant's own Google identity;
    # the customer then grants that address (here, lines to the doubles),
    # and the connection test runs as it.
    local gamma_address sheets_address
    for tenant in gamma sheets-co; do
        "$POPULARITY" tenant add "$DEMO/$tenant.json" --no-test
    done
    gamma_address="$("$POPULARITY" tenant google-identity gamma)"
    sheets_address="$("$POPULARITY" tenant google-identity sheets-co)"
    echo "   gamma grants $gamma_address Storage Object Creator on gs://gamma-feeds-demo" >&2
    demo_google_says gcs-grant gamma-feeds-demo "$gamma_address"
    echo "   sheets-co shares its spreadsheet with $sheets_address as Editor" >&2
    demo_google_says share "$sheets_address"
    for tenant in gamma sheets-co; do
        "$POPULARITY" tenant test "$tenant" --local
    done
    # They hold the customers' keys, and ours.
    rm -f "$DEMO/customers.json" "$DEMO/beta-music.json" "$DEMO/gamma.json" "$DEMO/our-google-key.json"
}

# What went where. Needs ENDPOINT.
demo_report() {
    echo
    echo "== what went where (moto at $ENDPOINT)"
    echo "-- staging: s3://$STAGING_BUCKET"
    "$POPULARITY" list "s3://$STAGING_BUCKET"
    echo "-- acme's bucket (s3-role, account 222222222222): s3://acme-data-demo"
    "$POPULARITY" list "s3://acme-data-demo"
    echo "-- beta-music's bucket (s3-keys, account 333333333333, Parquet with zstd columns): s3://beta-data-demo"
    "$POPULARITY" list "s3://beta-data-demo"
    echo "-- gamma's bucket (gcs, keyless: written as $("$POPULARITY" tenant google-identity gamma), on fake-gcs-server at $GCS_ENDPOINT behind the guard): gs://gamma-feeds-demo"
    "$ROOT_PYTHON" - "$GCS_ENDPOINT" <<'PY'
import json, sys, urllib.request
listing = json.load(urllib.request.urlopen(f"{sys.argv[1]}/storage/v1/b/gamma-feeds-demo/o"))
for item in listing.get("items", []):
    print(f"{int(item['size']):>12}  gs://gamma-feeds-demo/{item['name']}")
PY
    echo "-- sheets-co's spreadsheet (google-sheets, written as $("$POPULARITY" tenant google-identity sheets-co), on the local Sheets double at $SHEETS_API_ENDPOINT, not Google): $SHEET_ID"
    if [[ -n "$SHEETS_FD" ]]; then
        echo show >&"$SHEETS_FD"
        local deadline=$((SECONDS + 10))
        until tail -n 1 "$DEMO/sheets.out" | grep -q '^{"tabs"' || (( SECONDS >= deadline )); do sleep 0.1; done
        tail -n 1 "$DEMO/sheets.out" | "$ROOT_PYTHON" scripts/demo/sheet.py
    fi
    echo "-- beta-music's webhook at $WEBHOOK_URL (signatures checked with Python's hmac)"
    "$ROOT_PYTHON" - "${WEBHOOK_URL%/hooks/popularity}/received" <<'PY'
import json, sys, urllib.request
received = json.load(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1]))
if not received:
    print("   no event received (the in-process CLI path runs no notifier)")
for request in received:
    event = json.loads(request["body"])
    signature = "valid signature" if request["valid"] else "INVALID signature"
    print(f"   {request['id']} {event['type']} run {event['runId']} feed {event['feedId']}: "
          f"{len(event.get('objects', []))} objects, {signature}, answered {request['status']}")
PY
    echo "-- emails sent"
    "$ROOT_PYTHON" scripts/demo/emails.py "$ENDPOINT"
    echo "-- status of every tenant x feed"
    "$POPULARITY" status "$RUN_ID"
}
