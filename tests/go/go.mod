module pairbroker.test/golab

go 1.19
