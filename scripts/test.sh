#!/usr/bin/env bash
# The project's test command: every test of the workspace, including those
# against the local AWS emulator. Needs only the Rust toolchain and Python 3:
# moto's server is installed into .venv on first use, started on a free
# 127.0.0.1 port for this run, and stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo is needed (https://rustup.rs)" >&2; exit 1; }

bash scripts/emulator.sh install
MOTO_ENDPOINT="$(bash scripts/emulator.sh start)"
export MOTO_ENDPOINT
trap 'bash scripts/emulator.sh stop "${MOTO_ENDPOINT##*:}" || true' EXIT
echo "test: moto's server at $MOTO_ENDPOINT" >&2

cargo fmt --all -- --check
cargo test --workspace --all-targets --locked "$@"
