#!/usr/bin/env bash
# The main job on the local emulator: generate a sample catalogue and daily
# plays into a data bucket, rank them into the staging bucket, onboard
# example tenants (a cross-account role, a customer's keys, email, and a GCS
# feed that is not supported yet), fan out and deliver with the same handlers
# as the Lambdas, and print what went where. Needs only the Rust toolchain
# and Python 3. TRACKS (default 100000) and DAYS (default 35) set the scale;
# KEEP_EMULATOR=1 leaves moto's server running afterwards for a look around.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TRACKS="${TRACKS:-100000}"
DAYS="${DAYS:-35}"
END_DATE="${END_DATE:-2026-11-18}"
RUN_TIME="${RUN_TIME:-2026-11-19T03:00:00Z}"
DATA_BUCKET=popularity-data
STAGING_BUCKET=popularity-staging

bash scripts/emulator.sh install
ROOT_PYTHON=.venv/bin/python
ENDPOINT="$(bash scripts/emulator.sh start)"
if [[ "${KEEP_EMULATOR:-0}" != 1 ]]; then
    trap 'bash scripts/emulator.sh stop "${ENDPOINT##*:}" || true' EXIT
fi
export AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo

echo "== building the popularity CLI" >&2
cargo build --quiet -p popularity-cli
POPULARITY="${CARGO_TARGET_DIR:-target}/debug/popularity"

for bucket in "$DATA_BUCKET" "$STAGING_BUCKET"; do
    curl -fsS -X PUT "$ENDPOINT/$bucket" >/dev/null
done

echo "== generating $TRACKS tracks x $DAYS days into s3://$DATA_BUCKET/warehouse/" >&2
"$POPULARITY" generate --tracks "$TRACKS" --days "$DAYS" --end-date "$END_DATE" --seed 42 \
    --out "s3://$DATA_BUCKET/warehouse/"

echo "== ranking as of $RUN_TIME into s3://$STAGING_BUCKET" >&2
"$POPULARITY" rank --data "s3://$DATA_BUCKET/warehouse/" --out "s3://$STAGING_BUCKET" --time "$RUN_TIME"

RUN_ID="$(date -u -d "$RUN_TIME" +%Y%m%d%H%M%S)"
DEMO="${CARGO_TARGET_DIR:-target}/demo"
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
for tenant in acme beta-music gamma; do
    "$POPULARITY" tenant add "$DEMO/$tenant.json"
done
rm -f "$DEMO/customers.json" "$DEMO/beta-music.json"  # they hold the customer's keys

export STAGING_BUCKET TENANT_SECRET_PREFIX=popularity-reports/tenants/ \
    SES_SENDER=reports@popularity.example LINK_SIGNER_SECRET=popularity-reports/link-signer
echo "== fanout of run $RUN_ID" >&2
"$POPULARITY" fanout "$RUN_ID"
echo "== delivering run $RUN_ID" >&2
"$POPULARITY" deliver "$RUN_ID"

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
