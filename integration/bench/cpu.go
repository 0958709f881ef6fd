//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flockhq/flock/keyring"
)

// The cost of replication in CPU (issue 15): every configuration under the
// same closed-loop load, CPU time of all its server processes (user +
// system, from /proc) per request served. CPU per request is far steadier
// than requests/s on a shared machine: a configuration that gets fewer
// cycles serves fewer requests, but each still costs what it costs. The
// configurations run in turn, round after round, so that the machine's
// noise falls on all of them alike; each figure sums its rounds.

// cpuConfig is one configuration of the CPU step.
type cpuConfig struct {
	name        string
	nodes       int
	bare        bool   // the bare handler instead of flockd
	mode        string // [cluster.manager] mode; "" for the default (delta)
	replication string // sync or async
	keyed       bool
	path        string
}

// cpuConfigs are the configurations of the CPU step, the baselines first.
var cpuConfigs = []cpuConfig{
	{name: "bare handler, write", nodes: 1, bare: true, path: "/counter"},
	{name: "bare handler, read", nodes: 1, bare: true, path: "/counter/peek"},
	{name: "flock alone, write", nodes: 1, replication: "sync", path: "/counter"},
	{name: "flock alone, read", nodes: 1, replication: "sync", path: "/counter/peek"},
	{name: "3 nodes delta sync, write", nodes: 3, replication: "sync", path: "/counter"},
	{name: "3 nodes delta sync, write, keyed", nodes: 3, replication: "sync", keyed: true, path: "/counter"},
	{name: "3 nodes delta async, write", nodes: 3, replication: "async", path: "/counter"},
	{name: "3 nodes delta async, write, keyed", nodes: 3, replication: "async", keyed: true, path: "/counter"},
	{name: "3 nodes backup sync, write", nodes: 3, mode: "backup", replication: "sync", path: "/counter"},
	{name: "3 nodes backup sync, write, keyed", nodes: 3, mode: "backup", replication: "sync", keyed: true, path: "/counter"},
	{name: "3 nodes delta sync, read, keyed", nodes: 3, replication: "sync", keyed: true, path: "/counter/peek"},
}

// measureCPU runs one configuration once.
func (e *env) measureCPU(ctx context.Context, cc cpuConfig) (res loadResult, batching string, err error) {
	err = e.withCluster(ctx, cc.nodes, func(c *cluster) error {
		if cc.keyed {
			c.keyFile = filepath.Join(e.dir, c.lab.BridgeNS()+".keys")
			if err := os.WriteFile(c.keyFile, []byte(keyring.Generate()+"\n"), 0o600); err != nil {
				return err
			}
		}
		for _, n := range c.nodes {
			var err error
			if cc.bare {
				err = c.startBare(ctx, n)
			} else {
				err = c.startFlockdMode(ctx, n, cc.mode, cc.replication)
			}
			if err != nil {
				return err
			}
		}
		if len(c.nodes) > 1 {
			if err := waitViews(ctx, c.nodes, others(c.nodes), 30*time.Second); err != nil {
				return err
			}
		}
		for _, n := range c.nodes {
			if err := n.waitHealthy(ctx, 60*time.Second); err != nil {
				return err
			}
		}
		spec := e.loadSpec(c.nodes, cc.path)
		spec.cpu = func() (time.Duration, error) { return serversCPU(c.nodes) }
		var profiles sync.WaitGroup
		var profErrs []error
		if e.opts.Profile != "" && !cc.bare {
			profErrs = make([]error, 2*len(c.nodes))
			spec.onTimed = func() {
				for i, n := range c.nodes {
					profiles.Go(func() { profErrs[2*i] = e.saveProfile(ctx, n, cc, "profile", "") })
					profiles.Go(func() { profErrs[2*i+1] = e.saveProfile(ctx, n, cc, "allocs", "-allocs") })
				}
			}
		}
		e.logf("cpu: %s: %d clients, GET %s, %v", cc.name, e.opts.Clients, cc.path, e.opts.Duration)
		if e.wrk != "" {
			res, err = runWrk(ctx, e.wrk, e.dir, c.lb, spec)
		} else {
			res, err = runLoad(ctx, c.lb, spec)
		}
		profiles.Wait()
		if err != nil {
			return err
		}
		if err := errors.Join(profErrs...); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
		if len(c.nodes) > 1 && !cc.bare {
			if batching, err = scrapeBatching(ctx, c.nodes); err != nil {
				return err
			}
		}
		e.logf("cpu: %s: %.0f req/s, %.1f µs CPU per request, p99 %v (%d errors)%s", cc.name, res.rps,
			micros(res.cpuPerRequest()), res.p99, res.errors, batching)
		return nil
	})
	return res, batching, err
}

