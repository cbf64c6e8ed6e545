#!/usr/bin/env bash
# nix-base.sh TAG: make the Debian rootfs of the Nix image with mmdebstrap
# (nothing is pulled from a registry: the packages come from Debian's
# mirror) and load it with `docker import` as ekaci/nix-base:TAG. The
# package list with versions (dpkg-query -W) is the image's
# org.ekaci.packages label.
#
# What the hooks set up, and why:
#   - uid/gid 65532 "ekaci" (minbase has no passwd package, so no useradd);
#   - /etc/nix/nix.conf: single-user Nix with no build users and no sandbox
#     (Debian's nix-bin creates no nixbld group, and a sandbox inside an
#     unprivileged container fails or silently falls back);
#   - /nix and ekaci's data directories owned by 65532, so a named volume
#     mounted there starts out writable by the unprivileged user;
#   - $HOME/.gitconfig trusting every directory: gitter runs git with
#     GIT_CONFIG_NOSYSTEM=1, and repositories mounted from the host belong
#     to another uid ("detected dubious ownership").
set -euo pipefail
tag=$1 out=$2
mkdir -p "$out"
mmdebstrap --variant=minbase --include="$(cat "$(dirname "$0")/nix-packages.txt" | grep -v '^#' | paste -sd,)" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='echo "ekaci:x:65532:65532:ekaci:/var/lib/ekaci:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "ekaci:x:65532:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/etc/nix" && printf "build-users-group =\nsandbox = false\n" > "$1/etc/nix/nix.conf"' \
  --customize-hook='mkdir -p "$1/nix/store" "$1/nix/var" "$1/var/lib/ekaci/git" "$1/var/lib/ekaci/logs" "$1/var/lib/ekaci/builder" "$1/var/lib/ekaci/cache" && chown -R 65532:65532 "$1/nix" "$1/var/lib/ekaci"' \
  --customize-hook='printf "[safe]\n\tdirectory = *\n" > "$1/var/lib/ekaci/.gitconfig" && chown 65532:65532 "$1/var/lib/ekaci/.gitconfig"' \
  --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "'"$out"'/packages.txt"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
  bookworm "$out/nix-base.tar" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.ekaci.packages=\"$(paste -sd, "$out/packages.txt")\"" \
  "$out/nix-base.tar" "ekaci/nix-base:$tag" >/dev/null
rm -f "$out/nix-base.tar"
