#!/usr/bin/env bash
# Makes sure Nix's nix, nix-build, nix-instantiate and nix-store are on PATH.
# As root on Debian it installs nix-bin with apt-get; otherwise it says what
# to install and fails.
set -euo pipefail
if command -v nix >/dev/null && command -v nix-build >/dev/null && command -v nix-instantiate >/dev/null && command -v nix-store >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-nix: installing nix-bin with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq nix-bin git >/dev/null
  command -v nix-build >/dev/null && exit 0
fi
cat >&2 <<'MSG'
ensure-nix: Nix is not installed, and it cannot be installed from here.
  On Debian/Ubuntu, as root:   apt-get install -y nix-bin
  Elsewhere: install Nix (https://nixos.org/download) so that nix,
  nix-build, nix-instantiate and nix-store are on PATH, then run make again.
MSG
exit 1
