#!/usr/bin/env bash
# The demo: a pull request over examples/demo (base and head commits, made
# into a git repository in a temp dir by demo-repo.sh), carried through
# every ekaci stage with an embedded NATS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t ekaci-demo.XXXXXX)
repo="$work/repo"
"$root/scripts/demo-repo.sh" "$repo"
port="${EKACI_NATS_PORT:-4222}"
echo "demo repository: $repo (base HEAD~1, head HEAD)"
echo "data dir:        $work/data"
# Offline: no binary cache is reachable, so none is asked (each try costs
# ~5 s). The short no-output timeout is for demo-silent, which prints
# nothing forever.
status=0
"$root/bin/ekaci" run \
  --data-dir "$work/data" \
  --nats-port "$port" \
  --nix-option substituters= \
  --no-output-timeout "${EKACI_NO_OUTPUT_TIMEOUT:-2s}" \
  --log-format "${EKACI_LOG_FORMAT:-console}" \
  --log-level "${EKACI_LOG_LEVEL:-warn}" \
  --base HEAD~1 \
  "$repo" || status=$?
cat <<MSG

To look inside this run's event log, reopen its store and use the NATS CLI:
  $root/bin/ekaci serve --data-dir $work/data --nats-port $port &
  nats -s nats://127.0.0.1:$port stream ls
  nats -s nats://127.0.0.1:$port sub --stream EKACI_EVENTS --all 'ekaci.evt.>'
Build logs: $work/data/logs/<drv>/<attempt>.log.zst (zstd -dc to read)
Check logs: $work/data/logs/<check id>/<attempt>.log.zst (the LOG column above)
MSG
exit $status
