module github.com/ekaci/ekaci/libs/githubapp

go 1.26.8

require (
	github.com/bradleyfalzon/ghinstallation/v2 v2.19.0
	github.com/ekaci/ekaci/libs/flagenv v0.0.0-00010101000000-000000000000
	github.com/ekaci/ekaci/libs/githubtest v0.0.0-00010101000000-000000000000
	github.com/google/go-github/v60 v60.0.0
)

require (
	github.com/golang-jwt/jwt/v4 v4.5.2 // indirect
	github.com/google/go-github/v88 v88.0.0 // indirect
	github.com/google/go-querystring v1.2.0 // indirect
)

replace github.com/ekaci/ekaci/libs/flagenv => ../../libs/flagenv

replace github.com/ekaci/ekaci/libs/githubtest => ../../libs/githubtest
