//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

const (
	labPrefix  = "fbench" // namespace prefix of the benchmark's labs
	httpPort   = "8080"
	cookieName = "FLOCKSESSIONID" // flockd's default session cookie
	domain     = "bench"
	pollEvery  = 20 * time.Millisecond
)

// env is what every stage needs: the binaries, a scratch directory, the
// progress output, and the convergence times of every 3-node start.
type env struct {
	opts   options
	flockd string
	bare   string
	wrk    string // wrk's path: the CPU step's load generator; "" for the Go one
	dir    string
	log    io.Writer
	begun  time.Time

	bareLoad loadResult // the bare handler's throughput, the reference of the others

	mu          sync.Mutex
	convergence []time.Duration
}

func (e *env) logf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.log, "bench %6.1fs  %s\n", time.Since(e.begun).Seconds(), fmt.Sprintf(format, args...))
}

func (e *env) addConvergence(d time.Duration) {
	e.mu.Lock()
	e.convergence = append(e.convergence, d)
	e.mu.Unlock()
}

// cluster is one lab: hosts node1..nodeN for the servers and a host "lb"
// from which the load generator's connections start, so that requests
// cross the bridge as they would from a load balancer on another machine.
type cluster struct {
	env   *env
	lab   *lab.Lab
	lb    *lab.Host
	nodes []*node
	// keyFile, once set, keys the flockd started from then on; without it
	// they run insecure (the lab's bridge is the trusted network).
	keyFile string
}

// node is a server (flockd or bare) in its own host namespace.
type node struct {
	name   string
	host   *lab.Host
	proc   *lab.Proc
	client *http.Client // admin requests, dialed from the node's own namespace
	flockd bool         // runs flockd, which has an admin listener
}

func (n *node) addr() string { return n.host.IP.String() + ":" + httpPort }

// url is where the node serves path: flockd's admin endpoints listen on
// the host's loopback ([server] admin's default), reached by n.client
// from inside the host's namespace.
func (n *node) url(path string) string {
	if n.flockd && (strings.HasPrefix(path, "/cluster/") || path == "/metrics") {
		return "http://127.0.0.1:9090" + path
	}
	return "http://" + n.addr() + path
}

// newCluster builds a lab with n server hosts and the lb host; nothing runs
// yet.
func (e *env) newCluster(ctx context.Context, n int) (*cluster, error) {
	opts := lab.Options{Prefix: labPrefix}
	if e.opts.Verbose {
		opts.Logf = e.logf
	}
	l, err := lab.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	c := &cluster{env: e, lab: l}
	for i := 1; i <= n; i++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("node%d", i))
		if err != nil {
			return nil, errors.Join(err, l.Close())
		}
		c.nodes = append(c.nodes, &node{name: h.Name, host: h, client: h.HTTPClient()})
	}
	if c.lb, err = l.AddHost(ctx, "lb"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return c, nil
}

