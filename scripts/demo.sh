#!/usr/bin/env bash
# The main job on the local emulator: generate a sample catalogue and daily
# plays into a data bucket, rank them into the staging bucket exactly as the
# rank Lambda does, and print what went where. Needs only the Rust toolchain
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

echo
echo "== what went where (s3://$STAGING_BUCKET on $ENDPOINT)"
"$POPULARITY" list "s3://$STAGING_BUCKET"
echo
echo "Delivery to tenants (fanout, deliver-s3, deliver-email) is not built yet; see README.md."
