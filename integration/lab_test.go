//go:build linux

// Package integration runs real flock clusters: every node is a flockd
// process in its own network namespace, joined to the others by a bridge, so
// multicast, crashes, pauses, partitions and packet loss are real.
package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
	"github.com/flockhq/flock/keyring"
)

// flockdPath is the flockd binary built once for all tests; skipReason is
// set instead when the lab cannot run here.
var (
	flockdPath string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	setParallel()
	if err := lab.Available(); err != nil {
		skipReason = "network-namespace lab unavailable: " + err.Error()
		return m.Run()
	}
	if err := lab.Cleanup("flk"); err != nil {
		fmt.Fprintln(os.Stderr, "lab cleanup:", err)
	}
	dir, err := os.MkdirTemp("", "flock-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	flockdPath = filepath.Join(dir, "flockd")
	args := []string{"build", "-o", flockdPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/flockhq/flock/cmd/flockd")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building flockd:", err)
		return 1
	}
	attackerPath = filepath.Join(dir, "attacker")
	build = exec.Command("go", "build", "-o", attackerPath, "github.com/flockhq/flock/integration/attacker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the attacker:", err)
		return 1
	}
	code := m.Run()
	figures.print()
	return code
}

// Default timings, as in conf/server.toml; the scenarios' bounds derive
// from them.
const (
	frequency    = 500 * time.Millisecond
	dropTime     = 3 * time.Second
	probeTimeout = time.Second
)

// cluster is a lab with one flockd per host.
type cluster struct {
	t     *testing.T
	lab   *lab.Lab
	nodes []*node
	dir   string
	// keyFile holds the cluster's key: every node is keyed unless its
	// conf has a [cluster.security] table of its own.
	keyFile string

	setUp func() // ends the start-up (see startGate); called by waitViews
}

type node struct {
	name   string
	domain string
	binary string // the flockd to run; "" is flockdPath, this tree's
	// wrap, if set, is a program and its arguments that exec flockd (as
	// prlimit does), so that the process's pid is still flockd's.
	wrap []string
	// adminAddr is where its admin endpoints are, if not [server]
	// admin's default (an earlier flockd served them on its HTTP port).
	adminAddr string
	conf      string // more of server.toml, after the [cluster] table
	host      *lab.Host
	proc      *lab.Proc
	client    *http.Client
	past      []string // the output of the node's earlier processes (restarts)
}

// startGate orders the start-up of the parallel scenarios' clusters, from
// creating the lab until the nodes first list each other. A scenario that
// measures from the start of its nodes (convergence) starts up alone;
// the others start up together. Without it, the measurement would be of a
// burst of labs being set up at once (a hundred ip commands, a dozen
// race-enabled flockd processes starting), not of flock.
var startGate sync.RWMutex

// newCluster creates the scenario's lab; call scenario first.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterGated(t, startGate.RLock, startGate.RUnlock)
}

// newQuietCluster is newCluster for a scenario that measures from the
// start of its nodes: no other cluster starts up until its nodes first
// list each other.
func newQuietCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterGated(t, startGate.Lock, startGate.Unlock)
}

func newClusterGated(t *testing.T, lock, unlock func()) *cluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	lock()
	setUp := sync.OnceFunc(unlock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		setUp()
		t.Fatal(err)
	}
	c := &cluster{t: t, lab: l, dir: t.TempDir(), setUp: setUp}
	c.keyFile = filepath.Join(c.dir, "cluster.keys")
	if err := os.WriteFile(c.keyFile, []byte(keyring.Generate()+"\n"), 0o600); err != nil {
		setUp()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// FLOCK_LAB_LOGS=dir keeps every process's whole output there
			// (a chaos run restarts nodes); the log gets the last one's.
			dir := os.Getenv("FLOCK_LAB_LOGS")
			for _, n := range c.nodes {
				if n.proc == nil {
					continue
				}
				if dir != "" {
					name := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+n.name+".log")
					all := strings.Join(append(slices.Clone(n.past), n.proc.Output()), "\n--- restarted ---\n")
					if err := os.WriteFile(name, []byte(all), 0o644); err != nil {
						t.Errorf("keeping the log: %v", err)
					}
					continue
				}
				t.Logf("--- %s output ---\n%s", n.name, n.proc.Output())
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	// Registered last, so run first: a scenario that fails before its
	// nodes list each other does not hold up the others' start-up while its
	// lab is torn down.
	t.Cleanup(setUp)
	return c
}

// add creates a host for a node of the given domain; start runs it.
func (c *cluster) add(name, domain string) *node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := c.lab.AddHost(ctx, name)
	if err != nil {
		c.t.Fatal(err)
	}
	n := &node{name: name, domain: domain, host: h, client: h.HTTPClient()}
	c.nodes = append(c.nodes, n)
	return n
}

