package manager

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
)

// FuzzValidID: ValidID never panics, and an id it accepts has a route.
// The seed corpus is in testdata/fuzz/FuzzValidID.
func FuzzValidID(f *testing.F) {
	f.Add(newID("node1"))
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		r := Route(id)
		if r == "" {
			t.Fatalf("ValidID(%q) but no route", id)
		}
		if len(id) != 24+1+len(r) || id[25:] != r {
			t.Fatalf("ValidID(%q): route %q does not end the id after 24 characters", id, r)
		}
	})
}

// FuzzHandleDelta feeds arbitrary payloads to the delta handler: it never
// panics, and it refuses (with an error) what is not a delta for a
// well-formed session id.
func FuzzHandleDelta(f *testing.F) {
	leakcheck.Check(f)
	net := newFakeNet(f)
	peer := net.addNode("B")
	cfg := testConfig()
	cfg.Route = "A"
	m, err := New(net.addNode("A"), cfg)
	if err != nil {
		f.Fatal(err)
	}
	id := newID("B")
	enc := func(d delta) []byte {
		b, err := msgpack.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(enc(delta{ID: id, Version: 1, Origin: "B", Full: true, Set: map[string][]byte{"k": {0x01}}, Created: 1, Access: 2, MaxInactive: 1e9}))
	f.Add(enc(delta{ID: id, Base: 1, Version: 2, Origin: "B", Set: map[string][]byte{"k": {0x02}}, Del: []string{"x"}}))
	f.Add(enc(delta{ID: id, Base: 5, Version: 6, Origin: "B"}))
	f.Add(enc(delta{ID: newID("B"), Old: id, Base: 2, Version: 3, Origin: "B"}))
	f.Add(enc(delta{ID: "../../etc", Version: 1, Full: true}))
	f.Add(enc(delta{ID: id, Old: "bad", Version: 1}))
	f.Add([]byte{})
	f.Add([]byte{0xc1})
	f.Add([]byte{0x80})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("garbage"))
	f.Add(append([]byte{0x81, 0xa1, 'i'}, bytes.Repeat([]byte{0x91}, 1<<16)...)) // deep: a stack overflow once
	f.Add([]byte{0x81, 0xa1, 's', 0xdf, 0xff, 0xff, 0xff, 0xff})                 // a map of 4 billion in 5 bytes
	f.Fuzz(func(t *testing.T, payload []byte) {
		err := m.handleDelta(context.Background(), cluster.Message{From: peer.Local(), Type: typeDelta, Payload: payload})
		var d delta
		derr := decode(payload, &d) // checked first: never msgpack alone on a hostile body
		wellFormed := derr == nil && ValidID(d.ID) && (d.Old == "" || ValidID(d.Old))
		// A well-formed delta is applied, or refused for a reason the
		// protocol names: an implausible version (not after its base,
		// or jumping too far), or, for a sync writer, a copy here that is
		// behind or another (the writer settles those).
		if wellFormed && err != nil && !strings.Contains(err.Error(), "implausible") && !strings.Contains(err.Error(), "jumps") && !strings.Contains(err.Error(), "refused: behind") && !strings.Contains(err.Error(), "refused: conflict") {
			t.Fatalf("a well-formed delta %+v refused: %v", d, err)
		}
		if !wellFormed && err == nil {
			t.Fatalf("garbage accepted: %q (decode: %v, id %q, old %q)", payload, derr, d.ID, d.Old)
		}
		if err == nil {
			if snap, ok := state(m, d.ID); ok {
				for k := range snap.Attrs {
					_, _, _ = Get[any](&Session{m: m, attrs: snap.Attrs}, k)
				}
			}
		}
	})
}

// FuzzHandlers feeds arbitrary bodies to every other message handler (the
// first byte picks it), from a member: none panics, hangs or allocates by
// what a body claims (deep and huge inputs in the seeds).
func FuzzHandlers(f *testing.F) {
	leakcheck.Check(f)
	net := newFakeNet(f)
	peer := net.addNode("B")
	cfg := testConfig()
	cfg.Route = "A"
	m, err := New(net.addNode("A"), cfg)
	if err != nil {
		f.Fatal(err)
	}
	m.onEvent(membership.Event{Type: membership.Joined, Member: peer.Local()})
	handlers := []struct {
		t cluster.MessageType
		h cluster.Handler
	}{
		{typeExpire, oneWay(m.handleExpire)},
		{typeTouch, oneWay(m.handleTouch)},
		{typeFetch, m.handleFetch},
		{typeSessions, m.handleSessions},
		{typeState, m.handleState},
		{typeDigest, m.handleDigest},
		{typeHello, m.handleHello},
	}
	id := newID("B")
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	seeds := [][]byte{
		enc(expire{ID: id, Version: 3, Reason: "invalidated"}),
		enc(touch{}),
		enc(fetch{IDs: []string{id, "bad"}}),
		enc(sessions{Sessions: []snapshot{{ID: id, Version: 1, Origin: "B", Attrs: map[string][]byte{"k": {1}}}}, Last: true}),
		enc(stateRequest{Limit: 1 << 10}),
		enc(digestRequest{}),
		append([]byte{0x81, 0xa1, 's'}, bytes.Repeat([]byte{0x91}, 1<<16)...),
		{0x81, 0xa1, 's', 0xdf, 0xff, 0xff, 0xff, 0xff},
		{0xdd, 0xff, 0xff, 0xff, 0xff},
	}
	for i, s := range seeds {
		f.Add(byte(i), s)
	}
	f.Fuzz(func(t *testing.T, which byte, payload []byte) {
		h := handlers[int(which)%len(handlers)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = h.h(ctx, cluster.Message{From: peer.Local(), Type: h.t, Payload: payload})
	})
}
