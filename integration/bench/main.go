//go:build linux

// Command bench is flock's cluster benchmark. It builds flockd and a bare
// baseline server, runs them in a lab of Linux network namespaces
// (integration/lab: one namespace per node, joined by a bridge, addresses
// 198.51.100.0/24), and prints one markdown table of figures, all measured
// in that run:
//
//   - requests/s of the demo counter: bare handler, flock alone, 3 nodes
//     async, 3 nodes sync, 3 nodes read-only (each also against bare);
//   - client-side latency of a replicated write vs a read, 3 nodes sync, at
//     a steady rate, and the replication histogram if flockd exposes one;
//   - the session modes side by side, delta (every node holds every
//     session) and backup (owner and one backup): requests/s with 3 and 5
//     nodes, delta messages sent per write with 2, 3 and 5 nodes, and the
//     memory per session on one node of 5;
//   - failure detection after kill -9 and after SIGSTOP; convergence;
//   - state transfer of many sessions to a joining node;
//   - memory per session, on a node alone and on a replica.
//
// It needs root and iproute2 (exit status 2 otherwise):
//
//	sudo go run ./integration/bench            # the full run, a few minutes
//	sudo go run ./integration/bench -quick     # a smoke run
//
// Progress goes to stderr, the table to stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// options are the benchmark's knobs.
type options struct {
	Duration      time.Duration  // timed part of each throughput and latency run
	Clients       int            // concurrent keep-alive clients of the throughput runs
	Rate          int            // requests/s of the latency runs
	SessionsSmall int            // sessions of the first state transfer
	SessionsLarge int            // sessions of the second state transfer
	MemSessions   int            // 1 KiB sessions of the memory measurement
	Workers       int            // concurrent clients creating sessions
	CPURounds     int            // rounds of the CPU step
	Profile       string         // if set, the CPU step writes each flockd's CPU and allocation profiles here
	Loadgen       string         // the CPU step's load generator: auto (wrk if installed), wrk or go
	CPUMatch      *regexp.Regexp // if set, the CPU step runs only the configurations it matches
	Verbose       bool           // the lab's log lines too
	Command       string         // how the run was started, for the header
	Only          []string       // the steps to run (all when empty)
}

func defaults(quick bool) options {
	if quick {
		return options{Duration: time.Second, Clients: 16, Rate: 500, SessionsSmall: 1000, SessionsLarge: 5000, MemSessions: 2000, Workers: 50, CPURounds: 1}
	}
	return options{Duration: 5 * time.Second, Clients: 32, Rate: 500, SessionsSmall: 10000, SessionsLarge: 100000, MemSessions: 20000, Workers: 200, CPURounds: 3}
}

// parseFlags reads the flags; -quick picks smaller defaults, which flags
// given explicitly override.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	full := defaults(false)
	quick := fs.Bool("quick", false, "smaller numbers, for a smoke run (1s runs, 1000/5000 sessions, 2000 for memory)")
	dur := fs.Duration("duration", full.Duration, "timed part of each throughput and latency run")
	clients := fs.Int("clients", full.Clients, "concurrent keep-alive clients, each with its own session")
	rate := fs.Int("rate", full.Rate, "requests/s of the latency runs")
	small := fs.Int("sessions-small", full.SessionsSmall, "sessions of the first state transfer")
	large := fs.Int("sessions-large", full.SessionsLarge, "sessions of the second state transfer")
	mem := fs.Int("sessions-memory", full.MemSessions, "1 KiB sessions of the memory measurement")
	workers := fs.Int("workers", full.Workers, "concurrent clients creating sessions")
	cpuMatch := fs.String("cpu-match", "", "a regexp: the CPU step runs only the configurations whose names it matches (no ratios then; for profiling)")
	loadgen := fs.String("loadgen", "auto", "the CPU step's load generator: auto (wrk when installed), wrk or go")
	profile := fs.String("profile", "", "a directory: the CPU step saves a CPU and an allocation profile of every flockd of every run there")
	rounds := fs.Int("cpu-rounds", full.CPURounds, "rounds of the CPU step (every configuration once per round)")
	verbose := fs.Bool("v", false, "also print the lab's log lines")
	only := fs.String("only", "", "run only these steps, comma-separated: "+strings.Join(stepNames, ", "))
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o := defaults(*quick)
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "duration":
			o.Duration = *dur
		case "clients":
			o.Clients = *clients
		case "rate":
			o.Rate = *rate
		case "sessions-small":
			o.SessionsSmall = *small
		case "sessions-large":
			o.SessionsLarge = *large
		case "sessions-memory":
			o.MemSessions = *mem
		case "workers":
			o.Workers = *workers
		case "cpu-rounds":
			o.CPURounds = *rounds
		}
	})
	o.Verbose = *verbose
	o.Profile = *profile
	o.Loadgen = *loadgen
	if *cpuMatch != "" {
		re, err := regexp.Compile(*cpuMatch)
		if err != nil {
			return options{}, fmt.Errorf("-cpu-match: %w", err)
		}
		o.CPUMatch = re
	}
	if o.Loadgen != "auto" && o.Loadgen != "wrk" && o.Loadgen != "go" {
		return options{}, fmt.Errorf("-loadgen %q: want auto, wrk or go", o.Loadgen)
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
		for _, s := range o.Only {
			if !slices.Contains(stepNames, s) {
				return options{}, fmt.Errorf("-only: unknown step %q; steps: %s", s, strings.Join(stepNames, ", "))
			}
		}
	}
	o.Command = strings.Join(append([]string{"go run ./integration/bench"}, args...), " ")
	return o, o.validate()
}

