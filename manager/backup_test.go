package manager

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
)

func backupConfig() Config {
	cfg := testConfig()
	cfg.Mode = ModeBackup
	cfg.RebalanceInterval = 20 * time.Millisecond
	cfg.OrphanGrace = 100 * time.Millisecond
	cfg.JoinWait = 0
	return cfg
}

// holders lists the members that hold session id.
func (c *testCluster) holders(id string) []string {
	var out []string
	for i, m := range c.ms {
		if !c.isMember(i) {
			continue
		}
		m.mu.RLock()
		_, ok := m.sessions[id]
		m.mu.RUnlock()
		if ok {
			out = append(out, c.nodes[i].Name())
		}
	}
	slices.Sort(out)
	return out
}

func countOf(t *testing.T, m *Manager, id string) int {
	t.Helper()
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return -1
	}
	n, _, err := Get[int](s, "n")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func increment(t *testing.T, m *Manager, id string) (string, int) {
	t.Helper()
	ctx := context.Background()
	s, err := m.Load(ctx, id)
	if err != nil || s == nil {
		t.Fatalf("%s: Load(%s) = %v, %v", m.local, m.ref(id), s, err)
	}
	if _, err := m.Rebind(s); err != nil {
		t.Fatal(err)
	}
	n, _, _ := Get[int](s, "n")
	s.Set("n", n+1)
	if err := m.Commit(ctx, s); err != nil {
		t.Fatalf("%s: Commit: %v", m.local, err)
	}
	return s.ID(), n + 1
}

