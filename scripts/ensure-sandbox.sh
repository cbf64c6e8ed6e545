#!/usr/bin/env bash
# Makes sure the checks' sandbox can run: bubblewrap (bwrap), slirp4netns
# (network for checks that ask for one, without the host's loopback) and
# prlimit. As root on Debian it installs them with apt-get; otherwise it
# says what to install and fails.
set -euo pipefail
have() { command -v bwrap >/dev/null && command -v slirp4netns >/dev/null && command -v prlimit >/dev/null; }
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-sandbox: installing bubblewrap and slirp4netns with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq bubblewrap slirp4netns util-linux >/dev/null
  have && exit 0
fi
cat >&2 <<'MSG'
ensure-sandbox: the checks' sandbox needs bwrap, slirp4netns and prlimit.
  On Debian/Ubuntu, as root:   apt-get install -y bubblewrap slirp4netns util-linux
MSG
exit 1
