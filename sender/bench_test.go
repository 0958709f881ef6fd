package sender_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
	"github.com/flockhq/flock/tlsid"
)

// The published figures: one sender, two receivers on loopback, 1 KiB
// payloads, handlers that only count.
//
//	go test -run='^$' -bench=. -benchtime=3s ./sender/
//	go test -run='^$' -bench=SyncLatency -count=3 ./sender/

const benchPayload = 1 << 10

// security is what a benchmark's connections carry.
type security int

const (
	plain    security = iota
	keyed             // a cluster key: every frame sealed and opened
	keyedTLS          // the key inside mutual TLS 1.3
)

// benchCluster starts two counting receivers and a sender with the default
// configuration, all holding a cluster key (and certificates) as sec says.
func benchCluster(b *testing.B, sec security) (*sender.TCP, []netip.AddrPort, *atomic.Int64) {
	b.Helper()
	var ids func(name string) *tlsid.Identity
	if sec == keyedTLS {
		caCert, caKey, err := tlsid.NewCA("bench", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		ids = func(name string) *tlsid.Identity {
			id, err := tlsid.Issued(caCert, caKey, name, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			return id
		}
	}
	var applied atomic.Int64
	var to []netip.AddrPort
	for _, name := range []string{"a", "b"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := ln.Addr().(*net.TCPAddr).AddrPort()
		cfg := receiver.DefaultConfig()
		cfg.Local = peerInfo(name, addr)
		if sec != plain {
			cfg.Keyring = benchRing(b)
		}
		if ids != nil {
			cfg.TLS = ids(name).Server()
		}
		r := receiver.New(ln, cfg)
		r.Handle(typeData, func(context.Context, receiver.Message) ([]byte, error) { applied.Add(1); return nil, nil })
		r.Start()
		b.Cleanup(func() { r.Stop(context.Background()) })
		to = append(to, addr)
	}
	cfg := sender.DefaultConfig()
	cfg.Local = peerInfo("sender", netip.MustParseAddrPort("127.0.0.1:1"))
	if sec != plain {
		cfg.Keyring = benchRing(b)
	}
	if ids != nil {
		cfg.TLS = ids("sender").Client()
	}
	s := sender.New(cfg)
	b.Cleanup(func() { s.Close(context.Background()) })
	// Connect before timing.
	if err := s.Send(context.Background(), to, typeData, make([]byte, benchPayload), sender.Sync); err != nil {
		b.Fatal(err)
	}
	return s, to, &applied
}

// send sends one message to every peer of to, waiting out a full queue (the
// queue is bounded by design; an async sender that outruns its peers is
// pushed back).
func send(s *sender.TCP, to []netip.AddrPort, p []byte, mode sender.Mode) error {
	for dst := to; len(dst) > 0; {
		err := s.Send(context.Background(), dst, typeData, p, mode)
		if err == nil {
			return nil
		}
		var se *sender.Error
		if !errors.As(err, &se) {
			return err
		}
		dst = dst[:0:0]
		for _, pe := range se.Peers {
			if !errors.Is(pe.Err, sender.ErrQueueFull) {
				return err
			}
			dst = append(dst, pe.Addr)
		}
		time.Sleep(100 * time.Microsecond) // back-pressure
	}
	return nil
}

func benchRing(b *testing.B) *keyring.Keyring {
	r, err := keyring.New(bytes.Repeat([]byte{7}, keyring.Size))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// cpuTime is the CPU time the process has used, user and system: the
// sender's and both receivers' work, which is what one replicated message
// costs the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRate(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
}

func benchSerial(b *testing.B, mode sender.Mode, sec security) {
	s, to, _ := benchCluster(b, sec)
	p := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		if err := send(s, to, p, mode); err != nil {
			b.Fatal(err)
		}
	}
	if mode == sender.Async {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Drain(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, cpuTime()-cpu)
}

func benchParallel(b *testing.B, mode sender.Mode, sec security) {
	s, to, _ := benchCluster(b, sec)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.SetParallelism(8) // 16 senders on 2 cores: one sync caller is latency-bound
	b.ResetTimer()
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, benchPayload)
		for pb.Next() {
			if err := send(s, to, p, mode); err != nil {
				b.Error(err) // not Fatal: this is not the benchmark's goroutine
				return
			}
		}
	})
	b.StopTimer()
	reportRate(b, cpuTime()-cpu)
}

func BenchmarkSendAsync(b *testing.B)        { benchSerial(b, sender.Async, plain) }
func BenchmarkSendAck(b *testing.B)          { benchSerial(b, sender.Ack, plain) }
func BenchmarkSendSync(b *testing.B)         { benchSerial(b, sender.Sync, plain) }
func BenchmarkSendAckParallel(b *testing.B)  { benchParallel(b, sender.Ack, plain) }
func BenchmarkSendSyncParallel(b *testing.B) { benchParallel(b, sender.Sync, plain) }

// The same with a cluster key: every frame sealed and opened (AES-256-GCM).
func BenchmarkSendAsyncKeyed(b *testing.B)        { benchSerial(b, sender.Async, keyed) }
func BenchmarkSendSyncKeyed(b *testing.B)         { benchSerial(b, sender.Sync, keyed) }
func BenchmarkSendSyncParallelKeyed(b *testing.B) { benchParallel(b, sender.Sync, keyed) }

// And with the key inside mutual TLS 1.3 ([cluster.tls]).
func BenchmarkSendSyncKeyedTLS(b *testing.B)         { benchSerial(b, sender.Sync, keyedTLS) }
func BenchmarkSendSyncParallelKeyedTLS(b *testing.B) { benchParallel(b, sender.Sync, keyedTLS) }

// BenchmarkSyncLatency sends b.N sync messages at a steady 5,000 a second
// (a pacer hands the sends to a few goroutines, so that a slow send does
// not lower the rate) and reports the percentiles of their latency:
// from the start of the send ("p50-µs", "p99-µs", "max-µs"), and from the
// time it was due ("p99-due-µs", which includes any lag in starting it).
func BenchmarkSyncLatency(b *testing.B) {
	const rate = 5000
	s, to, _ := benchCluster(b, plain)
	p := make([]byte, benchPayload)
	lat := make([]time.Duration, b.N)
	due := make([]time.Duration, b.N)
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, 1024)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				start := time.Now()
				if err := s.Send(context.Background(), to, typeData, p, sender.Sync); err != nil {
					failed.Add(1)
				}
				end := time.Now()
				lat[j.i], due[j.i] = end.Sub(start), end.Sub(j.due)
			}
		}()
	}
	b.ResetTimer()
	// Go's timers sleep in steps of about a millisecond here, too coarse
	// for a ticker of 200µs: pace by the clock instead, starting every
	// send that is due, so that the rate holds on average (sends then
	// start in small bursts, a few per millisecond).
	start := time.Now()
	for i := range b.N {
		d := start.Add(time.Duration(i) * time.Second / rate)
		if wait := time.Until(d); wait > 0 {
			time.Sleep(wait)
		}
		jobs <- job{i, d}
	}
	close(jobs)
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sends failed", n)
	}
	pct := func(d []time.Duration, q float64) float64 {
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Nanoseconds()) / 1e3
	}
	slices.Sort(lat)
	slices.Sort(due)
	b.ReportMetric(pct(lat, 0.50), "p50-µs")
	b.ReportMetric(pct(lat, 0.99), "p99-µs")
	b.ReportMetric(pct(lat, 1), "max-µs")
	b.ReportMetric(pct(due, 0.99), "p99-due-µs")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
