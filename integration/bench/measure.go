//go:build linux

package main

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// Every measurement builds its own lab, runs its servers, measures, and
// tears the lab down again, also on error.

// withCluster runs fn on a new lab of n server hosts and closes the lab.
func (e *env) withCluster(ctx context.Context, n int, fn func(c *cluster) error) (err error) {
	c, err := e.newCluster(ctx, n)
	if err != nil {
		return err
	}
	defer c.close(&err)
	return fn(c)
}

// start3 starts flockd on the three nodes of c and records the
// convergence time.
func (e *env) start3(ctx context.Context, c *cluster, replication string) error {
	took, err := c.startAll(ctx, replication)
	if err != nil {
		return err
	}
	e.addConvergence(took)
	e.logf("3 nodes (%s) converged %v after the last start", replication, took.Round(time.Millisecond))
	return nil
}

func (e *env) loadSpec(targets []*node, path string) loadSpec {
	d := e.opts.Duration
	return loadSpec{targets: targets, path: path, clients: e.opts.Clients, warmup: warmupOf(d), duration: d}
}

// warmupOf is the untimed lead-in of a run of duration d.
func warmupOf(d time.Duration) time.Duration { return min(d/5, time.Second) }

func (e *env) load(ctx context.Context, c *cluster, targets []*node, path, what string) (loadResult, error) {
	e.logf("%s: %d clients over %d node(s), GET %s, %v", what, e.opts.Clients, len(targets), path, e.opts.Duration)
	res, err := runLoad(ctx, c.lb, e.loadSpec(targets, path))
	if err == nil {
		e.logf("%s: %.0f req/s (%d errors)", what, res.rps, res.errors)
	}
	return res, err
}

// measureBare is the throughput of the bare handler (no flock).
func (e *env) measureBare(ctx context.Context) (res loadResult, err error) {
	err = e.withCluster(ctx, 1, func(c *cluster) error {
		n := c.nodes[0]
		if err := c.startBare(ctx, n); err != nil {
			return err
		}
		if err := n.waitHealthy(ctx, 30*time.Second); err != nil {
			return err
		}
		res, err = e.load(ctx, c, c.nodes, "/counter", "bare")
		return err
	})
	return res, err
}

// measureSingle is the throughput of one flockd without peers.
func (e *env) measureSingle(ctx context.Context) (res loadResult, err error) {
	err = e.withCluster(ctx, 1, func(c *cluster) error {
		n := c.nodes[0]
		if err := c.startFlockd(ctx, n, "sync"); err != nil {
			return err
		}
		if err := n.waitHealthy(ctx, 30*time.Second); err != nil {
			return err
		}
		res, err = e.load(ctx, c, c.nodes, "/counter", "flock 1 node")
		return err
	})
	return res, err
}

// measureAsync3 is the throughput of three nodes in async mode, each client
// sticking to one node.
func (e *env) measureAsync3(ctx context.Context) (res loadResult, err error) {
	err = e.withCluster(ctx, 3, func(c *cluster) error {
		if err := e.start3(ctx, c, "async"); err != nil {
			return err
		}
		res, err = e.load(ctx, c, c.nodes, "/counter", "flock 3 nodes async")
		return err
	})
	return res, err
}

// sync3Result is everything measured on the 3-node sync cluster.
type sync3Result struct {
	counter, peek        loadResult
	latCounter, latPeek  latencies
	hist                 histogram // flock_replication_seconds during the /counter latency run
	histFound            bool
	histP50, histP99     time.Duration
	latRate, latSessions int
	latDuration, latWarm time.Duration
}

// measureSync3 measures the 3-node sync cluster: throughput of /counter
// and of /counter/peek, then the latency of both at a steady rate.
func (e *env) measureSync3(ctx context.Context) (res sync3Result, err error) {
	err = e.withCluster(ctx, 3, func(c *cluster) error {
		if err := e.start3(ctx, c, "sync"); err != nil {
			return err
		}
		if res.counter, err = e.load(ctx, c, c.nodes, "/counter", "flock 3 nodes sync"); err != nil {
			return err
		}
		if res.peek, err = e.load(ctx, c, c.nodes, "/counter/peek", "flock 3 nodes sync, read-only"); err != nil {
			return err
		}
		return e.measureLatencies(ctx, c, &res)
	})
	return res, err
}

