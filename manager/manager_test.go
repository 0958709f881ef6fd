package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/leakcheck"
)

var bg = context.Background()

// create makes a session on m with the given attributes and commits it.
func create(t testing.TB, m *Manager, attrs map[string]any) *Session {
	t.Helper()
	s, err := m.Create(bg)
	if err != nil {
		t.Fatalf("Create on %s: %v", m.local, err)
	}
	for k, v := range attrs {
		if err := s.Set(k, v); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	commit(t, m, s)
	return s
}

func commit(t testing.TB, m *Manager, s *Session) {
	t.Helper()
	if err := m.Commit(bg, s); err != nil {
		t.Fatalf("Commit on %s: %v", m.local, err)
	}
}

func set(t testing.TB, s *Session, k string, v any) {
	t.Helper()
	if err := s.Set(k, v); err != nil {
		t.Fatalf("Set(%q): %v", k, err)
	}
}

func load(t testing.TB, m *Manager, id string) *Session {
	t.Helper()
	s, err := m.Load(bg, id)
	if err != nil {
		t.Fatalf("Load on %s: %v", m.local, err)
	}
	if s == nil {
		t.Fatalf("Load on %s: no session %s", m.local, short(id))
	}
	return s
}

func mustGet[T any](t testing.TB, s *Session, key string) T {
	t.Helper()
	v, ok, err := Get[T](s, key)
	if err != nil || !ok {
		t.Fatalf("Get(%q) = %v, %v, %v", key, v, ok, err)
	}
	return v
}

func TestVersionsReplicate(t *testing.T) {
	for _, mode := range []cluster.Mode{cluster.Sync, cluster.Ack, cluster.Async} {
		t.Run(mode.String(), func(t *testing.T) {
			leakcheck.Check(t)
			cfg := testConfig()
			cfg.Replication = mode
			c := newCluster(t, cfg, "A", "B", "C")
			a := c.ms[0]

			s := create(t, a, map[string]any{"user": "ann", "cart": map[string]int{"apple": 1}})
			set(t, s, "cart", map[string]int{"apple": 2, "pear": 1})
			set(t, s, "list", []int{1, 2, 3})
			commit(t, a, s)
			set(t, s, "user", "bob")
			commit(t, a, s)
			id := s.ID()
			if s.Version() != 3 {
				t.Fatalf("version on A = %d, want 3", s.Version())
			}
			if mode == cluster.Sync {
				// Sync: the handlers ran before Commit returned.
				if !c.converged(id) {
					t.Fatalf("not converged right after a Sync commit")
				}
			} else {
				c.waitConverged(id)
			}
			for i, m := range c.ms {
				got, _ := state(m, id)
				if got.Version != 3 || got.Origin != "A" {
					t.Errorf("%s: version %d origin %q, want 3, A", c.nodes[i].Name(), got.Version, got.Origin)
				}
				r := load(t, m, id)
				if u := mustGet[string](t, r, "user"); u != "bob" {
					t.Errorf("%s: user = %q", c.nodes[i].Name(), u)
				}
				if got := r.Keys(); !slices.Equal(got, []string{"cart", "list", "user"}) {
					t.Errorf("%s: keys = %v", c.nodes[i].Name(), got)
				}
				// Get returns copies.
				cart := mustGet[map[string]int](t, r, "cart")
				cart["apple"] = 99
				delete(cart, "pear")
				list := mustGet[[]int](t, r, "list")
				list[0] = 42
				if cart2 := mustGet[map[string]int](t, r, "cart"); cart2["apple"] != 2 || cart2["pear"] != 1 {
					t.Errorf("%s: stored map changed through a Get: %v", c.nodes[i].Name(), cart2)
				}
				if list2 := mustGet[[]int](t, r, "list"); !slices.Equal(list2, []int{1, 2, 3}) {
					t.Errorf("%s: stored slice changed through a Get: %v", c.nodes[i].Name(), list2)
				}
				if _, ok, err := Get[string](r, "missing"); ok || err != nil {
					t.Errorf("%s: Get(missing) = %v, %v", c.nodes[i].Name(), ok, err)
				}
				if _, ok, err := Get[int](r, "user"); !ok || err == nil {
					t.Errorf("%s: Get[int] of a string = %v, %v; want an error", c.nodes[i].Name(), ok, err)
				}
			}
		})
	}
}

func TestDeleteReplicates(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, map[string]any{"x": 1, "y": 2})
	if err := s.Delete("x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("absent"); err != nil {
		t.Fatal(err)
	}
	commit(t, a, s)
	if !c.converged(s.ID()) {
		t.Fatal("not converged")
	}
	if got := load(t, b, s.ID()).Keys(); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("keys on B = %v", got)
	}
	var deleted []event
	for _, e := range c.recs[1].find("attr", s.ID()) {
		if e.deleted {
			deleted = append(deleted, e)
		}
	}
	if len(deleted) != 1 || deleted[0].key != "x" || !deleted[0].remote {
		t.Fatalf("AttributeChanged(deleted) on B = %+v", deleted)
	}
}

