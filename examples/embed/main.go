// Command embed is the smallest server with flock sessions: run two with
// different names and ports and a visit counter survives either one dying.
//
//	go run ./examples/embed -name a -http 127.0.0.1:9001
//	go run ./examples/embed -name b -http 127.0.0.1:9002
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/conf"
)

// visits counts the visits of one session, on whichever node serves it.
func visits(w http.ResponseWriter, r *http.Request) {
	s, err := flock.SessionOf(r)
	if err != nil {
		return // flock has answered (503 past max_active)
	}
	n, _, _ := flock.Get[int](s, "visits")
	s.Set("visits", n+1)
	fmt.Fprintf(w, "visit %d, session %s\n", n+1, s.ID())
}

func main() {
	name := flag.String("name", "a", "node name")
	addr := flag.String("http", "127.0.0.1:9001", "HTTP address")
	flag.Parse()
	if err := run(*name, *addr); err != nil {
		log.Fatal(err)
	}
}

// run serves until Ctrl-C; any failure to start (a port taken, a bad
// configuration) is returned, never left running half-started.
func run(name, addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// The listener first: a taken port fails before the node joins.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cfg := conf.Default() // loopback multicast; receiver ports auto-bind from 4000
	cfg.Server.Name = name
	node, err := flock.Start(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer node.Stop(context.Background())

	srv := flock.NewServer(addr, node.Wrap(http.HandlerFunc(visits)))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		return srv.Shutdown(context.Background())
	case err := <-served:
		return err
	}
}
