#!/usr/bin/env bash
# The project's test command: every test of the workspace, including those
# against the local emulators. Needs only the Rust toolchain and Python 3:
# moto's server and fake-gcs-server are installed into .venv on first use,
# started on free 127.0.0.1 ports for this run, and stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }

bash scripts/emulator.sh install

# Three servers: MOTO_ENDPOINT is shared by all tests (isolated by unique
# bucket names); MOTO_AUTH_ENDPOINT is for the tests that turn IAM
# enforcement on, a switch global to a server; GCS_EMULATOR_ENDPOINT is
# fake-gcs-server, which the GCS tests reach through a guard of their own
# (authentication and Object Creator permissions). One trap stops them all,
# also when a later one fails to start.
MOTO_ENDPOINT=""
MOTO_AUTH_ENDPOINT=""
GCS_EMULATOR_ENDPOINT=""
stop_emulators() {
    local endpoint
    for endpoint in "$MOTO_ENDPOINT" "$MOTO_AUTH_ENDPOINT" "$GCS_EMULATOR_ENDPOINT"; do
        if [[ -n "$endpoint" ]]; then
            bash scripts/emulator.sh stop "${endpoint##*:}" || true
        fi
    done
}
trap stop_emulators EXIT
MOTO_ENDPOINT="$(bash scripts/emulator.sh start)"
MOTO_AUTH_ENDPOINT="$(bash scripts/emulator.sh start)"
GCS_EMULATOR_ENDPOINT="$(bash scripts/emulator.sh start-gcs)"
export MOTO_ENDPOINT MOTO_AUTH_ENDPOINT GCS_EMULATOR_ENDPOINT
echo "test: moto's servers at $MOTO_ENDPOINT and (IAM enforcement) $MOTO_AUTH_ENDPOINT;" \
    "fake-gcs-server at $GCS_EMULATOR_ENDPOINT" >&2

# DuckDB stands in for Athena: in the SQL test below and in the Athena path's
# end-to-end test (cli/tests/athena_standin_against_moto.rs) that cargo test runs.
if ! .venv/bin/python -c 'import duckdb' 2>/dev/null; then
    echo "test: installing duckdb into .venv (once)" >&2
    .venv/bin/python -m pip install --quiet duckdb >&2
fi

cargo fmt --all -- --check
# One feature set for every package, so nothing is compiled twice.
bash scripts/check-features.sh
cargo test --workspace --all-targets --locked "$@"

# The Athena SQL of sql/ against the Rust ranking, every row, with DuckDB as
# the stand-in engine (docs/scaling.md). It runs the debug `popularity` that
# cargo test just built ($CARGO_TARGET_DIR/debug, or target/debug).
.venv/bin/python -m unittest sql/test_sql_matches_rust.py

# The SAM template: both lints, the offline transform, sam validate and a
# sam build of every function for arm64, with a quick profile since it is not
# deployed (scripts/check-template.sh; installs the SAM CLI and cargo-lambda
# into .venv). SKIP_TEMPLATE_CHECKS=1 skips them.
if [[ "${SKIP_TEMPLATE_CHECKS:-0}" == 1 ]]; then
    echo "test: SKIP_TEMPLATE_CHECKS=1: template checks skipped" >&2
else
    bash scripts/check-template.sh
fi

# The local S3-notification router's own unit tests (offline; it parses
# template.yaml with PyYAML, which the SAM CLI brings, or installed here).
if ! .venv/bin/python -c 'import yaml' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet pyyaml >&2
fi
.venv/bin/python -m unittest scripts/local/test_router.py
