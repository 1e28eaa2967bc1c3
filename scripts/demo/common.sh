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
DEMO="${CARGO_TARGET_DIR:-target}/demo"
RUN_ID="$(date -u -d "$RUN_TIME" +%Y%m%d%H%M%S)"

demo_build_cli() {
    echo "== building the popularity CLI" >&2
    cargo build --quiet -p popularity-cli
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
# running afterwards.
demo_start_emulators() {
    bash scripts/emulator.sh install
    ENDPOINT="$(bash scripts/emulator.sh start)"
    GCS_ENDPOINT="$(bash scripts/emulator.sh start-gcs)"
    export STORAGE_EMULATOR_HOST="$GCS_ENDPOINT"
}

demo_stop_emulators() {
    [[ "${KEEP_EMULATOR:-0}" == 1 ]] && return 0
    local endpoint
    for endpoint in "${ENDPOINT:-}" "${GCS_ENDPOINT:-}"; do
        [[ -n "$endpoint" ]] && bash scripts/emulator.sh stop "${endpoint##*:}" || true
    done
}

# The customers' side (their accounts, buckets, role and keys), the
# operator's SES sender and link-signing key, and three example tenants:
# acme (s3-role + email), beta-music (s3-keys), gamma (gcs). Each `tenant
# add` tests the tenant's connectors in this process (--local) and prints
# the checks. Needs ENDPOINT and GCS_ENDPOINT, and the deliverers' variables
# exported.
demo_onboard() {
    mkdir -p "$DEMO"
    echo "== onboarding example tenants (customer accounts 222222222222 and 333333333333 on moto, a GCS bucket on fake-gcs-server)" >&2
    "$ROOT_PYTHON" scripts/demo/customers.py "$ENDPOINT" 123456789012 "$GCS_ENDPOINT" >"$DEMO/customers.json"
    field() { "$ROOT_PYTHON" -c 'import json,sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(v if isinstance(v, str) else json.dumps(v))' "$DEMO/customers.json" "$1"; }
    cat >"$DEMO/acme.json" <<JSON
{"schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
 "connectors": {
   "inbox": {"type": "email", "recipients": ["data@acme.example"]},
   "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data-demo", "region": "us-east-1",
            "prefix": "massive/", "roleArn": "$(field acmeRoleArn)", "externalId": "mm-acme-7f3c"}},
 "feeds": [
   {"id": "all", "connector": "lake"},
   {"id": "weekly-tracks", "connector": "inbox", "reports": ["track"], "format": "tsv", "intervalSeconds": 604800}]}
JSON
    cat >"$DEMO/beta-music.json" <<JSON
{"schemaVersion": 1, "tenantId": "beta-music", "plan": "trial", "enabled": true,
 "connectors": {
   "lake": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::beta-data-demo", "region": "us-east-1", "prefix": "",
            "accessKeyId": "$(field betaAccessKeyId)", "secretAccessKey": "$(field betaSecretAccessKey)"}},
 "feeds": [{"id": "lake-tsv", "connector": "lake", "format": "tsv", "compression": "gzip"}]}
JSON
    cat >"$DEMO/gamma.json" <<JSON
{"schemaVersion": 1, "tenantId": "gamma", "plan": "trial", "enabled": true,
 "connectors": {
   "feeds": {"type": "gcs", "bucket": "gamma-feeds-demo", "prefix": "popularity/",
             "serviceAccountJson": $(field gammaServiceAccountJson)}},
 "feeds": [{"id": "daily-tsv", "connector": "feeds", "format": "tsv", "compression": "gzip"}]}
JSON
    local tenant
    for tenant in acme beta-music gamma; do
        "$POPULARITY" tenant add "$DEMO/$tenant.json" --local
    done
    # They hold the customers' keys.
    rm -f "$DEMO/customers.json" "$DEMO/beta-music.json" "$DEMO/gamma.json"
}

# What went where. Needs ENDPOINT.
demo_report() {
    echo
    echo "== what went where (moto at $ENDPOINT)"
    echo "-- staging: s3://$STAGING_BUCKET"
    "$POPULARITY" list "s3://$STAGING_BUCKET"
    echo "-- acme's bucket (s3-role, account 222222222222): s3://acme-data-demo"
    "$POPULARITY" list "s3://acme-data-demo"
    echo "-- beta-music's bucket (s3-keys, account 333333333333): s3://beta-data-demo"
    "$POPULARITY" list "s3://beta-data-demo"
    echo "-- gamma's bucket (gcs, on fake-gcs-server at $GCS_ENDPOINT): gs://gamma-feeds-demo"
    "$ROOT_PYTHON" - "$GCS_ENDPOINT" <<'PY'
import json, sys, urllib.request
listing = json.load(urllib.request.urlopen(f"{sys.argv[1]}/storage/v1/b/gamma-feeds-demo/o"))
for item in listing.get("items", []):
    print(f"{int(item['size']):>12}  gs://gamma-feeds-demo/{item['name']}")
PY
    echo "-- emails sent"
    "$ROOT_PYTHON" scripts/demo/emails.py "$ENDPOINT"
    echo "-- status of every tenant x feed"
    "$POPULARITY" status "$RUN_ID"
}
