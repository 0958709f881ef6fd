package manager

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
)

// TestLoadSeenNeverServesOlder: a change that reached B and not C (one
// copy is enough in sync mode) is not hidden from its user by C: a load
// from a client that has seen it fetches it first; if the node holding it
// does not answer, the load is refused (503), not answered from the older
// copy; a claim that no holder can back (a forged cookie) is served from
// what there is, after one round of asking.
func TestLoadSeenNeverServesOlder(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B", "C")
	a, cm := c.ms[0], c.ms[2]
	s := create(t, a, map[string]any{"n": 1})
	id := s.ID()
	c.waitFor("C holds it", func() bool { _, ok := state(cm, id); return ok })

	c.net.holdIf(func(e *envelope) bool { return e.typ == typeDelta && e.to == c.nodes[2] })
	w := load(t, a, id)
	set(t, w, "n", 2)
	w.ResponseCommitted()
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	err := a.Commit(ctx, w)
	cancel()
	w.RequestEnded()
	if err != nil {
		t.Fatalf("commit with B's copy: %v", err)
	}
	seen := w.Version()
	if got, _ := state(cm, id); got.Version >= seen {
		t.Fatalf("C holds v%d; the test needs it behind v%d", got.Version, seen)
	}

	tests := []struct {
		name    string
		seen    uint64
		silent  bool // A and B do not answer C's fetches
		wantN   int
		wantErr error
	}{
		{"client saw nothing", 0, false, 1, nil},
		{"A silent, client saw v2", seen, true, 0, ErrCatchingUp},
		{"client saw v2", seen, false, 2, nil},
		{"forged claim", seen + 10, false, 2, nil},
	}
	for _, tc := range tests {
		if tc.silent {
			c.net.holdIf(func(e *envelope) bool {
				return e.typ == typeDelta && e.to == c.nodes[2] || e.typ == typeFetch && e.from == c.nodes[2]
			})
		}
		ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
		got, err := cm.LoadSeen(ctx, id, tc.seen)
		cancel()
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
		if tc.wantErr == nil {
			if n := mustGet[int](t, got, "n"); n != tc.wantN {
				t.Errorf("%s: C serves n = %d, want %d", tc.name, n, tc.wantN)
			}
			got.RequestEnded()
		}
		if tc.silent {
			c.net.holdIf(func(e *envelope) bool { return e.typ == typeDelta && e.to == c.nodes[2] })
		}
	}
	if st := cm.Stats(); st.OlderThanSeen < 2 || st.CatchUpRefused != 1 {
		t.Errorf("older_than_seen %d, catch_up_refused %d; want >= 2 and 1", st.OlderThanSeen, st.CatchUpRefused)
	}
	c.net.release()
}
