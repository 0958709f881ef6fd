package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/conf"
)

// benchNode is one node of an in-process cluster on loopback: a real node
// (static membership, TCP transport) with the demo app behind the valve,
// served over real HTTP.
type benchNode struct {
	node *flock.Node
	srv  *httptest.Server
}

func startBenchCluster(b *testing.B, n int, replication string) []*benchNode {
	b.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	var peers []string
	for _, p := range ports {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", p))
	}
	var nodes []*benchNode
	b.Cleanup(func() {
		for _, nd := range nodes {
			nd.srv.Close()
			nd.node.Stop(context.Background())
		}
	})
	for i, p := range ports {
		cfg := conf.Default()
		cfg.Server.Name = fmt.Sprintf("n%d", i+1)
		cfg.Cluster.Membership.Type = "static"
		cfg.Cluster.Membership.Static.Members = peers
		cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind = p, 1
		cfg.Cluster.Manager.Replication = replication
		node, err := flock.Start(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		mux := http.NewServeMux()
		demoRoutes(mux, node.Wrap)
		nodes = append(nodes, &benchNode{node: node, srv: httptest.NewServer(mux)})
	}
	// Wait until every node lists the others: replication needs members.
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for len(nd.node.Members()) != n-1 {
			if time.Now().After(deadline) {
				b.Fatalf("cluster did not form: %v", nd.node.Members())
			}
			time.Sleep(10 * time.Millisecond) // membership has events, but this is setup
		}
		<-nd.node.Ready()
	}
	return nodes
}

// bareCounter is the baseline: the same counter in a plain map keyed by
// the cookie, no flock at all.
func bareCounter() http.Handler {
	var mu sync.Mutex
	counts := map[string]int{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("FLOCKSESSIONID")
		key := ""
		if err == nil {
			key = c.Value
		}
		mu.Lock()
		counts[key]++
		n := counts[key]
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, n)
	})
}

// load runs b.N requests to url from parallel clients, each with a session
// of its own (its first response's cookie), and reports requests/s.
func load(b *testing.B, url string) {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(cookie string) (string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s", resp.Status)
		}
		for _, c := range resp.Cookies() {
			if c.Name == "FLOCKSESSIONID" {
				return c.Name + "=" + c.Value, nil
			}
		}
		return cookie, nil
	}
	// Sessions are made outside the timed loop: the benchmark measures
	// requests on existing sessions, as a steady site sees them.
	counter := strings.Replace(url, "/counter/peek", "/counter", 1)
	var mu sync.Mutex
	var cookies []string
	for range 64 {
		c, err := get("")
		if strings.HasSuffix(url, "/peek") {
			req, _ := http.NewRequest("GET", counter, nil)
			resp, e := client.Do(req)
			if e == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				for _, ck := range resp.Cookies() {
					c = ck.Name + "=" + ck.Value
				}
			}
			err = e
		}
		if err != nil {
			b.Fatal(err)
		}
		cookies = append(cookies, c)
	}
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		cookie := cookies[0]
		cookies = append(cookies[1:], cookie)
		mu.Unlock()
		for pb.Next() {
			if _, err := get(cookie); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkDemo is the demo app's requests/s through the valve, against
// the bare handler, in one run: compare the req/s of the sub-benchmarks.
//
//	go test -run='^$' -bench=Demo -benchtime=3s ./cmd/flockd/
func BenchmarkDemo(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		srv := httptest.NewServer(bareCounter())
		defer srv.Close()
		load(b, srv.URL+"/counter")
	})
	b.Run("valve-no-peers", func(b *testing.B) {
		nodes := startBenchCluster(b, 1, "sync")
		load(b, nodes[0].srv.URL+"/counter")
	})
	for _, mode := range []string{"async", "sync"} {
		b.Run("2-peers-"+mode, func(b *testing.B) {
			nodes := startBenchCluster(b, 3, mode)
			load(b, nodes[0].srv.URL+"/counter")
		})
	}
	b.Run("read-only-2-peers", func(b *testing.B) {
		nodes := startBenchCluster(b, 3, "sync")
		load(b, nodes[0].srv.URL+"/counter/peek")
	})
}
