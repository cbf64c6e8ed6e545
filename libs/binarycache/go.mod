module github.com/ekaci/ekaci/libs/binarycache

go 1.26.8

require github.com/ekaci/ekaci/libs/nixtest v0.0.0-00010101000000-000000000000

replace github.com/ekaci/ekaci/libs/nixtest => ../../libs/nixtest
