package manager

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/clock"
	"github.com/flockhq/flock/internal/leakcheck"
)

// The tests here drive the manager's time rules with a fake clock: each
// step moves the clock, then waits until every manager has handled what
// fell due and waits on the clock again. Nothing waits for real time.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// clockConfig is testConfig on a fake clock, with intervals of seconds.
func clockConfig(clk *clock.Fake) Config {
	cfg := testConfig()
	cfg.Clock = clk
	cfg.JoinWait = 0
	cfg.SessionTimeout = time.Hour
	cfg.ExpireInterval = time.Second
	cfg.TouchInterval = 3 * time.Second
	cfg.RebalanceInterval = time.Second
	cfg.OrphanGrace = 5 * time.Second
	return cfg
}

// seconds steps the cluster's clock one second at a time, from the second
// after the current one to the second to (on epoch), calling check after
// each.
func (c *testCluster) seconds(to int, check func(sec int)) {
	c.t.Helper()
	for {
		now := c.clock.Now().Sub(epoch)
		sec := int(now/time.Second) + 1
		if sec > to {
			return
		}
		c.step(time.Duration(sec)*time.Second - now)
		check(sec)
	}
}

// TestClockExpiry: a session unused for longer than its max inactive
// interval expires at the next sweep, not before; a copy that another node
// served gets two touch intervals of grace when that node's word is lost.
func TestClockExpiry(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxInactive time.Duration // 0: the session timeout
		touch       time.Duration // 0: clockConfig's
		watch       int           // the node watched: 0 served the session, 1 holds a copy
		lose        bool          // the expiry broadcast to the copy is lost
		heldThrough int           // the last sweep (second) it is still held at
		remote      bool          // the watched node hears of the expiry from the other
	}{
		{name: "where it was served", watch: 0, heldThrough: 20},
		{name: "longer max inactive", maxInactive: 40 * time.Second, watch: 0, heldThrough: 40},
		{name: "copy, told by the node that served it", watch: 1, heldThrough: 20, remote: true},
		{name: "copy, not told: touch grace", watch: 1, lose: true, heldThrough: 20 + 2*3},
		{name: "copy, not told, longer touch interval", touch: 5 * time.Second, watch: 1, lose: true, heldThrough: 20 + 2*5},
		{name: "copy, not told, longer max inactive", maxInactive: 40 * time.Second, watch: 1, lose: true, heldThrough: 40 + 2*3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			cfg := clockConfig(clock.NewFake(epoch))
			cfg.SessionTimeout = 20 * time.Second // touches every 5 s at most
			if tc.touch > 0 {
				cfg.TouchInterval = tc.touch
			}
			c := newCluster(t, cfg, "A", "B")
			a := c.ms[0]
			s, err := a.Create(bg)
			if err != nil {
				t.Fatal(err)
			}
			set(t, s, "x", 1)
			if tc.maxInactive > 0 {
				if err := s.SetMaxInactiveInterval(tc.maxInactive); err != nil {
					t.Fatal(err)
				}
			}
			commit(t, a, s)
			id := s.ID()
			if tc.lose {
				c.net.dropNext(c.nodes[1], typeExpire, 1)
			}
			m, rec := c.ms[tc.watch], c.recs[tc.watch]
			c.seconds(tc.heldThrough+1, func(sec int) {
				_, held := state(m, id)
				switch {
				case sec <= tc.heldThrough && !held:
					t.Fatalf("%s: expired at the sweep of %ds, before its time", m.local, sec)
				case sec > tc.heldThrough && held:
					t.Fatalf("%s: still held at the sweep of %ds", m.local, sec)
				}
			})
			evs := rec.find("destroyed", id)
			if len(evs) != 1 || evs[0].reason != "expired" || evs[0].remote != tc.remote {
				t.Errorf("%s: Destroyed %+v; want once, expired, remote=%v", m.local, evs, tc.remote)
			}
			wantExpired := uint64(1)
			if tc.remote {
				wantExpired = 0 // the other node's count
			}
			if got := m.Stats().Expired; got != wantExpired {
				t.Errorf("%s: expired %d, want %d", m.local, got, wantExpired)
			}
		})
	}
}