func (c *cluster) start(n *node) {
	c.t.Helper()
	cfg := filepath.Join(c.dir, n.name+".toml")
	// No drain grace unless the scenario's own [server] asks for one: a
	// stop is then as quick as before it existed, and the scenarios that
	// measure draining set it.
	server := "[server]\ndrain_grace = \"0s\"\n"
	if strings.Contains(n.conf, "[server]") {
		server = ""
	}
	if l := os.Getenv("FLOCK_LAB_LOG_LEVEL"); l != "" { // "debug" to trace a failing scenario
		server = fmt.Sprintf("[server]\nlog_level = %q\ndrain_grace = \"0s\"\n", l)
	}
	security := ""
	if !strings.Contains(n.conf, "[cluster.security]") {
		security = fmt.Sprintf("\n[cluster.security]\nkey_file = %q\n", c.keyFile)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("%s[cluster]\ndomain = %q\n%s%s", server, n.domain, n.conf, security)), 0o644); err != nil {
		c.t.Fatal(err)
	}
	ip := n.host.IP.String()
	path := flockdPath
	if n.binary != "" {
		path = n.binary
	}
	args := []string{
		"--config", cfg, "--name", n.name, "--http", ip + ":8080",
		"--bind", ip, "--receiver-host", ip,
	}
	if len(n.wrap) > 0 {
		path, args = n.wrap[0], append(append(slices.Clone(n.wrap[1:]), path), args...)
	}
	p, err := n.host.Start(context.Background(), lab.ProcConfig{Path: path, Name: "flockd", Args: args})
	if err != nil {
		c.t.Fatal(err)
	}
	if n.proc != nil {
		n.past = append(n.past, n.proc.Output())
	}
	n.proc = p
}

// status is the part of /cluster/status the scenarios read.
type status struct {
	Local struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	} `json:"local"`
	Members []struct {
		Name  string `json:"name"`
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"members"`
	Membership string `json:"membership"`
	Heartbeats struct {
		Received uint64 `json:"received"`
		Lost     uint64 `json:"lost"`
	} `json:"heartbeats"`
}

func (n *node) status(ctx context.Context) (status, error) {
	var s status
	req, err := http.NewRequestWithContext(ctx, "GET", n.url("/cluster/status"), nil)
	if err != nil {
		return s, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s: status %s", n.name, resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// members returns the names n lists, sorted; an unreachable node lists
// nothing, which no scenario mistakes for success.
func (n *node) members(ctx context.Context) ([]string, error) {
	s, err := n.status(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range s.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	return names, nil
}

// waitViews polls the nodes until each lists exactly the names want(n)
// gives, and returns how long that took; it fails the test after timeout.
// The first time it succeeds, the cluster's start-up is over (startGate).
func (c *cluster) waitViews(timeout time.Duration, nodes []*node, want func(*node) []string) time.Duration {
	c.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok := true
		var last string
		for _, n := range nodes {
			got, err := n.members(ctx)
			w := want(n)
			slices.Sort(w)
			if err != nil || !slices.Equal(got, w) {
				ok = false
				last = fmt.Sprintf("%s lists %v (err %v), want %v", n.name, got, err, w)
				break
			}
		}
		if ok {
			took := time.Since(start)
			c.setUp()
			return took
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("views did not settle within %v: %s", timeout, last)
		case <-tick.C:
		}
	}
}

// checkViews fails the test unless every node lists exactly want(n) now.
func (c *cluster) checkViews(nodes []*node, want func(*node) []string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		got, err := n.members(ctx)
		w := want(n)
		slices.Sort(w)
		if err != nil || !slices.Equal(got, w) {
			c.t.Fatalf("%s lists %v (err %v), want %v", n.name, got, err, w)
		}
	}
}

// others is the usual expectation: every other running node of n's domain.
func (c *cluster) others(except ...*node) func(*node) []string {
	return func(n *node) []string {
		var names []string
		for _, o := range c.nodes {
			if o != n && o.domain == n.domain && !slices.Contains(except, o) {
				names = append(names, o.name)
			}
		}
		return names
	}
}

func without(nodes []*node, drop *node) []*node {
	return slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == drop })
}

// logged reports whether n's output has a member event line with all the
// given fields.
func (n *node) logged(fields ...string) bool {
	for _, line := range strings.Split(n.proc.Output(), "\n") {
		all := true
		for _, f := range fields {
			all = all && strings.Contains(line, f)
		}
		if all {
			return true
		}
	}
	return false
}

// report collects measured figures and prints them as one table at the end
// of the run (go test -v shows it), so a run is also a measurement. The
// scenarios run in parallel: the rows are printed in the order of the
// scenarios' declaration (each scenario's rows in the order it added them),
// as a serial run would have them, whatever order they finished in.
type report struct {
	mu   sync.Mutex
	rows []row
}

type row struct {
	order int // the scenario's position (scheduler.orderOf)
	text  string
}

var figures report

func (r *report) add(t *testing.T, what string, d time.Duration, bound time.Duration) {
	t.Helper()
	t.Logf("%s: %v (bound %v)", what, d.Round(time.Millisecond), bound)
	r.addRow(t, fmt.Sprintf("| %s | %v | %v |", what, d.Round(time.Millisecond), bound))
}

func (r *report) addRow(t *testing.T, text string) {
	order := sched.orderOf(t)
	r.mu.Lock()
	r.rows = append(r.rows, row{order: order, text: text})
	r.mu.Unlock()
}

func (r *report) print() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rows) == 0 {
		return
	}
	rows := slices.Clone(r.rows)
	slices.SortStableFunc(rows, func(a, b row) int { return a.order - b.order })
	fmt.Println("\n| measured | time | bound |\n| --- | --- | --- |")
	for _, row := range rows {
		fmt.Println(row.text)
	}
	fmt.Printf("\nscenarios ran in parallel (-parallel %d), at most %d applying load at once (FLOCK_LOAD_PARALLEL)\n", parallelLimit(), maxLoad)
}
