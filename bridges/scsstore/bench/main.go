// Command bench measures scs with flock's store against scs with
// redisstore, on the same handler: requests per second and the CPU every
// server process spends per request (utime+stime from /proc/<pid>/stat,
// divided by the requests served), in one run.
//
// The two setups hold each session in two processes: scs + redisstore is
// the application and redis-server; scs + flock is the application's node
// and a second node it replicates every write to (sync replication: the
// write is applied there before the response). Every request writes the
// session (a counter). The load comes from wrk, in a process of its own,
// spread over many sessions.
//
// It is its own module (redisstore and redigo stay out of every other
// go.mod) and needs redis-server and wrk. Run it in a private network
// namespace, where nothing can leave the machine:
//
//	cd bridges/scsstore/bench && go build -o /tmp/flockbench . &&
//	  unshare --net -- bash -c 'ip link set lo up && /tmp/flockbench -runs 3'
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/alexedwards/scs/redisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/gomodule/redigo/redis"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/bridges/scsstore"
	"github.com/flockhq/flock/conf"
)

func main() {
	mode := flag.String("mode", "run", `"run" the comparison, or "serve" one server (used by run)`)
	store := flag.String("store", "flock", `serve: "flock" or "redis"`)
	addr := flag.String("http", "127.0.0.1:8100", "serve: HTTP address")
	name := flag.String("name", "a", "serve, flock: node name")
	port := flag.Int("port", 4000, "serve, flock: receiver port")
	peer := flag.String("peer", "127.0.0.1:4001", "serve, flock: the other node's receiver")
	runs := flag.Int("runs", 3, "run: rounds, each measuring both setups")
	duration := flag.Duration("duration", 10*time.Second, "run: wrk's duration per measurement")
	conns := flag.Int("conns", 32, "run: wrk's connections")
	sessions := flag.Int("sessions", 1000, "run: sessions the load is spread over")
	flag.Parse()
	var err error
	switch *mode {
	case "serve":
		err = serve(*store, *addr, *name, *port, *peer)
	case "run":
		err = run(*runs, *duration, *conns, *sessions)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// handler is the application, the same for both stores: every request
// writes the session.
func handler(sm *scs.SessionManager) http.Handler {
	return sm.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := sm.GetInt(r.Context(), "count") + 1
		sm.Put(r.Context(), "count", n)
		fmt.Fprintf(w, "count %d\n", n)
	}))
}

func serve(store, addr, name string, port int, peer string) error {
	ctx := context.Background()
	sm := scs.New()
	ready := func() bool { return true }
	switch store {
	case "redis":
		pool := &redis.Pool{MaxIdle: 64, Dial: func() (redis.Conn, error) { return redis.Dial("tcp", "127.0.0.1:6379") }}
		defer pool.Close()
		sm.Store = redisstore.New(pool)
	case "flock":
		cfg := conf.Default()
		cfg.Server.Name = name
		cfg.Server.Admin = "off"
		cfg.Server.LogLevel = "warn"
		cfg.Cluster.Membership.Type = "static"
		cfg.Cluster.Membership.Static.Members = []string{fmt.Sprintf("127.0.0.1:%d", port), peer}
		cfg.Cluster.Receiver.Host, cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind = "127.0.0.1", port, 1
		node, err := flock.Start(ctx, cfg)
		if err != nil {
			return err
		}
		defer node.Stop(ctx)
		sm.Store = scsstore.New(node.Manager())
		ready = func() bool {
			select {
			case <-node.Ready():
			default:
				return false
			}
			for _, m := range node.Members() {
				if m.State.String() == "alive" {
					return true
				}
			}
			return false
		}
	default:
		return fmt.Errorf("unknown store %q", store)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	})
	mux.Handle("/", handler(sm))
	return flock.NewServer(addr, mux).ListenAndServe()
}

// proc is a server process started for a measurement.
type proc struct {
	name string
	cmd  *exec.Cmd
}

func start(name string, args ...string) (*proc, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &proc{name: name, cmd: cmd}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// cpu is the process's user and system time so far.
func (p *proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces: count from after it.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticks = 100 // sysconf(_SC_CLK_TCK) on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

func waitReady(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process we do not control
	}
	return fmt.Errorf("%s not ready", url)
}

// prime makes n sessions and returns their cookies' values.
func prime(url string, n int) ([]string, error) {
	var tokens []string
	for range n {
		resp, err := http.Get(url + "/")
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == "session" {
				tokens = append(tokens, c.Value)
			}
		}
	}
	if len(tokens) != n {
		return nil, fmt.Errorf("primed %d sessions of %d", len(tokens), n)
	}
	return tokens, nil
}

