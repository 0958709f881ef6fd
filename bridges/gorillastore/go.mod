module github.com/flockhq/flock/bridges/gorillastore

go 1.26.0

require github.com/flockhq/flock v0.0.0

require (
	github.com/gorilla/securecookie v1.1.2 // indirect
	github.com/gorilla/sessions v1.4.0 // indirect
)

replace github.com/flockhq/flock => ../..