func (o options) validate() error {
	if o.Duration < 10*time.Millisecond {
		return errors.New("-duration: at least 10ms")
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"clients", o.Clients}, {"rate", o.Rate}, {"sessions-small", o.SessionsSmall},
		{"sessions-large", o.SessionsLarge}, {"sessions-memory", o.MemSessions}, {"workers", o.Workers}, {"cpu-rounds", o.CPURounds}} {
		if v.n <= 0 {
			return fmt.Errorf("-%s: must be positive", v.name)
		}
	}
	if o.Rate > 100000 {
		return errors.New("-rate: at most 100000")
	}
	return nil
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := lab.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: the network-namespace lab cannot run here (it needs root and iproute2's ip and tc): %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; every lab was torn down")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run builds the binaries, runs every measurement, and prints the table to
// stdout; progress goes to stderr. Every lab is torn down before it
// returns, also on error or when ctx ends.
func run(ctx context.Context, opts options, stdout, stderr io.Writer) error {
	if err := lab.Available(); err != nil {
		return err
	}
	if err := lab.Cleanup(labPrefix); err != nil {
		fmt.Fprintln(stderr, "bench: removing stale namespaces:", err)
	}
	dir, err := os.MkdirTemp("", "flock-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{opts: opts, dir: dir, log: stderr, begun: time.Now()}
	if opts.Loadgen != "go" {
		path, err := exec.LookPath("wrk")
		if err != nil && opts.Loadgen == "wrk" {
			return fmt.Errorf("-loadgen wrk: %w", err)
		}
		e.wrk = path
	}
	if err := e.build(ctx); err != nil {
		return err
	}
	t := &table{}
	err = e.measureAll(ctx, t)
	if err != nil {
		fmt.Fprintf(stderr, "bench: failed after %v; figures so far:\n", time.Since(e.begun).Round(time.Second))
		t.print(stderr, header(opts))
		return err
	}
	t.print(stdout, header(opts))
	e.logf("done in %v", time.Since(e.begun).Round(time.Second))
	return nil
}

// build compiles flockd and the bare server into the scratch directory.
func (e *env) build(ctx context.Context) error {
	e.flockd, e.bare = filepath.Join(e.dir, "flockd"), filepath.Join(e.dir, "bare")
	for _, b := range []struct{ out, pkg string }{
		{e.flockd, "github.com/flockhq/flock/cmd/flockd"},
		{e.bare, "github.com/flockhq/flock/integration/bench/bare"},
	} {
		e.logf("building %s", b.pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = e.log, e.log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b.pkg, err)
		}
	}
	return nil
}

// measureAll runs the measurements in order and fills t.
func (e *env) measureAll(ctx context.Context, t *table) error {
	steps := []func(context.Context, *table) error{
		e.stepThroughput,
		e.stepModes,
		e.stepFailure,
		e.stepConvergence,
		e.stepTransfer,
		e.stepMemory,
		e.stepCPU,
	}
	for i, step := range steps {
		if len(e.opts.Only) > 0 && !slices.Contains(e.opts.Only, stepNames[i]) {
			continue
		}
		if err := step(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// stepNames name measureAll's steps, in order, for -only.
var stepNames = []string{"throughput", "modes", "failure", "convergence", "transfer", "memory", "cpu"}

func (e *env) stepThroughput(ctx context.Context, t *table) error {
	bare, err := e.measureBare(ctx)
	if err != nil {
		return fmt.Errorf("bare: %w", err)
	}
	e.bareLoad = bare
	cfg := fmt.Sprintf("%d clients, %v", e.opts.Clients, e.opts.Duration)
	t.throughput("bare handler (no flock), 1 server, GET /counter", bare, bare, cfg)
	single, err := e.measureSingle(ctx)
	if err != nil {
		return fmt.Errorf("flock 1 node: %w", err)
	}
	t.throughput("flock, 1 node (no peers), GET /counter", single, bare, cfg)
	async, err := e.measureAsync3(ctx)
	if err != nil {
		return fmt.Errorf("flock 3 nodes async: %w", err)
	}
	spread := cfg + "; each client sticks to one node, round-robin over the 3"
	t.throughput("flock, 3 nodes async, GET /counter", async, bare, spread)
	s3, err := e.measureSync3(ctx)
	if err != nil {
		return fmt.Errorf("flock 3 nodes sync: %w", err)
	}
	t.throughput("flock, 3 nodes sync, GET /counter", s3.counter, bare, spread)
	t.throughput("flock, 3 nodes sync, GET /counter/peek (read-only)", s3.peek, bare, spread)
	t.latencyRows(s3)
	return nil
}

func (e *env) stepFailure(ctx context.Context, t *table) error {
	kill, err := e.measureFailure(ctx, "kill -9", (*lab.Proc).Kill)
	if err != nil {
		return fmt.Errorf("failure detection (kill -9): %w", err)
	}
	t.add("failure detection: kill -9 of 1 of 3 nodes, until both others drop it", secs(kill), "s",
		"defaults: heartbeat 500ms, drop_time 3s, probe_timeout 1s; /cluster/status polled every 20ms")
	pause, err := e.measureFailure(ctx, "SIGSTOP", (*lab.Proc).Pause)
	if err != nil {
		return fmt.Errorf("failure detection (SIGSTOP): %w", err)
	}
	t.add("failure detection: SIGSTOP of 1 of 3 nodes, until both others drop it", secs(pause), "s", "same defaults and polling")
	return nil
}

// stepConvergence reports the convergence of every 3-node start of the run.
func (e *env) stepConvergence(ctx context.Context, t *table) error {
	e.mu.Lock()
	ds := slices.Clone(e.convergence)
	e.mu.Unlock()
	if len(ds) == 0 {
		return errors.New("convergence: no 3-node start measured")
	}
	slices.Sort(ds)
	t.add("convergence: 3 nodes, from the last start until each lists the other two", secs(ds[(len(ds)-1)/2]), "s",
		fmt.Sprintf("median of the %d 3-node starts of this run (min %s, max %s s); views polled every 20ms, so the resolution is 20ms",
			len(ds), secs(ds[0]), secs(ds[len(ds)-1])))
	return ctx.Err()
}

func (e *env) stepTransfer(ctx context.Context, t *table) error {
	for _, total := range []int{e.opts.SessionsSmall, e.opts.SessionsLarge} {
		r, err := e.measureTransfer(ctx, total)
		if err != nil {
			return fmt.Errorf("state transfer of %d sessions: %w", total, err)
		}
		t.transferRows(r, e.opts.Workers)
	}
	return nil
}

func (e *env) stepMemory(ctx context.Context, t *table) error {
	one, err := e.measureMemory1(ctx, e.opts.MemSessions)
	if err != nil {
		return fmt.Errorf("memory, 1 node: %w", err)
	}
	two, err := e.measureMemory2(ctx, e.opts.MemSessions)
	if err != nil {
		return fmt.Errorf("memory, 2 nodes: %w", err)
	}
	t.memoryRows(one, two)
	return nil
}

// header is the line above the table.
func header(o options) string {
	arch := runtime.GOARCH
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		arch = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("flock cluster benchmark, %s, %s, %d CPUs, %s, `%s` (every server in its own lab namespace; "+
		"the load generator is this process, connecting from another lab host across the bridge; all share the machine's CPUs)",
		time.Now().Format("2006-01-02 15:04 MST"), arch, runtime.NumCPU(), runtime.Version(), o.Command)
}

// table is the benchmark's result: one row per figure.
type table struct {
	rows []row
}

type row struct {
	what, value, unit, note string
}

func (t *table) add(what, value, unit, note string) {
	t.rows = append(t.rows, row{what, value, unit, note})
}

// notMeasured is the value of a row whose figure the build under test does
// not expose.
const notMeasured = "n/a"

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
func millis(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

func (t *table) throughput(what string, r, bare loadResult, note string) {
	note = fmt.Sprintf("%.2f× bare; %s", r.rps/bare.rps, note)
	if r.errors > 0 {
		note += fmt.Sprintf("; %d failed requests (first: %v)", r.errors, r.firstErr)
	}
	t.add("throughput: "+what, fmt.Sprintf("%.0f", r.rps), "req/s", note)
}

func (t *table) latencyRows(s sync3Result) {
	at := fmt.Sprintf("3 nodes sync, node1, %d req/s open loop, %v, %d sessions", s.latRate, s.latDuration, s.latSessions)
	for _, l := range []struct {
		path string
		lat  latencies
	}{{"/counter (write, replicated)", s.latCounter}, {"/counter/peek (read, not replicated)", s.latPeek}} {
		note := fmt.Sprintf("%s; %d samples", at, len(l.lat.sorted))
		if l.lat.errors > 0 {
			note += fmt.Sprintf(", %d failed", l.lat.errors)
		}
		t.add("latency p50: GET "+l.path, millis(l.lat.quantile(0.5)), "ms", note)
		t.add("latency p99: GET "+l.path, millis(l.lat.quantile(0.99)), "ms", note)
	}
	cost := s.latCounter.quantile(0.5) - s.latPeek.quantile(0.5)
	t.add("replication cost, sync: median /counter − median /counter/peek", millis(cost), "ms", "client side, from the two rows above")
	if !s.histFound {
		why := "GET /metrics of this flockd has no " + replicationMetric + " histogram; see the client-side rows above"
		t.add("replication time p50 ("+replicationMetric+")", notMeasured, "ms", why)
		t.add("replication time p99 ("+replicationMetric+")", notMeasured, "ms", why)
		return
	}
	note := fmt.Sprintf("node1's histogram over the /counter run (%.0f observations), interpolated in buckets", s.hist.count())
	t.add("replication time p50 ("+replicationMetric+")", millis(s.histP50), "ms", note)
	t.add("replication time p99 ("+replicationMetric+")", millis(s.histP99), "ms", note)
}

func (t *table) transferRows(r transferResult, workers int) {
	what := fmt.Sprintf("state transfer, %d sessions: ", r.sessions)
	made := fmt.Sprintf("sessions made on a 2-node async cluster by %d clients in %s s (%.0f/s); node3 async",
		workers, secs(r.created), float64(r.sessions)/r.created.Seconds())
	t.add(what+"node3 start until /healthz 200", secs(r.healthy), "s", made)
	t.add(what+fmt.Sprintf("node3 start until it holds all %d", r.sessions), secs(r.complete), "s", "/healthz and /cluster/status polled every 20ms (resolution 20ms)")
	t.add(what+"node3 manager transfer_duration", secs(r.managerTook), "s", "transfer_state "+r.transferState)
}

func (t *table) memoryRows(one memResult, two []memResult) {
	mib := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	t.add(fmt.Sprintf("memory per session: 1 node, %d sessions of 1 KiB", one.count), fmt.Sprintf("%.0f", one.perSession()), "B",
		fmt.Sprintf("VmRSS growth / count: %s -> %s MiB (includes Go GC headroom)", mib(one.before), mib(one.after)))
	rep, orig := two[1], two[0]
	t.add(fmt.Sprintf("memory per session: replica of a 2-node sync cluster, %d sessions of 1 KiB", rep.count), fmt.Sprintf("%.0f", rep.perSession()), "B",
		fmt.Sprintf("replica VmRSS %s -> %s MiB; the node that created them grew %.0f B/session", mib(rep.before), mib(rep.after), orig.perSession()))
}

// print writes the header line and the markdown table.
func (t *table) print(w io.Writer, header string) {
	fmt.Fprintf(w, "%s\n\n| measurement | value | unit | notes |\n| --- | ---: | --- | --- |\n", header)
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.what, r.value, r.unit, strings.ReplaceAll(r.note, "|", `\|`))
	}
}
