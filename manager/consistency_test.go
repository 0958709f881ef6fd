package manager

import (
	"context"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/leakcheck"
)

// lone builds a manager on a node of its own and a peer node whose messages
// the test hands to the manager's handlers directly.
func lone(t *testing.T) (*Manager, *fakeNode) {
	t.Helper()
	net := newFakeNet(t)
	peer := net.addNode("B")
	cfg := testConfig()
	cfg.Route = "C"
	m, err := New(net.addNode("C"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, peer
}

func deliver(t *testing.T, m *Manager, from *fakeNode, typ cluster.MessageType, v any) {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	msg := cluster.Message{From: from.Local(), Type: typ, Payload: b}
	switch typ {
	case typeDelta:
		err = m.handleDelta(context.Background(), msg)
	case typeExpire:
		err = m.handleExpire(context.Background(), msg)
	case typeSessions:
		_, err = m.handleSessions(context.Background(), msg)
	default:
		t.Fatalf("type %d", typ)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func attrs(kv ...string) map[string][]byte {
	out := map[string][]byte{}
	for i := 0; i+1 < len(kv); i += 2 {
		b, _ := msgpack.Marshal(kv[i+1])
		out[kv[i]] = b
	}
	return out
}

// A change applies only on the exact copy it was made from: the same
// version made by the same node. Before causal deltas, a change built on
// A's version 2 landed on B's version 2 (a concurrent writer's), and the
// two nodes held version 3 of A with different contents, forever.
func TestCausalDelta(t *testing.T) {
	leakcheck.Check(t)
	m, peer := lone(t)
	id := newID("A")
	deliver(t, m, peer, typeDelta, delta{ID: id, Version: 1, Origin: "A", Full: true, Set: attrs("x", "a1")})
	deliver(t, m, peer, typeDelta, delta{ID: id, Base: 1, BaseOrigin: "A", Version: 2, Origin: "B", Set: attrs("who", "B")})
	// A's version 2 (lost to B's here) and then A's version 3, built on it.
	deliver(t, m, peer, typeDelta, delta{ID: id, Base: 1, BaseOrigin: "A", Version: 2, Origin: "A", Set: attrs("who", "A")})
	deliver(t, m, peer, typeDelta, delta{ID: id, Base: 2, BaseOrigin: "A", Version: 3, Origin: "A", Set: attrs("n", "3")})
	got, _ := state(m, id)
	if got.Version != 2 || got.Origin != "B" {
		t.Fatalf("holds v%d of %s; a change built on another copy must not apply", got.Version, got.Origin)
	}
	if st := m.Stats(); st.Conflicts != 2 || st.Applied != 2 {
		t.Errorf("conflicts %d applied %d, want 2, 2", st.Conflicts, st.Applied)
	}
	if len(m.repairs) == 0 {
		t.Error("no repair scheduled for the newer version")
	}
}

// An ended session cannot come back: not by a change made concurrently on
// another node, not by a copy (a state-transfer page, an answer to a fetch,
// an owner's push) that was on its way when the end was heard. Logout wins
// over a concurrent write; an expiry loses to a write made after it.
func TestTombstones(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reason    string
		endAt     uint64 // the version the end names
		then      func(t *testing.T, m *Manager, peer *fakeNode, id string)
		wantHeld  bool
		wantRefus uint64
	}{
		{
			name: "logout, then a concurrent writer's change", reason: "invalidated", endAt: 1,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeDelta, delta{ID: id, Base: 1, BaseOrigin: "A", Version: 2, Origin: "B", Set: attrs("x", "b")})
			},
			wantRefus: 1,
		},
		{
			name: "logout, then a whole copy of a later version", reason: "invalidated", endAt: 1,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeDelta, delta{ID: id, Version: 5, Origin: "B", Full: true, Set: attrs("x", "b")})
			},
			wantRefus: 1,
		},
		{
			name: "logout, then a state-transfer page with the session", reason: "invalidated", endAt: 1,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeSessions, sessions{Sessions: []snapshot{{ID: id, Version: 1, Origin: "A", Attrs: attrs("x", "a")}}, Last: true})
			},
			wantRefus: 1,
		},
		{
			name: "expiry, then a copy of the version it expired", reason: "expired", endAt: 1,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeSessions, sessions{Sessions: []snapshot{{ID: id, Version: 1, Origin: "A", Attrs: attrs("x", "a")}}, Last: true})
			},
			wantRefus: 1,
		},
		{
			name: "expiry, then a copy written after it", reason: "expired", endAt: 1,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeSessions, sessions{Sessions: []snapshot{{ID: id, Version: 2, Origin: "B", Attrs: attrs("x", "b")}}, Last: true})
			},
			wantHeld: true,
		},
		{
			name: "a page that says the session ended", reason: "", endAt: 0,
			then: func(t *testing.T, m *Manager, peer *fakeNode, id string) {
				deliver(t, m, peer, typeSessions, sessions{Ended: []ended{{ID: id, Version: 1, Invalidated: true}}, Last: true})
				deliver(t, m, peer, typeDelta, delta{ID: id, Base: 1, BaseOrigin: "A", Version: 2, Origin: "A", Set: attrs("x", "late")})
			},
			wantRefus: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			m, peer := lone(t)
			id := newID("A")
			deliver(t, m, peer, typeDelta, delta{ID: id, Version: 1, Origin: "A", Full: true, Set: attrs("x", "a")})
			if tc.reason != "" {
				deliver(t, m, peer, typeExpire, expire{ID: id, Version: tc.endAt, Reason: tc.reason})
			}
			if _, held := state(m, id); held && tc.reason != "" {
				t.Fatal("still held after its end")
			}
			tc.then(t, m, peer, id)
			if _, held := state(m, id); held != tc.wantHeld {
				t.Errorf("held = %v, want %v", held, tc.wantHeld)
			}
			if st := m.Stats(); st.RefusedEnded != tc.wantRefus {
				t.Errorf("refused %d, want %d", st.RefusedEnded, tc.wantRefus)
			}
		})
	}
}

