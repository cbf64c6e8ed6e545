#!/usr/bin/env bash
# The demo: turns examples/demo into a git repository in a temp dir and runs
# one CI run of it through every ekaci stage, with an embedded NATS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t ekaci-demo.XXXXXX)
repo="$work/repo"
cp -r "$root/examples/demo" "$repo"
# A fresh salt makes every demo run build anew instead of finding the
# outputs of the last run in the Nix store.
sed -i "s/salt = \"\";/salt = \"$(date +%s%N)\";/" "$repo/default.nix"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "demo"
port="${EKACI_NATS_PORT:-4222}"
echo "demo repository: $repo"
echo "data dir:        $work/data"
# Offline: no binary cache is reachable, so none is asked (each try costs ~5 s).
status=0
"$root/bin/ekaci" run \
  --data-dir "$work/data" \
  --nats-port "$port" \
  --nix-option substituters= \
  --log-format "${EKACI_LOG_FORMAT:-console}" \
  "$repo" || status=$?
cat <<MSG

To look inside this run's event log, reopen its store and use the NATS CLI:
  $root/bin/ekaci serve --data-dir $work/data --nats-port $port &
  nats -s nats://127.0.0.1:$port stream ls
  nats -s nats://127.0.0.1:$port stream view EKACI_EVENTS
MSG
exit $status