// close tears the lab down (every process is killed). If the stage failed
// (*errp != nil), the servers' last output goes to the progress output first.
func (c *cluster) close(errp *error) {
	if *errp != nil {
		for _, n := range c.nodes {
			if n.proc != nil {
				c.env.logf("--- last output of %s ---\n%s", n.name, tail(n.proc.Output(), 3000))
			}
		}
	}
	if err := c.lab.Close(); err != nil {
		c.env.logf("lab close: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// startFlockd runs flockd on n with the given replication mode and the
// defaults for everything else (session mode delta).
func (c *cluster) startFlockd(ctx context.Context, n *node, replication string) error {
	return c.startFlockdMode(ctx, n, "", replication)
}

// startFlockdMode runs flockd on n with the given session mode
// ([cluster.manager] mode, "delta" or "backup"; "" leaves the default) and
// replication mode.
func (c *cluster) startFlockdMode(ctx context.Context, n *node, mode, replication string) error {
	cfg := filepath.Join(c.env.dir, fmt.Sprintf("%s-%s.toml", c.lab.BridgeNS(), n.name))
	text := fmt.Sprintf("[cluster]\ndomain = %q\n\n[cluster.manager]\nreplication = %q\n", domain, replication)
	if c.env.opts.Profile != "" {
		text = "[server]\npprof = true\n\n" + text
	}
	if mode != "" {
		text += fmt.Sprintf("mode = %q\n", mode)
	}
	if c.keyFile != "" {
		text += fmt.Sprintf("\n[cluster.security]\nkey_file = %q\n", c.keyFile)
	} else {
		text += "\n[cluster.security]\ninsecure = true\n"
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return err
	}
	ip := n.host.IP.String()
	n.flockd = true
	return c.run(ctx, n, c.env.flockd, "--config", cfg, "--name", n.name, "--http", n.addr(),
		"--bind", ip, "--receiver-host", ip)
}

// startBare runs the bare baseline server on n.
func (c *cluster) startBare(ctx context.Context, n *node) error {
	n.flockd = false
	return c.run(ctx, n, c.env.bare, "--http", n.addr())
}

func (c *cluster) run(ctx context.Context, n *node, path string, args ...string) error {
	p, err := n.host.Start(ctx, lab.ProcConfig{Path: path, Args: args})
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// startAll starts flockd on every node, measures the convergence (from the
// last start until each node lists all the others) and waits until every
// node is healthy.
func (c *cluster) startAll(ctx context.Context, replication string) (time.Duration, error) {
	for _, n := range c.nodes {
		if err := c.startFlockd(ctx, n, replication); err != nil {
			return 0, err
		}
	}
	last := time.Now()
	if err := waitViews(ctx, c.nodes, others(c.nodes), 30*time.Second); err != nil {
		return 0, err
	}
	took := time.Since(last)
	for _, n := range c.nodes {
		if err := n.waitHealthy(ctx, 90*time.Second); err != nil {
			return 0, err
		}
	}
	return took, nil
}

// get sends GET path to the node with the session cookie, if any, and
// returns the status code and body.
func (n *node) get(ctx context.Context, path, cookie string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", n.url(path), nil)
	if err != nil {
		return 0, nil, err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookieName+"="+cookie)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// status is the part of GET /cluster/status (admin.Status) the benchmark
// reads.
type status struct {
	Sessions int `json:"sessions"`
	Manager  struct {
		Mode             string        `json:"mode"`
		TransferDuration time.Duration `json:"transfer_duration"`
		TransferState    string        `json:"transfer_state"`
	} `json:"manager"`
	Members []struct {
		Name string `json:"name"`
	} `json:"members"`
}

func (n *node) status(ctx context.Context) (status, error) {
	var s status
	code, body, err := n.get(ctx, "/cluster/status", "")
	if err != nil {
		return s, err
	}
	if code != http.StatusOK {
		return s, fmt.Errorf("%s: /cluster/status: %d", n.name, code)
	}
	return s, json.Unmarshal(body, &s)
}

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

// others is the usual expectation of a view: every other node of nodes.
func others(nodes []*node) func(*node) []string {
	return func(n *node) []string {
		var names []string
		for _, o := range nodes {
			if o != n {
				names = append(names, o.name)
			}
		}
		slices.Sort(names)
		return names
	}
}

// waitViews polls the nodes every 20 ms until each lists exactly want(n).
func waitViews(ctx context.Context, nodes []*node, want func(*node) []string, timeout time.Duration) error {
	last := "no poll yet"
	return poll(ctx, timeout, func(ctx context.Context) bool {
		for _, n := range nodes {
			got, err := n.members(ctx)
			if err != nil || !slices.Equal(got, want(n)) {
				last = fmt.Sprintf("%s lists %v (err %v), want %v", n.name, got, err, want(n))
				return false
			}
		}
		return true
	}, func() string { return "views did not settle: " + last })
}

// waitHealthy polls GET /healthz until it answers 200.
func (n *node) waitHealthy(ctx context.Context, timeout time.Duration) error {
	last := "no poll yet"
	return poll(ctx, timeout, func(ctx context.Context) bool {
		code, body, err := n.get(ctx, "/healthz", "")
		last = fmt.Sprintf("%d %q %v", code, strings.TrimSpace(string(body)), err)
		return err == nil && code == http.StatusOK
	}, func() string { return n.name + ": /healthz not 200: " + last })
}

// waitSessions polls /cluster/status until the node holds at least want
// sessions.
func (n *node) waitSessions(ctx context.Context, want int, timeout time.Duration) error {
	got := -1
	return poll(ctx, timeout, func(ctx context.Context) bool {
		s, err := n.status(ctx)
		if err == nil {
			got = s.Sessions
		}
		return err == nil && s.Sessions >= want
	}, func() string { return fmt.Sprintf("%s holds %d sessions, want %d", n.name, got, want) })
}

// poll calls done every 20 ms until it reports true; it fails after
// timeout (with why's message) or when ctx ends.
func poll(parent context.Context, timeout time.Duration, done func(context.Context) bool, why func() string) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if done(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("after %v: %s", timeout, why())
		case <-tick.C:
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