// measureLatencies sends /counter, then /counter/peek, to node1 at a steady
// rate, and reads node1's replication histogram around the /counter run.
func (e *env) measureLatencies(ctx context.Context, c *cluster, res *sync3Result) error {
	n := c.nodes[0]
	res.latRate, res.latSessions = e.opts.Rate, 16
	res.latDuration, res.latWarm = e.opts.Duration, warmupOf(e.opts.Duration)
	cookies, err := sessionsOn(ctx, c.lb, n, res.latSessions)
	if err != nil {
		return err
	}
	spec := latencySpec{target: n, cookies: cookies, rate: res.latRate, warmup: res.latWarm, duration: res.latDuration}
	var before histogram
	var found bool
	var scrapeErr error
	spec.onTimed = func() { before, found, scrapeErr = scrapeReplication(ctx, n) }
	e.logf("latency: GET /counter on node1 at %d req/s for %v", spec.rate, spec.duration)
	spec.path = "/counter"
	if res.latCounter, err = measureLatency(ctx, c.lb, spec); err != nil {
		return err
	}
	after, found2, err := scrapeReplication(ctx, n)
	if err = errors.Join(err, scrapeErr); err != nil {
		return err
	}
	if res.histFound = found && found2; res.histFound {
		res.hist = after.minus(before)
		res.histP50, res.histP99 = res.hist.quantile(0.5), res.hist.quantile(0.99)
	}
	spec.onTimed = nil
	e.logf("latency: GET /counter/peek on node1 at %d req/s for %v", spec.rate, spec.duration)
	spec.path = "/counter/peek"
	res.latPeek, err = measureLatency(ctx, c.lb, spec)
	return err
}

// sessionsOn creates k sessions on n and returns their cookies.
func sessionsOn(ctx context.Context, via *lab.Host, n *node, k int) ([]string, error) {
	tr := newTransport(via, 1)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	var cookies []string
	for range k {
		ck, err := newSession(ctx, hc, n, "/counter")
		if err != nil {
			return nil, err
		}
		cookies = append(cookies, ck)
	}
	return cookies, nil
}

// measureFailure starts three nodes, applies fault to node3, and returns
// the time until node1 and node2 both no longer list it.
func (e *env) measureFailure(ctx context.Context, what string, fault func(*lab.Proc) error) (took time.Duration, err error) {
	err = e.withCluster(ctx, 3, func(c *cluster) error {
		if err := e.start3(ctx, c, "sync"); err != nil {
			return err
		}
		victim, survivors := c.nodes[2], c.nodes[:2]
		e.logf("failure detection: %s of %s", what, victim.name)
		start := time.Now()
		if err := fault(victim.proc); err != nil {
			return err
		}
		if err := waitViews(ctx, survivors, others(survivors), time.Minute); err != nil {
			return err
		}
		took = time.Since(start)
		e.logf("failure detection: %s seen by both others after %v", what, took.Round(time.Millisecond))
		return nil
	})
	return took, err
}

// transferResult is the state transfer to a third node.
type transferResult struct {
	sessions      int
	created       time.Duration // creating the sessions on the first two nodes
	healthy       time.Duration // node3's start until /healthz 200
	complete      time.Duration // node3's start until it holds every session
	managerTook   time.Duration // node3's manager transfer_duration
	transferState string
}

// measureTransfer creates total sessions on a 2-node async cluster, starts
// a third node, and times its state transfer.
func (e *env) measureTransfer(ctx context.Context, total int) (res transferResult, err error) {
	res.sessions = total
	err = e.withCluster(ctx, 3, func(c *cluster) error {
		pair, n3 := c.nodes[:2], c.nodes[2]
		if err := e.startPair(ctx, c, pair, "async"); err != nil {
			return err
		}
		e.logf("state transfer: creating %d sessions on node1+node2 (%d clients)", total, e.opts.Workers)
		if res.created, err = createSessions(ctx, c.lb, pair, "/counter", total, e.opts.Workers); err != nil {
			return err
		}
		for _, n := range pair {
			if err := n.waitSessions(ctx, total, 5*time.Minute); err != nil {
				return err
			}
		}
		e.logf("state transfer: %d sessions made in %v; starting node3", total, res.created.Round(time.Millisecond))
		return e.timeTransfer(ctx, c, n3, &res)
	})
	return res, err
}

