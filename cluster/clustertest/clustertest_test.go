package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/sender"
)

const typeEcho = cluster.FirstType

// nodes starts len(names) joined nodes on n, each answering typeEcho with
// its name and the payload, and recording what it received.
func nodes(t *testing.T, n *clustertest.Network, names ...string) ([]*clustertest.Node, *record) {
	t.Helper()
	rec := &record{got: map[string][]string{}}
	var out []*clustertest.Node
	for _, name := range names {
		nd := n.AddNode(name)
		c := nd.Cluster()
		c.Handle(typeEcho, func(_ context.Context, m cluster.Message) ([]byte, error) {
			if string(m.Payload) == "fail" {
				return nil, errors.New("refused by " + name)
			}
			rec.add(name, m.From.Name+":"+string(m.Payload))
			return []byte(name + ":" + string(m.Payload)), nil
		})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		nd.Join()
		out = append(out, nd)
	}
	return out, rec
}

type record struct {
	mu  sync.Mutex
	got map[string][]string
}

func (r *record) add(to, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[to] = append(r.got[to], what)
}

func (r *record) of(to string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.got[to])
}

func TestNetwork(t *testing.T) {
	leakcheck.Check(t)
	n := clustertest.New()
	defer n.Close()
	nds, rec := nodes(t, n, "a", "b", "c")
	a, b, c := nds[0], nds[1], nds[2]
	ctx := context.Background()

	t.Run("members and request", func(t *testing.T) {
		if ms := a.Cluster().Members(); len(ms) != 2 || ms[0].Name != "b" || ms[1].Name != "c" {
			t.Fatalf("members of a: %v", ms)
		}
		reply, err := a.Cluster().Request(ctx, b.Member(), typeEcho, []byte("q"))
		if err != nil || string(reply) != "b:q" {
			t.Fatalf("request = %q, %v", reply, err)
		}
		_, err = a.Cluster().Request(ctx, b.Member(), typeEcho, []byte("fail"))
		var remote *sender.RemoteError
		if !errors.As(err, &remote) {
			t.Fatalf("request to a refusing handler: %v", err)
		}
	})

	t.Run("order, drop, duplicate", func(t *testing.T) {
		for i := range 5 {
			if err := a.Cluster().Send(ctx, []membership.Member{c.Member()}, typeEcho, []byte(fmt.Sprint(i)), cluster.Async); err != nil {
				t.Fatal(err)
			}
		}
		n.WaitFor(t, "five messages at c", func() bool { return n.Count(a, c, typeEcho) == 5 })
		n.WaitFor(t, "idle", n.Idle)
		if got := rec.of("c"); got != "[a:0 a:1 a:2 a:3 a:4]" {
			t.Errorf("c received %s, want in order", got)
		}
		n.DropNext(c, typeEcho, 1)
		n.Duplicate(true)
		a.Cluster().Send(ctx, []membership.Member{c.Member()}, typeEcho, []byte("lost"), cluster.Sync)
		a.Cluster().Send(ctx, []membership.Member{c.Member()}, typeEcho, []byte("twice"), cluster.Sync)
		n.Duplicate(false)
		if got := rec.of("c"); got != "[a:0 a:1 a:2 a:3 a:4 a:twice a:twice]" {
			t.Errorf("c received %s", got)
		}
	})

	t.Run("hold and release reversed", func(t *testing.T) {
		n.HoldTo(b)
		for _, p := range []string{"1", "2", "3"} {
			a.Cluster().Send(ctx, []membership.Member{b.Member()}, typeEcho, []byte(p), cluster.Async)
		}
		if n.HeldCount() != 3 {
			t.Fatalf("held %d", n.HeldCount())
		}
		n.Release()
		n.WaitFor(t, "idle", n.Idle)
		if got := rec.of("b"); got != "[a:q a:3 a:2 a:1]" {
			t.Errorf("b received %s, want the held ones reversed", got)
		}
	})

	t.Run("down, rejoined, left", func(t *testing.T) {
		c.SetUp(false)
		if ms := a.Cluster().Members(); len(ms) != 1 {
			t.Errorf("members of a with c down: %v", ms)
		}
		// Not a member any more: the cluster does not even try.
		err := a.Cluster().Send(ctx, []membership.Member{c.Member()}, typeEcho, []byte("x"), cluster.Sync)
		if !errors.Is(err, cluster.ErrNotMember) {
			t.Errorf("send to a node that is down: %v", err)
		}
		c.SetUp(true)
		if ms := a.Cluster().Members(); len(ms) != 2 {
			t.Errorf("members of a with c back: %v", ms)
		}
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		n.DropNext(b, typeEcho, 1)
		if _, err := a.Cluster().Request(cctx, b.Member(), typeEcho, []byte("dropped")); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dropped request: %v, want the deadline", err)
		}
		t.Logf("a dropped request gave up after %v", time.Since(start).Round(time.Millisecond))
	})
}

