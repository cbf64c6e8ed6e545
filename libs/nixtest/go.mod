module github.com/ekaci/ekaci/libs/nixtest

go 1.26.8
