module github.com/ekaci/ekaci/services/admin

go 1.26.8

require (
	github.com/ekaci/ekaci/libs/action v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/buildstate v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/eventlog v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/flagenv v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/natstest v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/projection v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/service v0.0.0-00010101000000-000000000000
	github.com/klauspost/compress v1.20.5
	github.com/nats-io/nats.go v1.56.0
	github.com/rs/zerolog v1.35.1
	github.com/spf13/cobra v1.10.2
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
	golang.org/x/term v0.47.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261123191846-1e707ab9fbc2
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/ekaci/ekaci/libs/pbjson v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/telemetry v0.0.0-00010101000000-000000000000 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
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
	github.com/spf13/pflag v1.0.10 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace github.com/ekaci/ekaci/libs/action => ../../libs/action

replace github.com/ekaci/ekaci/libs/buildstate => ../../libs/buildstate

replace github.com/ekaci/ekaci/libs/eventlog => ../../libs/eventlog

replace github.com/ekaci/ekaci/libs/flagenv => ../../libs/flagenv

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/natstest => ../../libs/natstest

replace github.com/ekaci/ekaci/libs/pbjson => ../../libs/pbjson

replace github.com/ekaci/ekaci/libs/projection => ../../libs/projection

replace github.com/ekaci/ekaci/libs/service => ../../libs/service

replace github.com/ekaci/ekaci/libs/telemetry => ../../libs/telemetry
