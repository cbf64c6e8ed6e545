# ekaci/nix: a Debian rootfs with Nix and git (ekaci/nix-base, made by
# deploy/images/nix-base.sh with mmdebstrap and docker import: nothing is
# pulled), with the same binaries as ekaci/static on top. The gitter, the
# evaluator and the builders run on it; Nix runs in single-user mode as
# uid 65532, which owns /nix.
ARG BASE
FROM ${BASE}
COPY rootfs/ /
USER 65532:65532
ENV USER=ekaci HOME=/var/lib/ekaci