// A member that missed changes is repaired at the next one: in async
// replication it fetches the session from the writer; in sync replication
// it refuses the change (it lacks its base) and the writer, which waits for
// its answer, pushes it the whole copy, which then counts as applied. (A
// sync receiver never fetches: the writer's copy may yet turn out to be one
// nobody acknowledged.)
func TestGapRepairedByFetch(t *testing.T) {
	for _, mode := range []cluster.Mode{cluster.Async, cluster.Sync} {
		for _, tc := range []struct {
			name    string
			dropAt  int // the commit (1 = the one that creates) whose delta B misses
			commits int
		}{
			{"missed create", 1, 2},
			{"missed change", 2, 3},
			{"missed two", 2, 4}, // drops 2 and 3
		} {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				leakcheck.Check(t)
				cfg := testConfig()
				cfg.Replication = mode
				c := newCluster(t, cfg, "A", "B", "C")
				a, b := c.ms[0], c.ms[1]
				drops := 1
				if tc.name == "missed two" {
					drops = 2
				}
				s, err := a.Create(bg)
				if err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= tc.commits; i++ {
					if i == tc.dropAt {
						c.net.dropNext(c.nodes[1], typeDelta, drops)
					}
					set(t, s, "n", i)
					commit(t, a, s)
					if i >= tc.dropAt && i < tc.dropAt+drops {
						if st, ok := state(b, s.ID()); ok && st.Version >= uint64(i) {
							t.Fatalf("B got the dropped delta %d", i)
						}
					}
				}
				id := s.ID()
				c.waitConverged(id)
				got, _ := state(b, id)
				if got.Version != uint64(tc.commits) {
					t.Fatalf("B version %d, want %d", got.Version, tc.commits)
				}
				if n := mustGet[int](t, load(t, b, id), "n"); n != tc.commits {
					t.Fatalf("B n = %d", n)
				}
				if st := c.ms[2].Stats(); st.Gaps != 0 || st.Repairs != 0 || st.Applied != uint64(tc.commits) {
					t.Errorf("C stats: gaps %d repairs %d applied %d", st.Gaps, st.Repairs, st.Applied)
				}
				if mode == cluster.Sync {
					if st := b.Stats(); st.Gaps != 1 || st.Repairs != 0 {
						t.Errorf("B stats: gaps %d repairs %d, want 1, 0", st.Gaps, st.Repairs)
					}
					if n := c.net.count(c.nodes[0], c.nodes[1], typeSessions); n != 1 {
						t.Errorf("A pushed %d whole copies to B, want 1", n)
					}
					if n := c.net.count(c.nodes[1], c.nodes[0], typeFetch); n != 0 {
						t.Errorf("B sent %d fetches to A, want 0", n)
					}
					if st := a.Stats(); st.ShortCommits != 0 {
						t.Errorf("A: %d short commits; the pushed copy counts as applied", st.ShortCommits)
					}
					return
				}
				c.waitFor("repair counted", func() bool { return b.Stats().Repairs == 1 })
				if st := b.Stats(); st.Gaps != 1 || st.Repairs != 1 {
					t.Errorf("B stats: gaps %d repairs %d, want 1, 1", st.Gaps, st.Repairs)
				}
				if n := c.net.count(c.nodes[1], c.nodes[0], typeFetch); n != 1 {
					t.Errorf("B sent %d fetches to A, want 1", n)
				}
			})
		}
	}
}

func TestDuplicatesAreStale(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B", "C")
	a := c.ms[0]
	c.net.duplicate(true)

	s := create(t, a, map[string]any{"k": 0})
	for i := 1; i <= 3; i++ {
		set(t, s, "k", i)
		commit(t, a, s)
	}
	if err := s.Delete("k"); err != nil {
		t.Fatal(err)
	}
	commit(t, a, s)
	id := s.ID()
	if !c.converged(id) {
		t.Fatal("not converged")
	}
	for i, m := range c.ms[1:] {
		st := m.Stats()
		if st.Stale != 5 || st.Applied != 5 || st.Gaps != 0 || st.Conflicts != 0 {
			t.Errorf("%s: stale %d applied %d gaps %d conflicts %d; want 5, 5, 0, 0",
				c.nodes[i+1].Name(), st.Stale, st.Applied, st.Gaps, st.Conflicts)
		}
		if n := len(c.recs[i+1].find("created", id)); n != 1 {
			t.Errorf("%s: Created fired %d times", c.nodes[i+1].Name(), n)
		}
	}
	s.Invalidate()
	if !c.nowhere(id) {
		t.Fatal("invalidated session still held")
	}
	for i := range c.ms {
		if n := len(c.recs[i].find("destroyed", id)); n != 1 {
			t.Errorf("%s: Destroyed fired %d times", c.nodes[i].Name(), n)
		}
	}
}

