#!/usr/bin/env bash
# Writes, in every module's go.mod, a replace directive for each of ekaci's
# own modules that it needs and drops the others, so that `go mod tidy` and
# builds outside the workspace (GOWORK=off, container images) resolve
# ekaci's modules from this tree, never from a proxy, and each go.mod shows
# its real dependencies. "Needs" is what its packages and tests import,
# directly or not, closed over the needs of those modules (go mod tidy also
# resolves the tests of the modules a module imports).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prefix=github.com/ekaci/ekaci/
mods=$(find libs services deploy -name go.mod -not -path '*/testdata/*' -exec dirname {} \; | sort)
declare -A direct
for mod in $mods; do
  # Resolved in the workspace, which knows every module of the tree.
  direct[$mod]=$(cd "$mod" && go list -deps -test -f '{{with .Module}}{{.Path}}{{end}}' ./... | sort -u |
    grep "^$prefix" | sed "s|^$prefix||" | grep -vx "$mod" || true)
done
for mod in $mods; do
  needed=" ${direct[$mod]//$'\n'/ } "
  changed=1
  while [ $changed = 1 ]; do
    changed=0
    for dep in $needed; do
      for sub in ${direct[$dep]:-}; do
        if [ "$sub" != "$mod" ] && [[ "$needed" != *" $sub "* ]]; then needed="$needed$sub "; changed=1; fi
      done
    done
  done
  rel=$(realpath --relative-to="$mod" "$root")
  args=()
  for old in $(cd "$mod" && go mod edit -json | sed -n "s|.*\"Path\": \"\\($prefix[^\"]*\\)\".*|\\1|p" | sort -u); do
    args+=("-dropreplace=$old")
  done
  for dep in $needed; do
    args+=("-replace=$prefix$dep=$rel/$dep")
  done
  (cd "$mod" && go mod edit "${args[@]}")
done
