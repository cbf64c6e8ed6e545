module github.com/ekaci/ekaci/services/checker

go 1.26.8
