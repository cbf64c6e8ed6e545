module github.com/ekaci/ekaci/libs/buildstate

go 1.26.8

require github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000

require (
	github.com/ekaci/ekaci/libs/pbjson v0.0.0-00010101000000-000000000000 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen

replace github.com/ekaci/ekaci/libs/pbjson => ../../libs/pbjson
