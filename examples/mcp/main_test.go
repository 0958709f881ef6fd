package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/conf"
)

// TestMCPSessionLifecycle drives the header-keyed flow through net/http on
// two replicas of an in-memory cluster, the client alternating between
// them as a non-sticky balancer would.
func TestMCPSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	network := clustertest.New()
	t.Cleanup(network.Close)
	var nodes []http.Handler
	for _, name := range []string{"a", "b"} {
		cfg := Config(name)
		cfg.Cluster.Membership.Frequency = conf.Duration{Duration: 50 * time.Millisecond}
		nd := network.AddNode(name)
		nd.Join()
		node, err := flock.Start(ctx, cfg, flock.WithCluster(nd.Cluster()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Stop(ctx) })
		<-node.Ready()
		nodes = append(nodes, node.Wrap(Handler()))
	}
	a, b := nodes[0], nodes[1]

	send := func(h http.Handler, method, body string, header ...string) *http.Response {
		t.Helper()
		req := httptest.NewRequest(method, "/mcp", strings.NewReader(body))
		for _, v := range header {
			req.Header.Add(Header, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`
	calls := func(resp *http.Response) int {
		t.Helper()
		var r struct{ Result struct{ Calls int } }
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatalf("response: %v", err)
		}
		return r.Result.Calls
	}

	resp := send(a, "POST", `{"jsonrpc":"2.0","id":1,"method":"initialize"}`)
	id := resp.Header.Get(Header)
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("initialize: %d, %s %q", resp.StatusCode, Header, id)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("initialize set cookies: %v", resp.Cookies())
	}

	for i, h := range []http.Handler{b, a, b} {
		resp := send(h, "POST", call, id)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d: status %d", i+1, resp.StatusCode)
		}
		if got := calls(resp); got != i+1 {
			t.Errorf("call %d: calls = %d", i+1, got)
		}
		if got := resp.Header.Get(Header); got != "" {
			t.Errorf("call %d: the id sent again: %q", i+1, got)
		}
	}

	for _, tc := range []struct {
		name   string
		method string
		body   string
		header []string
		want   int
	}{
		{"no id", "POST", call, nil, http.StatusBadRequest},
		{"malformed id", "POST", call, []string{"nope"}, http.StatusBadRequest},
		{"two ids", "POST", call, []string{id, id}, http.StatusBadRequest},
		{"unknown id", "POST", call, []string{"AAAAAAAAAAAAAAAAAAAAAAAA.a"}, http.StatusNotFound},
		{"initialize with an id", "POST", `{"jsonrpc":"2.0","id":1,"method":"initialize"}`, []string{id}, http.StatusBadRequest},
		{"not JSON-RPC", "POST", `{`, []string{id}, http.StatusBadRequest},
		{"notification", "POST", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, []string{id}, http.StatusAccepted},
		{"DELETE without an id", "DELETE", "", nil, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(a, tc.method, tc.body, tc.header...).StatusCode; got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}

	if got := send(b, "DELETE", "", id).StatusCode; got != http.StatusNoContent {
		t.Fatalf("DELETE: %d", got)
	}
	// Ended on every node: the next call, on the other replica, is a 404.
	if got := send(a, "POST", call, id).StatusCode; got != http.StatusNotFound {
		t.Errorf("call after DELETE on the other replica: %d, want 404", got)
	}
}
