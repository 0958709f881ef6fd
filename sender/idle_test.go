package sender_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/sender"
)

// deadAddrs returns n distinct loopback addresses where nothing listens: each
// is a TCP socket bound to 127.0.0.1 that never listens, so the port stays
// this test's (no other test can listen there) and a connection to it is
// refused at once. The sockets close when the test ends.
func deadAddrs(t *testing.T, n int) []netip.AddrPort {
	t.Helper()
	out := make([]netip.AddrPort, 0, n)
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)))
	}
	return out
}

// waitFor polls cond until it holds: a goroutine's exit and a peer dropped
// by its own timer raise no event to wait on.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdlePeersAreDropped: peers re-created after Forget (a late send to a
// member that left) and peers of 1000 dead addresses are dropped once idle,
// goroutines and all, so what the sender holds goes back to what it held
// before; a live peer dropped while idle continues its sequence when it is
// used again, so its receiver takes the new messages for new.
func TestIdlePeersAreDropped(t *testing.T) {
	leakcheck.Check(t)
	var got counting
	r := startReceiver(t, "r", got.handle)
	const idle = 50 * time.Millisecond
	s := newSender(t, func(c *sender.Config) {
		c.IdleTimeout = idle
		c.MaxRetries = 0
	})
	baseline := runtime.NumGoroutine()
	to := []netip.AddrPort{r.addr}
	send := func(n int) {
		t.Helper()
		for range n {
			if err := s.Send(context.Background(), to, typeData, []byte("x"), sender.Sync); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(3)
	s.Forget(r.addr)
	send(2) // late: re-creates the peer Forget dropped

	dead := deadAddrs(t, 1000)
	err := s.Send(context.Background(), dead, typeData, []byte("late repair"), sender.Sync)
	errs := peerErrs(t, err)
	if len(errs) != len(dead) {
		t.Fatalf("%d of %d sends to dead addresses failed", len(errs), len(dead))
	}
	for _, e := range errs {
		if !errors.Is(e, sender.ErrRetries) {
			t.Fatalf("send to a dead address: %v, want ErrRetries", e)
		}
	}
	for _, a := range dead[:10] { // a request and an async message too
		if _, err := s.Request(context.Background(), a, typeData, nil); err == nil {
			t.Fatalf("request to dead %v succeeded", a)
		}
	}
	if err := s.Send(context.Background(), dead, typeData, []byte("async"), sender.Async); err != nil {
		t.Fatal(err)
	}
	t.Logf("peers held after the sends: %d", len(s.Stats()))

	waitFor(t, 30*time.Second, "peers still held", func() bool { return len(s.Stats()) == 0 })
	waitFor(t, 30*time.Second, "goroutines above the baseline", func() bool { return runtime.NumGoroutine() <= baseline })

	// Dropped while idle, the live peer continues its stream.
	send(4)
	if n := got.n.Load(); n != 9 {
		t.Errorf("handler ran %d times for 9 messages (duplicates suppressed: %d)", n, r.r.Stats().Duplicates)
	}
	if d := r.r.Stats().Duplicates; d != 0 {
		t.Errorf("%d messages taken for copies", d)
	}
}

// TestLivePeerNotDroppedMidStream: a peer sent to more often than its idle
// timeout keeps its connection from the first message to the last, and
// every message arrives, once, in order.
func TestLivePeerNotDroppedMidStream(t *testing.T) {
	leakcheck.Check(t)
	c := &checker{next: map[uint32]uint32{}}
	r := startReceiver(t, "r", c.handle)
	s := newSender(t, func(c *sender.Config) { c.IdleTimeout = 250 * time.Millisecond })
	to := []netip.AddrPort{r.addr}
	rng := rand.NewChaCha8([32]byte{1})
	const n = 600
	for i := range n {
		mode := []sender.Mode{sender.Async, sender.Async, sender.Ack, sender.Sync}[i%4]
		if err := s.Send(context.Background(), to, typeData, smallPayload(rng, 0, i), mode); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // steady traffic, far below the idle timeout between messages
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got != n || len(c.errs) > 0 {
		t.Errorf("%d messages, want %d; errors: %v", c.got, n, c.errs[:min(len(c.errs), 5)])
	}
	if st := r.r.Stats(); st.Connections != 1 {
		t.Errorf("%d connections: the peer was dropped mid-stream", st.Connections)
	}
}

// TestSendsRaceIdleDrop: sends that come just as their peer is dropped for
// being idle either find it first (it is then not dropped) or find it gone
// and start a new one: nothing is lost, taken for a copy or reordered.
func TestSendsRaceIdleDrop(t *testing.T) {
	leakcheck.Check(t)
	c := &checker{next: map[uint32]uint32{}}
	r := startReceiver(t, "r", c.handle)
	const idle = 10 * time.Millisecond // the peer's timer ticks every 10ms
	s := newSender(t, func(c *sender.Config) { c.IdleTimeout = idle })
	to := []netip.AddrPort{r.addr}
	const writers, bursts, perBurst = 3, 40, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.NewChaCha8([32]byte{byte(w)})
			jitter := rand.New(rng)
			seq := 0
			for range bursts {
				for range perBurst {
					mode := []sender.Mode{sender.Async, sender.Sync}[jitter.IntN(2)]
					if err := s.Send(context.Background(), to, typeData, smallPayload(rng, w, seq), mode); err != nil {
						errs <- err
						return
					}
					seq++
				}
				// Gaps around the idle timeout: some bursts find the
				// peer, some find it being dropped, some find it gone.
				time.Sleep(idle/2 + time.Duration(jitter.Int64N(int64(5*idle/2))))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got != writers*bursts*perBurst || len(c.errs) > 0 {
		t.Errorf("%d messages, want %d; errors: %v", c.got, writers*bursts*perBurst, c.errs[:min(len(c.errs), 5)])
	}
	st := r.r.Stats()
	if st.Duplicates != 0 {
		t.Errorf("%d messages taken for copies", st.Duplicates)
	}
	if st.Connections < 2 {
		t.Errorf("%d connection: the peer was never dropped, the race was not run", st.Connections)
	}
	t.Logf("%d connections: the peer was dropped %d times between bursts", st.Connections, st.Connections-1)
}
