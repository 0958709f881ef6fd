//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// Load-balancer recipes: examples/haproxy/haproxy.cfg and
// examples/nginx/nginx.conf, run as shipped by the real balancers
// (/usr/sbin/haproxy, /usr/sbin/nginx) on a host of the lab, in front of
// three flockd nodes, with users counting through them, each with a cookie
// jar as a browser has. No address is substituted: the recipes use the
// addresses the lab gives its first hosts (lab.AddHost: 198.51.100.(10+i)
// for the i-th host), the balancer's host first (198.51.100.10, port 80),
// then node1..node3 (198.51.100.11-13, port 8080); the users are on a fifth
// host. The test checks that the lab gave exactly those addresses and that
// the files name them.
//
// Each scenario, for each balancer:
//
//   - sticky: every request of a user lands on the node its cookie names,
//     measured by the nodes themselves: a write served by a node sends one
//     delta to each other member (flock_messages_sent_total{type="delta"}),
//     so each node must have sent exactly 2 x the writes of the users whose
//     cookie names it, and the others none of them;
//   - kill -9 of the node serving the most users, under load;
//   - a rolling restart, node by node: SIGTERM with [server] drain_grace
//     3s, a new process under the same name, under load;
//   - a rolling downgrade to the earlier release (upgradeFrom, built from
//     this repository's history) and a rolling upgrade back: the same, each
//     new process of the other release, old and new serving together.
//
// A user's request failed when it was not answered 200. A count is off
// when it is not the user's previous count + 1: a lost session (the count
// starts again at 1), a lost write (a count not above one acknowledged
// before), or an extra increment (more above the previous count than the
// failed requests in between can explain: a request applied twice, e.g. a
// balancer retrying a write that the dying node had applied). The gap is the
// longest time a user waited between two successful answers.

const (
	// recipeListen is the address the recipes listen on: the lab's first
	// host. The nodes are the next three (198.51.100.11-13:8080).
	recipeListen = "198.51.100.10:80"

	// recipeDrainGrace is the nodes' [server] drain_grace: more than the
	// two failed health checks, a second apart, after which HAProxy takes
	// a node out (inter 1s fall 2).
	recipeDrainGrace = 3 * time.Second

	// recipeSettle is how long a restarted node that answers /healthz 200
	// takes to be back in the balancer: HAProxy's rise 2 at inter 1s, with
	// a margin.
	recipeSettle = 3 * time.Second
)

// recipe is one balancer and its shipped configuration.
type recipe struct {
	name string
	bin  string
	file string // the shipped configuration, from the repository's root
	// start runs the balancer with the file in the foreground on h; dir is
	// a directory of the test for its pid, logs and temporary files.
	start func(ctx context.Context, h *lab.Host, file, dir string) (*lab.Proc, error)
	// log returns the balancer's request log (and, for HAProxy, its
	// server state changes): the scenario reads what a phase added.
	log func(p *lab.Proc, dir string) string
	// retried counts the requests of a log that the balancer sent to a
	// second node after the first failed.
	retried func(log string) int
	// checks: the balancer health-checks the nodes and logs a node it
	// takes out (haproxyDown).
	checks bool
}

// haproxyRetries matches the retries field of HAProxy's httplog line
// (%ac/%fc/%bc/%sc/%rc %sq/%bq "request"): "+N" when the last retry went
// to another server (redispatch).
var haproxyRetries = regexp.MustCompile(`\d+/\d+/\d+/\d+/(\+?\d+) \d+/\d+ "`)

// haproxyDown matches HAProxy's log line for a server its checks took out.
var haproxyDown = regexp.MustCompile(`Server flock/(\S+) is DOWN, reason: ([^,]*)(?:, code: (\d+))?`)

