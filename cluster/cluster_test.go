package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/sender"
	"github.com/flockhq/flock/tlsid"
)

// fakeMembership records what the Cluster asks of it.
type fakeMembership struct {
	local            membership.Member
	started, stopped bool
	events           chan membership.Event
}

func (f *fakeMembership) Start(context.Context) error     { f.started = true; return nil }
func (f *fakeMembership) Stop(context.Context) error      { f.stopped = true; close(f.events); return nil }
func (f *fakeMembership) Local() membership.Member        { return f.local }
func (f *fakeMembership) Members() []membership.Status    { return nil }
func (f *fakeMembership) Events() <-chan membership.Event { return f.events }

func TestNewBindsTheAdvertisedPort(t *testing.T) {
	leakcheck.Check(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := cluster.DefaultConfig()
	cfg.Port = taken.Addr().(*net.TCPAddr).Port
	cfg.AutoBind = 50

	c, err := cluster.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	local := c.Local()
	if int(local.Addr.Port()) <= cfg.Port || local.Name != "node1" || local.Domain != "default" {
		t.Errorf("local = %+v; want a port after the taken %d", local, cfg.Port)
	}
	// The advertised port is really held by this node.
	if l, err := net.Listen("tcp", local.Addr.String()); err == nil {
		l.Close()
		t.Errorf("advertised %v is not bound", local.Addr)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", local.Addr.String())
	if err != nil {
		t.Errorf("port still held after Stop: %v", err)
	} else {
		l.Close()
	}
}

func TestOwnMembership(t *testing.T) {
	leakcheck.Check(t)
	var fake *fakeMembership
	cfg := cluster.DefaultConfig()
	cfg.Membership = func(local membership.Member, _ cluster.Transport, _ cluster.Env) (membership.Service, error) {
		fake = &fakeMembership{local: local, events: make(chan membership.Event)}
		return fake, nil
	}
	c, err := cluster.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !fake.started || fake.local.ID != c.Local().ID {
		t.Errorf("cluster did not use the given membership")
	}
	if err := c.Stop(context.Background()); err != nil || !fake.stopped {
		t.Errorf("Stop = %v, stopped %v", err, fake.stopped)
	}
	if !reflect.DeepEqual(c.Stats().Membership, membership.Stats{}) {
		t.Error("stats from a service that keeps none")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*cluster.Config)
		want string
	}{
		{"no name", func(c *cluster.Config) { c.Name = "" }, "node name"},
		{"no host", func(c *cluster.Config) { c.Host = netip.Addr{} }, "host"},
		{"ports past 65535", func(c *cluster.Config) { c.Port, c.AutoBind = 65500, 100 }, "auto-bind 100"},
		{"no membership", func(c *cluster.Config) { c.Membership = nil }, "membership"},
		{"certificate of another node", func(c *cluster.Config) { c.TLS = identityOf(t, "node2") }, `names ["node2"], not this node ("node1")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cluster.DefaultConfig()
			tt.edit(&cfg)
			if _, err := cluster.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// identityOf is a TLS identity naming member, from a CA of its own.
func identityOf(t *testing.T, member string) *tlsid.Identity {
	t.Helper()
	caCert, caKey, err := tlsid.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tlsid.Issued(caCert, caKey, member, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// freePorts returns n TCP ports free on loopback right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// staticCluster builds n nodes with static membership on loopback: no
// multicast at all.
func staticCluster(t *testing.T, n int) []*cluster.Cluster {
	t.Helper()
	ports := freePorts(t, n)
	var peers []netip.AddrPort
	for _, p := range ports {
		peers = append(peers, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)))
	}
	var cs []*cluster.Cluster
	for i, p := range ports {
		cfg := cluster.DefaultConfig()
		cfg.Name = fmt.Sprintf("n%d", i+1)
		s := membership.DefaultStaticConfig()
		s.Peers = peers
		s.Frequency, s.DropTime = 100*time.Millisecond, time.Second
		cfg.Membership = cluster.Static(s)
		cfg.Port, cfg.AutoBind = p, 1
		c, err := cluster.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		cs = append(cs, c)
	}
	return cs
}

// watcher records a cluster's events, so a test can await them in any order.
type watcher struct {
	c    *cluster.Cluster
	mu   sync.Mutex
	seen []membership.Event
	more chan struct{}
}

// watch subscribes to c's events; call it before c starts.
func watch(c *cluster.Cluster) *watcher {
	w := &watcher{c: c, more: make(chan struct{}, 1)}
	c.Subscribe(func(e membership.Event) {
		w.mu.Lock()
		w.seen = append(w.seen, e)
		w.mu.Unlock()
		select {
		case w.more <- struct{}{}:
		default:
		}
	})
	return w
}

func (w *watcher) await(t *testing.T, typ membership.EventType, name string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		for _, e := range w.seen {
			if e.Type == typ && e.Member.Name == name {
				w.mu.Unlock()
				return
			}
		}
		w.mu.Unlock()
		select {
		case <-w.more:
		case <-timeout:
			t.Fatalf("%s: no %v %s within 10s; members %v", w.c.Local().Name, typ, name, w.c.Members())
		}
	}
}

const (
	typeTest  = cluster.FirstType + 1
	typeQuery = cluster.FirstType + 2
)

func TestStaticClusterSendsRequestsAndLeaves(t *testing.T) {
	leakcheck.Check(t)
	cs := staticCluster(t, 3)
	var mu sync.Mutex
	got := map[string][]string{}
	for _, c := range cs {
		c.Handle(typeTest, func(_ context.Context, m cluster.Message) ([]byte, error) {
			if string(m.Payload) == "refuse" {
				return nil, errors.New("refused by " + c.Local().Name)
			}
			mu.Lock()
			got[c.Local().Name] = append(got[c.Local().Name], m.From.Name+":"+string(m.Payload))
			mu.Unlock()
			return nil, nil
		})
		c.Handle(typeQuery, func(_ context.Context, m cluster.Message) ([]byte, error) {
			return []byte(c.Local().Name + " answers " + string(m.Payload) + " from " + m.From.Name), nil
		})
	}
	var ws []*watcher
	for _, c := range cs {
		ws = append(ws, watch(c))
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range ws {
		for j, o := range cs {
			if i != j {
				w.await(t, membership.Joined, o.Local().Name)
			}
		}
	}

	ctx := context.Background()
	if err := cs[0].Broadcast(ctx, typeTest, []byte("hello"), cluster.Sync); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fmt.Sprint(got["n2"], got["n3"]) != "[n1:hello] [n1:hello]" {
		t.Errorf("delivered %v", got)
	}
	mu.Unlock()

	err := cs[0].Broadcast(ctx, typeTest, []byte("refuse"), cluster.Sync)
	var remote *sender.RemoteError
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "refused by n") {
		t.Errorf("sync send to refusing handlers: %v, want their errors", err)
	}

	reply, err := cs[0].Request(ctx, cs[1].Local(), typeQuery, []byte("q1"))
	if err != nil || string(reply) != "n2 answers q1 from n1" {
		t.Errorf("request = %q, %v", reply, err)
	}
	_, err = cs[0].Request(ctx, cs[1].Local(), typeTest, []byte("refuse"))
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "refused by n2") {
		t.Errorf("request to a refusing handler: %v, want its error", err)
	}

	if err := cs[2].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	ws[0].await(t, membership.Left, "n3")
	ws[1].await(t, membership.Left, "n3")
	start := time.Now()
	_, err = cs[0].Request(ctx, cs[2].Local(), typeQuery, []byte("q2"))
	if err == nil {
		t.Error("request to a node that left succeeded")
	}
	t.Logf("request to a node that left failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// failingMembership cannot start (a bind address no interface has).
type failingMembership struct{ fakeMembership }

func (f *failingMembership) Start(context.Context) error {
	return errors.New("bind 10.9.9.9: no interface has this address")
}

// TestStartFailureStops: a membership that cannot start makes Start fail,
// and Stop then returns at once, every part released.
func TestStartFailureStops(t *testing.T) {
	leakcheck.Check(t)
	cfg := cluster.DefaultConfig()
	cfg.Membership = func(local membership.Member, _ cluster.Transport, _ cluster.Env) (membership.Service, error) {
		return &failingMembership{fakeMembership{local: local, events: make(chan membership.Event)}}, nil
	}
	c, err := cluster.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no interface has this address") {
		t.Fatalf("Start = %v, want the membership's error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
	t.Logf("Stop after a failed Start took %v", time.Since(start).Round(time.Microsecond))
}

// TestResolvedPeersJoin: nodes whose peers come from a resolver (as DNS
// membership's) start alone while it finds nobody, and join as soon as
// the records list the others.
func TestResolvedPeersJoin(t *testing.T) {
	leakcheck.Check(t)
	ports := freePorts(t, 3)
	var mu sync.Mutex
	var records []netip.AddrPort // what the "DNS" answers
	resolve := func(context.Context) ([]netip.AddrPort, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(records), nil
	}
	var cs []*cluster.Cluster
	var ws []*watcher
	for i, p := range ports {
		cfg := cluster.DefaultConfig()
		cfg.Name = fmt.Sprintf("n%d", i+1)
		s := membership.DefaultStaticConfig()
		s.Resolve, s.ResolveEvery = resolve, 50*time.Millisecond
		s.Frequency, s.DropTime = 100*time.Millisecond, time.Second
		cfg.Membership = cluster.Static(s)
		cfg.Port, cfg.AutoBind = p, 1
		c, err := cluster.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		ws = append(ws, watch(c))
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	// Alone while the records are empty: several resolutions and ping
	// rounds pass (what is awaited is that nothing happens).
	time.Sleep(300 * time.Millisecond)
	for _, c := range cs {
		if ms := c.Members(); len(ms) != 0 {
			t.Fatalf("%s lists %v while the records are empty", c.Local().Name, ms)
		}
	}
	start := time.Now()
	mu.Lock()
	for _, c := range cs {
		records = append(records, c.Local().Addr)
	}
	mu.Unlock()
	for i, w := range ws {
		for j, o := range cs {
			if i != j {
				w.await(t, membership.Joined, o.Local().Name)
			}
		}
	}
	t.Logf("all joined %v after the records listed them", time.Since(start).Round(time.Millisecond))
}
