//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// TestBench runs the whole benchmark with tiny durations and counts and
// checks that the table has every row, with a positive number in each.
func TestBench(t *testing.T) {
	if err := lab.Available(); err != nil {
		t.Skip("network-namespace lab unavailable: " + err.Error())
	}
	opts := options{
		Duration: 300 * time.Millisecond, Clients: 4, Rate: 200,
		SessionsSmall: 200, SessionsLarge: 500, MemSessions: 3000, Workers: 20, CPURounds: 1,
		Command: "go test ./integration/bench",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	if err := run(ctx, opts, &out, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	t.Logf("run took %v; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())

	rows := parseTable(t, out.String())
	want := expectedRows(opts)
	if len(rows) != len(want) {
		t.Errorf("%d rows, want %d", len(rows), len(want))
	}
	for _, name := range want {
		value, ok := rows[name]
		if !ok {
			t.Errorf("no row %q", name)
			continue
		}
		if value == notMeasured && strings.HasPrefix(name, "replication time") {
			continue // flockd has no replication histogram at /metrics
		}
		v, err := strconv.ParseFloat(value, 64)
		if strings.HasPrefix(name, "valve overhead") && err == nil && !math.IsInf(v, 0) {
			continue // a difference of two measured figures: negative in noise
		}
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			t.Errorf("row %q: value %q, want a positive number", name, value)
		}
	}
}

// expectedRows is the first column of every row run prints for opts.
func expectedRows(o options) []string {
	rows := []string{
		"throughput: bare handler (no flock), 1 server, GET /counter",
		"throughput: flock, 1 node (no peers), GET /counter",
		"throughput: flock, 3 nodes async, GET /counter",
		"throughput: flock, 3 nodes sync, GET /counter",
		"throughput: flock, 3 nodes sync, GET /counter/peek (read-only)",
		"latency p50: GET /counter (write, replicated)",
		"latency p99: GET /counter (write, replicated)",
		"latency p50: GET /counter/peek (read, not replicated)",
		"latency p99: GET /counter/peek (read, not replicated)",
		"replication cost, sync: median /counter − median /counter/peek",
		"replication time p50 (flock_replication_seconds)",
		"replication time p99 (flock_replication_seconds)",
		"throughput: flock, 3 nodes sync, delta mode, GET /counter",
		"throughput: flock, 3 nodes sync, backup mode, GET /counter",
		"throughput: flock, 5 nodes sync, delta mode, GET /counter",
		"throughput: flock, 5 nodes sync, backup mode, GET /counter",
		"messages per write: 2 nodes, delta mode",
		"messages per write: 2 nodes, backup mode",
		"messages per write: 3 nodes, delta mode",
		"messages per write: 3 nodes, backup mode",
		"messages per write: 5 nodes, delta mode",
		"messages per write: 5 nodes, backup mode",
		fmt.Sprintf("memory per session: one node of 5, delta mode, %d sessions of 1 KiB", o.MemSessions),
		fmt.Sprintf("memory per session: one node of 5, backup mode, %d sessions of 1 KiB", o.MemSessions),
		"failure detection: kill -9 of 1 of 3 nodes, until both others drop it",
		"failure detection: SIGSTOP of 1 of 3 nodes, until both others drop it",
		"convergence: 3 nodes, from the last start until each lists the other two",
	}
	for _, n := range []int{o.SessionsSmall, o.SessionsLarge} {
		p := fmt.Sprintf("state transfer, %d sessions: ", n)
		rows = append(rows, p+"node3 start until /healthz 200", p+fmt.Sprintf("node3 start until it holds all %d", n),
			p+"node3 manager transfer_duration")
	}
	rows = append(rows,
		fmt.Sprintf("memory per session: 1 node, %d sessions of 1 KiB", o.MemSessions),
		fmt.Sprintf("memory per session: replica of a 2-node sync cluster, %d sessions of 1 KiB", o.MemSessions),
	)
	for _, cc := range cpuConfigs {
		rows = append(rows, "CPU per request: "+cc.name)
	}
	for _, base := range []string{"3 nodes delta sync, write", "3 nodes delta async, write", "3 nodes backup sync, write"} {
		rows = append(rows, "cost of a cluster key: "+base)
	}
	return append(rows, "valve overhead on a read: flock alone − bare")
}

// parseTable returns the value column by the measurement column, and
// checks the header line and the table's head.
func parseTable(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "flock cluster benchmark, ") {
		t.Fatalf("no header line:\n%s", out)
	}
	if lines[1] != "" || lines[2] != "| measurement | value | unit | notes |" {
		t.Fatalf("no table head:\n%s", out)
	}
	rows := map[string]string{}
	for _, line := range lines[4:] {
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) < 4 {
			t.Fatalf("bad row %q", line)
		}
		name := strings.TrimSpace(cells[0])
		if _, dup := rows[name]; dup {
			t.Errorf("row %q twice", name)
		}
		rows[name] = strings.TrimSpace(cells[1])
	}
	return rows
}

// logWriter sends the benchmark's progress to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestHistogramQuantile(t *testing.T) {
	text := `# TYPE flock_replication_seconds histogram
flock_replication_seconds_bucket{le="0.001"} 50
flock_replication_seconds_bucket{le="0.002"} 90
flock_replication_seconds_bucket{le="+Inf"} 100
flock_replication_seconds_sum 0.2
flock_replication_seconds_count 100
flock_other_seconds_bucket{le="0.001"} 7
`
	h := parseHistogram([]byte(text), replicationMetric)
	if h.count() != 100 {
		t.Fatalf("count %v, want 100", h.count())
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.25, 500 * time.Microsecond}, {0.5, time.Millisecond}, {0.7, 1500 * time.Microsecond}, {0.99, 2 * time.Millisecond}} {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	old := histogram{0.001: 50, 0.002: 50, math.Inf(1): 50}
	if d := h.minus(old); d.count() != 50 || d.quantile(0.5) != 1625*time.Microsecond {
		t.Errorf("delta: count %v, p50 %v; want 50, 1.625ms", d.count(), d.quantile(0.5))
	}
	if got := (histogram{}).quantile(0.5); got != 0 {
		t.Errorf("empty histogram: %v", got)
	}
}

func TestCounterValue(t *testing.T) {
	text := `# TYPE flock_messages_sent_total counter
flock_messages_sent_total{type="delta"} 1234
flock_messages_sent_total{type="touch"} 7
flock_messages_sent_total{type="delta_x"} 9
`
	if v, found, err := counterValue([]byte(text), deltasSeries); v != 1234 || !found || err != nil {
		t.Errorf("delta: %v %v %v, want 1234 true nil", v, found, err)
	}
	if v, found, err := counterValue([]byte(text), `flock_messages_sent_total{type="expire"}`); v != 0 || found || err != nil {
		t.Errorf("expire: %v %v %v, want 0 false nil", v, found, err)
	}
	if _, _, err := counterValue([]byte(deltasSeries+" x\n"), deltasSeries); err == nil {
		t.Error("value x accepted")
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-clients", "7"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	q := defaults(true)
	if o.Clients != 7 || o.Duration != q.Duration || o.SessionsLarge != q.SessionsLarge {
		t.Errorf("-quick -clients 7: %+v", o)
	}
	if _, err := parseFlags([]string{"-workers", "0"}, &bytes.Buffer{}); err == nil {
		t.Error("-workers 0 accepted")
	}
}
