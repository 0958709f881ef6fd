package manager

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
)

// BenchmarkAntiEntropyRound is one anti-entropy round between two nodes
// that hold the same N sessions (the steady state: what the background
// rounds cost), and with 1% of them changed on one side only. It reports
// the bytes the round sent both ways (requests, answers, pushes). Divide
// by anti_entropy_interval for the background cost: each node starts one
// round per interval (and answers about one).
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
	bytes := func() int {
		n := 0
		for _, t := range []cluster.MessageType{typeDigest, typeSessions} {
			n += c.net.Bytes(c.nodes[0].node, c.nodes[1].node, t) + c.net.Bytes(c.nodes[1].node, c.nodes[0].node, t)
		}
		return n
	}
	before := bytes()
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
	// Both nodes' work and every byte either way: the asker's digest and
	// pushes, the other's answers.
	b.ReportMetric(float64(bytes()-before)/float64(b.N), "B/round")
	b.ReportMetric(float64(a.Stats().SyncMoved)/float64(b.N), "moved/round")
}

// The inline FNV-1a hashes equal hash/fnv's, byte for byte as before they
// were inlined: nodes of the previous release compare sums with these.
func TestDigestHashesStable(t *testing.T) {
	ref := func(parts ...[]byte) uint64 {
		h := fnv.New64a()
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum64()
	}
	le := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	for _, e := range []digestEntry{{}, {ID: "abc.n1", Version: 7, Origin: "n1", Hash: 1 << 60}} {
		if got, want := entryHash(e), ref([]byte(e.ID), le(e.Version), []byte(e.Origin), le(e.Hash)); got != want {
			t.Errorf("entryHash(%+v) = %x, want %x", e, got, want)
		}
		h := fnv.New32a()
		h.Write([]byte(e.ID))
		if got, want := bucketOf(e.ID), int(h.Sum32()%aeBuckets); got != want {
			t.Errorf("bucketOf(%q) = %d, want %d", e.ID, got, want)
		}
	}
	for _, e := range []ended{{ID: "x.n2", Version: 3}, {ID: "y.n2", Version: 1 << 40, Invalidated: true}} {
		x := byte(0)
		if e.Invalidated {
			x = 1
		}
		if got, want := tombHash(e), ref([]byte{0}, []byte(e.ID), le(e.Version), []byte{x}); got != want {
			t.Errorf("tombHash(%+v) = %x, want %x", e, got, want)
		}
	}
}
