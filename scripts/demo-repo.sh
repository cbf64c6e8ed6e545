#!/usr/bin/env bash
# demo-repo.sh DIR: makes DIR a git repository with the demo pull request:
# commit 1 is examples/demo/base, commit 2 (HEAD) examples/demo/head, both
# with examples/demo/lib.nix. A
# fresh salt makes every repository's derivations new to the Nix store.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: demo-repo.sh DIR}
salt=${EKACI_DEMO_SALT:-$(date +%s%N)-$$}
fodhash=$(printf 'fod-%s' "$salt" | sha256sum | cut -d' ' -f1)
mkdir -p "$dest"
git -C "$dest" init -q -b main
commit() {
  find "$dest" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
  cp -r "$root/examples/demo/$1/." "$dest/"
  cp "$root/examples/demo/lib.nix" "$dest/lib.nix" # shared by both commits
  find "$dest" -name '*.nix' -exec sed -i "s/@SALT@/$salt/g; s/@FODHASH@/$fodhash/g" {} +
  git -C "$dest" add -A
  git -C "$dest" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "$2"
}
commit base "base: the main branch"
commit head "head: the pull request"
