module github.com/ekaci/ekaci/libs/pbjson

go 1.26.8

require (
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

replace github.com/ekaci/ekaci/libs/buildstate => ../../libs/buildstate

replace github.com/ekaci/ekaci/libs/eventlog => ../../libs/eventlog

replace github.com/ekaci/ekaci/libs/flagenv => ../../libs/flagenv

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/graphgen => ../../libs/graphgen

replace github.com/ekaci/ekaci/libs/machines => ../../libs/machines

replace github.com/ekaci/ekaci/libs/natsembed => ../../libs/natsembed

replace github.com/ekaci/ekaci/libs/natstest => ../../libs/natstest

replace github.com/ekaci/ekaci/libs/projection => ../../libs/projection

replace github.com/ekaci/ekaci/libs/service => ../../libs/service

replace github.com/ekaci/ekaci/libs/telemetry => ../../libs/telemetry
