#!/usr/bin/env bash
# Adds a replace directive for every module under libs/ to every module's
# go.mod, and for every module under services/ to the modules that import
# it (the all-in-one), so that `go mod tidy` and builds outside the
# workspace (container images) resolve ekaci's own modules from this tree,
# never from a proxy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
libs=$(find libs -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort)
services=$(find services -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort)
for mod in $(find libs services -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort); do
  rel=$(realpath --relative-to="$mod" "$root")
  deps=$libs
  for svc in $services; do # the service modules it imports (the all-in-one)
    if [ "$svc" != "$mod" ] && grep -rqsE --include='*.go' "\"github.com/ekaci/ekaci/$svc[\"/]" "$mod"; then
      deps="$deps $svc"
    fi
  done
  for dep in $deps; do
    [ "$dep" = "$mod" ] && continue
    (cd "$mod" && go mod edit -replace "github.com/ekaci/ekaci/$dep=$rel/$dep")
  done
done