const wrkScript = `
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", {["Cookie"] = "session=" .. tokens[(i % #tokens) + 1]})
end
`

type result struct {
	requests int
	rps      float64
	cpu      time.Duration
	non2xx   int
}

var (
	reqsRe   = regexp.MustCompile(`(\d+) requests in`)
	rpsRe    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	non2xxRe = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// measure primes the sessions on url, then runs wrk against it and counts
// the CPU of servers meanwhile.
func measure(dir, url string, servers []*proc, duration time.Duration, conns, sessions int) (result, error) {
	tokens, err := prime(url, sessions)
	if err != nil {
		return result{}, err
	}
	tf := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tf, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return result{}, err
	}
	sf := filepath.Join(dir, "load.lua")
	if err := os.WriteFile(sf, []byte(wrkScript), 0o600); err != nil {
		return result{}, err
	}
	before := make([]time.Duration, len(servers))
	for i, p := range servers {
		if before[i], err = p.cpu(); err != nil {
			return result{}, err
		}
	}
	wrk := exec.Command("wrk", "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%s", duration), "-s", sf, url+"/")
	wrk.Env = append(os.Environ(), "TOKENS="+tf)
	out, err := wrk.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	var r result
	for i, p := range servers {
		after, err := p.cpu()
		if err != nil {
			return result{}, err
		}
		r.cpu += after - before[i]
	}
	m := reqsRe.FindSubmatch(out)
	m2 := rpsRe.FindSubmatch(out)
	if m == nil || m2 == nil {
		return result{}, fmt.Errorf("wrk's output not understood: %s", out)
	}
	r.requests, _ = strconv.Atoi(string(m[1]))
	r.rps, _ = strconv.ParseFloat(string(m2[1]), 64)
	if m := non2xxRe.FindSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(string(m[1]))
	}
	return r, nil
}

func setupRedis(self string) ([]*proc, string, error) {
	rs, err := start("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return nil, "", err
	}
	for range 100 { // until it accepts connections
		if c, err := redis.Dial("tcp", "127.0.0.1:6379"); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	app, err := start("app+redisstore", self, "-mode", "serve", "-store", "redis", "-http", "127.0.0.1:8100")
	if err != nil {
		rs.stop()
		return nil, "", err
	}
	return []*proc{app, rs}, "http://127.0.0.1:8100", nil
}

func setupFlock(self string) ([]*proc, string, error) {
	a, err := start("app+flock a", self, "-mode", "serve", "-store", "flock", "-name", "a", "-http", "127.0.0.1:8101", "-port", "4000", "-peer", "127.0.0.1:4001")
	if err != nil {
		return nil, "", err
	}
	b, err := start("flock b", self, "-mode", "serve", "-store", "flock", "-name", "b", "-http", "127.0.0.1:8102", "-port", "4001", "-peer", "127.0.0.1:4000")
	if err != nil {
		a.stop()
		return nil, "", err
	}
	return []*proc{a, b}, "http://127.0.0.1:8101", nil
}

func run(runs int, duration time.Duration, conns, sessions int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "flockbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "every request writes its session; %d sessions, wrk -t1 -c%d -d%s; CPU = utime+stime of every server process\n", sessions, conns, duration)
	fmt.Fprintf(w, "%-4s %-18s %10s %10s %14s %8s\n", "run", "setup", "requests", "req/s", "CPU µs/req", "non-2xx")
	w.Flush()
	for i := 1; i <= runs; i++ {
		for _, setup := range []struct {
			name  string
			start func(string) ([]*proc, string, error)
		}{{"scs + flock (2)", setupFlock}, {"scs + redisstore", setupRedis}} {
			procs, url, err := setup.start(self)
			if err != nil {
				return err
			}
			if err := waitReady(url); err != nil {
				for _, p := range procs {
					p.stop()
				}
				return err
			}
			r, err := measure(dir, url, procs, duration, conns, sessions)
			for _, p := range procs {
				p.stop()
			}
			if err != nil {
				return err
			}
			perReq := float64(r.cpu.Microseconds()) / float64(r.requests)
			fmt.Fprintf(w, "%-4d %-18s %10d %10.0f %14.1f %8d\n", i, setup.name, r.requests, r.rps, perReq, r.non2xx)
			w.Flush()
		}
	}
	return nil
}
