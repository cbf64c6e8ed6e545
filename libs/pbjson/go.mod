module github.com/ekaci/ekaci/libs/pbjson

go 1.26.8

require (
	github.com/ekaci/ekaci/libs/gen v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

replace github.com/ekaci/ekaci/libs/gen => ../../libs/gen
