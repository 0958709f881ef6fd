//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// wrkSessions is how many sessions a wrk run spreads its requests over
// (the measurement: 256), at least one per connection.
const wrkSessions = 256

// runWrk is runLoad with wrk as the load generator: one wrk process (one
// thread) per target, its share of the connections, each request with the
// next of its target's sessions. wrk costs a fraction of what the Go
// client costs, so the servers get the CPUs they would have in production;
// the CPU read is of the servers alone either way. A warm-up run precedes
// the timed one, whose CPU is read before the wrk processes start and
// after they end. wrk counts durations in whole seconds: each part
// lasts at least one.
func runWrk(ctx context.Context, wrk, dir string, via *lab.Host, s loadSpec) (loadResult, error) {
	tr := newTransport(via, 8)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}
	perTarget := max(wrkSessions/len(s.targets), 1)
	scripts := make([]string, len(s.targets))
	for i, n := range s.targets {
		var cookies []string
		for range perTarget {
			c, err := newSession(ctx, hc, n, "/counter")
			if err != nil {
				return loadResult{}, err
			}
			cookies = append(cookies, strconv.Quote(cookieName+"="+c))
		}
		scripts[i] = filepath.Join(dir, fmt.Sprintf("wrk-%s-%d.lua", via.NS, i))
		lua := "local cookies = {" + strings.Join(cookies, ", ") + "}\n" +
			"local i = 0\n" +
			"request = function()\n" +
			"  i = i + 1\n" +
			"  return wrk.format(\"GET\", nil, {[\"Cookie\"] = cookies[(i % #cookies) + 1]})\n" +
			"end\n"
		if err := os.WriteFile(scripts[i], []byte(lua), 0o644); err != nil {
			return loadResult{}, err
		}
		defer os.Remove(scripts[i])
	}
	run := func(d time.Duration) ([]wrkResult, error) {
		out := make([]wrkResult, len(s.targets))
		errs := make([]error, len(s.targets))
		var wg sync.WaitGroup
		for i, n := range s.targets {
			conns := s.clients / len(s.targets)
			if i < s.clients%len(s.targets) {
				conns++
			}
			wg.Go(func() {
				b, err := via.Exec(ctx, wrk, "-t1", fmt.Sprintf("-c%d", max(conns, 1)),
					fmt.Sprintf("-d%ds", max(int(d.Round(time.Second)/time.Second), 1)), "--timeout", "5s", "--latency",
					"-s", scripts[i], n.url(s.path))
				if err != nil {
					errs[i] = fmt.Errorf("wrk on %s: %w: %s", n.name, err, b)
					return
				}
				out[i], errs[i] = parseWrk(string(b))
			})
		}
		wg.Wait()
		return out, errors.Join(errs...)
	}
	if s.warmup > 0 {
		if _, err := run(s.warmup); err != nil {
			return loadResult{}, err
		}
	}
	var cpu0, cpu1 time.Duration
	var err error
	if s.cpu != nil {
		if cpu0, err = s.cpu(); err != nil {
			return loadResult{}, err
		}
	}
	if s.onTimed != nil {
		s.onTimed()
	}
	rs, err := run(s.duration)
	if err != nil {
		return loadResult{}, err
	}
	if s.cpu != nil {
		if cpu1, err = s.cpu(); err != nil {
			return loadResult{}, err
		}
	}
	res := loadResult{cpu: cpu1 - cpu0}
	for _, r := range rs {
		res.requests += r.requests
		res.rps += r.rps
		res.errors += r.errors
		res.p99 = max(res.p99, r.p99)
	}
	if res.errors > 0 {
		res.firstErr = fmt.Errorf("wrk counted %d non-2xx answers or socket errors", res.errors)
	}
	if res.requests == 0 {
		return res, errors.New("wrk: no request completed")
	}
	return res, nil
}

// wrkResult is what one wrk run printed.
type wrkResult struct {
	requests int64
	rps      float64
	p99      time.Duration
	errors   int64
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRate     = regexp.MustCompile(`(?m)^Requests/sec:\s*([0-9.]+)`)
	wrkP99      = regexp.MustCompile(`(?m)^\s*99%\s+([0-9.]+)(us|ms|s)\b`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkSockErrs = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's report (run with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequests.FindStringSubmatch(out)
	rate := wrkRate.FindStringSubmatch(out)
	p99 := wrkP99.FindStringSubmatch(out)
	if m == nil || rate == nil || p99 == nil {
		return r, fmt.Errorf("wrk: unexpected report:\n%s", out)
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.rps, _ = strconv.ParseFloat(rate[1], 64)
	v, _ := strconv.ParseFloat(p99[1], 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p99[2]]
	r.p99 = time.Duration(v * float64(unit))
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.errors += n
	}
	if m := wrkSockErrs.FindStringSubmatch(out); m != nil {
		for _, f := range m[1:] {
			n, _ := strconv.ParseInt(f, 10, 64)
			r.errors += n
		}
	}
	return r, nil
}