// testRing builds the ring node names[0] sees, with zones[i] for names[i]
// (nil: no zones).
func testRing(names []string, zones []string) *ring {
	ms := make([]membership.Member, len(names))
	for i, n := range names {
		ms[i] = membership.Member{Name: n}
		if zones != nil {
			ms[i].Zone = zones[i]
		}
	}
	return newRing(ms[0], ms[1:], nil)
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestPlacementHolders(t *testing.T) {
	r := testRing([]string{"a", "b", "c", "e"}, nil)
	for _, id := range []string{"AAAAAAAAAAAAAAAAAAAAAAAA.a", "BBBBBBBBBBBBBBBBBBBBBBBB.e", "CCCCCCCCCCCCCCCCCCCCCCCC.c"} {
		owner, backup := r.holders(id)
		if owner != Route(id) {
			t.Errorf("owner(%s) = %s, want its route while that node lives", id, owner)
		}
		if backup == "" || backup == owner || !r.alive(backup) {
			t.Errorf("backup(%s) = %q, owner %s", id, backup, owner)
		}
		// Its route gone, the session's owner is the member that held its backup.
		rest := slices.DeleteFunc(slices.Clone(r.names), func(n string) bool { return n == owner })
		if o2, b2 := testRing(rest, nil).holders(id); o2 != backup || b2 == "" || b2 == o2 {
			t.Errorf("%s after its owner left: owner %s backup %s; want owner %s (the backup)", id, o2, b2, backup)
		}
	}
	// A route that names no member (it left before the view was built).
	id := "DDDDDDDDDDDDDDDDDDDDDDDD.d"
	if owner, backup := r.holders(id); !r.alive(owner) || backup == owner || backup == "" {
		t.Errorf("holders(%s) = %s, %s", id, owner, backup)
	}
	lone := testRing([]string{"a"}, nil)
	for _, id := range []string{"AAAAAAAAAAAAAAAAAAAAAAAA.a", "AAAAAAAAAAAAAAAAAAAAAAAA.b"} {
		if owner, backup := lone.holders(id); owner != "a" || backup != "" {
			t.Errorf("a lone node, %s: holders %q, %q; want a and none", id, owner, backup)
		}
	}
}

// Every node computes the same holders from the same members, whichever of
// them it is.
func TestPlacementSameOnEveryNode(t *testing.T) {
	all := names("n", 7)
	zones := []string{"x", "y", "x", "z", "y", "x", ""}
	var rings []*ring
	for i := range all {
		order := append([]string{all[i]}, slices.Delete(slices.Clone(all), i, i+1)...)
		z := append([]string{zones[i]}, slices.Delete(slices.Clone(zones), i, i+1)...)
		rings = append(rings, testRing(order, z))
	}
	for k := range 2000 {
		id := newID(all[k%len(all)])
		o, b := rings[0].holders(id)
		for i, r := range rings[1:] {
			if o2, b2 := r.holders(id); o2 != o || b2 != b {
				t.Fatalf("%s: node %s says %s/%s, node n0 says %s/%s", id, all[i+1], o2, b2, o, b)
			}
		}
	}
}

// The point of rendezvous placement: an owner's death spreads its sessions
// over every survivor, and a join moves about 1/N of the backups.
func TestPlacementSpread(t *testing.T) {
	const sessions = 30000
	for _, members := range []int{3, 10, 30, 60} {
		t.Run(fmt.Sprint(members), func(t *testing.T) {
			all := names("n", members)
			r := testRing(all, nil)
			ids := make([]string, sessions)
			for i := range ids {
				ids[i] = newID("n0")
			}
			// The owner n0 dies: who takes its sessions over, and who
			// backs them up then.
			after := testRing(all[1:], nil)
			owners, backups := map[string]int{}, map[string]int{}
			for _, id := range ids {
				_, b := r.holders(id)
				o2, b2 := after.holders(id)
				if o2 != b {
					t.Fatalf("%s: new owner %s, but the backup was %s", id, o2, b)
				}
				owners[o2]++
				backups[b2]++
			}
			survivors := members - 1
			mean := float64(sessions) / float64(survivors)
			maxO, maxB := maxOf(owners), maxOf(backups)
			t.Logf("%d members, the owner of %d sessions dies: taken over per survivor max %d, mean %.0f (%.2fx); new backups max %d (%.2fx); survivors used %d/%d",
				members, sessions, maxO, mean, float64(maxO)/mean, maxB, float64(maxB)/mean, len(owners), survivors)
			if len(owners) != survivors {
				t.Errorf("takeover on %d of %d survivors", len(owners), survivors)
			}
			// Binomial: at 60 members (about 500 each) 1.25x is over 5 sigma.
			if float64(maxO) > 1.25*mean || float64(maxB) > 1.25*mean {
				t.Errorf("uneven: at most %d owned, %d backed up per survivor; mean %.0f", maxO, maxB, mean)
			}
			// A member joins: only the sessions it now backs up move.
			joined := testRing(append(slices.Clone(all), "new"), nil)
			moved := 0
			for _, id := range ids {
				o, b := r.holders(id)
				o2, b2 := joined.holders(id)
				if o2 != o {
					t.Fatalf("%s: owner moved from %s to %s on a join", id, o, o2)
				}
				if b2 != b {
					moved++
					if b2 != "new" {
						t.Fatalf("%s: backup moved from %s to %s, not to the new member", id, b, b2)
					}
				}
			}
			frac, want := float64(moved)/sessions, 1/float64(members)
			t.Logf("a join moved %.3f of the backups (1/N = %.3f)", frac, want)
			if frac < 0.7*want || frac > 1.3*want {
				t.Errorf("a join moved %.3f of the backups, want about %.3f", frac, want)
			}
		})
	}
}

func maxOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

func TestPlacementZones(t *testing.T) {
	tests := []struct {
		name  string
		zones []string
		// spread: another zone has a member, so an owner and its backup
		// never share one.
		spread bool
	}{
		{"two zones", []string{"a", "a", "a", "b", "b", "b"}, true},
		{"one member elsewhere", []string{"a", "a", "a", "a", "a", "b"}, true},
		{"one zone", []string{"a", "a", "a", "a"}, false},
		{"no zones", []string{"", "", "", ""}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			all := names("n", len(tc.zones))
			zoneOf := map[string]string{}
			for i, n := range all {
				zoneOf[n] = tc.zones[i]
			}
			r := testRing(all, tc.zones)
			backups := map[string]int{}
			for k := range 3000 {
				id := newID(all[k%len(all)])
				o, b := r.holders(id)
				backups[b]++
				if tc.spread && zoneOf[o] == zoneOf[b] {
					t.Fatalf("%s: owner %s and backup %s both in zone %q", id, o, b, zoneOf[o])
				}
				// The owner gone (its zone remembered): its backup takes
				// over, and the new backup is in another zone than the new
				// owner when one has a member.
				var ms []membership.Member
				for i, n := range all {
					if n != o {
						ms = append(ms, membership.Member{Name: n, Zone: tc.zones[i]})
					}
				}
				o2, b2 := newRing(ms[0], ms[1:], map[string]string{o: zoneOf[o]}).holders(id)
				if o2 != b {
					t.Fatalf("%s: owner %s gone, new owner %s; want its backup %s", id, o, o2, b)
				}
				other := slices.ContainsFunc(ms, func(m membership.Member) bool { return m.Zone != zoneOf[o2] })
				if tc.spread && other && zoneOf[o2] == zoneOf[b2] {
					t.Fatalf("%s: new owner %s and new backup %s both in zone %q", id, o2, b2, zoneOf[o2])
				}
			}
			t.Logf("backups per member: %v", backups)
		})
	}
}

