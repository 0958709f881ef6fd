//go:build linux

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backup-mode scenarios: [cluster.manager] mode = "backup" keeps each
// session on two nodes only, its owner (the node its route names, or the
// next live one on the ring of members sorted by name) and the owner's
// backup (the next node after the owner). The scenarios check where the
// sessions live by asking every node directly (GET /cluster/sessions),
// never through the balancer.

// backupConf is the node configuration of the backup-mode scenarios.
const backupConf = "[cluster.manager]\nmode = \"backup\"\nreplication = \"sync\"\n"

// rebalanceInterval is the manager's default RebalanceInterval: how often
// a backup-mode node checks the ring; a copy that is neither owner nor
// backup is dropped after two of them.
const rebalanceInterval = 250 * time.Millisecond

// nodesN adds node1..nodeN (n < 10, so that the names sort as numbers).
func (c *cluster) nodesN(n int) []*node {
	var nodes []*node
	for i := 1; i <= n; i++ {
		nodes = append(nodes, c.add(fmt.Sprintf("node%d", i), "default"))
	}
	return nodes
}

// startWith starts the nodes with the given [cluster.manager] configuration
// and returns once they list each other and are healthy.
func (c *cluster) startWith(conf string, nodes ...*node) {
	c.t.Helper()
	for _, n := range nodes {
		n.conf = conf
	}
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	for _, n := range nodes {
		n.waitHealthy(c.t, 30*time.Second)
	}
}

// managerStatus is the backup-mode part of /cluster/status.
type managerStatus struct {
	Sessions int `json:"sessions"`
	Manager  struct {
		Mode         string `json:"mode"`
		Sessions     int    `json:"sessions"`
		Sent         uint64 `json:"sent"`
		SendFailures uint64 `json:"send_failures"`
		Applied      uint64 `json:"applied"`
		Gaps         uint64 `json:"gaps"`
		Conflicts    uint64 `json:"conflicts"`
		Repairs      uint64 `json:"repairs"`
		Fetched      uint64 `json:"fetched"`
		Rebinds      uint64 `json:"rebinds"`
		Copied       uint64 `json:"copied"`
		Moved        uint64 `json:"moved"`
	} `json:"manager"`
	Transport struct {
		Peers []struct {
			Address string `json:"address"`
			Sent    uint64 `json:"sent"`
		} `json:"peers"`
	} `json:"transport"`
}

func (n *node) managerStatus(ctx context.Context) (managerStatus, error) {
	var s managerStatus
	code, body, err := n.get(ctx, "/cluster/status", "")
	if err != nil {
		return s, err
	}
	if code != http.StatusOK {
		return s, fmt.Errorf("%s: /cluster/status: %d", n.name, code)
	}
	return s, json.Unmarshal([]byte(body), &s)
}

// checkMode fails the test unless every node runs the manager in mode.
func checkMode(t *testing.T, nodes []*node, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		st, err := n.managerStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Manager.Mode != mode {
			t.Fatalf("%s: manager mode %q, want %q", n.name, st.Manager.Mode, mode)
		}
	}
}

// logManagers logs the manager counters of the nodes.
func logManagers(t *testing.T, nodes []*node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		st, err := n.managerStatus(ctx)
		if err != nil {
			t.Logf("%s: %v", n.name, err)
			continue
		}
		t.Logf("%s: %d sessions, %+v", n.name, st.Sessions, st.Manager)
	}
}

// held is one session as a node lists it in /cluster/sessions.
type held struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
}

func (n *node) heldSessions(ctx context.Context) ([]held, error) {
	code, body, err := n.get(ctx, "/cluster/sessions", "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s: /cluster/sessions: %d", n.name, code)
	}
	var out []held
	return out, json.Unmarshal([]byte(body), &out)
}

// holdings is where the sessions are: id -> node name -> version.
type holdings map[string]map[string]uint64

