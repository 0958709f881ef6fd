//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// requestTimeout bounds one request of the load generator.
const requestTimeout = 30 * time.Second

// newTransport returns a keep-alive transport whose connections are dialed
// from inside the host via.
func newTransport(via *lab.Host, conns int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           via.DialContext,
		MaxIdleConns:          0, // no total limit
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: requestTimeout,
		DisableCompression:    true,
	}
}

// fetch sends GET url with the session cookie (if any), reads the whole
// body, and returns the session cookie of the response (the one sent if
// the response sets none). A status other than 200 is an error.
func fetch(ctx context.Context, hc *http.Client, url, cookie string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookieName+"="+cookie)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			return c.Value, nil
		}
	}
	return cookie, nil
}

// newSession creates a session on n (GET path without a cookie) and
// returns its cookie.
func newSession(ctx context.Context, hc *http.Client, n *node, path string) (string, error) {
	cookie, err := fetch(ctx, hc, n.url(path), "")
	if err == nil && cookie == "" {
		err = fmt.Errorf("%s: GET %s set no %s cookie", n.name, path, cookieName)
	}
	return cookie, err
}

// loadSpec is one throughput configuration: clients keep-alive clients,
// client i sending to targets[i % len(targets)] with its own session, one
// request after the other, as fast as the server answers.
type loadSpec struct {
	targets  []*node
	path     string
	clients  int
	warmup   time.Duration // load before the timed part, not counted
	duration time.Duration // the timed part
	// cpu, if set, reads the servers' CPU time, so that the result holds
	// what the timed part cost them.
	cpu func() (time.Duration, error)
	// onTimed, if set, is called when the timed part begins.
	onTimed func()
}

type loadResult struct {
	rps      float64
	requests int64         // completed in the timed part
	cpu      time.Duration // the servers' CPU time in the timed part, if asked
	lat      latencies     // of the requests answered in the timed part (Go generator only)
	p99      time.Duration // of the requests answered in the timed part
	errors   int64         // failed requests, in the whole run
	firstErr error
}

// cpuPerRequest is the servers' CPU time per request of the timed part.
func (r loadResult) cpuPerRequest() time.Duration {
	return r.cpu / time.Duration(max(r.requests, 1))
}

// loadClient is one simulated user: its own connection and session.
type loadClient struct {
	tr     *http.Transport
	hc     *http.Client
	url    string
	cookie string
	lat    []time.Duration // of the requests answered while timed
}

// makeClients gives every client a connection and a session, before the
// timed part.
func makeClients(ctx context.Context, via *lab.Host, s loadSpec) ([]*loadClient, error) {
	var clients []*loadClient
	for i := range s.clients {
		n := s.targets[i%len(s.targets)]
		tr := newTransport(via, 1)
		c := &loadClient{tr: tr, hc: &http.Client{Transport: tr, Timeout: requestTimeout}, url: n.url(s.path)}
		clients = append(clients, c)
		cookie, err := newSession(ctx, c.hc, n, "/counter")
		if err != nil {
			closeClients(clients)
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
		c.cookie = cookie
	}
	return clients, nil
}

func closeClients(clients []*loadClient) {
	for _, c := range clients {
		c.tr.CloseIdleConnections()
	}
}

// counters of a load run, shared by its clients.
type loadCounters struct {
	done, failed atomic.Int64
	stop, timed  atomic.Bool
	mu           sync.Mutex
	firstErr     error
}

func (lc *loadCounters) fail(err error) {
	lc.failed.Add(1)
	lc.mu.Lock()
	if lc.firstErr == nil {
		lc.firstErr = err
	}
	lc.mu.Unlock()
}

// loop sends requests until stop; the request under way then is finished.
func (c *loadClient) loop(ctx context.Context, lc *loadCounters) {
	for !lc.stop.Load() && ctx.Err() == nil {
		t := time.Now()
		if _, err := fetch(ctx, c.hc, c.url, c.cookie); err != nil {
			if ctx.Err() == nil {
				lc.fail(err)
			}
			continue
		}
		if lc.timed.Load() {
			c.lat = append(c.lat, time.Since(t))
		}
		lc.done.Add(1)
	}
}

// runLoad runs one throughput configuration and returns the requests per
// second completed in the timed part.
func runLoad(ctx context.Context, via *lab.Host, s loadSpec) (loadResult, error) {
	clients, err := makeClients(ctx, via, s)
	if err != nil {
		return loadResult{}, err
	}
	defer closeClients(clients)
	var lc loadCounters
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.loop(ctx, &lc) })
	}
	defer wg.Wait()
	defer lc.stop.Store(true)
	if err := sleep(ctx, s.warmup); err != nil {
		return loadResult{}, err
	}
	var cpu0, cpu1 time.Duration
	if s.cpu != nil {
		if cpu0, err = s.cpu(); err != nil {
			return loadResult{}, err
		}
	}
	lc.timed.Store(true)
	if s.onTimed != nil {
		s.onTimed()
	}
	n0, t0 := lc.done.Load(), time.Now()
	if err := sleep(ctx, s.duration); err != nil {
		return loadResult{}, err
	}
	n1, t1 := lc.done.Load(), time.Now()
	lc.timed.Store(false)
	if s.cpu != nil {
		if cpu1, err = s.cpu(); err != nil {
			return loadResult{}, err
		}
	}
	res := loadResult{requests: n1 - n0, rps: float64(n1-n0) / t1.Sub(t0).Seconds(), cpu: cpu1 - cpu0}
	lc.stop.Store(true)
	wg.Wait()
	for _, c := range clients {
		res.lat.sorted = append(res.lat.sorted, c.lat...)
	}
	slices.Sort(res.lat.sorted)
	if len(res.lat.sorted) > 0 {
		res.p99 = res.lat.quantile(0.99)
	}
	res.errors = lc.failed.Load()
	res.firstErr = lc.firstErr
	if res.requests == 0 {
		return res, fmt.Errorf("no request completed in %v (%d failed; first: %v)", s.duration, res.errors, res.firstErr)
	}
	return res, nil
}