// Sticky: each session lives on its owner and the ring's next node, and
// nowhere else, whatever the cluster size; one message per write.
func TestBackupTwoCopies(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3", "n4", "n5")
	var ids []string
	all := []string{"n1", "n2", "n3", "n4", "n5"}
	for i, m := range c.ms {
		s := createAs(t, m, idBackedUpOn(t, all[i], all, all[(i+1)%5]), map[string]any{"n": 1})
		ids = append(ids, s.ID())
		want := []string{c.nodes[i].Name(), c.nodes[(i+1)%5].Name()}
		slices.Sort(want)
		c.waitFor("two copies", func() bool { return slices.Equal(c.holders(s.ID()), want) })
	}
	// A write costs one message: to the backup.
	sent := func() int {
		n := 0
		for _, to := range c.nodes[1:] {
			n += c.net.count(c.nodes[0], to, typeDelta)
		}
		return n
	}
	before := sent()
	for range 10 {
		increment(t, c.ms[0], ids[0])
	}
	if got := sent() - before; got != 10 {
		t.Errorf("10 writes sent %d deltas, want 10 (one each, to the backup)", got)
	}
	if n := countOf(t, c.ms[1], ids[0]); n != 11 {
		t.Errorf("backup holds n=%d, want 11", n)
	}
}

// Non-sticky: a request on another node loads from the owner and stores
// back; that node keeps no copy.
func TestBackupLoadStore(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3", "n4", "n5")
	s := createAs(t, c.ms[0], idBackedUpOn(t, "n1", []string{"n1", "n2", "n3", "n4", "n5"}, "n2"), map[string]any{"n": 0})
	id := s.ID()
	for i := range 20 {
		m := c.ms[i%5]
		if _, n := increment(t, m, id); n != i+1 {
			t.Fatalf("request %d on %s: n=%d, want %d", i, m.local, n, i+1)
		}
		want := []string{"n1", "n2"}
		if got := c.holders(id); !slices.Equal(got, want) {
			t.Fatalf("after request %d on %s: held by %v, want %v", i, m.local, got, want)
		}
	}
	if n := countOf(t, c.ms[1], id); n != 20 {
		t.Errorf("backup n=%d, want 20", n)
	}
}

