package manager

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// BenchmarkAntiEntropyRound is one anti-entropy round between two nodes
// that hold the same N sessions (the steady state: what the background
// rounds cost), and with 1% of them changed on one side only. It reports
// the bytes the round sent both ways (request payloads and answers).
//
//	go test -run='^$' -bench=AntiEntropy -benchtime=20x ./manager/
func BenchmarkAntiEntropyRound(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, diverged := range []bool{false, true} {
			name := fmt.Sprintf("sessions=%d/equal", n)
			if diverged {
				name = fmt.Sprintf("sessions=%d/1%%-differ", n)
			}
			b.Run(name, func(b *testing.B) { benchRound(b, n, diverged) })
		}
	}
}

func benchRound(b *testing.B, n int, diverged bool) {
	cfg := testConfig()
	cfg.SessionTimeout = time.Hour // nothing expires during the rounds
	c := newCluster(b, cfg, "A", "B")
	a, bm := c.ms[0], c.ms[1]
	pad := make([]byte, 200)
	ids := make([]string, 0, n)
	now := unixNano(time.Now())
	for i := range n {
		id := newID("A")
		snap := snapshot{ID: id, Version: 1, Origin: "A", Access: now, MaxInactive: int64(time.Hour),
			Attrs: map[string][]byte{"n": {byte(i)}, "pad": pad}}
		a.install(snap, false)
		bm.install(snap, false)
		ids = append(ids, id)
	}
	peer := c.nodes[1].Local()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if diverged {
			for j := 0; j < n/100; j++ {
				s := a.sessions[ids[(i*7+j*101)%n]]
				s.mu.Lock()
				s.version++
				s.attrs["n"] = []byte{byte(i)}
				s.hashed = false
				s.mu.Unlock()
			}
		}
		b.StartTimer()
		if _, err := a.syncWith(bg, peer); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// The bytes of the first step, which is all an equal round sends.
	req, _ := msgpack.Marshal(digestRequest{Sums: a.digestFor("B", nil).sums()})
	b.ReportMetric(float64(len(req)), "B-sums/round")
	b.ReportMetric(float64(a.Stats().SyncMoved)/float64(b.N), "moved/round")
}