func TestReorderedBurst(t *testing.T) {
	for _, burst := range []int{2, 5, 10} {
		t.Run(fmt.Sprint(burst), func(t *testing.T) {
			leakcheck.Check(t)
			cfg := testConfig()
			cfg.Replication = cluster.Async // held sends must not block Commit
			c := newCluster(t, cfg, "A", "B", "C")
			a, b := c.ms[0], c.ms[1]
			s := create(t, a, map[string]any{"n": 0})
			id := s.ID()
			c.waitConverged(id)

			c.net.holdTo(c.nodes[1])
			for i := 1; i <= burst; i++ {
				set(t, s, "n", i)
				set(t, s, fmt.Sprint("k", i), i)
				commit(t, a, s)
			}
			if n := c.net.heldCount(); n != burst {
				t.Fatalf("%d messages held, want %d", n, burst)
			}
			c.net.release()
			c.waitConverged(id)
			if got, _ := state(b, id); got.Version != uint64(burst+1) {
				t.Fatalf("B version %d", got.Version)
			}
			if n := mustGet[int](t, load(t, b, id), "n"); n != burst {
				t.Fatalf("B n = %d", n)
			}
			// All but the oldest delta arrived before their base: each is a
			// gap, which fetches the session from A, unless such a fetch
			// has already brought a newer version (then it is stale, as the
			// oldest is then too). The first to arrive is always a gap.
			c.waitFor("repairs done", func() bool { st := b.Stats(); return st.Repairs == st.Gaps })
			if st := b.Stats(); st.Gaps < 1 || st.Gaps+st.Stale < uint64(burst-1) || st.Gaps+st.Stale > uint64(burst) {
				t.Errorf("B: gaps %d + stale %d, want %d or %d with at least one gap", st.Gaps, st.Stale, burst-1, burst)
			}
		})
	}
}