// holders returns the names of the nodes holding id, sorted.
func (h holdings) holders(id string) []string {
	var names []string
	for name := range h[id] {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// copies is the number of (session, node) pairs.
func (h holdings) copies() int {
	n := 0
	for _, on := range h {
		n += len(on)
	}
	return n
}

func holdingsOf(ctx context.Context, nodes []*node) (holdings, error) {
	h := holdings{}
	for _, n := range nodes {
		ss, err := n.heldSessions(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if h[s.ID] == nil {
				h[s.ID] = map[string]uint64{}
			}
			h[s.ID][n.name] = s.Version
		}
	}
	return h, nil
}

// ringPair is the owner of session id and the owner's backup on the ring
// of the live node names, as backup mode defines them: the owner is the
// node the route names if it is live, else the first live name after it
// (wrapping); the backup is the live name after the owner.
func ringPair(id string, live []string) (owner, backup string) {
	names := slices.Sorted(slices.Values(live))
	next := func(name string) string {
		i, found := slices.BinarySearch(names, name)
		if found {
			i++
		}
		return names[i%len(names)]
	}
	owner = routeOf(id)
	if !slices.Contains(names, owner) {
		owner = next(owner)
	}
	if backup = next(owner); backup == owner {
		backup = ""
	}
	return owner, backup
}

func names(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.name
	}
	return out
}

// pairProblems lists the sessions of ids that are not held by exactly
// their owner and its backup among the live nodes (empty: all are).
func pairProblems(h holdings, ids []string, live []string) []string {
	var bad []string
	for _, id := range ids {
		owner, backup := ringPair(id, live)
		want := []string{owner, backup}
		slices.Sort(want)
		if got := h.holders(id); !slices.Equal(got, want) {
			bad = append(bad, fmt.Sprintf("%s held by %v, want %v (owner %s, backup %s)", id, got, want, owner, backup))
		}
	}
	return bad
}

// strays is the sessions held somewhere that are none of ids: copies kept
// under an id no user has any more.
func strays(h holdings, ids []string) map[string][]string {
	out := map[string][]string{}
	for id := range h {
		if !slices.Contains(ids, id) {
			out[id] = h.holders(id)
		}
	}
	return out
}

// waitPairs polls until pairProblems(ids(), live) is empty and returns how
// long that took; ok is false if timeout passed first, last then says why.
func waitPairs(nodes []*node, ids func() []string, timeout time.Duration) (took time.Duration, ok bool, last []string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	live := names(nodes)
	for {
		h, err := holdingsOf(ctx, nodes)
		if err == nil {
			if last = pairProblems(h, ids(), live); len(last) == 0 {
				return time.Since(start), true, nil
			}
		} else {
			last = []string{err.Error()}
		}
		select {
		case <-ctx.Done():
			return time.Since(start), false, last
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func reportProblems(t *testing.T, what string, bad []string) {
	t.Helper()
	for i, b := range bad {
		if i == 10 {
			t.Errorf("%s: %d sessions in all", what, len(bad))
			break
		}
		t.Errorf("%s: %s", what, b)
	}
}

func cookiesOf(users []*user) []string {
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.cookie()
	}
	return ids
}

// deltasSent sums flock_messages_sent_total{type="delta"} over the nodes'
// /metrics: delta messages queued for members, one per member a change
// goes to.
func deltasSent(ctx context.Context, nodes []*node) (float64, error) {
	const series = `flock_messages_sent_total{type="delta"}`
	total := 0.0
	for _, n := range nodes {
		code, body, err := n.get(ctx, "/metrics", "")
		if err != nil {
			return 0, err
		}
		if code != http.StatusOK {
			return 0, fmt.Errorf("%s: /metrics: %d", n.name, code)
		}
		sc := bufio.NewScanner(strings.NewReader(body))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
				v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %q: %w", n.name, sc.Text(), err)
				}
				total += v
			}
		}
	}
	return total, nil
}