// TestBorrowedCopyKeptWhileInUse: two requests of one user served on a
// node that neither owns nor backs up the session share the borrowed copy;
// the first one's end must not drop it under the second, which would then
// find no session (the user got a new, empty one) or write to a copy the
// node no longer holds. The last one drops it.
func TestBorrowedCopyKeptWhileInUse(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3")
	ctx := context.Background()
	s := createAs(t, c.ms[0], idBackedUpOn(t, "n1", []string{"n1", "n2", "n3"}, "n2"), map[string]any{"n": 1})
	id := s.ID()
	m := c.ms[2] // neither owner (n1) nor backup (n2)
	first, err := m.Load(ctx, id)
	if err != nil || first == nil {
		t.Fatalf("Load on n3 = %v, %v", first, err)
	}
	first.RequestStarted()
	second, err := m.Load(ctx, id)
	if err != nil || second != first {
		t.Fatalf("second Load on n3 = %p, %v; want the first's copy %p", second, err, first)
	}
	second.RequestStarted()
	first.ResponseCommitted()
	if err := m.Commit(ctx, first); err != nil { // a read: nothing changed
		t.Fatal(err)
	}
	first.RequestEnded()
	if got := c.holders(id); !slices.Contains(got, "n3") {
		t.Fatalf("held by %v after the first request: the second's copy was dropped", got)
	}
	if err := second.Set("n", 2); err != nil {
		t.Fatal(err)
	}
	second.ResponseCommitted()
	commit(t, m, second)
	second.RequestEnded()
	if got := c.holders(id); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("held by %v after the last request, want [n1 n2]", got)
	}
	if n := countOf(t, c.ms[0], id); n != 2 {
		t.Errorf("owner n=%d, want 2", n)
	}
}

// Owner gone: its backup serves the session (route rewritten on the next
// request) and copies it to a new backup; backup gone: the owner copies to
// the next one.
func TestBackupFailover(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3", "n4")
	// An id backed up on n2, then on n3 once n1 is gone; renamed to n2's
	// route, also backed up on n3.
	rest := testRing([]string{"n2", "n3", "n4"}, nil)
	id := idWhere(t, "n1", func(id string) bool {
		return testRing([]string{"n1", "n2", "n3", "n4"}, nil).backupOf(id) == "n2" &&
			rest.backupOf(id) == "n3" && rest.backupOf(rebindID(id, "n2")) == "n3"
	})
	createAs(t, c.ms[0], id, map[string]any{"n": 5})
	c.waitFor("backup on n2", func() bool { return slices.Equal(c.holders(id), []string{"n1", "n2"}) })

	c.nodes[0].setUp(false) // the owner dies
	// n2 (its backup) now owns it and copies it to n3.
	c.waitFor("copied to n3", func() bool { return slices.Equal(c.holders(id), []string{"n2", "n3"}) })
	// A request naming dead n1 lands on n4: served from n2 and stored back
	// there; n4, neither owner nor backup, does not take the session over:
	// the route is rewritten to its owner now, n2, so a sticky balancer
	// sends the user there.
	newID, n := increment(t, c.ms[3], id)
	if n != 6 || newID != rebindID(id, "n2") {
		t.Fatalf("after failover: id %s n=%d, want %s and 6", newID, n, rebindID(id, "n2"))
	}
	c.waitFor("pair n2+n3", func() bool { return slices.Equal(c.holders(newID), []string{"n2", "n3"}) })
	if got := c.holders(id); len(got) != 0 {
		t.Errorf("the old id is still held by %v", got)
	}

	c.nodes[2].setUp(false) // the backup dies: n2 copies to the next, n4
	c.waitFor("copied to n4", func() bool { return slices.Equal(c.holders(newID), []string{"n2", "n4"}) })
	if n := countOf(t, c.ms[3], newID); n != 6 {
		t.Errorf("n4 holds n=%d, want 6", n)
	}
}

// A node joining takes the backup role where the ring says so: the owner
// copies to it and the old backup drops its copy.
func TestBackupJoinMovesBackups(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n3")
	var ids []string
	for range 5 {
		id := idBackedUpOn(t, "n1", []string{"n1", "n2", "n3"}, "n2")
		ids = append(ids, createAs(t, c.ms[0], id, map[string]any{"n": 1}).ID())
	}
	c.join("n2", backupConfig())
	for _, id := range ids {
		c.waitFor(fmt.Sprintf("%s moved to n2", short(id)), func() bool { return slices.Equal(c.holders(id), []string{"n1", "n2"}) })
	}
}

