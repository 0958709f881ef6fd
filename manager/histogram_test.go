package manager

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
)

func TestHistogramObserve(t *testing.T) {
	var h histogram
	obs := []time.Duration{
		0,                     // first bucket
		50 * time.Microsecond, // on a bound: le, first bucket
		51 * time.Microsecond, // 100µs
		3 * time.Millisecond,  // 5ms
		time.Second,           // 1s
		4 * time.Second,       // 5s
		6 * time.Second,       // above every bound: +Inf only
		-time.Millisecond,     // a clock step back counts as 0
	}
	for _, d := range obs {
		h.observe(d)
	}
	buckets, counts, sum, count := h.snapshot()
	want := []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5}
	if len(buckets) != len(want) {
		t.Fatalf("buckets = %v, want %v", buckets, want)
	}
	for i := range want {
		if math.Abs(buckets[i]-want[i]) > 1e-12 {
			t.Fatalf("buckets = %v, want %v", buckets, want)
		}
	}
	//                 50µ 100µ 250µ 500µ 1m 2.5m 5m 10m 25m 50m 100m 250m 500m 1s 2.5s 5s
	wantCounts := []uint64{3, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 7}
	if !slices.Equal(counts, wantCounts) {
		t.Errorf("cumulative counts = %v, want %v", counts, wantCounts)
	}
	if count != uint64(len(obs)) {
		t.Errorf("count = %d, want %d", count, len(obs))
	}
	wantSum := (50*time.Microsecond + 51*time.Microsecond + 3*time.Millisecond + 11*time.Second).Seconds()
	if math.Abs(sum-wantSum) > 1e-9 {
		t.Errorf("sum = %v, want %v", sum, wantSum)
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h histogram
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				h.observe(time.Duration(w*each+i) * time.Microsecond)
			}
		}()
	}
	// Snapshots taken meanwhile stay well formed.
	for range 100 {
		_, counts, _, count := h.snapshot()
		if !slices.IsSorted(counts) || count < counts[len(counts)-1] {
			t.Fatalf("inconsistent snapshot: %v, count %d", counts, count)
		}
	}
	wg.Wait()
	_, counts, _, count := h.snapshot()
	if count != workers*each {
		t.Errorf("count = %d, want %d", count, workers*each)
	}
	// 0..7999µs: 51 within 50µs, 1001 within 1ms, all within 10ms.
	if counts[0] != 51 || counts[4] != 1001 || counts[7] != workers*each {
		t.Errorf("cumulative counts = %v", counts)
	}
}

// TestReplicationHistogram: Commit times its broadcast, and only when
// there is someone to replicate to.
func TestReplicationHistogram(t *testing.T) {
	cfg := testConfig()
	cfg.JoinWait = 0 // alone: no member to wait for
	alone := newCluster(t, cfg, "A")
	create(t, alone.ms[0], map[string]any{"k": 1})
	if _, _, _, n := alone.ms[0].ReplicationHistogram(); n != 0 {
		t.Errorf("alone: %d commits timed, want 0", n)
	}

	c := newCluster(t, testConfig(), "A", "B")
	a := c.ms[0]
	s := create(t, a, map[string]any{"k": 1})
	set(t, s, "k", 2)
	commit(t, a, s)
	commit(t, a, s) // no change: nothing replicated, nothing timed
	buckets, counts, sum, count := a.ReplicationHistogram()
	if count != 2 || counts[len(counts)-1] > count || sum <= 0 || len(buckets) != len(counts) {
		t.Errorf("ReplicationHistogram = %v, %v, %v, %d; want 2 commits", buckets, counts, sum, count)
	}
	if _, _, _, n := c.ms[1].ReplicationHistogram(); n != 0 {
		t.Errorf("B timed %d commits, made none", n)
	}
}

func TestTypeName(t *testing.T) {
	for typ, want := range map[cluster.MessageType]string{
		typeDelta: "delta", typeExpire: "expire", typeTouch: "touch", typeFetch: "fetch",
		typeSessions: "sessions", typeState: "state", 255: "type-255", 1: "type-1",
	} {
		if got := TypeName(typ); got != want {
			t.Errorf("TypeName(%d) = %q, want %q", typ, got, want)
		}
	}
}
