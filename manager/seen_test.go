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
	c, cm, id, seen := cBehind(t)

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

// TestDrainingMemberRoutesTakenOver: once a member says it is draining,
// the others rewrite its users' routes as they serve them (delta mode),
// while it is still a member that gets every change.
func TestDrainingMemberRoutesTakenOver(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B", "C")
	a, b := c.ms[0], c.ms[1]
	s := createAs(t, b, idBackedUpOn(t, "B", []string{"A", "B", "C"}, "A"), map[string]any{"n": 1})
	id := s.ID()
	c.waitFor("A holds it", func() bool { _, ok := state(a, id); return ok })

	got := load(t, a, id)
	if renamed, err := a.Rebind(got); renamed || err != nil {
		t.Fatalf("Rebind of a live member's session = %v, %v; want no rename", renamed, err)
	}
	got.RequestEnded()
	if err := b.Drain(bg); err != nil {
		t.Fatal(err)
	}
	c.waitFor("A hears B draining", func() bool { return a.isDraining("B") })
	got = load(t, a, id)
	renamed, err := a.Rebind(got)
	if !renamed || err != nil || Route(got.ID()) != "A" {
		t.Fatalf("Rebind after B drains = %v, %v, route %s; want A's route", renamed, err, Route(got.ID()))
	}
	commit(t, a, got)
	got.RequestEnded()
	if !a.isMember("B") {
		t.Error("a draining member left the view")
	}
	c.waitFor("B has the renamed session", func() bool { _, ok := state(b, got.ID()); return ok })
}

// TestBackupLoadCutOffIsNotUnknown: in backup mode, a node that can ask
// neither the owner of a session nor its backup (it is cut off) answers
// ErrCatchingUp, never "no such session": the valve would hand the user a
// new, empty session and the old one would be lost to them.
func TestBackupLoadCutOffIsNotUnknown(t *testing.T) {
	leakcheck.Check(t)
	cfg := testConfig()
	cfg.Mode = ModeBackup
	c := newCluster(t, cfg, "A", "B", "C")
	a, cm := c.ms[0], c.ms[2]
	s := createAs(t, a, idBackedUpOn(t, "A", []string{"A", "B", "C"}, "B"), map[string]any{"n": 1}) // owner A, backup B
	id := s.ID()
	c.waitFor("B holds it", func() bool { _, ok := state(c.ms[1], id); return ok })
	if _, ok := state(cm, id); ok {
		t.Fatal("C holds a copy; the test needs one it must fetch")
	}
	// Cut off before its membership noticed: owner and backup do not answer.
	c.net.holdIf(func(e *envelope) bool { return e.from == c.nodes[2] && e.typ == typeFetch })
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	got, err := cm.Load(ctx, id)
	cancel()
	if !errors.Is(err, ErrCatchingUp) || got != nil {
		t.Fatalf("Load on a cut-off node = %v, %v; want ErrCatchingUp", got, err)
	}
	c.net.release()
	// Cut off and alone after its membership noticed: without a version
	// cookie it cannot tell; with one (the client saw the session change)
	// it answers ErrCatchingUp for as long as it may be the one cut off.
	c.nodes[2].isolate(true)
	if got, err := cm.LoadSeen(bg, id, 1); !errors.Is(err, ErrCatchingUp) || got != nil {
		t.Fatalf("LoadSeen on a node left alone = %v, %v; want ErrCatchingUp", got, err)
	}
	c.nodes[2].isolate(false)
	ctx, cancel = context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	got, err = cm.Load(ctx, id)
	if err != nil || got == nil || mustGet[int](t, got, "n") != 1 {
		t.Fatalf("Load after the cut healed = %v, %v", got, err)
	}
	got.RequestEnded()
	// A session nobody holds is still unknown, at once.
	if got, err := cm.Load(bg, newID("A")); got != nil || err != nil {
		t.Fatalf("Load of an unknown id = %v, %v; want nil, nil", got, err)
	}
}

// TestDrainingOwnerBackupMode: in backup mode a draining member owns
// nothing any more: its users' sessions are taken over by the next owner
// (its backup, which holds them), and new sessions are placed without it.
func TestDrainingOwnerBackupMode(t *testing.T) {
	leakcheck.Check(t)
	cfg := testConfig()
	cfg.Mode = ModeBackup
	c := newCluster(t, cfg, "A", "B", "C")
	a, b := c.ms[0], c.ms[1]
	s := createAs(t, b, idBackedUpOn(t, "B", []string{"A", "B", "C"}, "C"), map[string]any{"n": 1}) // owner B, backup C
	id := s.ID()
	c.waitFor("C holds it", func() bool { _, ok := state(c.ms[2], id); return ok })
	if err := b.Drain(bg); err != nil {
		t.Fatal(err)
	}
	got := load(t, a, id)
	renamed, err := a.Rebind(got)
	if !renamed || err != nil || Route(got.ID()) != "C" {
		t.Fatalf("Rebind after B drains = %v, %v, route %s; want C's (B's backup, the next owner)", renamed, err, Route(got.ID()))
	}
	set(t, got, "n", 2)
	commit(t, a, got)
	got.RequestEnded()
	c.waitFor("C holds the renamed session at n=2", func() bool {
		st, ok := state(c.ms[2], got.ID())
		return ok && st.Version >= 2
	})
	if !a.isMember("B") {
		t.Error("a draining member left the view")
	}
}

// TestLoadSeenAfterAHolderFailed: the only other holder of what the
// client saw failed (and left the view) before the load asked it: the
// older copy is not served while the failure is recent.
func TestLoadSeenAfterAHolderFailed(t *testing.T) {
	leakcheck.Check(t)
	c, cm, id, seen := cBehind(t)
	// A and B, the holders of v2, fail: C is left with v1.
	c.nodes[0].setUp(false)
	c.nodes[1].setUp(false)
	got, err := cm.LoadSeen(bg, id, seen)
	if !errors.Is(err, ErrCatchingUp) || got != nil {
		t.Fatalf("LoadSeen with the holders of v%d just failed = %v, %v; want ErrCatchingUp", seen, got, err)
	}
	c.net.release()
}

// cBehind is three nodes A, B, C with a session of A's that C holds at v1
// while A and B hold v2 (n = 2; C's deltas are held back, until
// c.net.release): the version a client of A has seen and C lacks.
func cBehind(t *testing.T) (c *testCluster, cm *Manager, id string, seen uint64) {
	t.Helper()
	c = newCluster(t, testConfig(), "A", "B", "C")
	a := c.ms[0]
	cm = c.ms[2]
	s := createAs(t, a, idBackedUpOn(t, "A", []string{"A", "B", "C"}, "C"), map[string]any{"n": 1})
	id = s.ID()
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
	seen = w.Version()
	if got, _ := state(cm, id); got.Version >= seen {
		t.Fatalf("C holds v%d; the test needs it behind v%d", got.Version, seen)
	}
	return c, cm, id, seen
}