// scrapeBatching says how many messages the cluster's system calls carry,
// from the nodes' counters since they started: deltas per write of the
// senders, messages per read of the receivers.
func scrapeBatching(ctx context.Context, nodes []*node) (string, error) {
	var v [4]float64
	for i, series := range []string{deltasSeries, "flock_send_writes_total", `flock_messages_received_total{type="delta"}`, "flock_receiver_reads_total"} {
		x, err := scrapeCounter(ctx, nodes, series)
		if err != nil {
			return "", err
		}
		v[i] = x
	}
	return fmt.Sprintf("; %.2f deltas per sender write, %.2f per receiver read", v[0]/max(v[1], 1), v[2]/max(v[3], 1)), nil
}

// saveProfile saves n's profile of a kind over the timed part (whole
// seconds, at least one) as <config>-<node><suffix>.pprof in the profile
// directory: "profile" is CPU, "allocs" the allocations made meanwhile.
func (e *env) saveProfile(ctx context.Context, n *node, cc cpuConfig, kind, suffix string) error {
	secs := max(int(e.opts.Duration.Round(time.Second)/time.Second), 1)
	url := fmt.Sprintf("http://127.0.0.1:9090/debug/pprof/%s?seconds=%d", kind, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// Its own client: the answer comes only after the profile's seconds.
	tr := &http.Transport{DialContext: n.host.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Duration(secs+30) * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", n.name, url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	name := strings.NewReplacer(" ", "-", ",", "").Replace(cc.name)
	return os.WriteFile(filepath.Join(e.opts.Profile, name+"-"+n.name+suffix+".pprof"), b, 0o644)
}

// cpuTotals sums one configuration's rounds.
type cpuTotals struct {
	requests int64
	cpu      time.Duration
	rps      float64 // mean over the rounds
	p99s     []time.Duration
	rounds   []time.Duration // CPU per request of each round
	batching string          // the last round's messages per system call
}

func (t *cpuTotals) add(r loadResult) {
	t.requests += r.requests
	t.cpu += r.cpu
	t.rounds = append(t.rounds, r.cpuPerRequest())
	n := float64(len(t.rounds))
	t.rps = t.rps*(n-1)/n + r.rps/n
	t.p99s = append(t.p99s, r.p99)
}

// p99 is the mean of the rounds' 99th percentiles.
func (t *cpuTotals) p99() time.Duration {
	var sum time.Duration
	for _, d := range t.p99s {
		sum += d
	}
	return sum / time.Duration(max(len(t.p99s), 1))
}

func (t *cpuTotals) perRequest() time.Duration {
	return t.cpu / time.Duration(max(t.requests, 1))
}

func (e *env) stepCPU(ctx context.Context, t *table) error {
	if e.opts.Profile != "" {
		if err := os.MkdirAll(e.opts.Profile, 0o755); err != nil {
			return err
		}
	}
	totals := make([]cpuTotals, len(cpuConfigs))
	picked := 0
	for round := range e.opts.CPURounds {
		for i, cc := range cpuConfigs {
			if e.opts.CPUMatch != nil && !e.opts.CPUMatch.MatchString(cc.name) {
				continue
			}
			picked++
			r, batching, err := e.measureCPU(ctx, cc)
			if err != nil {
				return fmt.Errorf("cpu %s (round %d): %w", cc.name, round+1, err)
			}
			totals[i].add(r)
			totals[i].batching = batching
		}
	}
	if e.opts.CPUMatch != nil {
		// Some configurations only, for profiling: no ratios.
		for i, cc := range cpuConfigs {
			if tot := &totals[i]; len(tot.rounds) > 0 {
				t.add("CPU per request: "+cc.name, fmt.Sprintf("%.1f", micros(tot.perRequest())), "µs",
					fmt.Sprintf("%.0f req/s, p99 %s ms%s", tot.rps, millis(tot.p99()), tot.batching))
			}
		}
		if picked == 0 {
			return fmt.Errorf("-cpu-match %v: no configuration matches", e.opts.CPUMatch)
		}
		return nil
	}
	byName := map[string]*cpuTotals{}
	for i := range totals {
		byName[cpuConfigs[i].name] = &totals[i]
	}
	bareW, bareR := byName["bare handler, write"], byName["bare handler, read"]
	aloneW, aloneR := byName["flock alone, write"], byName["flock alone, read"]
	gen := "the Go load generator"
	if e.wrk != "" {
		gen = fmt.Sprintf("wrk, %d sessions", wrkSessions)
	}
	note := fmt.Sprintf("%d connections, %s, %v, %d rounds in turn; CPU of every server process (user+system) per request",
		e.opts.Clients, gen, e.opts.Duration, e.opts.CPURounds)
	for i, cc := range cpuConfigs {
		tot := &totals[i]
		base, baseName := aloneW, "flock alone"
		if cc.path != "/counter" {
			base = aloneR
		}
		if cc.bare {
			base, baseName = bareW, "bare write"
			if cc.path != "/counter" {
				base, baseName = bareR, "bare read"
			}
		}
		var rounds string
		for j, d := range tot.rounds {
			if j > 0 {
				rounds += ", "
			}
			rounds += fmt.Sprintf("%.1f", micros(d))
		}
		bareRef := bareW
		if cc.path != "/counter" {
			bareRef = bareR
		}
		t.add("CPU per request: "+cc.name, fmt.Sprintf("%.1f", micros(tot.perRequest())), "µs",
			fmt.Sprintf("%.2f× %s; rounds %s µs; %.0f req/s (%.2f× bare); p99 %s ms (%.2f× bare's)%s; %s",
				float64(tot.perRequest())/float64(base.perRequest()), baseName, rounds,
				tot.rps, tot.rps/bareRef.rps, millis(tot.p99()),
				float64(tot.p99())/float64(bareRef.p99()), tot.batching, note))
	}
	for _, base := range []string{"3 nodes delta sync, write", "3 nodes delta async, write", "3 nodes backup sync, write"} {
		plain, keyed := byName[base], byName[base+", keyed"]
		t.add("cost of a cluster key: "+base, fmt.Sprintf("%.2f", float64(keyed.perRequest())/float64(plain.perRequest())), "ratio",
			fmt.Sprintf("CPU per request keyed / unkeyed, %.1f vs %.1f µs (target: at most 1.10); %.0f vs %.0f req/s",
				micros(keyed.perRequest()), micros(plain.perRequest()), keyed.rps, plain.rps))
	}
	t.add("valve overhead on a read: flock alone − bare", fmt.Sprintf("%.2f", micros(aloneR.perRequest()-bareR.perRequest())), "µs",
		"GET /counter/peek, CPU per request (target: under 1 µs)")
	return nil
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// serversCPU is the CPU time the nodes' processes have used so far.
func serversCPU(nodes []*node) (time.Duration, error) {
	var total time.Duration
	for _, n := range nodes {
		if n.proc == nil {
			continue
		}
		d, err := procCPU(n.proc.Pid())
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// procCPU reads a process's user and system time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis (utime and stime are fields 14
	// and 15 of the line, 12 and 13 after it).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	const clockTick = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}