// latencySpec is an open-loop run at a steady rate: request i is sent at
// start + i/rate whether or not the earlier ones have been answered.
type latencySpec struct {
	target   *node
	path     string
	cookies  []string // request i uses cookies[i % len]
	rate     int      // requests per second
	warmup   time.Duration
	duration time.Duration
	onTimed  func() // if set, called when the timed part begins
}

// latencies holds the client-side latency of every request of the timed
// part, sorted.
type latencies struct {
	sorted []time.Duration
	errors int
}

// measureLatency runs spec and returns the latencies, from just before the
// request is handed to the client until its body has been read.
func measureLatency(ctx context.Context, via *lab.Host, s latencySpec) (latencies, error) {
	tr := newTransport(via, 64)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	var (
		mu  sync.Mutex
		out latencies
		wg  sync.WaitGroup
	)
	interval := time.Second / time.Duration(s.rate)
	start := time.Now()
	timed, end := start.Add(s.warmup), start.Add(s.warmup+s.duration)
	begun := false
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			break
		}
		if err := sleep(ctx, time.Until(at)); err != nil {
			wg.Wait()
			return out, err
		}
		if !begun && !at.Before(timed) {
			begun = true
			if s.onTimed != nil {
				s.onTimed()
			}
		}
		cookie := s.cookies[i%len(s.cookies)]
		wg.Go(func() {
			t := time.Now()
			_, err := fetch(ctx, hc, s.target.url(s.path), cookie)
			d := time.Since(t)
			if at.Before(timed) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.errors++
				return
			}
			out.sorted = append(out.sorted, d)
		})
	}
	wg.Wait()
	slices.Sort(out.sorted)
	if len(out.sorted) == 0 {
		return out, errors.New("no request answered in the timed part")
	}
	return out, ctx.Err()
}

// quantile returns the q-quantile (0 < q <= 1) by nearest rank.
func (l latencies) quantile(q float64) time.Duration {
	i := int(float64(len(l.sorted))*q+0.999999) - 1
	return l.sorted[min(max(i, 0), len(l.sorted)-1)]
}

// createSessions sends total requests for path without a cookie (so each
// one creates a session), spread round-robin over targets by workers
// concurrent clients, and returns how long it took.
func createSessions(ctx context.Context, via *lab.Host, targets []*node, path string, total, workers int) (time.Duration, error) {
	tr := newTransport(via, workers)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total || ctx.Err() != nil {
					return
				}
				if _, err := newSession(ctx, hc, targets[i%len(targets)], path); err != nil {
					errs[w] = fmt.Errorf("session %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := ctx.Err(); err != nil {
		return took, err
	}
	return took, errors.Join(errs...)
}
