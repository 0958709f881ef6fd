//go:build linux

package integration

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Scenarios run in parallel, each in a lab of its own: every lab has its
// own bridge namespace, and its namespace names carry the test process's
// pid and a per-process lab counter (see lab.Options.Prefix), so labs never
// share a namespace, a bridge or a link. Hosts of different labs reuse the
// same addresses (198.51.100.10, ...), which is harmless: their bridges are
// not connected, so neither unicast nor multicast crosses from one lab to
// another.
//
// What may run at the same time is decided by each scenario's class, so
// that no bound is measured while other scenarios load the CPU (and the
// test process's scheduler: the balancer and the users run in it):
//
//   - alone: not parallel. Runs first, with nothing else running; for a
//     bound that includes process start-up, which a burst of other labs
//     being set up would slow down.
//   - timed: measures a bound with a second or less of margin (failure
//     detection after kill -9 or SIGSTOP, a leave), by polling from the
//     test process. Runs with other timed and idle scenarios, never with a
//     load scenario, whose balancer and users would share the test
//     process's goroutine scheduler with the polling, and the CPUs with
//     the nodes.
//   - idle: a fixed-length watch using little CPU, with no measured bound:
//     it checks that nothing happens (no false failure under loss or with
//     multicast cut, no member of another domain). Runs alongside
//     anything: its nodes must still answer probes within probe_timeout
//     (1 s), which CPU contention does not come near.
//   - load: drives sustained request load, which keeps the race-enabled
//     flockd processes and the test process busy; its bounds are generous
//     (scaled under -race), and it reports throughput figures. Never runs
//     with a timed scenario. The load itself (from loadBegins, which
//     newBalancer calls, to the end of the test) runs with at most
//     maxLoad-1 other loads: one, on two CPUs, so that the figures are not
//     of two loads sharing the machine. The next load scenario sets up its
//     lab meanwhile (at most one does), so that its setup does not add to
//     the wall time. The longest scenarios are admitted first.
//
// All timed scenarios finish before the first load scenario starts (when
// the -parallel limit lets every scenario hold a slot at once, which
// TestMain arranges unless -parallel is given; with a smaller explicit
// limit, timed and load scenarios still never overlap, but in no fixed
// order).
type class int

const (
	alone class = iota
	timed
	idle
	load
)

func (c class) String() string {
	return [...]string{"alone", "timed", "idle", "load"}[c]
}

// parallelDefault is the -parallel limit TestMain sets when none is given:
// enough for every scenario to hold a slot at once (the scheduler below,
// not the limit, decides what runs).
const parallelDefault = 64

// setParallel raises the -parallel limit to parallelDefault unless it was
// given on the command line. It must run after flag.Parse and before m.Run.
func setParallel() {
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit && parallelLimit() < parallelDefault {
		flag.Set("test.parallel", strconv.Itoa(parallelDefault))
	}
}

// parallelLimit is the -parallel limit in effect.
func parallelLimit() int {
	f := flag.Lookup("test.parallel")
	if f == nil {
		return 1
	}
	n, err := strconv.Atoi(f.Value.String())
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// maxLoad is how many load scenarios apply their load at once: one per two
// CPUs (each keeps about one and a half CPUs busy), at least one.
// FLOCK_LOAD_PARALLEL=N overrides it.
var maxLoad = func() int {
	if s := os.Getenv("FLOCK_LOAD_PARALLEL"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 1 {
			return n
		}
		fmt.Fprintf(os.Stderr, "FLOCK_LOAD_PARALLEL=%q ignored: want a number >= 1\n", s)
	}
	return max(1, runtime.NumCPU()/2)
}()

// scheduler admits the parallel scenarios according to their classes.
type scheduler struct {
	mu      sync.Mutex
	cond    *sync.Cond
	order   map[string]int     // top-level test name -> position among the scenarios, for the figures table
	tickets map[string]*ticket // top-level test name -> its running scenario

	pending      int // parallel scenarios registered and not finished
	timedPending int // timed scenarios registered and not finished
	timedWaiting int // timed scenarios waiting to enter
	timedRunning int
	loadAdmitted int       // load scenarios entered and not finished (setting up or loading)
	loadRunning  int       // load scenarios past loadBegins
	loadQueue    []*ticket // load scenarios waiting to enter
}

// ticket is one scenario's place in the scheduler.
type ticket struct {
	class   class
	cost    time.Duration
	order   int
	entered bool
	loading bool // past loadBegins
}

var sched = func() *scheduler {
	s := &scheduler{order: map[string]int{}, tickets: map[string]*ticket{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}()

// scenario starts a scenario of the given class: it skips the test if the
// lab cannot run here, and otherwise (but for class alone) makes the test
// parallel and waits until the class may run. cost is the scenario's usual
// length, by which load scenarios are admitted longest first; the others
// ignore it. Call it first thing in every scenario.
func scenario(t *testing.T, cl class, cost time.Duration) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	tk := sched.register(t, cl, cost)
	if cl == alone {
		return
	}
	t.Parallel()
	sched.enter(t, tk)
}

// loadBegins marks the end of a load scenario's setup: it waits until the
// scenario may apply its load (see class load). It does nothing after the
// first call of a scenario, and in scenarios of other classes.
func loadBegins(t *testing.T) {
	t.Helper()
	sched.loadBegins(t)
}

func (s *scheduler) register(t *testing.T, cl class, cost time.Duration) *ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	top := topName(t)
	if _, ok := s.order[top]; !ok {
		s.order[top] = len(s.order)
	}
	tk := &ticket{class: cl, cost: cost, order: s.order[top]}
	s.tickets[top] = tk
	if cl != alone {
		s.pending++
		if cl == timed {
			s.timedPending++
		}
	}
	// Registered before the test's lab, so it runs after the lab is closed:
	// the next scenarios are admitted once this one's processes are gone.
	t.Cleanup(func() { s.finish(t, tk) })
	return tk
}

func topName(t *testing.T) string {
	top, _, _ := strings.Cut(t.Name(), "/")
	return top
}

// orderOf returns the position of t's top-level test among the scenarios
// (the order in which the tests started, which is the order of their
// declaration), or a position after all of them.
func (s *scheduler) orderOf(t *testing.T) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.order[topName(t)]; ok {
		return o
	}
	return len(s.order)
}

