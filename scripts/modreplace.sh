#!/usr/bin/env bash
# Writes, in every module's go.mod, a replace directive for each of ekaci's
# own modules that it needs (what its packages and tests import, directly
# or not) and drops the others, so that `go mod tidy` and builds outside the
# workspace (GOWORK=off, container images) resolve ekaci's modules from this
# tree, never from a proxy, and each go.mod shows its real dependencies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prefix=github.com/ekaci/ekaci/
for mod in $(find libs services -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort); do
  rel=$(realpath --relative-to="$mod" "$root")
  # Resolved in the workspace, which knows every module of the tree.
  needed=$(cd "$mod" && go list -deps -test -f '{{with .Module}}{{.Path}}{{end}}' ./... | sort -u |
    grep "^$prefix" | grep -vx "$prefix$mod" || true)
  args=()
  for old in $(cd "$mod" && go mod edit -json | sed -n "s|.*\"Path\": \"\\($prefix[^\"]*\\)\".*|\\1|p" | sort -u); do
    args+=("-dropreplace=$old")
  done
  for dep in $needed; do
    args+=("-replace=$dep=$rel/${dep#"$prefix"}")
  done
  (cd "$mod" && go mod edit "${args[@]}")
done
