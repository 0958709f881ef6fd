//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flockhq/flock/keyring"
)

// The cost of a cluster key: the same 3-node sync cluster, without a key
// and with one, alternately (twice each, so that the machine's noise falls
// on both), measured as the CPU the three flockd spend per request of
// GET /counter (each one replicated write) and as requests/s.

// keyedRun is one run of the 3-node sync cluster.
type keyedRun struct {
	keyed bool
	load  loadResult
}

func (r keyedRun) cpuPerRequest() time.Duration {
	return r.load.cpu / time.Duration(max(r.load.requests, 1))
}

func (e *env) measureKeyed(ctx context.Context, keyed bool) (res keyedRun, err error) {
	res.keyed = keyed
	err = e.withCluster(ctx, 3, func(c *cluster) error {
		if keyed {
			c.keyFile = filepath.Join(e.dir, c.lab.BridgeNS()+".keys")
			if err := os.WriteFile(c.keyFile, []byte(keyring.Generate()+"\n"), 0o600); err != nil {
				return err
			}
		}
		if err := e.start3(ctx, c, "sync"); err != nil {
			return err
		}
		spec := e.loadSpec(c.nodes, "/counter")
		spec.cpu = func() (time.Duration, error) { return serversCPU(c.nodes) }
		what := "flock 3 nodes sync, no key"
		if keyed {
			what = "flock 3 nodes sync, keyed"
		}
		e.logf("%s: %d clients, GET /counter, %v", what, e.opts.Clients, e.opts.Duration)
		if res.load, err = runLoad(ctx, c.lb, spec); err != nil {
			return err
		}
		e.logf("%s: %.0f req/s, %.1f µs CPU per request (%d errors)", what, res.load.rps, micros(res.cpuPerRequest()), res.load.errors)
		return nil
	})
	return res, err
}

func (e *env) stepKeyed(ctx context.Context, t *table) error {
	var plain, keyed []keyedRun
	for range 2 {
		for _, k := range []bool{false, true} {
			r, err := e.measureKeyed(ctx, k)
			if err != nil {
				return fmt.Errorf("keyed=%v: %w", k, err)
			}
			if k {
				keyed = append(keyed, r)
			} else {
				plain = append(plain, r)
			}
		}
	}
	p, k := sumRuns(plain), sumRuns(keyed)
	note := fmt.Sprintf("%d clients, %v, two runs each, alternating; CPU of the 3 flockd (user+system) per request", e.opts.Clients, e.opts.Duration)
	t.add("CPU per replicated write, 3 nodes sync, no key", fmt.Sprintf("%.1f", micros(p.cpuPerRequest())), "µs", note)
	t.add("CPU per replicated write, 3 nodes sync, with a cluster key", fmt.Sprintf("%.1f", micros(k.cpuPerRequest())), "µs",
		fmt.Sprintf("%.2f × the unkeyed (target: at most 1.10)", float64(k.cpuPerRequest())/float64(p.cpuPerRequest())))
	t.add("throughput, 3 nodes sync, with a cluster key / without", fmt.Sprintf("%.2f", k.load.rps/p.load.rps), "ratio",
		fmt.Sprintf("%.0f vs %.0f req/s", k.load.rps, p.load.rps))
	return nil
}

// sumRuns adds runs up: requests and CPU summed, throughput averaged.
func sumRuns(rs []keyedRun) keyedRun {
	var out keyedRun
	for _, r := range rs {
		out.load.requests += r.load.requests
		out.load.cpu += r.load.cpu
		out.load.rps += r.load.rps / float64(len(rs))
	}
	return out
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