// TestClockTouches: requests that read a session without changing it send
// its access time to the others once per touch interval, in one batch,
// whatever their number; an interval without requests sends nothing.
func TestClockTouches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		loads   []time.Duration // when B serves the session
		batches []int           // B's touch batches sent by 3s, 6s and 9s
	}{
		{"no request", nil, []int{0, 0, 0}},
		{"one request", []time.Duration{time.Second}, []int{1, 1, 1}},
		{"many requests in one interval", []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2500 * time.Millisecond}, []int{1, 1, 1}},
		{"a request in every interval", []time.Duration{time.Second, 4 * time.Second, 7500 * time.Millisecond}, []int{1, 2, 3}},
		{"requests in every other interval", []time.Duration{time.Second, 2 * time.Second, 7 * time.Second}, []int{1, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			c := newCluster(t, clockConfig(clock.NewFake(epoch)), "A", "B")
			a, b := c.ms[0], c.ms[1]
			id := create(t, a, map[string]any{"x": 1}).ID()
			last, by := epoch, "A" // as A sees the session's last access
			for tick := range 3 {
				end := time.Duration(tick+1) * 3 * time.Second
				for c.clock.Now().Sub(epoch) < end {
					c.step(500 * time.Millisecond)
					if slices.Contains(tc.loads, c.clock.Now().Sub(epoch)) {
						load(t, b, id)
					}
				}
				for _, l := range tc.loads {
					if l < end {
						last, by = epoch.Add(l), "B"
					}
				}
				if n := c.net.count(c.nodes[1], c.nodes[0], typeTouch); n != tc.batches[tick] {
					t.Errorf("by %v: B sent %d touch batches, want %d", end, n, tc.batches[tick])
				}
				got, _ := state(a, id)
				if at := fromNano(got.Access); !at.Equal(last) || got.AccessedBy != by {
					t.Errorf("by %v: A's copy last accessed at %v by %s; want %v by %s", end, at.Sub(epoch), got.AccessedBy, last.Sub(epoch), by)
				}
			}
		})
	}
}

// TestClockRebalance: when the members change, the session's new backup (or
// new owner) gets its copy at the owner's next rebalance step, not before;
// except a node that joins, which fetches the copies it is the backup of
// before it reports itself ready (its start runs an anti-entropy round with
// each member).
func TestClockRebalance(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nodes       []string
		change      func(c *testCluster) // the change of the ring
		before      []string             // the holders up to the next step
		after       []string             // from the next step
		copiedBy    int                  // the node that copies (-1: the joiner fetched them)
		orphanedFor time.Duration        // how long a node that lost its role keeps its copy (0: none does)
	}{
		{
			name:  "a node joins between owner and backup",
			nodes: []string{"n1", "n3"},
			change: func(c *testCluster) {
				i := c.join("n2", c.ms[0].cfg)
				c.settle(1)
				c.ready(c.ms[i])
			},
			before: []string{"n1", "n2", "n3"}, after: []string{"n1", "n2", "n3"}, copiedBy: -1,
			orphanedFor: 5 * time.Second,
		},
		{
			name: "the backup fails", nodes: []string{"n1", "n2", "n3"},
			change: func(c *testCluster) { c.nodes[1].setUp(false) },
			before: []string{"n1"}, after: []string{"n1", "n3"}, copiedBy: 0,
		},
		{
			name: "the backup leaves", nodes: []string{"n1", "n2", "n3"},
			change: func(c *testCluster) { c.nodes[1].leave() },
			before: []string{"n1"}, after: []string{"n1", "n3"}, copiedBy: 0,
		},
		{
			name: "the owner fails", nodes: []string{"n1", "n2", "n3"},
			change: func(c *testCluster) { c.nodes[0].setUp(false) },
			before: []string{"n2"}, after: []string{"n2", "n3"}, copiedBy: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			cfg := clockConfig(clock.NewFake(epoch))
			cfg.Mode = ModeBackup
			c := newCluster(t, cfg, tc.nodes...)
			var ids []string
			for range 3 { // sessions n2 backs up when it is a member
				id := idBackedUpOn(t, "n1", []string{"n1", "n2", "n3"}, "n2")
				ids = append(ids, createAs(t, c.ms[0], id, map[string]any{"n": 1}).ID())
			}
			tc.change(c)
			holders := func(want []string, when string) {
				t.Helper()
				for _, id := range ids {
					if got := c.holders(id); !slices.Equal(got, want) {
						t.Fatalf("%s: %s held by %v, want %v", when, short(id), got, want)
					}
				}
			}
			holders(tc.before, "right after the change")
			// The owner's ticker ticks on whole seconds: up to just before
			// the next, nothing moves.
			next := c.clock.Now().Truncate(time.Second).Add(time.Second)
			c.step(next.Sub(c.clock.Now()) - time.Millisecond)
			holders(tc.before, "just before the next step")
			c.step(time.Millisecond)
			holders(tc.after, "at the next step")
			if tc.orphanedFor > 0 { // the grace, see TestClockOrphanGrace
				end := 1 + int(tc.orphanedFor/time.Second)
				c.seconds(end, func(int) { holders(tc.after, "within the grace") })
				c.seconds(end+1, func(int) { holders([]string{"n1", "n2"}, "after the grace") })
			}
			if tc.copiedBy < 0 {
				joiner := c.ms[len(c.ms)-1]
				if got := joiner.Stats().SyncMoved; got != uint64(len(ids)) {
					t.Errorf("%s fetched %d copies at its start, want %d", joiner.local, got, len(ids))
				}
				return
			}
			if got := c.ms[tc.copiedBy].Stats().Copied; got != uint64(len(ids)) {
				t.Errorf("%s copied %d sessions, want %d", c.nodes[tc.copiedBy].Name(), got, len(ids))
			}
		})
	}
}