var haproxyRecipe = recipe{
	name:   "haproxy",
	bin:    "/usr/sbin/haproxy",
	file:   "examples/haproxy/haproxy.cfg",
	checks: true,
	start: func(ctx context.Context, h *lab.Host, file, dir string) (*lab.Proc, error) {
		// -db: foreground, no daemon; the recipe logs to stdout.
		return h.Start(ctx, lab.ProcConfig{Path: "/usr/sbin/haproxy", Name: "haproxy", Args: []string{"-db", "-f", file}, LogDir: dir})
	},
	log: func(p *lab.Proc, dir string) string { return p.Output() },
	retried: func(log string) int {
		n := 0
		for _, m := range haproxyRetries.FindAllStringSubmatch(log, -1) {
			if m[1] != "0" {
				n++
			}
		}
		return n
	},
}

// nginxRecipe runs nginx with the recipe as its main configuration. The
// file, as a deployment would have it, leaves pid and error log to the
// package's defaults and logs to /var/log/nginx; nginx's temporary files
// go to /var/lib/nginx (compiled in). So that the test touches none of the
// machine's files, nginx runs in a mount namespace of its own (ip netns
// exec makes one, a slave of the machine's) in which the test's directory
// is mounted over /var/log/nginx and /var/lib/nginx; the pid file goes to
// the prefix, the test's directory, and the error log to stderr.
var nginxRecipe = recipe{
	name: "nginx",
	bin:  "/usr/sbin/nginx",
	file: "examples/nginx/nginx.conf",
	start: func(ctx context.Context, h *lab.Host, file, dir string) (*lab.Proc, error) {
		for _, d := range []string{"/var/log/nginx", "/var/lib/nginx"} {
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				return nil, fmt.Errorf("%s: not a directory (is the nginx package installed?): %v", d, err)
			}
		}
		logs, lib := filepath.Join(dir, "log"), filepath.Join(dir, "lib")
		for _, d := range []string{logs, lib} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		script := `mount --bind "$1" /var/log/nginx && mount --bind "$2" /var/lib/nginx && ` +
			`exec /usr/sbin/nginx -p "$3/" -c "$4" -e stderr -g "daemon off; pid $3/nginx.pid;"`
		return h.Start(ctx, lab.ProcConfig{Path: "/bin/sh", Name: "nginx", Args: []string{"-c", script, "sh", logs, lib, dir, file}, LogDir: dir})
	},
	log: func(p *lab.Proc, dir string) string {
		b, err := os.ReadFile(filepath.Join(dir, "log", "access.log"))
		if err != nil {
			return fmt.Sprintf("<%v>", err)
		}
		return string(b)
	},
	retried: func(log string) int {
		// $upstream_addr lists every node tried: "a:8080, b:8080".
		n := 0
		for _, line := range strings.Split(log, "\n") {
			if _, rest, ok := strings.Cut(line, " upstream="); ok && strings.Contains(strings.SplitN(rest, " upstream_status=", 2)[0], ", ") {
				n++
			}
		}
		return n
	},
}

func TestBalancerHAProxy(t *testing.T) { testRecipe(t, haproxyRecipe) }

func TestBalancerNginx(t *testing.T) { testRecipe(t, nginxRecipe) }

// recipeUser is a user of the recipe's balancer: a browser with a cookie
// jar, counting with GET /counter.
type recipeUser struct {
	name string
	hc   *http.Client
	base *url.URL

	mu      sync.Mutex
	answers []answer
}

// answer is one request of a user.
type answer struct {
	sent, at time.Time
	code     int // 0: no HTTP answer
	value    int // the count, for a 200
	err      string
	route    string // the route of the session cookie after the answer
}

func newRecipeUser(client *lab.Host, name string) *recipeUser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		panic(err)
	}
	return &recipeUser{
		name: name,
		base: &url.URL{Scheme: "http", Host: strings.TrimSuffix(recipeListen, ":80")},
		hc: &http.Client{
			Jar:     jar,
			Timeout: scale(time.Minute),
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         client.DialContext,
				MaxIdleConnsPerHost: 2,
				DisableCompression:  true,
			},
		},
	}
}

