//go:build linux

package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// Scenario (issue 12): a host on the cluster's bridge sends what no member
// would, to take a node's stack, memory, file descriptors or time rather
// than its sessions, against three nodes with the shipped defaults and no
// cluster key (insecure = true: anyone can say hello, the worst case).
// Each attack was demonstrated against flockd before the fixes:
//
//  1. deep nesting: a change with a field nested millions of arrays deep
//     (was: fatal stack overflow, the node dead);
//  2. huge declared counts: map32(0xffffffff) in eight bytes, 800 times
//     (was: RSS 1.08 GB);
//  3. big frames before the hello: 64 connections declaring 16 MiB each
//     (was: RSS 2.2 GB);
//  4. idle connections: thousands that never say hello, against a node
//     whose file limit is 2048 (was: out of descriptors, the HTTP
//     listener stopped accepting);
//  5. claimed reply addresses: 300 hellos, each another id and address,
//     each with a change that makes the node fetch from its sender (was:
//     301 sender peers, never forgotten);
//  6. cookie flood: one request with 2,000 session cookies of another
//     node's sessions, backup mode (was: 2,201 fetches);
//  7. admin exposure: status, sessions and metrics on the application's
//     port, and full session ids in them;
//  8. heartbeat flood: thousands of member names on the multicast group
//     (was: 3,300 members, writes of 1-1.5 s, events dropped).
//
// For each: every node stays up (process alive, /livez and /healthz 200),
// its RSS (VmRSS, sampled every 100 ms) stays under a bound, users counting
// on every node meanwhile are all served with a bounded p99 (and new
// connections to the application's port are accepted), and the attack
// shows in /metrics or /cluster/status. The figures are printed.
//
// FLOCK_HOSTILE_FULL=1 runs the full sizes (19,000 idle
// connections, 10 million levels, a 25 s heartbeat flood that fills the
// member table); the default is a shorter run that fits CI under -race.
func TestHostile(t *testing.T) {
	scenario(t, load, 90*time.Second)
	sz := hostileSizes(os.Getenv("FLOCK_HOSTILE_FULL") == "1")
	t.Logf("hostile sizes (%s): %+v", sz.label, sz)
	t.Run("defaults", func(t *testing.T) { hostileDefaults(t, sz) })
	t.Run("backup", func(t *testing.T) { hostileBackup(t, sz) })
}

// insecureConf: the shipped defaults, without a key.
const insecureConf = "[cluster.security]\ninsecure = true\n"

// fileLimit is the RLIMIT_NOFILE the defaults cluster's nodes run under
// (prlimit): flockd splits it, a quarter for the cluster port (at most
// 1024), half for HTTP.
const fileLimit = 2048

type sizes struct {
	label        string
	depth        int // levels of the deep-nesting change
	nested       int // deep-nesting messages
	counts       int // huge-count messages
	bigConns     int
	bigSize      int
	helloConns   int // big frames after a hello
	idle         int // idle connections
	sources      int // the attacker's addresses
	claims       int
	floodNames   int
	floodFor     time.Duration
	cookies      int
	cookiesFit   int // cookies of a request under the 64 KiB header limit
	rssBound     int64
	p99Bound     time.Duration
	worstBound   time.Duration
	helloTimeout time.Duration // receiver.DefaultConfig().HelloTimeout
}

func hostileSizes(full bool) sizes {
	s := sizes{
		label: "short (FLOCK_HOSTILE_FULL=1 for the issue's sizes)",
		depth: 2_000_000, nested: 3, counts: 800, bigConns: 64, bigSize: 16 << 20, helloConns: 16,
		idle: 5000, sources: 32, claims: 300, floodNames: 2000, floodFor: 5 * time.Second,
		cookies: 2000, cookiesFit: 1200,
		rssBound: 256 << 20, p99Bound: time.Second, worstBound: 3 * time.Second,
		helloTimeout: 2 * time.Second,
	}
	if full {
		s.label = "full"
		s.depth, s.nested = 10_000_000, 5
		s.idle, s.helloConns = 19000, 64
		s.floodNames, s.floodFor = 5000, 25*time.Second
	}
	// Measured (2 cores, other tests running): peak RSS at most 40 MiB
	// (89 MiB in the full run, whose frames are 10 MB), 270 MiB under
	// -race, where it grows over the run; user p99 mostly below 150 ms,
	// up to 1 s (3 s under -race) when the machine is busy.
	if raceEnabled {
		// The race detector's shadow memory doubles and more what the
		// same heap costs.
		s.rssBound = 512 << 20
		s.p99Bound, s.worstBound = scale(s.p99Bound), scale(s.worstBound)
	}
	return s
}

