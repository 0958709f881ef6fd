package flock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/sender"
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
	cfg := conf.Default()
	cfg.Cluster.Receiver.Port = taken.Addr().(*net.TCPAddr).Port
	cfg.Cluster.Receiver.AutoBind = 50

	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	local := c.Local()
	if int(local.Addr.Port()) <= cfg.Cluster.Receiver.Port || local.Name != "node1" || local.Domain != "default" {
		t.Errorf("local = %+v; want a port after the taken %d", local, cfg.Cluster.Receiver.Port)
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

func TestWithMembership(t *testing.T) {
	leakcheck.Check(t)
	var fake *fakeMembership
	c, err := New(context.Background(), conf.Default(), WithMembership(func(local membership.Member) (membership.Service, error) {
		fake = &fakeMembership{local: local, events: make(chan membership.Event)}
		return fake, nil
	}))
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
	if (c.MembershipStats() != membership.Stats{}) {
		t.Error("stats from a service that keeps none")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := conf.Default()
	cfg.Cluster.Membership.TTL = 999
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "cluster.membership.ttl") {
		t.Errorf("err = %v, want it to name the key", err)
	}
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

// staticCluster starts n nodes with static membership on loopback: no
// multicast at all.
func staticCluster(t *testing.T, n int) []*Cluster {
	t.Helper()
	ports := freePorts(t, n)
	var members []string
	for _, p := range ports {
		members = append(members, fmt.Sprintf("127.0.0.1:%d", p))
	}
	var cs []*Cluster
	for i, p := range ports {
		cfg := conf.Default()
		cfg.Server.Name = fmt.Sprintf("n%d", i+1)
		cfg.Cluster.Membership.Type = "static"
		cfg.Cluster.Membership.Static.Members = members
		cfg.Cluster.Membership.Frequency = conf.Duration{Duration: 100 * time.Millisecond}
		cfg.Cluster.Membership.DropTime = conf.Duration{Duration: time.Second}
		cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind = p, 1
		c, err := New(context.Background(), cfg)
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
	c    *Cluster
	mu   sync.Mutex
	seen []membership.Event
	more chan struct{}
}

func watch(c *Cluster) *watcher {
	w := &watcher{c: c, more: make(chan struct{}, 1)}
	go func() { // ends when the cluster stops and closes its events
		for e := range c.Events() {
			w.mu.Lock()
			w.seen = append(w.seen, e)
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
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

const typeTest = FirstType + 1

func TestStaticClusterSendsAndLeaves(t *testing.T) {
	leakcheck.Check(t)
	cs := staticCluster(t, 3)
	var mu sync.Mutex
	got := map[string][]string{}
	for _, c := range cs {
		c.Handle(typeTest, func(_ context.Context, m Message) error {
			if string(m.Payload) == "refuse" {
				return errors.New("refused by " + c.Local().Name)
			}
			mu.Lock()
			got[c.Local().Name] = append(got[c.Local().Name], m.From.Name+":"+string(m.Payload))
			mu.Unlock()
			return nil
		})
	}
	var ws []*watcher
	for _, c := range cs {
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, watch(c))
	}
	for i, w := range ws {
		for j, o := range cs {
			if i != j {
				w.await(t, membership.Joined, o.Local().Name)
			}
		}
	}

	ctx := context.Background()
	if err := cs[0].Broadcast(ctx, typeTest, []byte("hello"), Sync); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fmt.Sprint(got["n2"], got["n3"]) != "[n1:hello] [n1:hello]" {
		t.Errorf("delivered %v", got)
	}
	mu.Unlock()

	err := cs[0].Broadcast(ctx, typeTest, []byte("refuse"), Sync)
	var remote *sender.RemoteError
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "refused by n") {
		t.Errorf("sync send to refusing handlers: %v, want their errors", err)
	}

	if err := cs[2].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	ws[0].await(t, membership.Left, "n3")
	ws[1].await(t, membership.Left, "n3")
}