// The events a node's cluster hands its subscribers follow the network.
func TestEvents(t *testing.T) {
	leakcheck.Check(t)
	n := clustertest.New()
	defer n.Close()
	a := n.AddNode("a")
	var mu sync.Mutex
	var seen []string
	a.Cluster().Subscribe(func(e membership.Event) {
		mu.Lock()
		seen = append(seen, e.Type.String()+" "+e.Member.Name)
		mu.Unlock()
	})
	if err := a.Cluster().Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Cluster().Stop(context.Background())
	a.Join()
	b := n.AddNode("b")
	b.Join()
	b.SetUp(false)
	b.SetUp(true)
	b.Leave()
	want := "[joined b failed b rejoined b left b]"
	n.WaitFor(t, want, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(seen) == want
	})
}

// The modes keep the transport's promises: a send to a node that is not a
// member fails; Async returns at once, Ack once the message is taken (before
// the handler runs), Sync once the handler returned, with its error; a
// broadcast with no members succeeds.
func TestModes(t *testing.T) {
	leakcheck.Check(t)
	n := clustertest.New()
	defer n.Close()
	a, b := n.AddNode("a"), n.AddNode("b")
	block := make(chan struct{})
	b.Cluster().Handle(typeEcho, func(_ context.Context, m cluster.Message) ([]byte, error) {
		switch string(m.Payload) {
		case "block":
			<-block
		case "fail":
			return nil, errors.New("handler failed")
		}
		return nil, nil
	})
	for _, nd := range []*clustertest.Node{a, b} {
		if err := nd.Cluster().Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer nd.Cluster().Stop(context.Background())
	}
	ctx := context.Background()
	to := []membership.Member{b.Member()}
	if err := a.Cluster().Send(ctx, to, typeEcho, []byte("x"), cluster.Sync); !errors.Is(err, cluster.ErrNotMember) {
		t.Fatalf("send to a node that has not joined: %v", err)
	}
	a.Join()
	b.Join()
	if err := a.Cluster().Send(ctx, to, typeEcho, []byte("fail"), cluster.Sync); err == nil {
		t.Error("a Sync send did not return the handler's error")
	}
	if err := a.Cluster().Send(ctx, to, typeEcho, []byte("fail"), cluster.Ack); err != nil {
		t.Errorf("an Ack send returned the handler's error: %v", err)
	}
	acked := make(chan error, 1)
	go func() { acked <- a.Cluster().Send(ctx, to, typeEcho, []byte("block"), cluster.Ack) }()
	select { // the Ack returns while the handler is still blocked
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an Ack send waited for the handler")
	}
	close(block)
	b.SetUp(false)
	if err := a.Cluster().Broadcast(ctx, typeEcho, []byte("x"), cluster.Sync); err != nil {
		t.Errorf("broadcast without members: %v", err)
	}
}
