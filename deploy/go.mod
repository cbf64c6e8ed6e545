module github.com/ekaci/ekaci/deploy

go 1.26.8

require github.com/nats-io/nats-server/v2 v2.15.2

require (
	github.com/compose-spec/compose-go/v2 v2.16.2
	github.com/ekaci/ekaci/libs/buildstate v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/eventlog v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/services/ekaci v0.0.0-00010101000000-000000000000
	github.com/nats-io/nats.go v1.56.0
	k8s.io/api v0.37.2
	k8s.io/apimachinery v0.37.2
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/bradleyfalzon/ghinstallation/v2 v2.19.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/distribution/reference v0.5.0 // indirect
	github.com/docker/go-connections v0.4.0 // indirect
	github.com/docker/go-units v0.5.0 // indirect
	github.com/ekaci/ekaci/libs/action v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/binarycache v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/flagenv v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/githubapp v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/logretention v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/machines v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/natsembed v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/pbjson v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/projection v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/service v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/libs/telemetry v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/admin v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/builder v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/checker v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/evaluator v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/gitter v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/ingress v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/notifier v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/reader v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/recorder v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/router v0.0.0-00010101000000-000000000000 // indirect
	github.com/ekaci/ekaci/services/webhook v0.0.0-00010101000000-000000000000 // indirect
	github.com/fxamacker/cbor/v2 v2.9.1 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-viper/mapstructure/v2 v2.4.0 // indirect
	github.com/golang-jwt/jwt/v4 v4.5.2 // indirect
	github.com/google/go-github/v60 v60.0.0 // indirect
	github.com/google/go-github/v88 v88.0.0 // indirect
	github.com/google/go-querystring v1.2.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/klauspost/compress v1.20.5 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/mattn/go-shellwords v1.0.12 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/modern-go/concurrent v0.0.0-20180306012644-bacd9c7ef1dd // indirect
	github.com/modern-go/reflect2 v1.0.3-0.20250322232337-35a7c28c31ee // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/nix-community/go-nix v0.0.0-20250101154619-4bdde671e0a1 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.1 // indirect
	github.com/sirupsen/logrus v1.10.1 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	github.com/xhit/go-str2duration/v2 v2.1.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v2 v2.4.4 // indirect
	go.yaml.in/yaml/v4 v4.0.0-rc.4 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.47.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261123191846-1e707ab9fbc2 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
	k8s.io/klog/v2 v2.140.0 // indirect
	k8s.io/kube-openapi v0.0.0-20260721132016-d427ff9ee9ad // indirect
	k8s.io/utils v0.0.0-20260626114624-be93311217bd // indirect
	sigs.k8s.io/json v0.0.0-20250730193827-2d320260d730 // indirect
	sigs.k8s.io/randfill v1.0.0 // indirect
	sigs.k8s.io/structured-merge-diff/v6 v6.4.2 // indirect
)

tool github.com/nats-io/nats-server/v2

replace github.com/ekaci/ekaci/libs/action => ../libs/action

replace github.com/ekaci/ekaci/libs/binarycache => ../libs/binarycache

replace github.com/ekaci/ekaci/libs/buildstate => ../libs/buildstate

replace github.com/ekaci/ekaci/libs/eventlog => ../libs/eventlog

replace github.com/ekaci/ekaci/libs/flagenv => ../libs/flagenv

replace github.com/ekaci/ekaci/libs/gen => ../libs/gen

replace github.com/ekaci/ekaci/libs/githubapp => ../libs/githubapp

replace github.com/ekaci/ekaci/libs/logretention => ../libs/logretention

replace github.com/ekaci/ekaci/libs/machines => ../libs/machines

replace github.com/ekaci/ekaci/libs/natsembed => ../libs/natsembed

replace github.com/ekaci/ekaci/libs/pbjson => ../libs/pbjson

replace github.com/ekaci/ekaci/libs/projection => ../libs/projection

replace github.com/ekaci/ekaci/libs/service => ../libs/service

replace github.com/ekaci/ekaci/libs/telemetry => ../libs/telemetry

replace github.com/ekaci/ekaci/services/admin => ../services/admin

replace github.com/ekaci/ekaci/services/builder => ../services/builder

replace github.com/ekaci/ekaci/services/checker => ../services/checker

replace github.com/ekaci/ekaci/services/ekaci => ../services/ekaci

replace github.com/ekaci/ekaci/services/evaluator => ../services/evaluator

replace github.com/ekaci/ekaci/services/gitter => ../services/gitter

replace github.com/ekaci/ekaci/services/ingress => ../services/ingress

replace github.com/ekaci/ekaci/services/notifier => ../services/notifier

replace github.com/ekaci/ekaci/services/reader => ../services/reader

replace github.com/ekaci/ekaci/services/recorder => ../services/recorder

replace github.com/ekaci/ekaci/services/router => ../services/router

replace github.com/ekaci/ekaci/services/webhook => ../services/webhook

replace github.com/ekaci/ekaci/libs/natstest => ../libs/natstest

replace github.com/ekaci/ekaci/libs/nixtest => ../libs/nixtest

replace github.com/ekaci/ekaci/libs/githubtest => ../libs/githubtest

replace github.com/ekaci/ekaci/libs/graphgen => ../libs/graphgen
