module github.com/ekaci/ekaci/libs/graphgen

go 1.26.8
