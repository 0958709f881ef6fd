module github.com/flockhq/flock/bridges/scsstore

go 1.26.0

require github.com/flockhq/flock v0.0.0

require (
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/sirupsen/logrus v1.10.2 // indirect
	github.com/vmihailenco/msgpack/v5 v5.4.1 // indirect
	github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/flockhq/flock => ../..