// A restarted owner recovers what it owned from the node that kept it;
// a session that moved to another owner while it was down stays there.
func TestBackupRestartRecovers(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3")
	var ids []string
	all := testRing([]string{"n1", "n2", "n3"}, nil)
	for range 2 {
		// Backed up on n2; renamed to n2's route (the second is, below),
		// backed up on n3, also once n1 is back.
		id := idWhere(t, "n1", func(id string) bool {
			return all.backupOf(id) == "n2" && all.backupOf(rebindID(id, "n2")) == "n3"
		})
		ids = append(ids, createAs(t, c.ms[0], id, map[string]any{"n": 1}).ID())
	}
	for _, id := range ids {
		c.waitFor("backup", func() bool { return slices.Equal(c.holders(id), []string{"n1", "n2"}) })
	}
	c.nodes[0].setUp(false)
	for _, id := range ids {
		c.waitFor("taken over", func() bool { return slices.Equal(c.holders(id), []string{"n2", "n3"}) })
	}
	moved, n := increment(t, c.ms[2], ids[1]) // used on n3 while n1 is down: now n2's, the owner
	if n != 2 || Route(moved) != "n2" {
		t.Fatalf("moved %s n=%d", moved, n)
	}

	// n1 comes back under the same name (a new manager, empty).
	i := c.join("n1", backupConfig())
	c.ready(c.ms[i])
	if n := countOf(t, c.ms[i], ids[0]); n != 1 {
		t.Fatalf("restarted n1 holds n=%d for its untouched session, want 1", n)
	}
	c.waitFor("untouched session back with n1 and its backup n2", func() bool {
		return slices.Equal(c.holders(ids[0]), []string{"n1", "n2"})
	})
	if got := c.holders(ids[1]); len(got) != 0 {
		t.Errorf("the moved session's old id is held by %v", got)
	}
	if n := countOf(t, c.ms[2], moved); n != 2 {
		t.Errorf("the moved session on n3: n=%d, want 2", n)
	}
}

// A restarted owner with a persist_dir: a session changed while it was down
// comes back in the backup's newer version; one the backup never had comes
// back from disk; nothing is lost.
func TestBackupPersistence(t *testing.T) {
	leakcheck.Check(t)
	dir := t.TempDir()
	cfg1 := backupConfig()
	cfg1.PersistDir = dir
	c := persistCluster(t, cfg1)
	ctx := context.Background()
	mk := func() string {
		id := idBackedUpOn(t, "n1", []string{"n1", "n2", "n3"}, "n2")
		return createAs(t, c.ms[0], id, map[string]any{"n": 1}).ID()
	}
	changed, kept := mk(), mk()
	c.net.dropNext(c.nodes[1], typeDelta, 1) // n2 never gets the next one
	onlyOnDisk := mk()
	c.waitFor("backups", func() bool {
		return slices.Equal(c.holders(changed), []string{"n1", "n2"}) && slices.Equal(c.holders(kept), []string{"n1", "n2"})
	})

	// n1 dies (its manager stops, as the process would; the final flush
	// stands in for the writes its writer made before).
	c.nodes[0].setUp(false)
	if err := c.ms[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Changed while n1 is down, on n2 (which took it over), same id.
	s, err := c.ms[1].Load(ctx, changed)
	if err != nil || s == nil {
		t.Fatalf("n2 Load = %v, %v", s, err)
	}
	s.Set("n", 2)
	if err := c.ms[1].Commit(ctx, s); err != nil {
		t.Fatal(err)
	}

	i := c.join("n1", cfg1)
	c.ready(c.ms[i])
	for _, tc := range []struct {
		id   string
		want int
	}{{changed, 2}, {kept, 1}, {onlyOnDisk, 1}} {
		if n := countOf(t, c.ms[i], tc.id); n != tc.want {
			t.Errorf("restarted n1: %s n=%d, want %d", short(tc.id), n, tc.want)
		}
	}
	// And the pair is whole again: n1 owns, n2 backs up.
	c.waitFor("only-on-disk session copied to n2", func() bool {
		return slices.Equal(c.holders(onlyOnDisk), []string{"n1", "n2"})
	})
}

// persistCluster starts n1 with cfg1 (a persist_dir) and n2, n3 in backup
// mode, all ready.
func persistCluster(t *testing.T, cfg1 Config) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: newFakeNet(t)}
	c.add("n1", cfg1)
	c.add("n2", backupConfig())
	c.add("n3", backupConfig())
	for _, nd := range c.nodes {
		nd.join()
	}
	for i := range c.ms {
		c.start(i)
		c.ready(c.ms[i])
	}
	return c
}