// enter waits until tk's class may run.
func (s *scheduler) enter(t *testing.T, tk *ticket) {
	t.Helper()
	start := time.Now()
	s.mu.Lock()
	switch tk.class {
	case timed:
		s.timedWaiting++
		for s.loadAdmitted > 0 {
			s.cond.Wait()
		}
		s.timedWaiting--
		s.timedRunning++
	case load:
		s.loadQueue = append(s.loadQueue, tk)
		for !s.mayLoad(tk) {
			s.cond.Wait()
		}
		for i, o := range s.loadQueue {
			if o == tk {
				s.loadQueue = append(s.loadQueue[:i], s.loadQueue[i+1:]...)
				break
			}
		}
		s.loadAdmitted++
		s.cond.Broadcast() // the next in the queue may fit too
	}
	tk.entered = true
	s.mu.Unlock()
	logWait(t, fmt.Sprintf("%s scenario started", tk.class), start)
}

// mayLoad reports whether the waiting load scenario tk may start now.
func (s *scheduler) mayLoad(tk *ticket) bool {
	// maxLoad loading and one setting up.
	if s.loadAdmitted >= maxLoad+1 || s.timedRunning > 0 || s.timedWaiting > 0 {
		return false
	}
	// When every pending scenario can hold a -parallel slot at once, the
	// timed ones still to come are sure to run, and do so first. With
	// fewer slots they might be waiting for one of ours: do not wait for
	// them then.
	if s.timedPending > 0 && s.pending <= parallelLimit() {
		return false
	}
	for _, o := range s.loadQueue {
		if o != tk && (o.cost > tk.cost || o.cost == tk.cost && o.order < tk.order) {
			return false // a longer one goes first
		}
	}
	return true
}

func (s *scheduler) loadBegins(t *testing.T) {
	t.Helper()
	start := time.Now()
	s.mu.Lock()
	tk := s.tickets[topName(t)]
	if tk == nil || tk.class != load || !tk.entered || tk.loading {
		s.mu.Unlock()
		return
	}
	for s.loadRunning >= maxLoad {
		s.cond.Wait()
	}
	s.loadRunning++
	tk.loading = true
	s.mu.Unlock()
	logWait(t, "load started", start)
}

func logWait(t *testing.T, what string, since time.Time) {
	t.Helper()
	if waited := time.Since(since); waited >= 100*time.Millisecond {
		t.Logf("scheduler: %s after waiting %v", what, waited.Round(time.Millisecond))
	}
}

func (s *scheduler) finish(t *testing.T, tk *ticket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tickets[topName(t)] == tk {
		delete(s.tickets, topName(t))
	}
	if tk.class == alone {
		return
	}
	s.pending--
	if tk.class == timed {
		s.timedPending--
	}
	if tk.entered {
		switch tk.class {
		case timed:
			s.timedRunning--
		case load:
			s.loadAdmitted--
		}
	}
	if tk.loading {
		s.loadRunning--
	}
	s.cond.Broadcast()
}
