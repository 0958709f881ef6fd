//go:build linux

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The session modes side by side: [cluster.manager] mode = "delta" (every
// node holds every session; a write goes to the N-1 others) against
// mode = "backup" (a session lives on its owner and one backup; a write
// goes to the backup only). Both replicate in sync mode. Every figure of
// the two modes comes from one lab of five hosts, in which the servers are
// started afresh for each configuration, the two modes one after the other
// at each size.

// sessionModes are the modes compared, in the order of the rows.
var sessionModes = []string{"delta", "backup"}

// modeSizes are the cluster sizes of the messages-per-write runs; the
// throughput runs use those of at least 3 nodes.
var modeSizes = []int{2, 3, 5}

// memNodes is the size of the cluster of the memory-per-session figure.
const memNodes = 5

const (
	// msgSessions sessions, each sent msgRequests writes by its own
	// client: the fixed number of writes of a messages-per-write run.
	msgSessions, msgRequests = 40, 25
	// settle is waited between creating the sessions of a
	// messages-per-write run and reading the counters: two rounds of the
	// backup mode's rebalance check (every 250ms by default), so that
	// whatever it would send is sent before the measurement.
	settle = 500 * time.Millisecond
)

// modeKey is one configuration: session mode and cluster size.
type modeKey struct {
	mode  string
	nodes int
}

// msgResult is one messages-per-write run.
type msgResult struct {
	writes   int
	messages float64 // flock_messages_sent_total{type="delta"} growth, summed over the nodes
}

func (m msgResult) perWrite() float64 { return m.messages / float64(m.writes) }

// modeMemory is the VmRSS growth of every node of a memNodes cluster while
// total sessions were created, spread round-robin over the nodes.
type modeMemory struct {
	total int
	names []string
	nodes []memResult // count: the sessions the node holds
}

// median is the node whose growth is the median of the nodes'.
func (m modeMemory) median() (name string, r memResult) {
	idx := make([]int, len(m.nodes))
	for i := range idx {
		idx[i] = i
	}
	growth := func(i int) int64 { return m.nodes[i].after - m.nodes[i].before }
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(growth(a), growth(b)) })
	i := idx[(len(idx)-1)/2]
	return m.names[i], m.nodes[i]
}

// modesResult is every figure of the mode comparison.
type modesResult struct {
	throughput map[modeKey]loadResult
	messages   map[modeKey]msgResult
	memory     map[string]modeMemory
}

// measureModes measures both session modes in one lab of five hosts.
func (e *env) measureModes(ctx context.Context) (res modesResult, err error) {
	res = modesResult{throughput: map[modeKey]loadResult{}, messages: map[modeKey]msgResult{}, memory: map[string]modeMemory{}}
	err = e.withCluster(ctx, max(slices.Max(modeSizes), memNodes), func(c *cluster) error {
		for _, size := range modeSizes {
			for _, mode := range sessionModes {
				k := modeKey{mode, size}
				if err := e.withNodes(ctx, c, c.nodes[:size], mode, func(nodes []*node) error {
					if size >= 3 {
						r, err := e.load(ctx, c, nodes, "/counter", fmt.Sprintf("flock %d nodes sync, %s mode", size, mode))
						if err != nil {
							return err
						}
						res.throughput[k] = r
					}
					r, err := e.messagesPerWrite(ctx, c, nodes)
					res.messages[k] = r
					return err
				}); err != nil {
					return fmt.Errorf("%s mode, %d nodes: %w", mode, size, err)
				}
			}
		}
		for _, mode := range sessionModes {
			if err := e.withNodes(ctx, c, c.nodes[:memNodes], mode, func(nodes []*node) error {
				r, err := e.fillSpread(ctx, c, nodes, mode, e.opts.MemSessions)
				res.memory[mode] = r
				return err
			}); err != nil {
				return fmt.Errorf("memory, %s mode, %d nodes: %w", mode, memNodes, err)
			}
		}
		return nil
	})
	return res, err
}