// hostileDefaults runs attacks 1-5, 7 and 8 on nodes of the shipped
// defaults without a key, each under a file limit of 2048.
func hostileDefaults(t *testing.T, sz sizes) {
	c := newCluster(t)
	nodes := c.three()
	limited := true
	if _, err := exec.LookPath("prlimit"); err != nil {
		limited = false
		t.Logf("prlimit (util-linux) not found: the nodes run with this machine's file limit, and the idle-connection attack is skipped")
	}
	for _, n := range nodes {
		n.conf = insecureConf
		if limited {
			n.wrap = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", fileLimit, fileLimit)}
		}
		c.start(n)
	}
	c.waitViews(30*time.Second, nodes, c.others())
	for _, n := range nodes {
		n.waitHealthy(t, 30*time.Second)
	}
	if limited {
		for _, n := range nodes {
			if !strings.Contains(n.proc.Output(), fmt.Sprintf("limit %d: cluster %d", fileLimit, fileLimit/4)) {
				t.Fatalf("%s does not run under the file limit %d:\n%s", n.name, fileLimit, n.proc.Output())
			}
		}
	}
	h := newHostile(t, c, nodes, sz)
	target := nodes[0]
	recv := target.host.IP.String() + ":4000"
	ctx := h.ctx

	// 1. Deep nesting.
	h.attack("deep nesting", func() string {
		before := h.receiverOf(target)
		r := h.run("deep-nesting", "--target", recv, "--depth", strconv.Itoa(sz.depth), "--n", strconv.Itoa(sz.nested))
		after := h.receiverOf(target)
		d := detailCounts(r)
		// Refused for its nesting where a body is checked before it is
		// decoded, or, for a delta, by the parser at the first byte that
		// is not a delta's (it never descends into what it does not know).
		if d["failed"] != int64(sz.nested) || !strings.Contains(r.Detail, "nesting deeper") && !strings.Contains(r.Detail, "msgpack: delta:") {
			t.Errorf("deep nesting: want %d changes refused, got %v", sz.nested, r)
		}
		h.grew("received deltas", after.recvDelta-before.recvDelta, sz.nested)
		h.grew("handler errors", int64(after.Transport.Receiver.HandlerErrors-before.Transport.Receiver.HandlerErrors), sz.nested)
		return fmt.Sprintf("%d levels x %d: %s; received deltas +%d, handler errors +%d", sz.depth, sz.nested, r.Detail,
			after.recvDelta-before.recvDelta, after.Transport.Receiver.HandlerErrors-before.Transport.Receiver.HandlerErrors)
	})

	// 2. Huge declared counts.
	h.attack("huge declared counts", func() string {
		before := h.receiverOf(target)
		r := h.run("huge-counts", "--target", recv, "--n", strconv.Itoa(sz.counts))
		after := h.receiverOf(target)
		if d := detailCounts(r); d["failed"] != int64(sz.counts) {
			t.Errorf("huge counts: want %d changes refused, got %v", sz.counts, r)
		}
		h.grew("received deltas", after.recvDelta-before.recvDelta, sz.counts)
		h.grew("handler errors", int64(after.Transport.Receiver.HandlerErrors-before.Transport.Receiver.HandlerErrors), sz.counts)
		return fmt.Sprintf("%d x map32(0xffffffff): %s; received deltas +%d", sz.counts, r.Detail, after.recvDelta-before.recvDelta)
	})

	// 3. Big frames before the hello.
	h.attack("big frames before hello", func() string {
		before := refusedMetrics(ctx, t, target)
		r := h.run("big-frames", "--target", recv, "--conns", strconv.Itoa(sz.bigConns), "--size", strconv.Itoa(sz.bigSize))
		after := refusedMetrics(ctx, t, target)
		d := detailCounts(r)
		refused := after["receiver/malformed"] + after["receiver/limit"] - before["receiver/malformed"] - before["receiver/limit"]
		h.grew("refused connections (malformed, limit)", int64(refused), sz.bigConns-int(d["failed"]))
		if d["whole"] > 0 {
			t.Errorf("big frames: the node read %d frames of %d bytes before a hello: %v", d["whole"], sz.bigSize, r)
		}
		return fmt.Sprintf("%d conns x %d MiB: %s; refused malformed +%v, limit +%v", sz.bigConns, sz.bigSize>>20, r.Detail,
			after["receiver/malformed"]-before["receiver/malformed"], after["receiver/limit"]-before["receiver/limit"])
	})

	// The attacker's host takes more addresses, so that the node's
	// budget in all, not only the one per address, is what holds.
	var from []string
	for i := range sz.sources {
		ip := fmt.Sprintf("198.51.100.%d", 100+i)
		if _, err := h.atk.Exec(ctx, "ip", "addr", "add", ip+"/32", "dev", lab.HostIface); err != nil {
			t.Fatal(err)
		}
		from = append(from, ip)
	}

	// 4. Idle connections: the node's budget for the cluster port is a
	// quarter of its files.
	if limited {
		h.attack("idle connections", func() string {
			before := refusedMetrics(ctx, t, target)
			hold := sz.helloTimeout + 3*time.Second
			r := h.run("idle-conns", "--target", recv, "--n", strconv.Itoa(sz.idle), "--from", strings.Join(from, ","), "--for", hold.String())
			after := refusedMetrics(ctx, t, target)
			d := detailCounts(r)
			if d["opened"] < int64(sz.idle)/2 {
				t.Errorf("idle connections: only %d of %d opened: %v", d["opened"], sz.idle, r)
			}
			if d["open_at_end"] > 0 {
				t.Errorf("idle connections: %d still open %v after they were opened, past the hello timeout %v: %v", d["open_at_end"], hold, sz.helloTimeout, r)
			}
			// Held as the attacker sees it: from its connect to the node's
			// close, which includes the wait in the node's accept queue
			// while thousands arrive at once (the hello timeout runs from
			// the accept).
			if held, bound := time.Duration(d["max_held_ms"])*time.Millisecond, sz.helloTimeout+scale(2*time.Second); held > bound {
				t.Errorf("idle connections: one was held %v without a hello, want at most %v", held, bound)
			}
			limit := after["receiver/limit"] - before["receiver/limit"]
			h.grew("refused connections (limit)", int64(limit), int(d["opened"]))
			return fmt.Sprintf("%d conns from %d addresses, fd limit %d: %s; refused limit +%v", sz.idle, len(from), fileLimit, r.Detail, limit)
		})
	}

	// 5. Claimed reply addresses.
	h.attack("claimed reply addresses", func() string {
		before := h.receiverOf(target)
		const repairFailed = `msg="repair failed"`
		logged := strings.Count(target.proc.Output(), repairFailed)
		peers := h.watchPeers(target)
		r := h.run("claim-addrs", "--target", recv, "--n", strconv.Itoa(sz.claims), "--conns", "100", "--from", strings.Join(from, ","))
		time.Sleep(time.Second) // the repairs the changes scheduled
		maxPeers := peers()
		after := h.receiverOf(target)
		d := detailCounts(r)
		if d["applied"] < int64(sz.claims) {
			t.Errorf("claims: want the %d changes taken (a node without a key applies a member's change), got %v", sz.claims, r)
		}
		h.grew("gaps", int64(after.Manager.Gaps-before.Manager.Gaps), sz.claims)
		h.grew("fetches refused to non-members", int64(after.Manager.NotMember-before.Manager.NotMember), sz.claims)
		if members := len(nodes) - 1; maxPeers > members || len(after.Transport.Peers) > members {
			t.Errorf("claims: %s has %d sender peers (at most %d during the attack) for %d members: %v",
				target.name, len(after.Transport.Peers), maxPeers, members, after.Transport.Peers)
		}
		fetchSent := after.sentFetch - before.sentFetch
		if fetchSent > 0 {
			t.Errorf("claims: %s queued %d fetches, to claimed addresses", target.name, fetchSent)
		}
		if open := after.Transport.Receiver.Open; open > before.Transport.Receiver.Open+2 {
			t.Errorf("claims: %s holds %d receiver connections after the attack, %d before", target.name, open, before.Transport.Receiver.Open)
		}
		// Reported, not asserted: each refused repair is a warning of its
		// own (not rate-limited as refusals are).
		logged = strings.Count(target.proc.Output(), repairFailed) - logged
		return fmt.Sprintf("%d claims: %s; peers %d (max %d during), gaps +%d, not_member +%d, fetches sent +%d, receiver open %d -> %d, %q warnings logged +%d",
			sz.claims, r.Detail, len(after.Transport.Peers), maxPeers, after.Manager.Gaps-before.Manager.Gaps,
			after.Manager.NotMember-before.Manager.NotMember, fetchSent, before.Transport.Receiver.Open, after.Transport.Receiver.Open, "repair failed", logged)
	})

	// 7. Admin exposure.
	h.attack("admin exposure", func() string { return h.adminExposure() })

	// 8. Heartbeat flood.
	h.attack("heartbeat flood", func() string {
		before := map[string]map[string]float64{}
		for _, n := range nodes {
			before[n.name] = refusedMetrics(ctx, t, n)
		}
		stopWatch := h.watchMembers()
		start := time.Now()
		r := h.run("heartbeat-flood", "--group", "228.0.0.4:45564", "--iface", h.atk.IP.String(),
			"--names", strconv.Itoa(sz.floodNames), "--addr-ip", h.atk.IP.String(), "--for", sz.floodFor.String())
		took := time.Since(start)
		most := stopWatch()
		refused := 0.0
		for _, n := range nodes {
			refused += refusedMetrics(ctx, t, n)["membership/limit"] - before[n.name]["membership/limit"]
		}
		// At most the table's bound, and no more than the join budget lets
		// in over the attack: a burst of 128, then 20 a second.
		bound := min(512, 128+int(20*took.Seconds())+20)
		if most > bound {
			t.Errorf("heartbeat flood: a node listed %d members, want at most %d (512, and 128 + 20/s over %v)", most, bound, took.Round(time.Millisecond))
		}
		if refused == 0 {
			t.Errorf("heartbeat flood: no member refused (membership/limit): %v", r)
		}
		settled := c.waitViews(scale(30*time.Second), nodes, c.others())
		return fmt.Sprintf("%d names for %v: %s; most members listed %d (bound %d), refused membership/limit +%v (summed over nodes), back to the real members %v after",
			sz.floodNames, sz.floodFor, r.Detail, most, bound, refused, settled.Round(time.Millisecond))
	})

	// 3b. Big frames after a hello: without a key anyone may say hello,
	// and then send frames as large as max_frame (16 MiB), which the
	// receiver buffers whole, within its budget of bytes in flight
	// (receiver MaxBuffered, 32 MiB, each body allocated once). Not one of
	// the attacks, asserted all the same (it measured 630 MiB and
	// p99 805 ms with a 256 MiB budget and growing buffers); last, since
	// the memory it takes is not given back to the system at once and
	// would count against the attacks after it.
	h.attack("big frames after hello", func() string {
		before := refusedMetrics(ctx, t, target)
		r := h.run("big-frames", "--target", recv, "--conns", strconv.Itoa(sz.helloConns), "--size", strconv.Itoa(sz.bigSize), "--hello", "--for", "3s")
		after := refusedMetrics(ctx, t, target)
		return fmt.Sprintf("%d conns x %d MiB after a hello: %s; refused malformed +%v, limit +%v", sz.helloConns, sz.bigSize>>20, r.Detail,
			after["receiver/malformed"]-before["receiver/malformed"], after["receiver/limit"]-before["receiver/limit"])
	})
}

