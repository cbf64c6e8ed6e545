module github.com/ekaci/ekaci/libs/machines

go 1.26.8

require github.com/rs/zerolog v1.35.1

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.29.0 // indirect
)