// TestMemberView: the manager's member view and backup mode's ring follow
// the membership events; a failure of a member's earlier run does not
// remove its restart; a member heard from again after a failure is back,
// and noted for a resync.
func TestMemberView(t *testing.T) {
	leakcheck.Check(t)
	cfg := backupConfig()
	cfg.Route = "n1"
	m, err := New(newFakeNet(t).addNode("n1"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	mb := func(name string, id byte) membership.Member {
		return membership.Member{ID: membership.ID{id}, Name: name}
	}
	ring := func() []string { return m.place.(*backupPlacement).ring.Load().names }
	names := func() []string {
		var out []string
		for _, x := range m.members() {
			out = append(out, x.Name)
		}
		return out
	}
	m.spokeWith(mb("n3", 3)) // n3 has exchanged messages with this node; n2 never has
	for _, tc := range []struct {
		e       membership.Event
		members []string
		changed bool
	}{
		{membership.Event{Type: membership.Joined, Member: mb("n3", 3)}, []string{"n3"}, true},
		{membership.Event{Type: membership.Joined, Member: mb("n2", 2)}, []string{"n2", "n3"}, true},
		{membership.Event{Type: membership.Joined, Member: mb("n1", 9)}, []string{"n2", "n3"}, false}, // this node's name
		{membership.Event{Type: membership.Joined, Member: mb("n2", 4)}, []string{"n2", "n3"}, true},  // n2 restarted, heard of first
		{membership.Event{Type: membership.Failed, Member: mb("n2", 2)}, []string{"n2", "n3"}, false}, // its old run failed
		{membership.Event{Type: membership.Failed, Member: mb("n3", 3)}, []string{"n2"}, true},
		{membership.Event{Type: membership.Rejoined, Member: mb("n3", 3)}, []string{"n2", "n3"}, true},
		{membership.Event{Type: membership.Left, Member: mb("n2", 4)}, []string{"n3"}, true},
	} {
		_, changed := m.view.snapshot()
		m.onEvent(tc.e)
		if got := names(); !slices.Equal(got, tc.members) {
			t.Fatalf("after %s %s: members %v, want %v", tc.e.Type, tc.e.Member.Name, got, tc.members)
		}
		if want := append([]string{"n1"}, tc.members...); !slices.Equal(ring(), want) {
			t.Fatalf("after %s %s: ring %v, want %v", tc.e.Type, tc.e.Member.Name, ring(), want)
		}
		select {
		case <-changed:
			if !tc.changed {
				t.Errorf("%s %s: the view says it changed", tc.e.Type, tc.e.Member.Name)
			}
		default:
			if tc.changed {
				t.Errorf("%s %s: the view does not say it changed", tc.e.Type, tc.e.Member.Name)
			}
		}
	}
	m.view.mu.Lock()
	_, noted := m.view.behind["n3"]
	m.view.mu.Unlock()
	if !noted {
		t.Error("the rejoined member is not noted for a resync")
	}
	// A name only ever heard in heartbeats (a forged one) that fails and
	// comes back holds nothing this node lacks: no resync, no reads held up.
	for _, typ := range []membership.EventType{membership.Joined, membership.Failed, membership.Rejoined} {
		m.onEvent(membership.Event{Type: typ, Member: mb("x", 7)})
	}
	m.view.mu.Lock()
	_, noted = m.view.behind["x"]
	m.view.mu.Unlock()
	if noted {
		t.Error("a member that never spoke is noted for a resync")
	}
	m.onEvent(membership.Event{Type: membership.Left, Member: mb("x", 7)})
	if !m.isMember("n3") || m.isMember("n2") {
		t.Error("isMember disagrees with the view")
	}
}

// With a persist_dir, the owner keeps on disk every change of its
// sessions, also one served on another node and stored back to it.
func TestBackupStoreBackPersisted(t *testing.T) {
	leakcheck.Check(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg1 := backupConfig()
	cfg1.PersistDir = dir
	c := persistCluster(t, cfg1)
	s, err := c.ms[0].Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Set("n", 1)
	if err := c.ms[0].Commit(ctx, s); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	// A request on n3, which neither owns nor backs it up: load, change,
	// store back.
	r, err := c.ms[2].Load(ctx, id)
	if err != nil || r == nil {
		t.Fatalf("n3 Load = %v, %v", r, err)
	}
	r.Set("n", 2)
	if err := c.ms[2].Commit(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.ms[0].Stop(ctx); err != nil { // the final flush
		t.Fatal(err)
	}
	cfg := backupConfig()
	cfg.PersistDir, cfg.Route, cfg.JoinWait = dir, "n1", 0
	alone, err := New(newFakeNet(t).addNode("n1"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := alone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer alone.Stop(ctx)
	<-alone.Ready()
	if n := countOf(t, alone, id); n != 2 {
		t.Errorf("read back from n1's disk: n=%d, want 2 (the change stored back from n3)", n)
	}
}

// idBackedUpOn is a new id of route whose backup, among members, is
// backup: tests that need a session on given nodes pick its id, since
// placement spreads sessions by a hash of their ids.
func idBackedUpOn(t testing.TB, route string, members []string, backup string) string {
	t.Helper()
	r := testRing(members, nil)
	return idWhere(t, route, func(id string) bool { return r.backupOf(id) == backup })
}

// idWhere is a new id of route for which ok holds.
func idWhere(t testing.TB, route string, ok func(id string) bool) string {
	t.Helper()
	for range 100000 {
		if id := newID(route); ok(id) {
			return id
		}
	}
	t.Fatalf("no id of %s found", route)
	return ""
}

// createAs is create with the session's id chosen (see idBackedUpOn).
func createAs(t testing.TB, m *Manager, id string, attrs map[string]any) *Session {
	t.Helper()
	s, err := m.Create(bg)
	if err != nil {
		t.Fatalf("Create on %s: %v", m.local, err)
	}
	m.mu.Lock()
	delete(m.sessions, s.id)
	s.id = id
	m.sessions[id] = s
	m.mu.Unlock()
	for k, v := range attrs {
		if err := s.Set(k, v); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	commit(t, m, s)
	return s
}

// PlacementRing is what releases before rendezvous placement did: the
// backup is the next member by name after the owner, for every session.
func TestPlacementRing(t *testing.T) {
	r := testRing([]string{"a", "b", "c", "e"}, nil)
	r.byName = true
	tests := []struct {
		id, owner, backup string
	}{
		{"AAAAAAAAAAAAAAAAAAAAAAAA.a", "a", "b"},
		{"AAAAAAAAAAAAAAAAAAAAAAAA.e", "e", "a"}, // wraps
		{"AAAAAAAAAAAAAAAAAAAAAAAA.d", "e", "a"}, // d is gone: the node after it owns
		{"AAAAAAAAAAAAAAAAAAAAAAAA.z", "a", "b"}, // after the last name: wraps
	}
	for _, tc := range tests {
		if owner, backup := r.holders(tc.id); owner != tc.owner || backup != tc.backup {
			t.Errorf("holders(%s) = %s, %s; want %s, %s", tc.id, owner, backup, tc.owner, tc.backup)
		}
	}
	lone := testRing([]string{"a"}, nil)
	lone.byName = true
	if owner, backup := lone.holders("AAAAAAAAAAAAAAAAAAAAAAAA.a"); owner != "a" || backup != "" {
		t.Errorf("a lone node: %q, %q", owner, backup)
	}
}