// hostileBackup runs attack 6 on nodes of backup mode without a key.
func hostileBackup(t *testing.T, sz sizes) {
	c := newCluster(t)
	nodes := c.three()
	c.startWith(backupConf+insecureConf, nodes...)
	h := newHostile(t, c, nodes, sz)
	ctx := h.ctx
	target := nodes[0]
	h.attack("cookie flood (backup mode)", func() string {
		var out []string
		for _, n := range []int{sz.cookies, sz.cookiesFit} {
			before := h.fetchesSent()
			code, err := h.cookieFlood(ctx, target, n, nodes[1].name)
			if err != nil {
				t.Errorf("cookie flood: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
			fetches := h.fetchesSent() - before
			// At most 4 cookies are looked up, each at most three fetches
			// (the owner, its backup, the backup again to check).
			if bound := 4 * 3; fetches > float64(bound) {
				t.Errorf("cookie flood: %d cookies made %v fetches, want at most %d", n, fetches, bound)
			}
			out = append(out, fmt.Sprintf("%d cookies: HTTP %d, fetches +%v", n, code, fetches))
		}
		return strings.Join(out, "; ")
	})
}

// hostile is one cluster under attack: the attacker's host, users on
// every node, and what each attack measured.
type hostile struct {
	t     *testing.T
	c     *cluster
	ctx   context.Context
	nodes []*node
	sz    sizes
	atk   *lab.Host
	users []*hostileUser
}

func newHostile(t *testing.T, c *cluster, nodes []*node, sz sizes) *hostile {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	atk, err := c.lab.AddHost(ctx, "attacker")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{t: t, c: c, ctx: ctx, nodes: nodes, sz: sz, atk: atk}
	// Two users on each node, each with a session of its own.
	for range 2 {
		for _, n := range nodes {
			u := &hostileUser{n: n}
			if err := u.step(ctx); err != nil {
				t.Fatal(err)
			}
			h.users = append(h.users, u)
		}
	}
	loadBegins(t)
	// A new bound from here: loadBegins may wait for other load scenarios.
	h.ctx, cancel = context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return h
}

// hostileUser counts on one node, with its own session. Its requests are
// one at a time; mu is for the checks that read its cookie meanwhile.
type hostileUser struct {
	n      *node
	mu     sync.Mutex
	cookie string
	count  int
}

func (u *hostileUser) step(ctx context.Context) error {
	cookie, count := u.session()
	v, next, err := u.n.counterOn(ctx, "/counter", cookie)
	if err != nil {
		return err
	}
	if v != count+1 {
		return fmt.Errorf("%s: count %d after %d (cookie %s)", u.n.name, v, count, shortID(cookie))
	}
	u.mu.Lock()
	u.count, u.cookie = v, next
	u.mu.Unlock()
	return nil
}

func (u *hostileUser) session() (cookie string, count int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cookie, u.count
}

// restart drops the session: the next step starts a new one.
func (u *hostileUser) restart() {
	u.mu.Lock()
	u.cookie, u.count = "", 0
	u.mu.Unlock()
}

// run runs one attack from the attacker's host.
func (h *hostile) run(args ...string) attackResult {
	r := attack(h.ctx, h.t, h.atk, append(args, "--domain", "default")...)
	h.t.Logf("attacker: %v", r)
	return r
}

// attack runs fn (an attack and its own checks, returning its figures)
// while users count on every node, new connections ask /livez, and the
// nodes' RSS is sampled; then it checks that every node survived and
// served, and reports the figures.
func (h *hostile) attack(name string, fn func() string) {
	t := h.t
	t.Helper()
	check := t.Errorf
	start := time.Now()
	m := h.watch()
	counted := fn()
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond) // what the attack set off
	w := m()
	label := "hostile: " + name
	for _, n := range h.nodes {
		select {
		case <-n.proc.Done():
			t.Fatalf("%s: %s died: %v\n%s", label, n.name, n.proc.ExitErr(), tail(n.proc.Output(), 40))
		default:
		}
		for _, p := range []string{"/livez", "/healthz"} {
			if code, body, err := n.get(h.ctx, p, ""); err != nil || code != http.StatusOK {
				t.Errorf("%s: %s %s: %d %q %v", label, n.name, p, code, strings.TrimSpace(body), err)
			}
		}
	}
	peakName := ""
	var peak int64
	for name, rss := range w.peak {
		if rss > peak {
			peak, peakName = rss, name
		}
	}
	if peak == 0 {
		t.Errorf("%s: no RSS sample", label)
	}
	if peak > h.sz.rssBound {
		check("%s: %s's RSS reached %d MiB, bound %d MiB", label, peakName, peak>>20, h.sz.rssBound>>20)
	}
	if w.served == 0 {
		t.Errorf("%s: no user request answered", label)
	}
	for _, e := range w.failures {
		check("%s: user not served: %s", label, e)
	}
	slices.Sort(w.lat)
	p99, worst := percentile(w.lat, 99), percentile(w.lat, 100)
	if p99 > h.sz.p99Bound {
		check("%s: user p99 %v, bound %v", label, p99, h.sz.p99Bound)
	}
	if worst > h.sz.worstBound {
		check("%s: slowest user request %v, bound %v", label, worst, h.sz.worstBound)
	}
	var byNode []string
	for _, n := range h.nodes {
		l := w.byNode[n.name]
		slices.Sort(l)
		byNode = append(byNode, fmt.Sprintf("%s %v", n.name, percentile(l, 99).Round(time.Millisecond)))
	}
	t.Logf("%s (%v): peak RSS %d MiB (%s; bound %d MiB), %d user requests, p99 %v (%s), worst %v, %d new connections accepted; %s",
		label, took.Round(time.Millisecond), peak>>20, peakName, h.sz.rssBound>>20, w.served, p99.Round(time.Millisecond), strings.Join(byNode, ", "),
		worst.Round(time.Millisecond), w.fresh, counted)
	figures.addValue(t, label+": peak RSS", fmt.Sprintf("%d MiB", peak>>20), fmt.Sprintf("%d MiB", h.sz.rssBound>>20))
	figures.add(t, label+": user p99", p99, h.sz.p99Bound)
	figures.addValue(t, label+": counted", counted, "see the test")
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// watched is what a watch saw.
type watched struct {
	peak     map[string]int64 // node name -> highest VmRSS, bytes
	lat      []time.Duration
	byNode   map[string][]time.Duration
	served   int
	fresh    int // /livez answered on a new connection
	failures []string
}

// watch starts the users (one request after the other, 50 ms apart), a
// prober opening a new connection to each node's application port every
// 100 ms, and the RSS sampler; the function it returns stops them.
func (h *hostile) watch() func() watched {
	ctx, cancel := context.WithCancel(h.ctx)
	var (
		mu sync.Mutex
		w  = watched{peak: map[string]int64{}, byNode: map[string][]time.Duration{}}
		wg sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(w.failures) < 5 {
			w.failures = append(w.failures, fmt.Sprintf(format, args...))
		}
	}
	for _, u := range h.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// A request under way when the watch stops is finished, not
				// cut off: the node may have counted it either way, and the
				// user must know the count it led to.
				start := time.Now()
				err := u.step(h.ctx)
				mu.Lock()
				if err == nil {
					d := time.Since(start)
					w.lat = append(w.lat, d)
					w.byNode[u.n.name] = append(w.byNode[u.n.name], d)
					w.served++
				}
				mu.Unlock()
				if err != nil {
					fail("%s: %v", u.n.name, err)
					u.restart()
				}
				sleepCtx(ctx, 50*time.Millisecond)
			}
		}()
	}
	for _, n := range h.nodes {
		client := freshClient(n.host)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", n.url("/livez"), nil)
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					fail("%s: /livez on a new connection: %v", n.name, err)
				} else {
					resp.Body.Close()
					mu.Lock()
					w.fresh++
					mu.Unlock()
				}
				sleepCtx(ctx, 100*time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if rss, err := n.proc.RSS(); err == nil {
					mu.Lock()
					w.peak[n.name] = max(w.peak[n.name], rss)
					mu.Unlock()
				}
				sleepCtx(ctx, 100*time.Millisecond)
			}
		}()
	}
	return func() watched {
		cancel()
		wg.Wait()
		return w
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// freshClient dials from h and keeps no connection: every request is a
// new one the server must accept.
func freshClient(h *lab.Host) *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: h.DialContext, DisableKeepAlives: true},
		Timeout:   lab.HTTPTimeout,
	}
}

