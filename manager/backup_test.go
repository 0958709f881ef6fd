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

func TestRing(t *testing.T) {
	r := ring{names: []string{"a", "b", "c", "e"}}
	tests := []struct {
		id, owner, backupOfOwner string
	}{
		{"AAAAAAAAAAAAAAAAAAAAAAAA.a", "a", "b"},
		{"AAAAAAAAAAAAAAAAAAAAAAAA.e", "e", "a"}, // wraps
		{"AAAAAAAAAAAAAAAAAAAAAAAA.d", "e", "a"}, // d is gone: the node after it owns
		{"AAAAAAAAAAAAAAAAAAAAAAAA.z", "a", "b"}, // after the last name: wraps
	}
	for _, tc := range tests {
		if got := r.owner(tc.id); got != tc.owner {
			t.Errorf("owner(%s) = %s, want %s", tc.id, got, tc.owner)
		}
		if got := r.backup(tc.owner); got != tc.backupOfOwner {
			t.Errorf("backup(%s) = %s, want %s", tc.owner, got, tc.backupOfOwner)
		}
	}
	if got := (ring{names: []string{"a"}}).backup("a"); got != "" {
		t.Errorf("backup of a lone node = %q", got)
	}
}

// Sticky: each session lives on its owner and the ring's next node, and
// nowhere else, whatever the cluster size; one message per write.
func TestBackupTwoCopies(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, backupConfig(), "n1", "n2", "n3", "n4", "n5")
	ctx := context.Background()
	var ids []string
	for i, m := range c.ms {
		s, err := m.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Set("n", 1)
		if err := m.Commit(ctx, s); err != nil {
			t.Fatal(err)
		}
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
	ctx := context.Background()
	s, _ := c.ms[0].Create(ctx)
	s.Set("n", 0)
	c.ms[0].Commit(ctx, s)
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
	s := create(t, c.ms[0], map[string]any{"n": 1})
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
	ctx := context.Background()
	s, _ := c.ms[0].Create(ctx)
	s.Set("n", 5)
	c.ms[0].Commit(ctx, s)
	id := s.ID()
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
	ctx := context.Background()
	var ids []string
	for range 5 {
		s, _ := c.ms[0].Create(ctx)
		s.Set("n", 1)
		c.ms[0].Commit(ctx, s)
		ids = append(ids, s.ID())
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
	ctx := context.Background()
	var ids []string
	for range 2 {
		s, _ := c.ms[0].Create(ctx)
		s.Set("n", 1)
		c.ms[0].Commit(ctx, s)
		ids = append(ids, s.ID())
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
		s, _ := c.ms[0].Create(ctx)
		s.Set("n", 1)
		if err := c.ms[0].Commit(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s.ID()
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
