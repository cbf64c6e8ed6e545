module github.com/ekaci/ekaci/libs/flagenv

go 1.26.8