// startPair starts flockd on two nodes and waits until they list each
// other and are healthy.
func (e *env) startPair(ctx context.Context, c *cluster, pair []*node, replication string) error {
	for _, n := range pair {
		if err := c.startFlockd(ctx, n, replication); err != nil {
			return err
		}
	}
	if err := waitViews(ctx, pair, others(pair), 30*time.Second); err != nil {
		return err
	}
	for _, n := range pair {
		if err := n.waitHealthy(ctx, 90*time.Second); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) timeTransfer(ctx context.Context, c *cluster, n3 *node, res *transferResult) error {
	start := time.Now()
	if err := c.startFlockd(ctx, n3, "async"); err != nil {
		return err
	}
	if err := n3.waitHealthy(ctx, 5*time.Minute); err != nil {
		return err
	}
	res.healthy = time.Since(start)
	if err := n3.waitSessions(ctx, res.sessions, 5*time.Minute); err != nil {
		return err
	}
	res.complete = time.Since(start)
	st, err := n3.status(ctx)
	if err != nil {
		return err
	}
	res.managerTook, res.transferState = st.Manager.TransferDuration, st.Manager.TransferState
	e.logf("state transfer: node3 healthy after %v, all %d sessions after %v, transfer_duration %v (%s)",
		res.healthy.Round(time.Millisecond), res.sessions, res.complete.Round(time.Millisecond),
		res.managerTook.Round(time.Millisecond), res.transferState)
	return nil
}

// memResult is the VmRSS growth of one node over count sessions.
type memResult struct {
	count         int
	before, after int64 // bytes
}

func (m memResult) perSession() float64 { return float64(m.after-m.before) / float64(m.count) }

// fillPath stores 1 KiB in a new session.
const fillPath = "/counter/fill?bytes=1024"

// measureMemory1 is the memory per session on a single node.
func (e *env) measureMemory1(ctx context.Context, count int) (res memResult, err error) {
	err = e.withCluster(ctx, 1, func(c *cluster) error {
		n := c.nodes[0]
		if err := c.startFlockd(ctx, n, "sync"); err != nil {
			return err
		}
		if err := n.waitHealthy(ctx, 30*time.Second); err != nil {
			return err
		}
		r, err := e.fillAndMeasure(ctx, c, n, []*node{n}, count)
		res = r[0]
		return err
	})
	return res, err
}

// measureMemory2 is the memory per session on both nodes of a pair whose
// sessions are all created on node1: res[0] is node1's, res[1] the
// replica's.
func (e *env) measureMemory2(ctx context.Context, count int) (res []memResult, err error) {
	err = e.withCluster(ctx, 2, func(c *cluster) error {
		if err := e.startPair(ctx, c, c.nodes, "sync"); err != nil {
			return err
		}
		res, err = e.fillAndMeasure(ctx, c, c.nodes[0], c.nodes, count)
		return err
	})
	return res, err
}

// fillAndMeasure reads the VmRSS of every node of watch, creates count
// sessions of 1 KiB on origin, waits until every watched node holds them,
// and reads VmRSS again.
func (e *env) fillAndMeasure(ctx context.Context, c *cluster, origin *node, watch []*node, count int) ([]memResult, error) {
	workers := min(e.opts.Workers, 50)
	// Warm the HTTP path with the same number of connections, without
	// creating sessions: a peek without a cookie makes none.
	if err := warm(ctx, c.lb, origin, workers); err != nil {
		return nil, err
	}
	res := make([]memResult, len(watch))
	for i, n := range watch {
		res[i].count = count
		var err error
		if res[i].before, err = n.proc.RSS(); err != nil {
			return nil, err
		}
	}
	e.logf("memory: %d sessions of 1 KiB on %s, %d node(s)", count, origin.name, len(watch))
	if _, err := createSessions(ctx, c.lb, []*node{origin}, fillPath, count, workers); err != nil {
		return nil, err
	}
	for i, n := range watch {
		if err := n.waitSessions(ctx, count, 5*time.Minute); err != nil {
			return nil, err
		}
		var err error
		if res[i].after, err = n.proc.RSS(); err != nil {
			return nil, err
		}
		e.logf("memory: %s VmRSS %.1f -> %.1f MiB: %.0f B/session", n.name,
			float64(res[i].before)/(1<<20), float64(res[i].after)/(1<<20), res[i].perSession())
	}
	return res, nil
}

// warm sends 20 requests per connection of GET /counter/peek without a
// cookie to n over conns connections.
func warm(ctx context.Context, via *lab.Host, n *node, conns int) error {
	tr := newTransport(via, conns)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for i := range conns {
		wg.Go(func() {
			for range 20 {
				if _, err := fetch(ctx, hc, n.url("/counter/peek"), ""); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