// Logout on one node while another writes the same session: the logout
// wins everywhere, and further traffic does not bring it back.
func TestLogoutBeatsConcurrentWrite(t *testing.T) {
	leakcheck.Check(t)
	cfg := testConfig()
	cfg.Replication = cluster.Async // held sends must not block the writer
	c := newCluster(t, cfg, "A", "B", "C")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, map[string]any{"n": 1})
	id := s.ID()
	c.waitConverged(id)

	c.net.holdIf(func(e *envelope) bool { return e.typ == typeDelta && e.from == c.nodes[1] })
	w := load(t, b, id)
	set(t, w, "n", 2)
	commit(t, b, w) // B's change, held on its way to A and C
	c.waitFor("B's change held", func() bool { return c.net.heldCount() == 2 })
	load(t, a, id).Invalidate() // A's logout reaches B and C first
	c.waitFor("logout applied on B and C", func() bool {
		_, onB := state(b, id)
		_, onC := state(c.ms[2], id)
		return !onB && !onC
	})
	c.net.release()
	c.waitFor("settled", c.settled)
	if !c.nowhere(id) {
		t.Fatal("the logged-out session came back")
	}
	for _, m := range c.ms {
		if r, _ := m.Load(bg, id); r != nil {
			t.Errorf("%s serves the logged-out session", m.local)
		}
	}
	if a.Stats().RefusedEnded+c.ms[2].Stats().RefusedEnded == 0 {
		t.Error("B's late change was not refused anywhere")
	}
}

// The content hash is the same on every node that holds the same contents,
// whatever the order the attributes were set in.
func TestContentHash(t *testing.T) {
	a := hashAttrs(attrs("x", "1", "y", "2"))
	b := hashAttrs(attrs("y", "2", "x", "1"))
	c := hashAttrs(attrs("x", "12"))
	d := hashAttrs(map[string][]byte{"x1": {}, "": []byte("x1")})
	if a != b || a == c || c == d {
		t.Errorf("hashes %x %x %x %x", a, b, c, d)
	}
}
