#!/usr/bin/env bash
# The project's test command: every test of the workspace, including those
# against the local emulators. Needs only the Rust toolchain and Python 3:
# moto's server and fake-gcs-server are installed into .venv on first use,
# started on free 127.0.0.1 ports for this run, and stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }

bash scripts/emulator.sh install

# The browser test (tests/tests/console_in_browser.rs) drives Debian's
# headless Chromium through chromedriver: install both when missing, as root
# or with `sudo -n`. Only where that is impossible is the test skipped, and
# loudly: BROWSER_TEST_SKIP carries the reason to the test, which prints it,
# and this script repeats it at the end.
BROWSER_TEST_SKIP=""
ensure_browser() {
    [[ -x "${CHROMIUM:-/usr/bin/chromium}" && -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ]] && return 0
    local as_root=()
    if (( $(id -u) != 0 )); then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            as_root=(sudo -n)
        else
            BROWSER_TEST_SKIP="chromium and chromium-driver are not installed, and installing them needs root or passwordless sudo"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        BROWSER_TEST_SKIP="chromium and chromium-driver are not installed, and this machine has no apt-get to install them"
        return 0
    fi
    echo "test: installing Debian's chromium and chromium-driver for the browser test (once)" >&2
    if ! { "${as_root[@]}" apt-get update -q >&2 \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2; }; then
        BROWSER_TEST_SKIP="apt-get install chromium chromium-driver failed (see above)"
    fi
}
ensure_browser
if [[ -n "$BROWSER_TEST_SKIP" ]]; then
    export BROWSER_TEST_SKIP
    echo "test: WARNING: the browser test console_in_browser will be SKIPPED: $BROWSER_TEST_SKIP" >&2
fi

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

# DuckDB and Polars: the Parquet delivery tests read every delivered Parquet
# file back with both (tests/python/check_parquet.py); DuckDB also stands in
# for Athena in the SQL test below and in the Athena path's end-to-end test
# (cli/tests/athena_standin_against_moto.rs) that cargo test runs.
if ! .venv/bin/python -c 'import duckdb, polars' 2>/dev/null; then
    echo "test: installing duckdb and polars into .venv (once)" >&2
    .venv/bin/python -m pip install --quiet duckdb polars >&2
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

if [[ -n "$BROWSER_TEST_SKIP" ]]; then
    echo "test: WARNING: the browser test console_in_browser was SKIPPED: $BROWSER_TEST_SKIP" >&2
fi