// Two nodes change one session at once. In async replication the tie rule
// picks the same winner everywhere (the higher version, then the greater
// node name). In sync replication each member applies whichever change
// reaches it first and refuses the other (it is not on that member's copy):
// exactly one writer gets its change applied by a member and succeeds; the
// other is told too few copies took it (its user gets 503), and its next
// Load replaces its copy, which nobody acknowledged, with the members'.
// The acknowledged change is never lost to a greater node name.
func TestConcurrentWriters(t *testing.T) {
	for _, tc := range []struct {
		writers    [2]int // indexes into A, B, C
		winner     string // async only: sync's is the writer that succeeded
		mode       cluster.Mode
		alwaysSave bool
	}{
		{[2]int{0, 1}, "B", cluster.Async, false},
		{[2]int{0, 1}, "", cluster.Sync, false},
		{[2]int{2, 1}, "C", cluster.Async, false},
		{[2]int{0, 2}, "", cluster.Sync, false},
		{[2]int{0, 1}, "B", cluster.Async, true},
		{[2]int{2, 0}, "", cluster.Sync, true},
	} {
		name := fmt.Sprintf("%c%c/%v/always_save=%v", 'A'+tc.writers[0], 'A'+tc.writers[1], tc.mode, tc.alwaysSave)
		t.Run(name, func(t *testing.T) {
			leakcheck.Check(t)
			cfg := testConfig()
			cfg.Replication = tc.mode
			cfg.AlwaysSave = tc.alwaysSave
			c := newCluster(t, cfg, "A", "B", "C")
			s := create(t, c.ms[0], map[string]any{"who": "nobody", "keep": "me"})
			id := s.ID()
			c.waitConverged(id)

			c.net.holdIf(func(e *envelope) bool { return e.typ == typeDelta })
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, w := range tc.writers {
				m := c.ms[w]
				r := load(t, m, id)
				set(t, r, "who", m.local)
				wg.Add(1)
				go func() { // a Sync commit waits for the held messages
					defer wg.Done()
					errs[i] = m.Commit(bg, r)
				}()
			}
			c.waitFor("both writers' deltas held", func() bool { return c.net.heldCount() == 4 })
			c.net.release()
			wg.Wait()
			winner := tc.winner
			if tc.mode == cluster.Sync {
				var ok []int
				for i, err := range errs {
					switch {
					case err == nil:
						ok = append(ok, i)
					case !errors.Is(err, ErrTooFewCopies):
						t.Fatalf("Commit on %s: %v, want nil or ErrTooFewCopies", c.ms[tc.writers[i]].local, err)
					}
				}
				if len(ok) != 1 {
					t.Fatalf("%d commits succeeded (%v), want exactly 1", len(ok), errs)
				}
				winner = c.ms[tc.writers[ok[0]]].local
				loser := c.ms[tc.writers[1-ok[0]]]
				t.Logf("%s's change acknowledged; %s's refused: %v", winner, loser.local, errs[1-ok[0]])
				// The loser's user retries there: its copy is settled first.
				if who := mustGet[string](t, load(t, loser, id), "who"); who != winner {
					t.Errorf("%s serves who = %q after its refused change, want %q", loser.local, who, winner)
				}
			} else {
				for _, err := range errs {
					if err != nil {
						t.Fatalf("Commit: %v", err)
					}
				}
			}
			c.waitConverged(id)
			for i, m := range c.ms {
				got, _ := state(m, id)
				if got.Version != 2 || got.Origin != winner {
					t.Errorf("%s: version %d origin %s; want 2, %s", c.nodes[i].Name(), got.Version, got.Origin, winner)
				}
				r := load(t, m, id)
				if who := mustGet[string](t, r, "who"); who != winner {
					t.Errorf("%s: who = %q, want %q", c.nodes[i].Name(), who, winner)
				}
				if keep := mustGet[string](t, r, "keep"); keep != "me" {
					t.Errorf("%s: keep = %q", c.nodes[i].Name(), keep)
				}
				if tc.mode == cluster.Async {
					// Each node saw one of the two version 2 after the other.
					if n := m.Stats().Conflicts; n != 1 {
						t.Errorf("%s: conflicts %d, want 1", c.nodes[i].Name(), n)
					}
				}
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	expiryConfig := func() Config {
		cfg := testConfig()
		cfg.SessionTimeout = 200 * time.Millisecond
		cfg.ExpireInterval = 20 * time.Millisecond
		cfg.TouchInterval = 50 * time.Millisecond
		return cfg
	}

	for _, tc := range []struct {
		name   string
		lose   bool // the expiry broadcast is lost: the others expire on their own
		remote bool
	}{
		{"broadcast", false, true},
		{"broadcast lost", true, false},
	} {
		t.Run("unused/"+tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			c := newCluster(t, expiryConfig(), "A", "B", "C")
			created := time.Now()
			if tc.lose {
				c.net.dropNext(c.nodes[1], typeExpire, 1)
				c.net.dropNext(c.nodes[2], typeExpire, 1)
			}
			s := create(t, c.ms[0], map[string]any{"x": 1})
			id := s.ID()
			c.waitFor("expired everywhere", func() bool {
				for _, r := range c.recs {
					if len(r.find("destroyed", id)) == 0 {
						return false
					}
				}
				return true
			})
			for i, r := range c.recs {
				evs := r.find("destroyed", id)
				wantRemote := i > 0 && tc.remote
				if len(evs) != 1 || evs[0].reason != "expired" || evs[0].remote != wantRemote {
					t.Errorf("%s: Destroyed %+v; want once, expired, remote=%v", c.nodes[i].Name(), evs, wantRemote)
					continue
				}
				if age := evs[0].at.Sub(created); age < 200*time.Millisecond {
					t.Errorf("%s: expired after %v, before the session timeout", c.nodes[i].Name(), age)
				}
				if i > 0 && tc.lose && evs[0].at.Sub(created) < 300*time.Millisecond {
					t.Errorf("%s: a copy served elsewhere expired after %v, without the touch grace", c.nodes[i].Name(), evs[0].at.Sub(created))
				}
			}
			if !c.nowhere(id) {
				t.Fatal("expired session still held")
			}
			if !s.Invalid() {
				t.Error("expired session not invalid")
			}
			if err := s.Set("x", 2); !errors.Is(err, ErrInvalidated) {
				t.Errorf("Set on an expired session: %v", err)
			}
			if r, err := c.ms[0].Load(bg, id); r != nil || err != nil {
				t.Errorf("Load of an expired session = %v, %v", r, err)
			}
			want := []uint64{1, 0, 0}
			if tc.lose {
				want = []uint64{1, 1, 1}
			}
			for i, m := range c.ms {
				if got := m.Stats().Expired; got != want[i] {
					t.Errorf("%s: expired %d, want %d", c.nodes[i].Name(), got, want[i])
				}
			}
		})
	}

	t.Run("touched", func(t *testing.T) {
		leakcheck.Check(t)
		c := newCluster(t, expiryConfig(), "A", "B", "C")
		a := c.ms[0]
		s := create(t, a, map[string]any{"x": 1})
		id := s.ID()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(800 * time.Millisecond); time.Now().Before(end); {
			<-tick.C
			load(t, a, id)
		}
		tick.Stop()
		for i, m := range c.ms {
			if _, ok := state(m, id); !ok {
				t.Errorf("%s: a session in use on A expired", c.nodes[i].Name())
			}
			if evs := c.recs[i].find("destroyed", id); len(evs) > 0 {
				t.Errorf("%s: Destroyed %+v", c.nodes[i].Name(), evs)
			}
		}
		if n := c.net.count(c.nodes[0], c.nodes[1], typeTouch); n < 5 {
			t.Errorf("A sent B %d touch batches in 800ms, want about 16", n)
		}
		// Once no longer used, it expires everywhere.
		c.waitFor("expired everywhere", func() bool { return c.nowhere(id) })
	})

	t.Run("batch", func(t *testing.T) {
		leakcheck.Check(t)
		cfg := expiryConfig()
		cfg.ExpireBatch = 10
		c := newCluster(t, cfg, "A")
		a := c.ms[0]
		for range 100 {
			create(t, a, map[string]any{"x": 1})
		}
		c.waitFor("all expired", func() bool { return a.Len() == 0 })
		evs := c.recs[0].find("destroyed", "")
		if len(evs) != 100 {
			t.Fatalf("%d Destroyed, want 100", len(evs))
		}
		// A tick expires at most ExpireBatch sessions, and a sweep that falls
		// behind gets at most one stale tick, so between two expirations
		// at most d/ExpireInterval+2 ticks ran, +1 for the scheduler handing
		// a late tick and the next one over together (seen under -race on
		// 2 busy cores): that bounds the expirations between them. An
		// unbounded sweep expires all 100 at once.
		for i := range evs {
			for j := i; j < len(evs); j++ {
				ticks := int(evs[j].at.Sub(evs[i].at)/cfg.ExpireInterval) + 3
				if n := j - i + 1; n > cfg.ExpireBatch*ticks {
					t.Fatalf("%d sessions expired within %v (at most %d ticks of %d)",
						n, evs[j].at.Sub(evs[i].at), ticks, cfg.ExpireBatch)
				}
			}
		}
		if span := evs[99].at.Sub(evs[0].at); span < 5*cfg.ExpireInterval {
			t.Fatalf("100 sessions expired within %v, in batches of 10 every %v", span, cfg.ExpireInterval)
		}
	})
}

func TestInvalidate(t *testing.T) {
	for _, notify := range []bool{true, false} {
		t.Run(fmt.Sprint("notify=", notify), func(t *testing.T) {
			leakcheck.Check(t)
			cfg := testConfig()
			cfg.NotifyOnReplication = notify
			c := newCluster(t, cfg, "A", "B", "C")
			a := c.ms[0]
			s := create(t, a, map[string]any{"x": 1})
			id := s.ID()
			s.Invalidate()
			s.Invalidate() // once is enough
			if !c.nowhere(id) {
				t.Fatal("invalidated session still held")
			}
			for i, r := range c.recs {
				evs := r.find("destroyed", id)
				switch {
				case i == 0:
					if len(evs) != 1 || evs[0].reason != "invalidated" || evs[0].remote {
						t.Errorf("A: Destroyed %+v", evs)
					}
				case notify:
					if len(evs) != 1 || evs[0].reason != "invalidated" || !evs[0].remote {
						t.Errorf("%s: Destroyed %+v", c.nodes[i].Name(), evs)
					}
					if cr := r.find("created", id); len(cr) != 1 || !cr[0].remote {
						t.Errorf("%s: Created %+v", c.nodes[i].Name(), cr)
					}
				default:
					if len(evs) != 0 || len(r.find("created", id)) != 0 {
						t.Errorf("%s: listeners fired without notify_on_replication: %+v", c.nodes[i].Name(), r.find("", id))
					}
				}
			}
			if err := s.Set("x", 2); !errors.Is(err, ErrInvalidated) {
				t.Errorf("Set after Invalidate: %v", err)
			}
			if err := s.Delete("x"); !errors.Is(err, ErrInvalidated) {
				t.Errorf("Delete after Invalidate: %v", err)
			}
			if err := s.RenewID(); !errors.Is(err, ErrInvalidated) {
				t.Errorf("RenewID after Invalidate: %v", err)
			}
			if err := s.SetMaxInactiveInterval(time.Hour); !errors.Is(err, ErrInvalidated) {
				t.Errorf("SetMaxInactiveInterval after Invalidate: %v", err)
			}
			if err := a.Commit(bg, s); err != nil {
				t.Errorf("Commit after Invalidate: %v", err)
			}
			for i, m := range c.ms {
				if r, _ := m.Load(bg, id); r != nil {
					t.Errorf("%s: Load found an invalidated session", c.nodes[i].Name())
				}
			}
		})
	}

	t.Run("never committed", func(t *testing.T) {
		leakcheck.Check(t)
		c := newCluster(t, testConfig(), "A", "B")
		s, err := c.ms[0].Create(bg)
		if err != nil {
			t.Fatal(err)
		}
		s.Invalidate()
		if c.ms[0].Len() != 0 {
			t.Fatal("still held")
		}
		if n := c.net.count(c.nodes[0], c.nodes[1], typeExpire); n != 0 {
			t.Fatalf("B told about a session it never had (%d messages)", n)
		}
	})

	t.Run("after RenewID", func(t *testing.T) {
		// Invalidated before the new id was replicated: the others know the
		// session by its old id and must drop it too.
		leakcheck.Check(t)
		c := newCluster(t, testConfig(), "A", "B")
		s := create(t, c.ms[0], map[string]any{"x": 1})
		old := s.ID()
		if err := s.RenewID(); err != nil {
			t.Fatal(err)
		}
		s.Invalidate()
		if !c.nowhere(old) || !c.nowhere(s.ID()) {
			t.Fatal("the session survived its invalidation on B")
		}
	})
}

func TestRenewID(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B", "C")
	a := c.ms[0]
	s := create(t, a, map[string]any{"user": "ann"})
	old := s.ID()
	if err := s.RenewID(); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if id == old || !ValidID(id) || Route(id) != Route(old) || Route(id) != "A" {
		t.Fatalf("RenewID: %s -> %s", old, id)
	}
	if u := mustGet[string](t, s, "user"); u != "ann" {
		t.Fatalf("user = %q after RenewID", u)
	}
	if r, _ := a.Load(bg, old); r != nil {
		t.Fatal("A still serves the old id")
	}
	if load(t, a, id) != s {
		t.Fatal("A does not serve the new id")
	}
	if err := s.RenewID(); err != nil { // twice before a commit
		t.Fatal(err)
	}
	id = s.ID()
	commit(t, a, s)
	for i, m := range c.ms {
		if _, ok := state(m, old); ok {
			t.Errorf("%s still has the old id", c.nodes[i].Name())
		}
		got, ok := state(m, id)
		if !ok || got.Version != 2 {
			t.Errorf("%s: new id held %v, version %d", c.nodes[i].Name(), ok, got.Version)
			continue
		}
		if u := mustGet[string](t, load(t, m, id), "user"); u != "ann" {
			t.Errorf("%s: user = %q", c.nodes[i].Name(), u)
		}
	}
	if !c.converged(id) {
		t.Error("not converged")
	}

	t.Run("before the first commit", func(t *testing.T) {
		s, err := a.Create(bg)
		if err != nil {
			t.Fatal(err)
		}
		first := s.ID()
		if err := s.RenewID(); err != nil {
			t.Fatal(err)
		}
		commit(t, a, s)
		if !c.nowhere(first) || !c.converged(s.ID()) {
			t.Fatal("the first id leaked, or the session was not replicated under the new one")
		}
	})
}

func TestRebind(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B", "C")
	a, b, cc := c.ms[0], c.ms[1], c.ms[2]
	s := create(t, a, map[string]any{"user": "ann"})
	old := s.ID()

	if ok, err := a.Rebind(s); ok || err != nil {
		t.Fatalf("Rebind on its own node = %v, %v", ok, err)
	}
	r := load(t, b, old)
	if ok, err := b.Rebind(r); ok || err != nil {
		t.Fatalf("Rebind on B while A is a member = %v, %v", ok, err)
	}

	// A fails over: its users come to B, which takes their sessions.
	c.nodes[0].setUp(false)
	ok, err := b.Rebind(r)
	if !ok || err != nil {
		t.Fatalf("Rebind on B = %v, %v", ok, err)
	}
	id := r.ID()
	if id != rebindID(old, "B") || !ValidID(id) || Route(id) != "B" {
		t.Fatalf("rebound %s -> %s", old, id)
	}
	if ok, _ := b.Rebind(r); ok {
		t.Fatal("second Rebind renamed again")
	}
	if b.Stats().Rebinds != 1 {
		t.Errorf("rebinds = %d", b.Stats().Rebinds)
	}
	if got := load(t, b, id); got != r {
		t.Fatal("B does not serve the new id")
	}
	// The old id (a second tab, a request in flight) finds the session
	// under its new id: the random part is the same, so it gives away
	// nothing.
	if got, _ := b.Load(bg, old); got != r {
		t.Fatal("B does not resolve the old id to the rebound session")
	}
	commit(t, b, r)
	for _, m := range []*Manager{b, cc} {
		if _, ok := state(m, old); ok {
			t.Errorf("%s still has %s", m.local, short(old))
		}
		if got, _ := m.Load(bg, old); got == nil || got.ID() != id {
			t.Errorf("%s: the old id does not find the session under %s", m.local, short(id))
		}
		got, ok := state(m, id)
		if !ok || got.Version != 2 || got.Origin != "B" {
			t.Errorf("%s: rebound session held %v, version %d, origin %s", m.local, ok, got.Version, got.Origin)
		}
	}
	if u := mustGet[string](t, load(t, cc, id), "user"); u != "ann" {
		t.Fatalf("C: user = %q", u)
	}
	// The node that was down learns nothing.
	if _, ok := state(a, id); ok {
		t.Error("A (down) got the rebound session")
	}

	// C, serving the same user, leaves the route of a live node alone.
	if ok, _ := cc.Rebind(load(t, cc, id)); ok {
		t.Error("C rebound a session whose node is alive")
	}
}

func TestMaxActive(t *testing.T) {
	leakcheck.Check(t)
	cfg := testConfig()
	cfg.MaxActive = 2
	c := newCluster(t, cfg, "A", "B")
	a, b := c.ms[0], c.ms[1]

	s1 := create(t, a, nil)
	create(t, a, nil)
	if s, err := a.Create(bg); !errors.Is(err, ErrTooManySessions) || s != nil {
		t.Fatalf("third Create = %v, %v; want ErrTooManySessions", s, err)
	}
	if a.Stats().Rejected != 1 {
		t.Errorf("rejected = %d", a.Stats().Rejected)
	}
	// B holds A's two sessions: it is full too.
	if _, err := b.Create(bg); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("Create on B = %v; want ErrTooManySessions", err)
	}
	s1.Invalidate()
	if _, err := a.Create(bg); err != nil {
		t.Fatalf("Create after an invalidation: %v", err)
	}
}

func TestAlwaysSave(t *testing.T) {
	for _, always := range []bool{true, false} {
		t.Run(fmt.Sprint(always), func(t *testing.T) {
			leakcheck.Check(t)
			cfg := testConfig()
			cfg.AlwaysSave = always
			c := newCluster(t, cfg, "A", "B", "C")
			a := c.ms[0]
			s := create(t, a, map[string]any{"x": 1})
			id := s.ID()
			sent := a.Stats().Sent
			commit(t, a, load(t, a, id)) // no Set
			want := uint64(1)
			if always {
				want = 2
			}
			for i, m := range c.ms {
				if got, _ := state(m, id); got.Version != want {
					t.Errorf("%s: version %d, want %d", c.nodes[i].Name(), got.Version, want)
				}
			}
			if always != (a.Stats().Sent > sent) {
				t.Errorf("sent %d messages for a commit without change", a.Stats().Sent-sent)
			}
			if !c.converged(id) {
				t.Error("not converged")
			}
		})
	}
}

func TestStateTransfer(t *testing.T) {
	leakcheck.Check(t)
	const onA, onB = 2400, 100
	cfg := testConfig()
	cfg.TransferBatch = 16 << 10
	c := newCluster(t, cfg, "A", "B")
	a, b := c.ms[0], c.ms[1]
	var ids, fromB []string
	payload := strings.Repeat("p", 100)
	for i := range onA {
		ids = append(ids, create(t, a, map[string]any{"n": i, "p": payload}).ID())
	}
	for i := range onB {
		fromB = append(fromB, create(t, b, map[string]any{"n": i, "p": payload}).ID())
	}
	ids = append(ids, fromB...)
	if a.Len() != onA+onB || b.Len() != onA+onB {
		t.Fatalf("A holds %d, B %d", a.Len(), b.Len())
	}

	// Hold the state transfer (the first page D asks A for) so that D is
	// still transferring when it serves a request and when A commits
	// changes.
	di := c.add("D", cfg)
	dNode, d := c.nodes[di], c.ms[di]
	c.net.holdIf(func(e *envelope) bool {
		return e.from == dNode && e.to == c.nodes[0] && e.typ == typeState && e.request
	})
	dNode.join()
	c.start(di)
	c.waitFor("first batch held", func() bool { return c.net.heldCount() == 1 })
	select {
	case <-d.Ready():
		t.Fatal("D ready before its transfer")
	default:
	}
	if st := d.Stats().TransferState; st != "running" {
		t.Fatalf("transfer state %q", st)
	}

	// A request on D for a session D does not have yet: fetched from the
	// node its route names.
	r, err := d.Load(bg, fromB[7])
	if err != nil || r == nil {
		t.Fatalf("Load on D during the transfer = %v, %v", r, err)
	}
	if n := mustGet[int](t, r, "n"); n != 7 {
		t.Fatalf("n = %d", n)
	}
	if d.Stats().Fetched != 1 || c.net.count(dNode, c.nodes[1], typeFetch) != 1 || c.net.count(dNode, c.nodes[0], typeFetch) != 0 {
		t.Fatalf("fetched %d; fetches to B %d, to A %d", d.Stats().Fetched,
			c.net.count(dNode, c.nodes[1], typeFetch), c.net.count(dNode, c.nodes[0], typeFetch))
	}

	// Changes on A while the transfer runs (D is a member: it gets them).
	for i := 0; i < len(ids); i += 5 {
		s := load(t, a, ids[i])
		set(t, s, "changed", true)
		commit(t, a, s)
	}
	c.net.release()
	c.ready(d)
	if st := d.Stats(); st.TransferState != "done" || st.Transferred != onA+onB {
		t.Fatalf("transfer %q, %d sessions; want done, %d", st.TransferState, st.Transferred, onA+onB)
	}
	c.waitConverged(ids...)
	if d.Len() != onA+onB {
		t.Fatalf("D holds %d", d.Len())
	}
	for i := 0; i < len(ids); i += 5 {
		if got, _ := state(d, ids[i]); got.Version != 2 {
			t.Fatalf("D: %s at version %d, want 2", short(ids[i]), got.Version)
		}
	}
	if n := c.net.count(dNode, c.nodes[0], typeState); n < 10 {
		t.Errorf("the transfer took %d pages; want many", n)
	}
}

func TestLoadMalformedIDs(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a := c.ms[0]
	s := create(t, a, nil)
	random := s.ID()[:24]
	for _, id := range []string{
		"",
		"x",
		".",
		"../../etc",
		"../../etc/passwd.A",
		strings.Repeat("a", 10<<10),
		strings.Repeat("a", 24) + "." + strings.Repeat("r", 64),
		"abc.def",
		random[:23] + ".A",
		random + "x.A",
		random + ".",
		random + ".A/B",
		random + ".A B",
		random[:23] + "+.A",
		random + ".A\x00",
		"\xff\xfe" + random[2:] + ".A",
		random + ".Å",
		newID("A"), // valid, but unknown
		newID("B"),
	} {
		t.Run(fmt.Sprintf("%.20q", id), func(t *testing.T) {
			r, err := a.Load(bg, id)
			if r != nil || err != nil {
				t.Fatalf("Load(%.40q) = %v, %v; want nil, nil", id, r, err)
			}
		})
	}
	s.Invalidate()
	if r, err := a.Load(bg, random+".A"); r != nil || err != nil {
		t.Fatalf("Load of an invalidated id = %v, %v", r, err)
	}
}

func TestValidIDAndRoute(t *testing.T) {
	for _, tc := range []struct {
		id    string
		valid bool
		route string
	}{
		{newID("node1"), true, "node1"},
		{newID("a-b_C9"), true, "a-b_C9"},
		{strings.Repeat("A", 24) + "." + strings.Repeat("r", 63), true, strings.Repeat("r", 63)},
		{strings.Repeat("A", 24) + "." + strings.Repeat("r", 64), false, strings.Repeat("r", 64)},
		{strings.Repeat("A", 24) + ".", false, ""},
		{"abc.def", false, "def"},
		{"nodot", false, ""},
		{"", false, ""},
	} {
		if got := ValidID(tc.id); got != tc.valid {
			t.Errorf("ValidID(%q) = %v", tc.id, got)
		}
		if got := Route(tc.id); got != tc.route {
			t.Errorf("Route(%q) = %q, want %q", tc.id, got, tc.route)
		}
	}
}

// TestRebindIDNeverReused: a failover rewrite's id is the same on every
// node, valid, on the new route, and never an id the session had before,
// even when it is rewritten back to its first route (the old id's
// tombstone "moved" would refuse the session's changes there).
func TestRebindIDNeverReused(t *testing.T) {
	first := newID("A")
	b := rebindID(first, "B")
	if b != rebindID(first, "B") || !ValidID(b) || Route(b) != "B" {
		t.Fatalf("rebindID(%s, B) = %s", first, b)
	}
	back := rebindID(b, "A")
	if back == first || !ValidID(back) || Route(back) != "A" {
		t.Fatalf("rewritten back to A: %s, first %s", back, first)
	}
	var a aliases
	a.init(time.Minute)
	now := time.Unix(1, 0)
	a.add(first, b, now)
	a.add(b, back, now)
	a.add(back, newID("A"), now) // RenewID: no alias
	if got := a.resolve(first, now); got != back {
		t.Errorf("alias of the first id = %q, want %q", got, back)
	}
}

func TestStopEndsGoroutines(t *testing.T) {
	leakcheck.Check(t)
	cfg := testConfig()
	cfg.ExpireInterval = 5 * time.Millisecond
	cfg.TouchInterval = 5 * time.Millisecond
	c := newCluster(t, cfg, "A", "B")
	a := c.ms[0]
	for range 50 {
		s := create(t, a, map[string]any{"x": 1})
		load(t, c.ms[1], s.ID()) // something for the touch batches
	}
	// Leave work in flight: a transfer held half-way, a repair.
	c.net.holdIf(func(e *envelope) bool { return e.typ == typeState })
	di := c.join("D", cfg)
	c.waitFor("transfer held", func() bool { return c.net.heldCount() == 1 })
	c.net.dropNext(c.nodes[1], typeDelta, 1)
	s := create(t, a, nil)
	set(t, s, "y", 2)
	commit(t, a, s) // B: gap, repair fetch answered into the hold

	// Stop in the order of a real shutdown, while the network still runs.
	for i, m := range c.ms {
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		if err := m.Stop(ctx); err != nil {
			t.Errorf("Stop(%s): %v", c.nodes[i].Name(), err)
		}
		cancel()
		if err := m.Stop(bg); err != nil { // again: harmless
			t.Errorf("second Stop(%s): %v", c.nodes[i].Name(), err)
		}
	}
	select {
	case <-c.ms[di].Ready():
	default:
		t.Error("Ready not closed after Stop")
	}

	// A manager that was never started stops at once.
	m, err := New(newFakeNet(t).addNode("E"), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(bg); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	leakcheck.Check(t)
	nd := newFakeNet(t).addNode("A")
	for _, cfg := range []Config{
		{}, {Route: "A"}, {SessionTimeout: time.Second},
		{Route: "A", SessionTimeout: time.Second}, // the default touch interval, 5 s, is too long for it
		{Route: "A", SessionTimeout: time.Minute, TouchInterval: 16 * time.Second},
	} {
		if _, err := New(nd, cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	m, err := New(nd, Config{Route: "A", SessionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.ExpireBatch <= 0 || m.cfg.TransferBatch <= 0 || m.cfg.RequestTimeout <= 0 {
		t.Fatalf("defaults not applied: %+v", m.cfg)
	}
	if err := m.Start(bg); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(bg); err == nil {
		t.Fatal("second Start accepted")
	}
	<-m.Ready()
	if st := m.Stats().TransferState; st != "none" {
		t.Fatalf("transfer state of a lone node: %q", st)
	}
	if err := m.Stop(bg); err != nil {
		t.Fatal(err)
	}
}

func TestSessionsInfo(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	s := create(t, c.ms[0], map[string]any{"k": "v"})
	if err := s.SetMaxInactiveInterval(time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxInactiveInterval(0); err == nil {
		t.Fatal("SetMaxInactiveInterval(0) accepted")
	}
	commit(t, c.ms[0], s)
	r := load(t, c.ms[1], s.ID())
	if r.MaxInactiveInterval() != time.Hour || !r.CreatedAt().Equal(s.CreatedAt()) {
		t.Fatalf("B: max inactive %v, created %v (A: %v)", r.MaxInactiveInterval(), r.CreatedAt(), s.CreatedAt())
	}
	infos := c.ms[1].Sessions()
	if len(infos) != 1 || infos[0].Ref != c.ms[1].ref(s.ID()) || infos[0].Version != 2 || infos[0].Keys != 1 || infos[0].AccessedBy != "B" {
		t.Fatalf("Sessions on B = %+v", infos)
	}
	if strings.Contains(fmt.Sprint(infos), s.ID()) {
		t.Fatalf("Sessions shows the id: %+v", infos)
	}
	// The same reference on every node, found by the id.
	if got, ok := c.ms[0].SessionInfo(s.ID()); !ok || got.Ref != infos[0].Ref {
		t.Fatalf("SessionInfo on A = %+v, %v; B lists %s", got, ok, infos[0].Ref)
	}
	if _, ok := c.ms[0].SessionInfo(s.ID() + "x"); ok {
		t.Fatal("SessionInfo found an unknown id")
	}
}