// withNodes starts flockd in the given session mode (sync replication) on
// nodes, waits until they list each other, are healthy and report that
// mode, runs fn, and kills them again. The convergence of a 3-node start
// is recorded with the others.
func (e *env) withNodes(ctx context.Context, c *cluster, nodes []*node, mode string, fn func([]*node) error) error {
	defer func() {
		for _, n := range nodes {
			if n.proc != nil {
				if err := n.proc.Kill(); err != nil {
					e.logf("%s: %v", n.name, err)
				}
			}
		}
	}()
	for _, n := range nodes {
		if err := c.startFlockdMode(ctx, n, mode, "sync"); err != nil {
			return err
		}
	}
	last := time.Now()
	if err := waitViews(ctx, nodes, others(nodes), 30*time.Second); err != nil {
		return err
	}
	took := time.Since(last)
	for _, n := range nodes {
		if err := n.waitHealthy(ctx, 90*time.Second); err != nil {
			return err
		}
		st, err := n.status(ctx)
		if err != nil {
			return err
		}
		if st.Manager.Mode != mode {
			return fmt.Errorf("%s: manager mode %q, want %q", n.name, st.Manager.Mode, mode)
		}
	}
	if len(nodes) == 3 {
		e.addConvergence(took)
	}
	e.logf("%d nodes (%s mode, sync) converged %v after the last start", len(nodes), mode, took.Round(time.Millisecond))
	return fn(nodes)
}

