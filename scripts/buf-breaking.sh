#!/usr/bin/env bash
# Checks the schemas under proto/ for breaking changes (buf.yaml: FILE)
# against the previous commit, or against the last commit when the tree has
# uncommitted changes to proto/. A clone with no earlier commit to compare
# (the first commit, or a shallow clone of depth 1) says so and fails: CI
# must clone with history.
set -euo pipefail
buf=${1:-buf}
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain -- proto)" ]; then
  against=HEAD
else
  against=HEAD~1
fi
if ! git rev-parse --verify -q "$against^{commit}" >/dev/null; then
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "buf breaking: this is a shallow clone without $against; fetch more history (git fetch --deepen=1)" >&2
    exit 1
  fi
  echo "buf breaking: $against does not exist (the first commit): nothing to compare with"
  exit 0
fi
echo "buf breaking against $against"
"$buf" breaking --against ".git#ref=$against"
