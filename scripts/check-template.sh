#!/usr/bin/env bash
# Checks template.yaml the way a deployment would meet it, offline:
#   1. cfn-lint template.yaml
#   2. the SAM transform done offline with samtranslator, and cfn-lint on its
#      output: only this sees circular dependencies (an S3 notification plus
#      a policy that !Refs the same bucket) and bad cron expressions
#   3. sam validate --lint
#   4. sam build (cargo-lambda) and a bootstrap for every function in
#      .aws-sam/check/build/<LogicalId>/, for the architecture built
#
# The build in step 4 proves that every function of the template compiles and
# links for the template's architecture through SAM's own builder. It is not
# what gets deployed, so by default it builds with a quick profile (the
# release profile overridden to opt-level 0, no debug info, 256 codegen
# units: 370 s from cold against 1,013 s optimised, on 2 cores) into a build
# directory of its own (.aws-sam/check/build, where `sam deploy` never
# looks) and a cargo target directory of its own (<target>/template-check),
# so its unoptimised bootstraps never replace the optimised ones in
# <target>/lambda; `sam build` by hand still builds the optimised release
# binaries into .aws-sam/build.
# TEMPLATE_CHECK_PROFILE=release checks the optimised build instead.
# Tools go into the project's .venv (created by scripts/emulator.sh install):
# aws-sam-cli (brings cfn-lint and samtranslator) and cargo-lambda. Needs the
# Rust toolchain and Python 3; no Docker, no AWS account, no credentials.
#
# The template's default architecture is arm64. When the aarch64 Rust target
# cannot be installed (rustup needs the internet) or the arm64 build fails,
# the build is retried for x86_64 (--parameter-overrides
# Architecture=x86_64) and says so. If the SAM CLI cannot be installed at
# all, steps 3 and 4 are skipped with a message; an unreachable package index
# is an error. SKIP_SAM_BUILD=1 stops after step 3 (a quick check while
# editing the template; the test command always builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
OUT="$ROOT/.aws-sam/check"

say() { echo "check-template: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1
export PATH="$VENV/bin:$PATH"

command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"
bash scripts/emulator.sh install # creates .venv

# 0 when pip can reach its package index (PyPI unless configured otherwise).
index_reachable() {
    "$PY" -m pip download --quiet --no-deps --dest "$OUT/pip-probe" cfn-lint >/dev/null 2>&1
}

pip_install() {
    "$PY" -m pip install --quiet "$@" >&2
}

mkdir -p "$OUT"
SAM_AVAILABLE=1
if [[ ! -x "$VENV/bin/sam" ]]; then
    say "installing aws-sam-cli into .venv (once)"
    if ! pip_install aws-sam-cli; then
        index_reachable || die "pip cannot reach its package index (PyPI): aws-sam-cli and cfn-lint cannot be installed"
        SAM_AVAILABLE=0
        say "WARNING: aws-sam-cli cannot be installed into .venv (see pip's error above);" \
            "sam validate and sam build are SKIPPED, only cfn-lint checks run"
    fi
fi
if [[ ! -x "$VENV/bin/cfn-lint" ]]; then
    pip_install cfn-lint || die "pip install cfn-lint failed (is PyPI reachable?)"
fi
if [[ "$SAM_AVAILABLE" == 1 && ! -x "$VENV/bin/cargo-lambda" ]]; then
    say "installing cargo-lambda into .venv (once)"
    pip_install cargo-lambda || die "pip install cargo-lambda failed (is PyPI reachable?); sam build needs it"
fi

step() { say "== $*"; }

step "cfn-lint template.yaml"
cfn-lint template.yaml || die "cfn-lint found problems in template.yaml"

step "SAM transform (samtranslator, offline) + cfn-lint of the result"
# scripts/local/transform_template.py is also what the least-privilege test
# (tests/tests/least_privilege_against_moto.rs) takes each function's policies from.
"$PY" scripts/local/transform_template.py template.yaml "$OUT/transformed.json" \
    || die "the SAM transform of template.yaml failed"
cfn-lint "$OUT/transformed.json" || die "cfn-lint found problems in the transformed template ($OUT/transformed.json)"

if [[ "$SAM_AVAILABLE" != 1 ]]; then
    say "SKIPPED: sam validate --lint and sam build (the SAM CLI could not be installed)"
    exit 0
fi

step "sam validate --lint"
sam validate --lint || die "sam validate --lint failed"

if [[ "${SKIP_SAM_BUILD:-0}" == 1 ]]; then
    say "SKIP_SAM_BUILD=1: lints passed; sam build skipped"
    exit 0
fi

# Functions and the bootstrap each must have, checked against the ELF
# machine of the architecture built.
check_bootstraps() {
    "$PY" - "$OUT/transformed.json" "$1" "$BUILD_DIR" <<'PY'
import json
import os
import sys

transformed, architecture, build_dir = sys.argv[1], sys.argv[2], sys.argv[3]
machine = {"arm64": 0xB7, "x86_64": 0x3E}[architecture]
functions = [
    logical_id
    for logical_id, resource in json.load(open(transformed))["Resources"].items()
    if resource["Type"] == "AWS::Lambda::Function"
]
problems = []
for logical_id in sorted(functions):
    path = os.path.join(build_dir, logical_id, "bootstrap")
    if not os.path.isfile(path):
        problems.append(f"{path} is missing")
        continue
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or int.from_bytes(header[18:20], "little") != machine:
        problems.append(f"{path} is not an ELF executable for {architecture}")
    elif not os.access(path, os.X_OK):
        problems.append(f"{path} is not executable")
    else:
        print(f"check-template:   {path} ({os.path.getsize(path) // 1024} KiB, {architecture})", file=sys.stderr)
if problems or not functions:
    sys.exit("\n".join(problems) or "no functions in the transformed template")
PY
}

# cargo-lambda would `rustup target add` by itself, but four parallel builds
# race for it; add it once here, and fall back to x86_64 when it cannot be.
architecture=arm64
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    say "adding the aarch64-unknown-linux-gnu Rust target for arm64 builds"
    if ! rustup target add aarch64-unknown-linux-gnu >&2; then
        say "WARNING: cannot add the aarch64 Rust target (offline?); building for x86_64 instead"
        architecture=x86_64
    fi
fi

case "${TEMPLATE_CHECK_PROFILE:-quick}" in
    quick)
        export CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/template-check"
        ;;
    release) ;;
    *) die "TEMPLATE_CHECK_PROFILE must be quick or release, not '$TEMPLATE_CHECK_PROFILE'" ;;
esac
BUILD_DIR="$OUT/build"

sam_build() {
    local started=$SECONDS
    rm -rf "$BUILD_DIR"
    step "sam build (Architecture=$1, ${TEMPLATE_CHECK_PROFILE:-quick} profile, into $BUILD_DIR)"
    if sam build --build-dir "$BUILD_DIR" --parameter-overrides "Architecture=$1"; then
        say "sam build for $1 took $((SECONDS - started)) s"
        return 0
    fi
    say "sam build for $1 failed after $((SECONDS - started)) s"
    return 1
}

if ! sam_build "$architecture"; then
    [[ "$architecture" == arm64 ]] || die "sam build failed"
    say "WARNING: the arm64 build failed (cross-compilation set-up?); retrying for x86_64." \
        "Deploy with --parameter-overrides Architecture=x86_64 if arm64 cannot be built here."
    architecture=x86_64
    sam_build "$architecture" || die "sam build failed for x86_64 too"
fi
check_bootstraps "$architecture" || die "sam build did not produce a bootstrap for every function"
say "all template checks passed (functions built for $architecture)"