// messagesPerWrite creates msgSessions sessions, session i on
// nodes[i % len(nodes)] (its owner in backup mode), then sends each
// msgRequests writes (GET /counter) to the node it was created on, and
// returns the growth of the delta messages the nodes sent.
func (e *env) messagesPerWrite(ctx context.Context, c *cluster, nodes []*node) (msgResult, error) {
	res := msgResult{writes: msgSessions * msgRequests}
	tr := newTransport(c.lb, msgSessions)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	cookies := make([]string, msgSessions)
	for i := range cookies {
		var err error
		if cookies[i], err = newSession(ctx, hc, nodes[i%len(nodes)], "/counter"); err != nil {
			return res, err
		}
	}
	if err := sleep(ctx, settle); err != nil {
		return res, err
	}
	before, err := scrapeCounter(ctx, nodes, deltasSeries)
	if err != nil {
		return res, err
	}
	errs := make([]error, msgSessions)
	var wg sync.WaitGroup
	for i, cookie := range cookies {
		wg.Go(func() {
			url := nodes[i%len(nodes)].url("/counter")
			for want := 2; want <= msgRequests+1; want++ {
				got, err := fetchCount(ctx, hc, url, cookie)
				if err == nil && got != want {
					err = fmt.Errorf("answered %d, want %d", got, want)
				}
				if err != nil {
					errs[i] = fmt.Errorf("session %d, request %d: %w", i, want-1, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	after, err := scrapeCounter(ctx, nodes, deltasSeries)
	if err != nil {
		return res, err
	}
	res.messages = after - before
	e.logf("messages per write, %d nodes: %d writes, %.0f delta messages: %.3f per write",
		len(nodes), res.writes, res.messages, res.perWrite())
	return res, nil
}

// fetchCount sends GET url with the session cookie and returns the number
// the counter answered.
func fetchCount(ctx context.Context, hc *http.Client, url, cookie string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Cookie", cookieName+"="+cookie)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strconv.Atoi(strings.TrimSpace(string(body)))
}

// fillSpread reads the VmRSS of every node, creates total sessions of
// 1 KiB spread round-robin over the nodes (no cookie, so each request makes
// one), waits until the nodes hold every copy (each node all of them in
// delta mode, two copies of each in backup mode), and reads VmRSS again.
func (e *env) fillSpread(ctx context.Context, c *cluster, nodes []*node, mode string, total int) (modeMemory, error) {
	res := modeMemory{total: total}
	workers := min(e.opts.Workers, 50)
	// Warm the HTTP path of every node with as many connections as the
	// creation may use, without creating sessions.
	for _, n := range nodes {
		if err := warm(ctx, c.lb, n, workers); err != nil {
			return res, err
		}
	}
	for _, n := range nodes {
		rss, err := n.proc.RSS()
		if err != nil {
			return res, err
		}
		res.names = append(res.names, n.name)
		res.nodes = append(res.nodes, memResult{before: rss})
	}
	e.logf("memory: %d sessions of 1 KiB round-robin over %d nodes, %s mode", total, len(nodes), mode)
	if _, err := createSessions(ctx, c.lb, nodes, fillPath, total, workers); err != nil {
		return res, err
	}
	// Every node holds every session (delta), or the cluster holds two
	// copies of each (backup: each node its own and those it backs up,
	// spread by rendezvous placement); then each node's count is read.
	copies := total * len(nodes)
	if mode == "backup" {
		copies = 2 * total
	}
	got := 0
	err := poll(ctx, 5*time.Minute, func(ctx context.Context) bool {
		got = 0
		for i, n := range nodes {
			s, err := n.status(ctx)
			if err != nil {
				return false
			}
			res.nodes[i].count = s.Sessions
			got += s.Sessions
		}
		return got >= copies
	}, func() string { return fmt.Sprintf("%d copies held, want %d", got, copies) })
	if err != nil {
		return res, err
	}
	for i, n := range nodes {
		rss, err := n.proc.RSS()
		if err != nil {
			return res, err
		}
		r := &res.nodes[i]
		r.after = rss
		e.logf("memory, %s mode: %s holds %d, VmRSS %.1f -> %.1f MiB: %.0f B per session held, %.0f B per session of the cluster",
			mode, n.name, r.count, float64(r.before)/(1<<20), float64(r.after)/(1<<20), r.perSession(), float64(r.after-r.before)/float64(total))
	}
	return res, nil
}

// stepModes measures the two session modes side by side: throughput with 3
// and 5 nodes, messages per write with 2, 3 and 5, and memory per session
// with 5.
func (e *env) stepModes(ctx context.Context, t *table) error {
	r, err := e.measureModes(ctx)
	if err != nil {
		return fmt.Errorf("session modes: %w", err)
	}
	t.modeRows(r, e.bareLoad, e.opts)
	return nil
}

func (t *table) modeRows(r modesResult, bare loadResult, o options) {
	for _, size := range modeSizes {
		if size < 3 {
			continue
		}
		for _, mode := range sessionModes {
			note := fmt.Sprintf("%d clients, %v; each client sticks to one node, round-robin over the %d", o.Clients, o.Duration, size)
			if mode == "delta" && size == 3 {
				note += "; the configuration of the 3-node sync row above (delta is the default), measured again next to backup"
			}
			t.throughput(fmt.Sprintf("flock, %d nodes sync, %s mode, GET /counter", size, mode), r.throughput[modeKey{mode, size}], bare, note)
		}
	}
	for _, size := range modeSizes {
		for _, mode := range sessionModes {
			m := r.messages[modeKey{mode, size}]
			want := 1
			if mode == "delta" {
				want = size - 1
			}
			t.add(fmt.Sprintf("messages per write: %d nodes, %s mode", size, mode), fmt.Sprintf("%.3f", m.perWrite()), "msg",
				fmt.Sprintf("expected %d; growth of %s summed over the %d nodes (%.0f) / %d sticky GET /counter on %d existing sessions",
					want, deltasSeries, size, m.messages, m.writes, msgSessions))
		}
	}
	mib := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	for _, mode := range sessionModes {
		m := r.memory[mode]
		name, med := m.median()
		var lo, hi float64
		for i, n := range m.nodes {
			g := float64(n.after-n.before) / float64(m.total)
			if i == 0 || g < lo {
				lo = g
			}
			if i == 0 || g > hi {
				hi = g
			}
		}
		t.add(fmt.Sprintf("memory per session: one node of %d, %s mode, %d sessions of 1 KiB", memNodes, mode, m.total),
			fmt.Sprintf("%.0f", float64(med.after-med.before)/float64(m.total)), "B",
			fmt.Sprintf("VmRSS growth of the median node (%s: %s -> %s MiB) / sessions in the cluster, made round-robin through all %d nodes "+
				"(all %d nodes: %.0f..%.0f B); %s holds %d of them: %.0f B per session held",
				name, mib(med.before), mib(med.after), memNodes, memNodes, lo, hi, name, med.count, med.perSession()))
	}
}