// cookieRoute is the route of the user's session cookie ("" if none).
func (u *recipeUser) cookieRoute() string {
	for _, c := range u.hc.Jar.Cookies(u.base) {
		if c.Name == cookieName {
			return routeOf(c.Value)
		}
	}
	return ""
}

func (u *recipeUser) cookie() string {
	for _, c := range u.hc.Jar.Cookies(u.base) {
		if c.Name == cookieName {
			return c.Value
		}
	}
	return ""
}

// increment sends one GET /counter and records the answer.
func (u *recipeUser) increment(ctx context.Context) answer {
	a := answer{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, "GET", u.base.String()+"/counter", nil)
	if err != nil {
		panic(err)
	}
	resp, err := u.hc.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		a.code = resp.StatusCode
		switch {
		case err != nil:
			a.code = 0
		case a.code != http.StatusOK:
			a.err = strings.TrimSpace(string(body))
			if len(a.err) > 200 {
				a.err = a.err[:200]
			}
		default:
			if a.value, err = strconv.Atoi(strings.TrimSpace(string(body))); err != nil {
				a.code, a.err = 0, fmt.Sprintf("body %q", body)
			}
		}
	}
	if err != nil {
		a.err = err.Error()
	}
	a.at = time.Now()
	a.route = u.cookieRoute()
	u.mu.Lock()
	u.answers = append(u.answers, a)
	u.mu.Unlock()
	return a
}

func (u *recipeUser) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.answers)
}

func (u *recipeUser) snapshot() []answer {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.answers)
}

// loadUsers makes the users increment, each one request after the other
// with pause between, until the returned stop is called; stop lets the
// requests under way finish.
func loadUsers(users []*recipeUser, pause time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-quit:
					return
				default:
				}
				u.increment(ctx)
				select {
				case <-quit:
					return
				case <-time.After(pause):
				}
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			cancel()
		})
	}
}

