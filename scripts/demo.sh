#!/usr/bin/env bash
# The main job on the local emulator: generate a sample catalogue and daily
# plays into a data bucket, rank them into the staging bucket, onboard
# example tenants (a cross-account role, a customer's keys, email, a Google
# Cloud Storage bucket on fake-gcs-server, and a Google Sheets spreadsheet on
# the project's local Sheets API double), test their connections,
# fan out and deliver, and print what went where. Needs only the Rust
# toolchain and Python 3.
#
# By default it runs the real Lambda binaries (scripts/local/lambda-e2e.sh):
# `cargo lambda watch` serves rank, fanout, every deliver-* function and
# notify; a scheduled event (events/rank/scheduled-thursday.json) starts
# rank, and a local router turns each new manifest, job and arrival-event
# object into the S3 event template.yaml routes to the next function. With LOCAL_PATH=cli, or when
# cargo-lambda cannot be installed, it runs the same stages in-process
# through the `popularity` CLI with the Lambdas' handlers instead.
#
# After the deliveries it starts the self-service console (`popularity
# console` on a free 127.0.0.1 port, users in moto's Cognito: see
# scripts/demo/console.sh), prints its address and how to sign in, and
# writes .emulator/console.json.
#
# TRACKS (default 100000) and DAYS (default 35) set the scale; KEEP_EMULATOR=1
# leaves the emulators and the console running afterwards for a look around.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${LOCAL_PATH:-lambda}" in
    lambda)
        echo "== local path: the real Lambda binaries under cargo lambda watch (LOCAL_PATH=cli for the in-process CLI)" >&2
        rc=0
        bash scripts/local/lambda-e2e.sh || rc=$?
        if (( rc != 3 )); then
            exit "$rc"
        fi
        echo "== cargo-lambda is not available: falling back to the in-process CLI path (the same handlers, without the Lambda runtime)" >&2
        ;;
    cli)
        echo "== local path: the in-process CLI (LOCAL_PATH=cli)" >&2
        ;;
    *)
        echo "demo: LOCAL_PATH must be lambda (default) or cli, not '${LOCAL_PATH}'" >&2
        exit 2
        ;;
esac

# shellcheck source=demo/common.sh
source scripts/demo/common.sh

trap demo_stop_emulators EXIT
demo_start_emulators
export AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export STAGING_BUCKET TENANT_SECRET_PREFIX SES_SENDER LINK_SIGNER_SECRET DATA_BUCKET
demo_stack_key

demo_build_cli
demo_start_sheets_double
demo_keyless_google
demo_create_buckets
demo_generate

echo "== ranking as of $RUN_TIME into s3://$STAGING_BUCKET" >&2
"$POPULARITY" rank --data "s3://$DATA_BUCKET/$DATA_PREFIX" --out "s3://$STAGING_BUCKET" --time "$RUN_TIME"

demo_onboard

echo "== fanout of run $RUN_ID" >&2
"$POPULARITY" fanout "$RUN_ID"
echo "== delivering run $RUN_ID" >&2
"$POPULARITY" deliver "$RUN_ID"

demo_report
demo_console_start
demo_console_report
