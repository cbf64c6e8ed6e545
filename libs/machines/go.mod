module github.com/ekaci/ekaci/libs/machines

go 1.26.8

replace github.com/ekaci/ekaci/libs/buildstate => ../../libs/buildstate

replace github.com/ekaci/ekaci/libs/eventlog => ../../libs/eventlog

replace github.com/ekaci/ekaci/libs/flagenv => ../../libs/flagenv

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/natsembed => ../../libs/natsembed

replace github.com/ekaci/ekaci/libs/natstest => ../../libs/natstest

replace github.com/ekaci/ekaci/libs/projection => ../../libs/projection

replace github.com/ekaci/ekaci/libs/service => ../../libs/service

replace github.com/ekaci/ekaci/libs/telemetry => ../../libs/telemetry

require github.com/rs/zerolog v1.35.1

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.29.0 // indirect
)

replace github.com/ekaci/ekaci/libs/graphgen => ../../libs/graphgen

replace github.com/ekaci/ekaci/libs/pbjson => ../../libs/pbjson