// grew fails the test unless a counter grew by at least want.
func (h *hostile) grew(what string, by int64, want int) {
	h.t.Helper()
	if by < int64(want) {
		h.t.Errorf("%s grew by %d, want at least %d: the attack is not counted", what, by, want)
	}
}

// receiverState is the part of a node's status and metrics the wire
// attacks read.
type receiverState struct {
	Manager struct {
		Gaps      uint64 `json:"gaps"`
		NotMember uint64 `json:"not_member"`
	} `json:"manager"`
	Transport struct {
		Peers []struct {
			Address string `json:"address"`
		} `json:"peers"`
		Receiver struct {
			Open          int    `json:"open"`
			HandlerErrors uint64 `json:"handler_errors"`
		} `json:"receiver"`
	} `json:"transport"`
	recvDelta, sentFetch int64
}

func (h *hostile) receiverOf(n *node) receiverState {
	h.t.Helper()
	var s receiverState
	code, body, err := n.get(h.ctx, "/cluster/status", "")
	if err != nil || code != http.StatusOK {
		h.t.Fatalf("%s: /cluster/status: %d %v", n.name, code, err)
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		h.t.Fatal(err)
	}
	m := h.metrics(n)
	s.recvDelta = int64(m[`flock_messages_received_total{type="delta"}`])
	s.sentFetch = int64(m[`flock_messages_sent_total{type="fetch"}`])
	// What the attacks are counted as, read where an operator reads them:
	// /metrics, not the status document.
	s.Transport.Receiver.HandlerErrors = uint64(m["flock_receiver_handler_errors_total"])
	s.Manager.Gaps = uint64(m[`flock_manager_refused_total{reason="gap"}`])
	s.Manager.NotMember = uint64(m[`flock_manager_refused_total{reason="not_member"}`])
	return s
}