// transportSent sums the transport's per-peer sent counters (messages of
// every type) over the nodes.
func transportSent(ctx context.Context, nodes []*node) (uint64, error) {
	var total uint64
	for _, n := range nodes {
		st, err := n.managerStatus(ctx)
		if err != nil {
			return 0, err
		}
		for _, p := range st.Transport.Peers {
			total += p.Sent
		}
	}
	return total, nil
}

// countUp runs users concurrently, each sending requests GET /counter
// through its balancer and expecting the answers 1..requests; it returns
// the first deviation of each user ("" if none).
func countUp(ctx context.Context, users []*user, from, requests int) []string {
	bad := make([]string, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := from; j <= requests; j++ {
				rp, err := u.get(ctx, "/counter")
				if err != nil {
					bad[i] = fmt.Sprintf("request %d: %v", j, err)
					return
				}
				if rp.value != j {
					bad[i] = fmt.Sprintf("request %d answered %d (from %s, retry %q)", j, rp.value, rp.backend, rp.retry)
					return
				}
			}
		}()
	}
	wg.Wait()
	return bad
}

// Scenario 1: five nodes in backup mode behind a sticky balancer. After 20
// users made 10 increments each, every session is held by exactly two
// nodes: the one its route names (where the user sticks) and the next one
// by name on the ring (node5's next is node1); no node holds anything else.
func TestBackupStickyTwoCopies(t *testing.T) {
	c := newCluster(t)
	nodes := c.nodesN(5)
	c.startWith(backupConf, nodes...)
	checkMode(t, nodes, "backup")
	lb := newBalancer(t, stickyRoute, nodes...)

	const clients, requests = 20, 10
	ctx, cancel := context.WithTimeout(context.Background(), scale(2*time.Minute))
	defer cancel()
	users := make([]*user, clients)
	for i := range users {
		users[i] = lb.newUser()
		defer users[i].close()
	}
	start := time.Now()
	for i, b := range countUp(ctx, users, 1, requests) {
		if b != "" {
			t.Errorf("user %d: %s", i, b)
		}
	}
	figures.add(t, fmt.Sprintf("backup, sticky, 5 nodes: %d users x %d increments", clients, requests), time.Since(start), scale(time.Minute))
	if t.Failed() {
		t.FailNow()
	}

	ids := cookiesOf(users)
	routes := map[string]int{}
	for _, id := range ids {
		routes[routeOf(id)]++
	}
	t.Logf("sessions per route: %v", routes)
	// Asked at once: a sync commit has reached the backup before the
	// response, so there is nothing to wait for.
	h, err := holdingsOf(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	live := names(nodes)
	for i, id := range ids {
		route := routeOf(id)
		next := nodes[(slices.Index(live, route)+1)%len(nodes)].name
		want := []string{route, next}
		slices.Sort(want)
		if got := h.holders(id); !slices.Equal(got, want) {
			t.Errorf("user %d: session %s held by %v, want %v (its route and the next node)", i, id, got, want)
			continue
		}
		for name, v := range h[id] {
			if v != requests {
				t.Errorf("user %d: %s holds version %d, want %d", i, name, v, requests)
			}
		}
	}
	if s := strays(h, ids); len(s) > 0 {
		t.Errorf("sessions no user has: %v", s)
	}
	if got := h.copies(); got != 2*clients {
		t.Errorf("%d copies in all, want %d", got, 2*clients)
	}
	// And it stays so: the rebalance finds nothing to move.
	time.Sleep(4 * rebalanceInterval)
	h2, err := holdingsOf(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	reportProblems(t, "after a few rebalance rounds", pairProblems(h2, ids, live))
	if got := h2.copies(); got != 2*clients {
		t.Errorf("after a few rebalance rounds: %d copies in all, want %d", got, 2*clients)
	}
	logManagers(t, nodes)
}

// Scenario 2: dumb round-robin over five nodes in backup mode: three
// requests in five land on a node that is neither owner nor backup of the
// user's session, which loads it from the owner and stores the change back
// (to the owner and its backup), keeping no copy. Each
// user still counts exactly 1..100, every node answers a peek with 100,
// and every session lives on exactly two nodes.
func TestBackupRoundRobin(t *testing.T) {
	c := newCluster(t)
	nodes := c.nodesN(5)
	c.startWith(backupConf, nodes...)
	checkMode(t, nodes, "backup")
	lb := newBalancer(t, roundRobin, nodes...)

	const clients, requests = 30, 100
	ctx, cancel := context.WithTimeout(context.Background(), scale(5*time.Minute))
	defer cancel()
	users := make([]*user, clients)
	for i := range users {
		users[i] = lb.newUser()
		defer users[i].close()
	}
	before, err := deltasSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	bad := countUp(ctx, users, 1, requests)
	took := time.Since(start)
	for i, b := range bad {
		if b != "" {
			t.Errorf("user %d: %s", i, b)
		}
	}
	if t.Failed() {
		logManagers(t, nodes)
		t.FailNow()
	}
	figures.add(t, fmt.Sprintf("backup, round-robin, 5 nodes: %d users x %d increments", clients, requests), took, scale(2*time.Minute))
	figures.addValue(t, "backup, round-robin, 5 nodes: throughput through the balancer",
		fmt.Sprintf("%.0f req/s", float64(clients*requests)/took.Seconds()), "report only")
	// A write on the owner or its backup sends one delta (to the other of
	// the two); on any other node two (the store-back to both): 1.6 per
	// write on average over five nodes. The first commit of each session
	// is a whole session to the backup.
	after, err := deltasSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	perWrite := (after - before) / float64(clients*requests)
	figures.addValue(t, "messages per write, backup, round-robin, 5 nodes", fmt.Sprintf("%.3f", perWrite), "report only (1.6 expected, at most 2)")
	if perWrite > 2 {
		t.Errorf("%.3f delta messages per write, want at most 2 (to the owner and its backup)", perWrite)
	}

	ids := cookiesOf(users)
	live := names(nodes)
	// Before any read: the nodes that served a request for another
	// owner dropped their copy when they stored the change back.
	h, err := holdingsOf(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	reportProblems(t, "after the increments", pairProblems(h, ids, live))
	if s := strays(h, ids); len(s) > 0 {
		t.Errorf("sessions no user has: %v", s)
	}
	for _, id := range ids {
		for name, v := range h[id] {
			if v != requests {
				t.Errorf("session %s: %s holds version %d, want %d", id, name, v, requests)
			}
		}
	}

	// A peek on a node that is neither owner nor backup loads the session
	// from the owner.
	for i, id := range ids {
		for _, n := range nodes {
			got, err := n.peek(ctx, id)
			if err != nil || got != requests {
				t.Errorf("user %d: %s peeks %d (err %v), want %d", i, n.name, got, err, requests)
			}
		}
	}
	// A read commits nothing, so the copy it loaded stays until the
	// rebalance finds it is neither owner nor backup there (after two
	// rounds); then the pairs are as before.
	if h, err = holdingsOf(ctx, nodes); err == nil {
		t.Logf("right after the peeks: %d copies of %d sessions", h.copies(), len(ids))
	}
	bound := scale(4*rebalanceInterval + 2*time.Second)
	settled, ok, last := waitPairs(nodes, func() []string { return ids }, bound)
	figures.add(t, "backup, round-robin: copies loaded by reads dropped after", settled, bound)
	if !ok {
		reportProblems(t, fmt.Sprintf("%v after the peeks", bound), last)
	}
	if h, err = holdingsOf(ctx, nodes); err != nil {
		t.Fatal(err)
	}
	if got := h.copies(); got != 2*clients {
		t.Errorf("%d copies in all at the end, want %d (strays: %v)", got, 2*clients, strays(h, ids))
	}
	logManagers(t, nodes)
}

// Scenario 3: five nodes in backup mode behind a sticky balancer; the node
// most users stick to is killed with SIGKILL while ten users increment.
// Every acknowledged increment survives (counts go up by one, but for the
// balancer's at-least-once retry of a request the dead node may have
// applied), and every session is again on exactly two live nodes, its
// owner and backup on the ring of the survivors.
func TestBackupOwnerKilled(t *testing.T) {
	c := newCluster(t)
	nodes := c.nodesN(5)
	c.startWith(backupConf, nodes...)
	checkMode(t, nodes, "backup")
	lb := newBalancer(t, stickyRoute, nodes...)

	users, stop := steppers(lb, 10, 10*time.Millisecond)
	defer stop()
	waitReplies(t, users, nil, 20, scale(time.Minute))

	routes := map[string]int{}
	for _, s := range users {
		routes[routeOf(s.u.cookie())]++
	}
	var victim *node
	for _, n := range nodes {
		if victim == nil || routes[n.name] > routes[victim.name] {
			victim = n
		}
	}
	var affected []*stepper
	for _, s := range users {
		if routeOf(s.u.cookie()) == victim.name {
			affected = append(affected, s)
		}
	}
	survivors := without(nodes, victim)
	t.Logf("users per route: %v; killing %s (%d users; its backup %s takes them over)",
		routes, victim.name, len(affected), nodes[(slices.Index(nodes, victim)+1)%len(nodes)].name)

	userIDs := func() []string {
		ids := make([]string, len(users))
		for i, s := range users {
			ids[i] = s.u.cookie()
		}
		return ids
	}
	killing := time.Now()
	if err := victim.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	// Under load: the users keep counting while the survivors detect the
	// death, take the sessions over and copy them to new backups.
	bound := scale(dropTime + probeTimeout + 2*frequency + 10*time.Second)
	_, ok, last := waitPairs(survivors, userIDs, scale(time.Minute))
	whole := time.Since(killing)
	if !ok {
		reportProblems(t, fmt.Sprintf("%v after the kill, under load", time.Since(killing).Round(time.Millisecond)), last)
	}
	figures.add(t, "backup, owner killed: every session on two live nodes again, after kill -9", whole, bound)
	if whole > bound {
		t.Errorf("sessions on two live nodes %v after the kill, want within %v", whole, bound)
	}
	c.waitViews(30*time.Second, survivors, c.others(victim))
	// Keep counting past the drop time, so every consequence of the death
	// is in, and a while on the new routes.
	if d := dropTime + 2*frequency - time.Since(killing); d > 0 {
		time.Sleep(d)
	}
	waitReplies(t, users, counts(users), 20, scale(time.Minute))
	stop()

	gap, where := checkSteps(t, users, true)
	figures.add(t, "backup, owner killed: longest gap a user saw", gap, bound)
	t.Logf("longest gap: %v, %s", gap, where)
	if gap > bound {
		t.Errorf("a user waited %v between two answers (%s), want within %v", gap, where, bound)
	}
	for _, s := range affected {
		if r := routeOf(s.u.cookie()); r == victim.name {
			t.Errorf("%s: cookie still routes to the dead %s", s.name, victim.name)
		}
	}

	// At rest: exactly two live copies per session, the last count on both.
	ids := userIDs()
	settled, ok, last := waitPairs(survivors, func() []string { return ids }, scale(10*time.Second))
	if !ok {
		reportProblems(t, "at rest", last)
	}
	t.Logf("at rest: pairs held %v after the users stopped", settled.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := holdingsOf(ctx, survivors)
	if err != nil {
		t.Fatal(err)
	}
	// Both copies of a session at the same version.
	for i, id := range ids {
		var versions []uint64
		for _, v := range h[id] {
			versions = append(versions, v)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(versions)))) > 1 {
			t.Errorf("%s: session %s at different versions: %v", users[i].name, id, h[id])
		}
	}
	st := strays(h, ids)
	figures.addValue(t, "backup, owner killed: sessions still held under ids no user has", fmt.Sprint(len(st)), "0")
	if len(st) > 0 {
		t.Errorf("%d sessions are held under ids no user has any more (garbage until they expire): %v", len(st), st)
	}
	// Peeks last: a read on a node that is neither owner nor backup
	// leaves a copy there for a rebalance round or two.
	checkPeeks(t, users, survivors)
	logManagers(t, survivors)
}

// costRow is one measurement of scenario 4.
type costRow struct {
	mode    string
	nodes   int
	writes  int
	deltas  float64
	all     uint64
	perSent float64
}

// Scenario 4: what a write costs on the network. With 2, 3 and 5 nodes in
// backup mode and in delta mode, 200 sticky increments on existing
// sessions: the delta messages the nodes sent per write are 1 in backup
// mode at every size (to the backup), N-1 in delta mode (to every other
// node).
func TestBackupNetworkCost(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	var rows []costRow
	for _, mode := range []string{"backup", "delta"} {
		for _, size := range []int{2, 3, 5} {
			t.Run(fmt.Sprintf("%s/%d", mode, size), func(t *testing.T) {
				row := measureCost(t, mode, size)
				rows = append(rows, row)
			})
		}
	}
	var b strings.Builder
	b.WriteString("\n| mode | nodes | writes | delta messages | per write | expected | all transport messages per write |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		want := 1
		if r.mode == "delta" {
			want = r.nodes - 1
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.3f | %d | %.3f |\n", r.mode, r.nodes, r.writes, r.deltas, r.deltas/float64(r.writes), want, float64(r.all)/float64(r.writes))
	}
	t.Log(b.String())
}

func measureCost(t *testing.T, mode string, size int) costRow {
	const clients, per = 10, 20 // 200 writes
	conf := backupConf
	if mode == "delta" {
		conf = replicationConf // mode = "delta" is the default
	}
	c := newCluster(t)
	nodes := c.nodesN(size)
	c.startWith(conf, nodes...)
	checkMode(t, nodes, mode)
	lb := newBalancer(t, stickyRoute, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), scale(2*time.Minute))
	defer cancel()
	users := make([]*user, clients)
	for i := range users {
		users[i] = lb.newUser()
		defer users[i].close()
	}
	// The sessions exist before the measurement: their creation (a whole
	// session) is not a write of an existing one.
	for i, b := range countUp(ctx, users, 1, 1) {
		if b != "" {
			t.Fatalf("user %d: %s", i, b)
		}
	}
	if mode == "backup" {
		// Let a rebalance round pass, so that whatever it would send is
		// sent before the measurement.
		time.Sleep(2 * rebalanceInterval)
	}
	before, err := deltasSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	allBefore, err := transportSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range countUp(ctx, users, 2, 1+per) {
		if b != "" {
			t.Errorf("user %d: %s", i, b)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	after, err := deltasSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	allAfter, err := transportSent(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	writes := clients * per
	row := costRow{mode: mode, nodes: size, writes: writes, deltas: after - before, all: allAfter - allBefore}
	perWrite := row.deltas / float64(writes)
	t.Logf("%s, %d nodes: %d writes sent %.0f delta messages (%.3f per write); %d transport messages of every type (%.3f per write)",
		mode, size, writes, row.deltas, perWrite, row.all, float64(row.all)/float64(writes))
	switch mode {
	case "backup":
		figures.addValue(t, fmt.Sprintf("messages per write, backup, %d nodes", size), fmt.Sprintf("%.3f", perWrite), "1 (< 1.05)")
		if perWrite < 1 || perWrite >= 1.05 {
			t.Errorf("backup mode, %d nodes: %.3f delta messages per write, want 1 (at most 1.05)", size, perWrite)
		}
	case "delta":
		want := float64(size - 1)
		figures.addValue(t, fmt.Sprintf("messages per write, delta, %d nodes", size), fmt.Sprintf("%.3f", perWrite), fmt.Sprintf("%d (±5%%)", size-1))
		if perWrite < 0.95*want || perWrite > 1.05*want {
			t.Errorf("delta mode, %d nodes: %.3f delta messages per write, want %d within 5%%", size, perWrite, size-1)
		}
	}
	return row
}