// waitAnswers waits until every user has more answers than from[i]+more.
func waitAnswers(t *testing.T, users []*recipeUser, from []int, more int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		behind := ""
		for i, u := range users {
			if u.count() < from[i]+more {
				behind = fmt.Sprintf("%s has %d answers, want %d", u.name, u.count(), from[i]+more)
				break
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("users too slow after %v: %s", timeout, behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func answered(users []*recipeUser) []int {
	out := make([]int, len(users))
	for i, u := range users {
		out[i] = u.count()
	}
	return out
}

// tally is what the users saw in a phase.
type tally struct {
	requests, failed, off             int // off: counts not previous + 1
	lostSessions, lostWrites, doubled int
	gap                               time.Duration
	gapAt                             string
	examples                          []string // the first few failures and off counts
}

func (y *tally) note(format string, args ...any) {
	if len(y.examples) < 8 {
		y.examples = append(y.examples, fmt.Sprintf(format, args...))
	}
}

// tallyFrom counts the users' answers after from[i] (the phase), against
// the last count each had before it.
func tallyFrom(users []*recipeUser, from []int) tally {
	var y tally
	for i, u := range users {
		all := u.snapshot()
		// The gaps are measured within the phase (the users rested
		// between phases); the counts go on from the last one before it.
		prev, failures := 0, 0
		var prevAt time.Time
		for _, a := range all[:from[i]] {
			if a.code == http.StatusOK {
				prev = a.value
			}
		}
		for _, a := range all[from[i]:] {
			y.requests++
			if a.code != http.StatusOK {
				y.failed++
				failures++
				y.note("%s: sent %s, answered %s: %d %s", u.name, a.sent.Format("15:04:05.000"), a.at.Format("15:04:05.000"), a.code, a.err)
				continue
			}
			if !prevAt.IsZero() && a.at.Sub(prevAt) > y.gap {
				y.gap, y.gapAt = a.at.Sub(prevAt), fmt.Sprintf("%s, between counts %d and %d, %s to %s", u.name, prev, a.value, prevAt.Format("15:04:05.000"), a.at.Format("15:04:05.000"))
			}
			if a.value != prev+1 {
				y.off++
				switch {
				case a.value == 1:
					y.lostSessions++
				case a.value <= prev:
					y.lostWrites++
				case a.value > prev+1+failures:
					y.doubled++
				}
				y.note("%s: count %d after %d (%d failed requests between), sent %s, answered %s, route %s", u.name, a.value, prev, failures,
					a.sent.Format("15:04:05.000"), a.at.Format("15:04:05.000"), a.route)
			}
			prev, prevAt, failures = a.value, a.at, 0
		}
	}
	return y
}

func (y tally) String() string {
	return fmt.Sprintf("%d requests: %d failed, %d counts not previous+1 (%d lost sessions, %d lost writes, %d extra increments); longest gap %v (%s)",
		y.requests, y.failed, y.off, y.lostSessions, y.lostWrites, y.doubled, y.gap.Round(time.Millisecond), y.gapAt)
}

// checkRecipeFile fails the test unless the file names the lab's
// addresses: the listen address and node1..node3's.
func checkRecipeFile(t *testing.T, path string, nodes []*node, lb *lab.Host) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := lb.IP.String() + ":80"; got != recipeListen {
		t.Fatalf("the lab gave the balancer %s, the recipes listen on %s", got, recipeListen)
	}
	want := []string{recipeListen}
	for i, n := range nodes {
		if name := fmt.Sprintf("node%d", i+1); n.name != name {
			t.Fatalf("node %d is %s, the recipes name %s", i, n.name, name)
		}
		want = append(want, n.host.IP.String()+":8080")
	}
	for _, w := range want {
		if !strings.Contains(string(b), w) {
			t.Fatalf("%s does not name %s, the lab's address for it", path, w)
		}
	}
}

func testRecipe(t *testing.T, r recipe) {
	scenario(t, load, 90*time.Second)
	if _, err := os.Stat(r.bin); err != nil {
		t.Skipf("%s is not installed: %v", r.name, err)
	}
	file, err := filepath.Abs(filepath.Join("..", r.file))
	if err != nil {
		t.Fatal(err)
	}
	label := r.name
	users := 12
	pause := 20 * time.Millisecond
	if raceEnabled {
		users, pause = 6, 50*time.Millisecond
	}

	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The order gives the addresses: the balancer first, then the nodes.
	lbHost, err := c.lab.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	nodes := c.three()
	clientHost, err := c.lab.AddHost(ctx, "client")
	if err != nil {
		t.Fatal(err)
	}
	checkRecipeFile(t, file, nodes, lbHost)
	for _, n := range nodes {
		n.conf = fmt.Sprintf("[server]\ndrain_grace = %q\n", recipeDrainGrace.String())
	}
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	for _, n := range nodes {
		n.waitHealthy(t, scale(30*time.Second))
	}

	dir := t.TempDir()
	lb, err := r.start(ctx, lbHost, file, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			log := r.log(lb, dir)
			if !r.checks { // HAProxy's output is its log
				t.Logf("--- %s output ---\n%s", r.name, lastLines(lb.Output(), 100))
			}
			t.Logf("--- %s log, the last lines ---\n%s", r.name, lastLines(log, 200))
			if d := os.Getenv("FLOCK_LAB_LOGS"); d != "" {
				name := filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_")+"-"+r.name+".log")
				if err := os.WriteFile(name, []byte(log), 0o644); err != nil {
					t.Errorf("keeping the log: %v", err)
				}
			}
		}
	})
	// Answering through the balancer: /healthz is forwarded to a node.
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: clientHost.DialContext, DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := probe.Get("http://" + strings.TrimSuffix(recipeListen, ":80") + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-lb.Done():
			t.Fatalf("%s exited: %v", r.name, lb.ExitErr())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer /healthz 200: %v", r.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(recipeSettle) // every node has passed its checks
	loadBegins(t)
	// A new bound from here: loadBegins may have waited for other load
	// scenarios longer than the setup's.
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), scale(2*time.Minute))
	defer cancel()

	var us []*recipeUser
	for i := range users {
		u := newRecipeUser(clientHost, fmt.Sprintf("user%02d", i))
		us = append(us, u)
		t.Cleanup(u.hc.CloseIdleConnections)
	}

	// Sticky. Each user's first request makes its session, on the node the
	// balancer picks; then each makes `burst` more, all users at once.
	const burst = 20
	for _, u := range us {
		if a := u.increment(ctx); a.code != http.StatusOK || a.value != 1 || a.route == "" {
			t.Fatalf("%s: first request: %+v", u.name, a)
		}
	}
	mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
	before := map[string]float64{}
	for _, n := range nodes {
		if before[n.name], err = deltasSent(mctx, []*node{n}); err != nil {
			t.Fatal(err)
		}
	}
	mcancel()
	var wg sync.WaitGroup
	for _, u := range us {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range burst {
				u.increment(ctx)
			}
		}()
	}
	wg.Wait()
	routes := map[string]int{}
	writes := map[string]float64{}
	for _, u := range us {
		as := u.snapshot()
		route := as[0].route
		routes[route]++
		for i, a := range as {
			if a.code != http.StatusOK || a.value != i+1 || a.route != route {
				t.Fatalf("sticky: %s: answer %d: %+v, want count %d, route %s", u.name, i, a, i+1, route)
			}
		}
		writes[route] += burst
	}
	if len(routes) < 2 {
		t.Errorf("sticky: every user's session was made on one node: %v", routes)
	}
	mctx, mcancel = context.WithTimeout(context.Background(), 10*time.Second)
	elsewhere := 0.0
	for _, n := range nodes {
		after, err := deltasSent(mctx, []*node{n})
		if err != nil {
			t.Fatal(err)
		}
		sent, want := after-before[n.name], 2*writes[n.name]
		t.Logf("sticky: %s: %d users' cookies name it; it sent %v deltas, %v for their writes", n.name, routes[n.name], sent, want)
		if sent != want {
			t.Errorf("sticky: %s sent %v deltas, want %v (2 per write of its %d users): requests went to another node than the cookie's", n.name, sent, want, routes[n.name])
		}
		elsewhere += max(0, sent-want) / 2
	}
	mcancel()
	figures.addValue(t, label+": sticky: users per node / writes / writes served elsewhere than the cookie's node",
		fmt.Sprintf("%v / %d / %v", routes, users*burst, elsewhere), "0 elsewhere")

	// kill -9 of the node with the most users, under load.
	var victim *node
	for _, n := range nodes {
		if victim == nil || routes[n.name] > routes[victim.name] {
			victim = n
		}
	}
	survivors := without(nodes, victim)
	logAt := len(r.log(lb, dir))
	from := answered(us)
	stop := loadUsers(us, pause)
	defer stop()
	waitAnswers(t, us, from, 10, scale(time.Minute))
	t.Logf("kill -9: %s, the node of %d users", victim.name, routes[victim.name])
	killed := time.Now()
	if err := victim.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	// Every user of the victim gets a survivor's route.
	for {
		left := 0
		for _, u := range us {
			if u.cookieRoute() == victim.name {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Since(killed) > scale(time.Minute) {
			t.Fatalf("kill -9: %d users still have cookies routed to the dead %s after %v", left, victim.name, time.Since(killed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	rewritten := time.Since(killed)
	c.waitViews(30*time.Second, survivors, c.others(victim))
	// Count on past the drop time, and a while after the routes moved.
	if d := dropTime + 2*frequency - time.Since(killed); d > 0 {
		time.Sleep(d)
	}
	waitAnswers(t, us, answered(us), 10, scale(time.Minute))
	stop()
	killTally := tallyFrom(us, from)
	killLog := r.log(lb, dir)[logAt:]
	t.Logf("kill -9: routes rewritten after %v; %s", rewritten.Round(time.Millisecond), killTally)
	for _, e := range killTally.examples {
		t.Logf("kill -9: %s", e)
	}
	bound := scale(dropTime + probeTimeout + 2*frequency + 2*time.Second)
	figures.add(t, label+": kill -9: longest gap a user saw", killTally.gap, bound)
	figures.addValue(t, label+": kill -9: requests / failed / counts not previous+1 / lost sessions / lost writes",
		fmt.Sprintf("%d / %d / %d / %d / %d", killTally.requests, killTally.failed, killTally.off, killTally.lostSessions, killTally.lostWrites),
		"report / report / report / 0 / 0")
	figures.addValue(t, label+": kill -9: requests the balancer retried on another node", fmt.Sprint(r.retried(killLog)), "report only")
	if killTally.lostSessions > 0 || killTally.lostWrites > 0 {
		t.Errorf("kill -9: %d lost sessions, %d lost writes", killTally.lostSessions, killTally.lostWrites)
	}
	if killTally.gap > bound {
		t.Errorf("kill -9: a user waited %v (%s), want within %v", killTally.gap, killTally.gapAt, bound)
	}
	checkRecipePeeks(t, "kill -9", us, survivors)

	// The victim comes back (a new process under its name) before the
	// rolling restart.
	c.start(victim)
	victim.waitHealthy(t, stateTransferTimeout+scale(10*time.Second))
	c.waitViews(30*time.Second, nodes, c.others())
	time.Sleep(recipeSettle)

	// Rolling restart under load: SIGTERM, the drain grace, a new process;
	// then the same with the earlier release (5ec2404, built from this
	// repository's history): a rolling downgrade to it and a rolling
	// upgrade back, old and new in one cluster behind the balancer.
	old, err := oldFlockd()
	if err != nil {
		t.Fatal(err)
	}
	toOld := func(n *node) { n.binary, n.conf, n.adminAddr = old, "[server]\n", n.host.IP.String()+":8080" }
	toNew := func(n *node) {
		n.binary, n.conf, n.adminAddr = "", fmt.Sprintf("[server]\ndrain_grace = %q\n", recipeDrainGrace.String()), ""
	}
	for _, pass := range []struct {
		phase  string
		next   func(*node)
		checks bool // the balancer's checks see each node's 503 while it drains
	}{
		{"rolling restart", toNew, r.checks},
		{"rolling downgrade to " + upgradeFrom, toOld, false},
		{"rolling upgrade from " + upgradeFrom, toNew, false},
	} {
		rollRecipe(t, c, r, lb, dir, label, pass.phase, nodes, us, pause, pass.next, pass.checks)
	}
}

// rollRecipe replaces the nodes one by one under load behind the
// balancer: SIGTERM, the node's drain, a new process (of the release next
// gives it), and checks that no user request failed or lost anything.
func rollRecipe(t *testing.T, c *cluster, r recipe, lb *lab.Proc, dir, label, phase string, nodes []*node, us []*recipeUser,
	pause time.Duration, next func(*node), checks bool) {
	t.Helper()
	logAt := len(r.log(lb, dir))
	from := answered(us)
	stop := loadUsers(us, pause)
	defer stop()
	waitAnswers(t, us, from, 5, scale(time.Minute))
	var old []*lab.Proc
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range old {
				t.Logf("--- %s output (before its restart) ---\n%s", p, lastLines(p.Output(), 100))
			}
		}
	})
	start := time.Now()
	for _, n := range nodes {
		users := 0
		for _, u := range us {
			if u.cookieRoute() == n.name {
				users++
			}
		}
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		stopping := time.Now()
		err := n.proc.Stop(sctx)
		scancel()
		old = append(old, n.proc)
		if err != nil {
			t.Fatalf("%s: %s did not exit 0 on SIGTERM: %v", phase, n.name, err)
		}
		stopped := time.Since(stopping)
		c.waitViews(30*time.Second, without(nodes, n), c.others(n))
		next(n)
		c.start(n)
		healthy := n.waitHealthy(t, stateTransferTimeout+scale(10*time.Second))
		c.waitViews(30*time.Second, nodes, c.others())
		time.Sleep(recipeSettle)
		waitAnswers(t, us, answered(us), 5, scale(time.Minute))
		t.Logf("%s: %s (%d users): stopped %v after SIGTERM, healthy %v after its start", phase, n.name, users,
			stopped.Round(time.Millisecond), healthy.Round(time.Millisecond))
	}
	took := time.Since(start)
	stop()
	rollTally := tallyFrom(us, from)
	rollLog := r.log(lb, dir)[logAt:]
	if checks {
		// Each node was taken out by its 503 on /healthz while it drained,
		// before its listener closed.
		drained := map[string]bool{}
		seen := map[string]bool{} // HAProxy logs it, and prints it on stderr
		for _, m := range haproxyDown.FindAllStringSubmatch(rollLog, -1) {
			if !seen[m[0]] {
				t.Logf("%s: %s", phase, m[0])
			}
			seen[m[0]] = true
			drained[m[1]] = drained[m[1]] || m[3] == "503"
		}
		for _, n := range nodes {
			if !drained[n.name] {
				t.Errorf("%s: %s did not take %s out on its 503 on /healthz while it drained", phase, r.name, n.name)
			}
		}
	}
	t.Logf("%s: %v; %s", phase, took.Round(time.Millisecond), rollTally)
	for _, e := range rollTally.examples {
		t.Logf("%s: %s", phase, e)
	}
	rbound := scale(5 * time.Second)
	figures.add(t, label+": "+phase+", 3 nodes: longest gap a user saw", rollTally.gap, rbound)
	figures.addValue(t, label+": "+phase+": requests / failed / counts not previous+1 / lost sessions / lost writes",
		fmt.Sprintf("%d / %d / %d / %d / %d", rollTally.requests, rollTally.failed, rollTally.off, rollTally.lostSessions, rollTally.lostWrites),
		"report / 0 / 0 / 0 / 0")
	figures.addValue(t, label+": "+phase+": requests the balancer retried on another node", fmt.Sprint(r.retried(rollLog)), "report only")
	if rollTally.failed > 0 || rollTally.off > 0 {
		t.Errorf("%s: %d failed requests, %d counts not previous+1 (%d lost sessions, %d lost writes)",
			phase, rollTally.failed, rollTally.off, rollTally.lostSessions, rollTally.lostWrites)
	}
	if rollTally.gap > rbound {
		t.Errorf("%s: a user waited %v (%s), want within %v", phase, rollTally.gap, rollTally.gapAt, rbound)
	}
	checkRecipePeeks(t, phase, us, nodes)
}

// checkRecipePeeks fails the test unless every node holds each user's
// session with the user's last count (asked directly, not through the
// balancer); a user whose last request failed is skipped (whether it was
// applied is unknown).
func checkRecipePeeks(t *testing.T, phase string, users []*recipeUser, nodes []*node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range users {
		as := u.snapshot()
		last := as[len(as)-1]
		if last.code != http.StatusOK {
			continue
		}
		for _, n := range nodes {
			got, err := n.peek(ctx, u.cookie())
			if err != nil {
				t.Errorf("%s: %s: %v", phase, u.name, err)
			} else if got != last.value {
				t.Errorf("%s: %s holds count %d of %s, whose last count was %d", phase, n.name, got, u.name, last.value)
			}
		}
	}
}
