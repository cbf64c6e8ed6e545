# ekaci/static: every ekaci binary, nats-server and the health probe on an
# empty base (FROM scratch is reserved: nothing is pulled). The context is
# the staging directory deploy/images/build.sh fills.
FROM scratch
# usr/local/bin/*, etc/passwd, etc/group, etc/ssl/certs/ca-certificates.crt, tmp (1777)
COPY rootfs/ /
# Mount points owned by the unprivileged user: Docker seeds an empty named
# volume from the image's directory, ownership included.
COPY --chown=65532:65532 data/ /
USER 65532:65532
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt HOME=/var/lib/ekaci
