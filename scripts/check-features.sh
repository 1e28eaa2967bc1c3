#!/usr/bin/env bash
# Fails when a workspace package built on its own (as `cargo lambda watch`
# or `cargo build -p X` does) would compile a dependency with other features
# than the whole workspace does (as `cargo test --workspace` does): each such
# difference is a second build of that crate and of everything above it.
# The fix is in shared/Cargo.toml's list of unified dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree() { cargo tree --locked "$@" -e normal,build --prefix none -f '{p} [{f}]' 2>/dev/null | sed 's/ (\*)$//' | sort -u; }
workspace="$(tree --workspace)"
packages="$(cargo metadata --locked --no-deps --format-version 1 | python3 -c '
import json, sys
print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))')"
status=0
for package in $packages; do
    differs="$(python3 - <(echo "$workspace") <(tree -p "$package") <<'PY'
import re, sys
def load(path):
    features = {}
    for line in open(path):
        m = re.match(r'(\S+) (v\S+)(?: \(.*?\))?(?: \(proc-macro\))? \[(.*)\]', line.strip())
        if m:
            features.setdefault((m[1], m[2]), set()).update(f for f in m[3].split(',') if f)
    return features
workspace, alone = load(sys.argv[1]), load(sys.argv[2])
for key, wanted in sorted(alone.items()):
    if workspace.get(key, set()) != wanted:
        print(f"{key[0]} {key[1]}: [{','.join(sorted(wanted))}] alone, [{','.join(sorted(workspace.get(key, set())))}] in the workspace")
PY
)"
    if [[ -n "$differs" ]]; then
        echo "check-features: $package alone builds with other features than the workspace:" >&2
        sed 's/^/    /' <<<"$differs" >&2
        status=1
    fi
done
(( status == 0 )) && echo "check-features: every package builds its dependencies with the workspace's features" >&2
exit "$status"
