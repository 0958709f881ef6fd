package flock

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
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
	fake := &fakeMembership{local: membership.Member{Name: "x"}, events: make(chan membership.Event)}
	cfg := conf.Default()
	c, err := New(context.Background(), cfg, WithMembership(fake))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Local().Name != "x" || !fake.started {
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
