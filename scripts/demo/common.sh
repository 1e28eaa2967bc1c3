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

# The customers' side (their accounts, buckets, role and keys), the
# operator's SES sender and link-signing key, and three example tenants:
# acme (s3-role + email), beta-music (s3-keys), gamma (google-sheets, not
# supported yet). Needs ENDPOINT.
demo_onboard() {
    mkdir -p "$DEMO"
    echo "== onboarding example tenants (customer accounts 222222222222 and 333333333333 on moto)" >&2
    "$ROOT_PYTHON" scripts/demo/customers.py "$ENDPOINT" 123456789012 >"$DEMO/customers.json"
    field() { "$ROOT_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DEMO/customers.json" "$1"; }
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
   "sheet": {"type": "google-sheets", "maxRows": 100,
             "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit"}},
 "feeds": [{"id": "top-100", "connector": "sheet", "reports": ["track"]}]}
JSON
    local tenant
    for tenant in acme beta-music gamma; do
        "$POPULARITY" tenant add "$DEMO/$tenant.json"
    done
    rm -f "$DEMO/customers.json" "$DEMO/beta-music.json"  # they hold the customer's keys
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
    echo "-- emails sent"
    "$ROOT_PYTHON" scripts/demo/emails.py "$ENDPOINT"
    echo "-- status of every tenant x feed"
    "$POPULARITY" status "$RUN_ID"
}
