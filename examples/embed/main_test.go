package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/conf"
)

// TestEmbedded runs two embedded nodes on loopback: a visit counter kept on
// one is seen by the other.
func TestEmbedded(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	group := fmt.Sprintf("239.255.%d.%d", rand.IntN(256), 1+rand.IntN(254))

	start := func(name string) *httptest.Server {
		cfg := conf.Default()
		cfg.Server.Name = name
		cfg.Cluster.Membership.Address, cfg.Cluster.Membership.Port = group, port
		cfg.Cluster.Receiver.Port = 20000 + rand.IntN(20000)
		n, err := flock.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Stop(context.Background()) })
		srv := httptest.NewServer(n.Wrap(http.HandlerFunc(visits)))
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := start("a"), start("b")

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	get := func(srv *httptest.Server) string {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	// Wait until a replicates to b: the first visits may go out before the
	// two have found each other.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := get(a)
		// The jar keys cookies by host; both servers are 127.0.0.1.
		if next := get(b); strings.HasPrefix(next, "visit ") && visitNumber(next) == visitNumber(got)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b never continued a's count: a said %q", got)
		}
		time.Sleep(50 * time.Millisecond) // membership forms in the background
	}
}

func visitNumber(s string) int {
	var n int
	fmt.Sscanf(s, "visit %d", &n)
	return n
}

// TestRunFailsOnATakenPort: a port already taken ends run at once with the
// error, before the node joins anyone.
func TestRunFailsOnATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	done := make(chan error, 1)
	go func() { done <- run("a", taken.Addr().String()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("run = %v, want the listen error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run still running with its port taken")
	}
}
