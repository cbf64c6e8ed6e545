#!/usr/bin/env bash
# build.sh: `make images`. Builds ekaci/static:$EKACI_TAG and
# ekaci/nix:$EKACI_TAG (default tag: dev) with nothing pulled, and skips
# every step whose inputs did not change:
#   - the Go binaries are rebuilt by `go build` (its cache makes an
#     unchanged rebuild a relink);
#   - an image is rebuilt only when the hash of its staged files, its
#     Dockerfile and (for ekaci/nix) its base image differs from the
#     org.ekaci.inputs label of the image already there;
#   - the Debian rootfs (ekaci/nix-base:<key>) is made again only when
#     nix-packages.txt or nix-base.sh changes (the key is their hash).
# What went in is recorded as labels: org.ekaci.inputs, org.ekaci.go (Go
# version), org.ekaci.nats-server, org.ekaci.packages (dpkg-query -W of the
# rootfs, for ekaci/nix).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${EKACI_TAG:-dev}
work=$root/bin/images
SECONDS=0
say() { printf '== [%3d s] %s\n' "$SECONDS" "$*" >&2; }

command -v docker >/dev/null || { echo "build.sh: docker not found" >&2; exit 1; }

# 1. Binaries, static (CGO off), without VCS stamps so that a commit that
# changes no source gives the same bytes.
mkdir -p "$work/bin"
stages=(gitter reader evaluator ingress router builder checker recorder notifier webhook admin)
pkgs=(./services/ekaci/cmd/ekaci ./services/cache/cmd/ekaci-cache ./deploy/cmd/ekaci-probe)
for s in "${stages[@]}"; do pkgs+=("./services/$s/cmd/ekaci-$s"); done
export CGO_ENABLED=0
gobuild=(go build -trimpath -buildvcs=false -ldflags='-s -w')
(cd "$root" && "${gobuild[@]}" -o "$work/bin/" "${pkgs[@]}")
(cd "$root/deploy" && "${gobuild[@]}" -o "$work/bin/nats-server" github.com/nats-io/nats-server/v2)
gover=$(go env GOVERSION)
natsver=$(cd "$root/deploy" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
say "binaries built"

# hash DIR FILE...: the names, modes and contents under DIR, and FILEs.
hash() {
  local dir=$1; shift
  { (cd "$dir" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %a %F' &&
      find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); cat "$@"; } | sha256sum | cut -c1-32
}
label() { docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

# build IMAGE DOCKERFILE CONTEXT INPUTS [docker build args...]
build() {
  local image=$1 dockerfile=$2 ctx=$3 inputs=$4; shift 4
  if [ "$(label "$image" org.ekaci.inputs)" = "$inputs" ]; then
    say "$image is up to date (inputs $inputs)"
    return
  fi
  # The legacy builder (no buildx here) says it is deprecated on every
  # run: its output is shown only when the build fails.
  local out
  if ! out=$(DOCKER_BUILDKIT= docker build -q --network none -f "$dockerfile" -t "$image" \
    --label "org.ekaci.inputs=$inputs" --label "org.ekaci.go=$gover" --label "org.ekaci.nats-server=$natsver" \
    "$@" "$ctx" 2>&1); then
    printf '%s\n' "$out" >&2
    exit 1
  fi
  say "$image built"
}

# 2. ekaci/static.
st=$work/static
rm -rf "$st" && mkdir -p "$st/rootfs/usr/local/bin" "$st/rootfs/etc/ssl/certs" "$st/rootfs/tmp" \
  "$st/data/var/lib/nats" "$st/data/var/lib/ekaci/"{git,logs,builder,cache,ingress,recorder,admin}
cp "$work/bin/"* "$st/rootfs/usr/local/bin/"
chmod 1777 "$st/rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nekaci:x:65532:65532:ekaci:/var/lib/ekaci:/sbin/nologin\n' > "$st/rootfs/etc/passwd"
printf 'root:x:0:\nekaci:x:65532:\n' > "$st/rootfs/etc/group"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "build.sh: $ca not found (apt-get install ca-certificates)" >&2; exit 1; }
cp "$ca" "$st/rootfs/etc/ssl/certs/"
build "ekaci/static:$tag" "$here/static.Dockerfile" "$st" "$(hash "$st" "$here/static.Dockerfile")"

# 3. The Debian rootfs of ekaci/nix, made once per package list.
key=$(cat "$here/nix-packages.txt" "$here/nix-base.sh" | sha256sum | cut -c1-16)
base=ekaci/nix-base:$key
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    apt-get install -y -q mmdebstrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q mmdebstrap >/dev/null; }
  fi
  say "making the Debian rootfs $base with mmdebstrap (about 2 min)"
  "$here/nix-base.sh" "$key" "$work/nix-base"
  say "$base imported"
fi

# 4. ekaci/nix.
nx=$work/nix
rm -rf "$nx" && mkdir -p "$nx/rootfs/usr/local/bin"
cp "$work/bin/"* "$nx/rootfs/usr/local/bin/"
build "ekaci/nix:$tag" "$here/nix.Dockerfile" "$nx" \
  "$(hash "$nx" "$here/nix.Dockerfile" <(docker image inspect -f '{{.Id}}' "$base"))" \
  --build-arg "BASE=$base" --label "org.ekaci.packages=$(label "$base" org.ekaci.packages)"

# Only our own dangling images (an earlier build's), never anyone else's.
docker image prune -f --filter label=org.ekaci.inputs >/dev/null