// metrics reads a node's /metrics: series (name and labels, as written)
// -> value.
func (h *hostile) metrics(n *node) map[string]float64 {
	h.t.Helper()
	code, body, err := n.get(h.ctx, "/metrics", "")
	if err != nil || code != http.StatusOK {
		h.t.Fatalf("%s: /metrics: %d %v", n.name, code, err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil && i > 0 {
			out[l[:i]] = v
		}
	}
	return out
}

// fetchesSent sums the fetches the nodes queued for members.
func (h *hostile) fetchesSent() float64 {
	total := 0.0
	for _, n := range h.nodes {
		total += h.metrics(n)[`flock_messages_sent_total{type="fetch"}`]
	}
	return total
}

// watchPeers samples n's sender peers every 100 ms until the function it
// returns is called, which returns the most seen.
func (h *hostile) watchPeers(n *node) func() int {
	return h.sample(func(ctx context.Context) int {
		var s receiverState
		if code, body, err := n.get(ctx, "/cluster/status", ""); err == nil && code == http.StatusOK && json.Unmarshal([]byte(body), &s) == nil {
			return len(s.Transport.Peers)
		}
		return 0
	})
}

// watchMembers samples every node's member list every 100 ms, failing the
// test if one stops listing a real member; the function it returns stops
// and returns the most members a node listed.
func (h *hostile) watchMembers() func() int {
	return h.sample(func(ctx context.Context) int {
		most := 0
		for _, n := range h.nodes {
			names, err := n.members(ctx)
			if err != nil {
				if ctx.Err() == nil {
					h.t.Errorf("%s: members: %v", n.name, err)
				}
				continue
			}
			for _, o := range h.nodes {
				if o != n && !slices.Contains(names, o.name) {
					h.t.Errorf("heartbeat flood: %s stopped listing %s (it lists %d members)", n.name, o.name, len(names))
				}
			}
			most = max(most, len(names))
		}
		return most
	})
}

func (h *hostile) sample(f func(ctx context.Context) int) func() int {
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan int)
	go func() {
		most := 0
		for ctx.Err() == nil {
			most = max(most, f(ctx))
			sleepCtx(ctx, 100*time.Millisecond)
		}
		done <- most
	}()
	return func() int {
		cancel()
		return <-done
	}
}

