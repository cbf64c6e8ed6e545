module github.com/ekaci/ekaci/libs/machines

go 1.26.8

require (
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/nixtest v0.0.0-00010101000000-000000000000
	github.com/rs/zerolog v1.35.1
)

require (
	github.com/ekaci/ekaci/libs/pbjson v0.0.0-00010101000000-000000000000 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/nixtest => ../../libs/nixtest

replace github.com/ekaci/ekaci/libs/pbjson => ../../libs/pbjson
