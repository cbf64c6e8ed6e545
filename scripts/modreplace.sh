#!/usr/bin/env bash
# Adds a replace directive for every module under libs/ to every module's
# go.mod, so that `go mod tidy` and builds outside the workspace (container
# images) resolve ekaci's own modules from this tree, never from a proxy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
libs=$(find libs -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort)
for mod in $(find libs services -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort); do
  rel=$(realpath --relative-to="$mod" "$root")
  for lib in $libs; do
    [ "$lib" = "$mod" ] && continue
    (cd "$mod" && go mod edit -replace "github.com/ekaci/ekaci/$lib=$rel/$lib")
  done
done