// TestClockOrphanGrace: a node that is neither owner nor backup of a copy
// any more drops it only after OrphanGrace, counted from the first step
// that found it orphaned; if it gets its role back meanwhile, it keeps it.
func TestClockOrphanGrace(t *testing.T) {
	for _, tc := range []struct {
		grace       time.Duration
		leaveAt     int // the second the new backup leaves again (0: it stays)
		heldThrough int // the last step (second) n3 still holds its copies at
	}{
		{grace: 2 * time.Second, heldThrough: 1 + 2},
		{grace: 5 * time.Second, heldThrough: 1 + 5},
		{grace: 5 * time.Second, leaveAt: 3, heldThrough: 100},
	} {
		name := fmt.Sprintf("grace %v", tc.grace)
		if tc.leaveAt > 0 {
			name += ", back to backup within it"
		}
		t.Run(name, func(t *testing.T) {
			leakcheck.Check(t)
			cfg := clockConfig(clock.NewFake(epoch))
			cfg.Mode = ModeBackup
			cfg.OrphanGrace = tc.grace
			c := newCluster(t, cfg, "n1", "n3")
			var ids []string
			for range 3 { // sessions n2 backs up once it joins
				id := idBackedUpOn(t, "n1", []string{"n1", "n2", "n3"}, "n2")
				ids = append(ids, createAs(t, c.ms[0], id, map[string]any{"n": 1}).ID())
			}
			i := c.join("n2", cfg) // n3 is no longer n1's backup: n2 is
			c.settle(1)
			c.ready(c.ms[i])
			n3 := c.ms[1]
			c.seconds(min(tc.heldThrough+1, 10), func(sec int) {
				if sec == tc.leaveAt {
					c.nodes[i].leave()
				}
				for _, id := range ids {
					_, held := state(n3, id)
					switch {
					case sec <= tc.heldThrough && !held:
						t.Fatalf("n3 dropped %s at %ds, within the grace", short(id), sec)
					case sec > tc.heldThrough && held:
						t.Fatalf("n3 still holds %s at %ds, after the grace", short(id), sec)
					}
				}
			})
			want := uint64(len(ids))
			if tc.leaveAt > 0 {
				want = 0
			}
			if got := n3.Stats().Moved; got != want {
				t.Errorf("n3 dropped %d copies, want %d", got, want)
			}
		})
	}
}
