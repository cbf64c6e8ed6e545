module github.com/ekaci/ekaci/services/notifier

go 1.26.8

require (
	github.com/ekaci/ekaci/libs/eventlog v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/githubapp v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/githubtest v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/natstest v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/service v0.0.0-00010101000000-000000000000
	github.com/google/go-github/v60 v60.0.0
	github.com/nats-io/nats.go v1.55.0
	github.com/rs/zerolog v1.35.1
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/bradleyfalzon/ghinstallation/v2 v2.19.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/ekaci/ekaci/libs/flagenv v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/pbjson v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/telemetry v0.0.0-00010101000000-000000000000 // indirect
	github.com/golang-jwt/jwt/v4 v4.5.2 // indirect
	github.com/google/go-github/v88 v88.0.0 // indirect
	github.com/google/go-querystring v1.2.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nats-server/v2 v2.15.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.47.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/ekaci/ekaci/libs/eventlog => ../../libs/eventlog

replace github.com/ekaci/ekaci/libs/flagenv => ../../libs/flagenv

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/githubapp => ../../libs/githubapp

replace github.com/ekaci/ekaci/libs/githubtest => ../../libs/githubtest

replace github.com/ekaci/ekaci/libs/natstest => ../../libs/natstest

replace github.com/ekaci/ekaci/libs/pbjson => ../../libs/pbjson

replace github.com/ekaci/ekaci/libs/service => ../../libs/service

replace github.com/ekaci/ekaci/libs/telemetry => ../../libs/telemetry
