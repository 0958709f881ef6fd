package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/conf"
)

// The demo app: a counter per session, a read that changes nothing, and a
// logout that ends the session for good.
func TestDemoRoutes(t *testing.T) {
	network := clustertest.New()
	defer network.Close()
	nd := network.AddNode("solo")
	nd.Join()
	cfg := conf.Default()
	cfg.Server.Name = "solo"
	node, err := flock.Start(context.Background(), cfg, flock.WithCluster(nd.Cluster()))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop(context.Background())
	mux := http.NewServeMux()
	demoRoutes(mux, node.Wrap)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
	for _, step := range []struct{ path, want string }{
		{"/counter", "1"},
		{"/counter", "2"},
		{"/counter/peek", "2"},
		{"/logout", "logged out"},
		{"/counter/peek", "0"},
	} {
		if got := get(step.path); got != step.want {
			t.Fatalf("GET %s = %q, want %q", step.path, got, step.want)
		}
	}
	if st := node.ManagerStats(); st.Sessions != 0 || st.Tombstones != 1 {
		t.Errorf("after logout: %d sessions, %d tombstones; want 0, 1", st.Sessions, st.Tombstones)
	}
}