// adminExposure checks, from the attacker's host, that the application's
// port serves none of the admin endpoints and the admin port is not
// reachable; and, on each node, that the admin endpoints list references,
// never the session ids the users hold.
func (h *hostile) adminExposure() string {
	t := h.t
	client := h.atk.HTTPClient()
	refused := 0
	for _, n := range h.nodes {
		base := "http://" + n.host.IP.String()
		first, _ := h.users[0].session()
		for _, p := range []string{"/cluster/sessions", "/cluster/status", "/metrics", "/cluster/", "/cluster/sessions?id=" + first} {
			req, _ := http.NewRequestWithContext(h.ctx, "GET", base+":8080"+p, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("admin exposure: GET %s:8080%s: %v", base, p, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("admin exposure: GET %s:8080%s answered %s, want 404", base, p, resp.Status)
			}
		}
		dctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
		conn, err := h.atk.DialContext(dctx, "tcp", n.host.IP.String()+":9090")
		cancel()
		if err == nil {
			conn.Close()
			t.Errorf("admin exposure: %s:9090 accepts connections from the attacker's host", n.host.IP)
		} else {
			refused++
		}
		code, body, err := n.get(h.ctx, "/cluster/sessions", "")
		if err != nil || code != http.StatusOK {
			t.Errorf("admin exposure: %s: /cluster/sessions on the admin port: %d %v", n.name, code, err)
			continue
		}
		for _, u := range h.users {
			id, _ := u.session()
			random, _, _ := strings.Cut(id, ".")
			if strings.Contains(body, random) {
				t.Errorf("admin exposure: %s lists the session id %s in /cluster/sessions", n.name, id)
			}
			if !strings.Contains(body, `"ref": "`+refOf(id)+`"`) && !strings.Contains(body, `"ref":"`+refOf(id)+`"`) {
				t.Errorf("admin exposure: %s does not list the reference of the session of a user on %s", n.name, u.n.name)
			}
		}
	}
	return fmt.Sprintf("application port: 404 for the admin paths on %d nodes; admin port refused to the attacker on %d of %d; sessions listed by reference only",
		len(h.nodes), refused, len(h.nodes))
}

// cookieFlood sends one GET /counter to n with count session cookies,
// well-formed ids of sessions that route names as their owner, from the
// attacker's host; it returns the status.
func (h *hostile) cookieFlood(ctx context.Context, n *node, count int, route string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+n.host.IP.String()+":8080/counter", nil)
	if err != nil {
		return 0, err
	}
	var b strings.Builder
	for i := range count {
		if i > 0 {
			b.WriteString("; ")
		}
		r := make([]byte, 18)
		rand.Read(r)
		b.WriteString(cookieName + "=" + base64.RawURLEncoding.EncodeToString(r) + "." + route)
	}
	req.Header.Set("Cookie", b.String())
	resp, err := h.atk.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// detailCounts reads the key=value counts of an attack's detail.
func detailCounts(r attackResult) map[string]int64 {
	out := map[string]int64{}
	for _, f := range strings.Fields(r.Detail) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}
