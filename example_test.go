package flock_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/conf"
)

// visits counts the visits of one session, on whichever node serves it.
func visits(w http.ResponseWriter, r *http.Request) {
	s, err := flock.SessionOf(r)
	if err != nil {
		return // flock has answered: 503 past max_active
	}
	n, _, _ := flock.Get[int](s, "visits")
	s.Set("visits", n+1) // replicated before the response leaves
	fmt.Fprintf(w, "visit %d\n", n+1)
}

// A session outlives the node that created it: two nodes on an in-memory
// network (a real deployment starts each with flock.Start(ctx, cfg) and no
// option), a first visit on one, the node stopped, the next visit on the
// other.
func Example() {
	ctx := context.Background()
	network := clustertest.New()
	defer network.Close()
	start := func(name string) *flock.Node {
		cfg := conf.Default()
		cfg.Server.Name = name
		cfg.Cluster.Membership.Frequency = conf.Duration{Duration: 50 * time.Millisecond}
		nd := network.AddNode(name)
		nd.Join()
		node, err := flock.Start(ctx, cfg, flock.WithCluster(nd.Cluster()))
		if err != nil {
			log.Fatal(err)
		}
		<-node.Ready()
		return node
	}
	a, b := start("a"), start("b")
	defer b.Stop(ctx)
	app := http.HandlerFunc(visits)

	rec := httptest.NewRecorder()
	a.Wrap(app).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	fmt.Print(rec.Body)
	cookie := rec.Result().Cookies()[0]

	a.Stop(ctx) // node a goes away; the balancer sends the user to b
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(cookie)
	rec = httptest.NewRecorder()
	b.Wrap(app).ServeHTTP(rec, req)
	fmt.Print(rec.Body)
	// Output:
	// visit 1
	// visit 2
}

// A node from a configuration file, serving an application with sessions
// and, on a listener of their own, the admin endpoints.
func ExampleStart() {
	ctx := context.Background()
	cfg, err := conf.Load("server.toml") // every key has a default: conf.Default()
	if err != nil {
		log.Fatal(err)
	}
	node, err := flock.Start(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Stop(ctx)
	adminLn, err := admin.Listen(cfg.Server.Admin) // 127.0.0.1:9090, or the next free port
	if err != nil {
		log.Fatal(err)
	}
	go flock.NewServer("", admin.RequireToken(cfg.Server.AdminToken, node.Admin())).Serve(adminLn)
	app := http.NewServeMux()
	app.Handle("/", node.Wrap(http.HandlerFunc(visits)))
	app.Handle("GET /healthz", node.Health()) // for the load balancer; nothing else of admin's
	log.Fatal(flock.NewServer(":8080", app).ListenAndServe())
}

// Reading a session without creating one, for pages that need none, and
// logging out everywhere.
func ExampleExisting() {
	_ = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := flock.Existing(r)
		if s == nil {
			fmt.Fprintln(w, "not logged in")
			return
		}
		if r.URL.Path == "/logout" {
			s.Invalidate() // on every node
			return
		}
		user, _, _ := flock.Get[string](s, "user")
		fmt.Fprintln(w, "hello", user)
	})
}

// After a login, a new id makes an id planted before it worthless (session
// fixation).
func ExampleSessionOf() {
	_ = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := flock.SessionOf(r)
		if err != nil {
			return
		}
		if err := s.RenewID(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.Set("user", "alice")
	})
}
