package sender_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// margin is what a bound on the shared 2-core test machine, under the race
// detector, allows on top of the configured timeout.
const margin = 2 * time.Second

// behaviour is how a rawPeer treats the connections it accepts.
type behaviour int

const (
	acceptClose behaviour = iota // close at once
	readHello                    // read the hello, then stay silent (a paused process)
	neverRead                    // accept and read nothing
)

// rawPeer is a listener standing in for a broken peer.
type rawPeer struct {
	ln       net.Listener
	addr     netip.AddrPort
	hellos   chan wire.Peer // the hellos a readHello peer read
	accepted atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// startRawPeer listens on addr ("127.0.0.1:0" for any port).
func startRawPeer(t *testing.T, b behaviour, addr string) *rawPeer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort(), hellos: make(chan wire.Peer, 64)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			switch b {
			case acceptClose:
				c.Close()
				continue
			case readHello:
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					f, err := wire.NewReader(c, wire.DefaultMaxFrame).Next(nil)
					if err != nil || f.Type != wire.TypeHello {
						return
					}
					if h, err := wire.ParseHello(f.Body); err == nil {
						select {
						case p.hellos <- h:
						default:
						}
					}
				}()
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *rawPeer) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// awaitStats polls the sender's statistics of addr until ok says yes. The
// sender has no event for "the queue drained after a failure", so a bounded
// poll is the way to see it.
func awaitStats(t *testing.T, s *sender.TCP, addr netip.AddrPort, within time.Duration, ok func(sender.PeerStats) bool) sender.PeerStats {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, found := peerStats(s, addr)
		if found && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of %v after %v: %+v (found %v)", addr, within, st, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func peerStats(s *sender.TCP, addr netip.AddrPort) (sender.PeerStats, bool) {
	for _, st := range s.Stats() {
		if st.Addr == addr {
			return st, true
		}
	}
	return sender.PeerStats{}, false
}

// peerErrs checks err is a *sender.Error and returns its peers' errors by
// address.
func peerErrs(t *testing.T, err error) map[netip.AddrPort]error {
	t.Helper()
	if err == nil {
		return nil
	}
	var se *sender.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *sender.Error", err, err)
	}
	m := make(map[netip.AddrPort]error)
	for _, pe := range se.Peers {
		m[pe.Addr] = pe.Err
	}
	return m
}

// counting is a handler that counts messages.
type counting struct{ n atomic.Int64 }

func (c *counting) handle(context.Context, receiver.Message) ([]byte, error) {
	c.n.Add(1)
	return nil, nil
}

// TestPeerKilledMidStream: while sync messages stream to two peers, one
// dies; sends keep reaching the live one and fail for the dead one within
// the timeout.
func TestPeerKilledMidStream(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, kill := range []string{"stopped", "accepts and closes"} {
		t.Run(kill, func(t *testing.T) {
			leakcheck.Check(t)
			var live, dead counting
			a := startReceiver(t, "live", live.handle)
			b := startReceiver(t, "dead", dead.handle)
			failures := make(chan error, 1024)
			s := newSender(t, func(c *sender.Config) {
				c.Timeout = timeout
				c.OnFailure = func(_ netip.AddrPort, err error) {
					select {
					case failures <- err:
					default:
					}
				}
			})
			to := []netip.AddrPort{a.addr, b.addr}

			type result struct {
				afterKill bool
				took      time.Duration
				err       error
			}
			var killed atomic.Bool
			stop := make(chan struct{})
			warm := make(chan struct{})
			results := make(chan result, 1<<16)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						after := killed.Load()
						start := time.Now()
						err := s.Send(context.Background(), to, typeData, []byte("state"), sender.Sync)
						results <- result{after, time.Since(start), err}
						if w == 0 && i == 50 {
							close(warm)
						}
					}
				}()
			}
			<-warm
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.r.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if kill == "accepts and closes" {
				startRawPeer(t, acceptClose, b.addr.String())
			}
			killed.Store(true)
			// Let the stream run on for a few timeouts.
			deadline := time.After(5 * timeout)
			var after, total int64
		collect:
			for {
				select {
				case r := <-results:
					total++
					if r.afterKill {
						after++
					}
					if r.afterKill && after >= 20 {
						break collect
					}
					checkKilledSend(t, r.afterKill, r.took, r.err, a.addr, b.addr, timeout)
				case <-deadline:
					break collect
				}
			}
			close(stop)
			wg.Wait()
			close(results)
			for r := range results {
				total++
				checkKilledSend(t, r.afterKill, r.took, r.err, a.addr, b.addr, timeout)
			}
			if n := live.n.Load(); n != total {
				t.Errorf("the live peer applied %d of %d messages", n, total)
			}
			if after < 5 {
				t.Errorf("only %d sends after the kill", after)
			}
			st, _ := peerStats(s, b.addr)
			t.Logf("to the dead peer: %+v", st)
			if len(failures) == 0 {
				t.Error("OnFailure was not called")
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			if err := s.Close(ctx2); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkKilledSend judges one send of TestPeerKilledMidStream: the live peer never
// fails; after the kill the dead one does, in time, for a transport reason.
func checkKilledSend(t *testing.T, afterKill bool, took time.Duration, err error, live, dead netip.AddrPort, timeout time.Duration) {
	t.Helper()
	errs := peerErrs(t, err)
	if e, ok := errs[live]; ok {
		t.Errorf("send to the live peer failed: %v", e)
	}
	if !afterKill {
		return // in flight when the peer died: either way
	}
	e, ok := errs[dead]
	if !ok {
		t.Errorf("a send to the dead peer succeeded")
		return
	}
	if !errors.Is(e, sender.ErrRetries) && !errors.Is(e, sender.ErrTimeout) {
		t.Errorf("send to the dead peer: %v, want ErrRetries or ErrTimeout", e)
	}
	if took > timeout+margin {
		t.Errorf("send took %v, timeout %v", took, timeout)
	}
}

// TestPausedPeer: a peer whose kernel accepts but whose process is silent
// (SIGSTOP). A sync send times out; the connection is found stalled, its
// messages retried once on a new connection, then dropped.
func TestPausedPeer(t *testing.T) {
	leakcheck.Check(t)
	const timeout = 500 * time.Millisecond
	paused := startRawPeer(t, readHello, "127.0.0.1:0")
	var stalls atomic.Int64
	s := newSender(t, func(c *sender.Config) {
		c.Timeout = timeout
		c.MaxRetries = 1
		c.OnFailure = func(_ netip.AddrPort, err error) {
			if errors.Is(err, sender.ErrTimeout) {
				stalls.Add(1)
			}
		}
	})
	to := []netip.AddrPort{paused.addr}

	start := time.Now()
	err := s.Send(context.Background(), to, typeData, []byte("sync"), sender.Sync)
	took := time.Since(start)
	if e := peerErrs(t, err)[paused.addr]; !errors.Is(e, sender.ErrTimeout) {
		t.Fatalf("sync send: %v, want ErrTimeout", err)
	}
	if took < timeout*3/4 || took > timeout+margin {
		t.Errorf("sync send failed after %v, timeout %v", took, timeout)
	}
	select {
	case h := <-paused.hellos:
		if h.Name != "sender" {
			t.Errorf("hello names %+v", h)
		}
	case <-time.After(margin):
		t.Fatal("no hello")
	}

	const async = 20
	for i := range async {
		if err := s.Send(context.Background(), to, typeData, binary.BigEndian.AppendUint32(nil, uint32(i)), sender.Async); err != nil {
			t.Fatalf("async send %d: %v", i, err)
		}
	}
	st := awaitStats(t, s, paused.addr, 10*timeout+margin, func(st sender.PeerStats) bool {
		return st.Bytes == 0 && st.Queued == 0 && st.Inflight == 0
	})
	t.Logf("after the stall: %+v; %d connections accepted", st, paused.accepted.Load())
	// Every message was written to one connection, re-sent on the next,
	// and dropped when that stalled too.
	if st.Retried != async+1 || st.Failed != async+1 {
		t.Errorf("Retried %d, Failed %d; want %d each", st.Retried, st.Failed, async+1)
	}
	if st.Reconnects < 1 || paused.accepted.Load() < 2 {
		t.Errorf("%d reconnects, %d connections: want the stalled connection replaced", st.Reconnects, paused.accepted.Load())
	}
	if stalls.Load() == 0 {
		t.Error("OnFailure did not hear of the stall")
	}
}

// TestQueueBound: to a peer that reads nothing, the queue fills to its
// limit and no further; the same sends reach a healthy peer.
func TestQueueBound(t *testing.T) {
	leakcheck.Check(t)
	const limit = 256 << 10
	stuck := startRawPeer(t, neverRead, "127.0.0.1:0")
	// The test waits for each message to reach the healthy peer, so that
	// only the stuck peer's queue can fill.
	applied := make(chan struct{}, 1)
	var healthyGot counting
	healthy := startReceiver(t, "healthy", func(ctx context.Context, m receiver.Message) ([]byte, error) {
		healthyGot.handle(ctx, m)
		applied <- struct{}{}
		return nil, nil
	})
	s := newSender(t, func(c *sender.Config) {
		c.QueueLimit = limit
		c.Timeout = time.Minute // no stall detection during the test
	})
	to := []netip.AddrPort{stuck.addr, healthy.addr}
	payload := make([]byte, 1024)

	const sends = 1000 // about 4 times the limit
	firstFull := -1
	for i := range sends {
		mode := sender.Async
		if firstFull >= 0 && i%10 == 0 {
			mode = sender.Ack // once full, fails at once for the stuck peer too
		}
		start := time.Now()
		err := s.Send(context.Background(), to, typeData, payload, mode)
		if d := time.Since(start); d > margin {
			t.Errorf("send %d took %v", i, d)
		}
		errs := peerErrs(t, err)
		if e, ok := errs[healthy.addr]; ok {
			t.Fatalf("send %d to the healthy peer failed: %v", i, e)
		}
		if e, ok := errs[stuck.addr]; ok {
			if !errors.Is(e, sender.ErrQueueFull) {
				t.Fatalf("send %d to the stuck peer: %v, want ErrQueueFull", i, e)
			}
			if firstFull < 0 {
				firstFull = i
			}
		} else if firstFull >= 0 {
			t.Errorf("send %d accepted after the queue was full at %d", i, firstFull)
		}
		select {
		case <-applied:
		case <-time.After(margin):
			t.Fatalf("send %d did not reach the healthy peer", i)
		}
		st, _ := peerStats(s, stuck.addr)
		if st.Bytes > limit {
			t.Fatalf("send %d: %d bytes queued, limit %d", i, st.Bytes, limit)
		}
	}
	st, _ := peerStats(s, stuck.addr)
	t.Logf("queue full after %d sends; stuck peer: %+v", firstFull, st)
	if firstFull < limit/(1024+128) || firstFull > limit/1024 {
		t.Errorf("queue full after %d sends of 1 KiB, limit %d", firstFull, limit)
	}
	hs := awaitStats(t, s, healthy.addr, 30*time.Second, func(st sender.PeerStats) bool { return st.Bytes == 0 })
	if got := healthyGot.n.Load(); got != sends {
		t.Errorf("healthy peer got %d messages, want %d (%+v)", got, sends, hs)
	}
}

// proxy forwards TCP connections to a target and can cut them all.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	cuts   int
}

func startProxy(t *testing.T, target netip.AddrPort) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target.String(), conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() netip.AddrPort { return p.ln.Addr().(*net.TCPAddr).AddrPort() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Add(2)
		go pipe(u, c)
		go pipe(c, u)
	}
}

// Cut closes every connection through the proxy, both sides.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.cuts++
}

// smallPayload is like payload, of up to 4 KiB.
func smallPayload(rng *rand.ChaCha8, writer, seq int) []byte {
	p := make([]byte, 48+rand.New(rng).IntN(4<<10))
	binary.BigEndian.PutUint32(p[0:], uint32(writer))
	binary.BigEndian.PutUint32(p[4:], uint32(seq))
	rng.Read(p[40:])
	sum := sha256.Sum256(p[40:])
	copy(p[8:40], sum[:])
	return p
}

// TestOrderAcrossReconnect: messages stream through a proxy whose
// connections are cut once per round; every message arrives exactly once,
// each writer's in order, since no message is cut twice (MaxRetries 1).
// Async is the case of the brief; ack and sync run too.
func TestOrderAcrossReconnect(t *testing.T) {
	for _, mode := range []sender.Mode{sender.Async, sender.Ack, sender.Sync} {
		t.Run(mode.String(), func(t *testing.T) { testOrderAcrossReconnect(t, mode) })
	}
}

func testOrderAcrossReconnect(t *testing.T, mode sender.Mode) {
	leakcheck.Check(t)
	const rounds, writers, perWriter = 6, 4, 150 // per round
	chk := &checker{next: map[uint32]uint32{}}
	var applied atomic.Int64
	var trigMu sync.Mutex
	var trigAt int64
	var trig chan struct{}
	rcv := startReceiver(t, "r", func(ctx context.Context, m receiver.Message) ([]byte, error) {
		_, err := chk.handle(ctx, m)
		n := applied.Add(1)
		trigMu.Lock()
		if trig != nil && n >= trigAt {
			close(trig)
			trig = nil
		}
		trigMu.Unlock()
		return nil, err
	})
	px := startProxy(t, rcv.addr)
	s := newSender(t, func(c *sender.Config) { c.MaxRetries = 1; c.QueueLimit = 1 << 20 })
	to := []netip.AddrPort{px.addr()}

	rngs := make([]*rand.ChaCha8, writers)
	for w := range rngs {
		var seed [32]byte
		seed[0] = byte(w)
		rngs[w] = rand.NewChaCha8(seed)
	}
	for round := range rounds {
		// Cut when a third of this round's messages have been applied.
		fire := make(chan struct{})
		trigMu.Lock()
		trigAt, trig = int64(round*writers*perWriter+writers*perWriter/3), fire
		trigMu.Unlock()
		cut := make(chan struct{})
		go func() { <-fire; px.Cut(); close(cut) }()

		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := round * perWriter; i < (round+1)*perWriter; i++ {
					p := smallPayload(rngs[w], w, i)
					for {
						err := s.Send(context.Background(), to, typeData, p, mode)
						if err == nil {
							break
						}
						if !errors.Is(err, sender.ErrQueueFull) {
							errs <- err
							return
						}
						time.Sleep(time.Millisecond) // back-pressure
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		<-cut
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.Drain(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	st, _ := peerStats(s, px.addr())
	rs := rcv.r.Stats()
	t.Logf("%d cuts, %d reconnects; %d messages retried; receiver suppressed %d duplicates", px.cuts, st.Reconnects, st.Retried, rs.Duplicates)
	chk.mu.Lock()
	defer chk.mu.Unlock()
	if want := rounds * writers * perWriter; chk.got != want || len(chk.errs) > 0 {
		t.Errorf("%d messages, want %d; errors: %v", chk.got, want, chk.errs[:min(len(chk.errs), 5)])
	}
	if st.Failed != 0 {
		t.Errorf("%d messages failed", st.Failed)
	}
	if st.Reconnects < rounds-1 {
		t.Errorf("%d reconnects after %d cuts", st.Reconnects, rounds)
	}
}

// TestForgetAndClose: Forget fails what is queued for the peer with
// ErrForgotten, Close everything with ErrClosed; a send after Close fails
// with ErrClosed.
func TestForgetAndClose(t *testing.T) {
	tests := []struct {
		name string
		do   func(*sender.TCP, netip.AddrPort) error
		want error
	}{
		{"forget", func(s *sender.TCP, a netip.AddrPort) error { s.Forget(a); return nil }, sender.ErrForgotten},
		{"close", func(s *sender.TCP, _ netip.AddrPort) error { return s.Close(context.Background()) }, sender.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			const timeout = 30 * time.Second // nothing may end by timing out
			paused := startRawPeer(t, readHello, "127.0.0.1:0")
			var got counting
			healthy := startReceiver(t, "healthy", got.handle)
			s := newSender(t, func(c *sender.Config) { c.Timeout = timeout })
			to := []netip.AddrPort{paused.addr}

			const async, waiting = 5, 4
			for range async {
				if err := s.Send(context.Background(), to, typeData, []byte("async"), sender.Async); err != nil {
					t.Fatal(err)
				}
			}
			results := make(chan error, waiting)
			for i := range waiting {
				mode := []sender.Mode{sender.Sync, sender.Ack}[i%2]
				go func() { results <- s.Send(context.Background(), to, typeData, []byte("waits"), mode) }()
			}
			awaitStats(t, s, paused.addr, margin, func(st sender.PeerStats) bool { return st.Queued+st.Inflight == async+waiting })

			start := time.Now()
			if err := tc.do(s, paused.addr); err != nil {
				t.Fatal(err)
			}
			for range waiting {
				select {
				case err := <-results:
					if e := peerErrs(t, err)[paused.addr]; !errors.Is(e, tc.want) {
						t.Errorf("waiting send: %v, want %v", err, tc.want)
					}
				case <-time.After(margin):
					t.Fatal("a waiting send did not end")
				}
			}
			t.Logf("waiting sends ended %v after %s", time.Since(start), tc.name)
			if _, found := peerStats(s, paused.addr); found {
				t.Errorf("the peer is still in Stats after %s", tc.name)
			}
			err := s.Send(context.Background(), []netip.AddrPort{healthy.addr}, typeData, []byte("after"), sender.Sync)
			if tc.want == sender.ErrClosed {
				if e := peerErrs(t, err)[healthy.addr]; !errors.Is(e, sender.ErrClosed) {
					t.Errorf("send after Close: %v, want ErrClosed", err)
				}
				if err := s.Drain(context.Background()); err != nil {
					t.Errorf("Drain after Close: %v", err)
				}
				if err := s.Close(context.Background()); err != nil {
					t.Errorf("second Close: %v", err)
				}
			} else if err != nil {
				t.Errorf("send to another peer after Forget: %v", err)
			}
		})
	}
}

// TestForgetThenSendAgain: a peer forgotten (declared failed) and then
// used again, while its receiver kept running, still applies what it is
// sent: the new stream's sequence numbers must not look like copies of the
// old stream's.
func TestForgetThenSendAgain(t *testing.T) {
	leakcheck.Check(t)
	var got counting
	r := startReceiver(t, "r", got.handle)
	s := newSender(t)
	to := []netip.AddrPort{r.addr}
	send := func(n int) {
		t.Helper()
		for range n {
			if err := s.Send(context.Background(), to, typeData, []byte("x"), sender.Sync); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(5)
	s.Forget(r.addr)
	send(3)
	if n := got.n.Load(); n != 8 {
		t.Errorf("handler ran %d times for 8 messages (duplicates suppressed: %d)", n, r.r.Stats().Duplicates)
	}
}

// TestCloseWithBlockedWriter: Close is prompt even when a peer's socket is
// full and the writer is blocked writing to it.
func TestCloseWithBlockedWriter(t *testing.T) {
	leakcheck.Check(t)
	stuck := startRawPeer(t, neverRead, "127.0.0.1:0")
	s := newSender(t, func(c *sender.Config) {
		c.Timeout = 30 * time.Second
		c.QueueLimit = 256 << 20
	})
	to := []netip.AddrPort{stuck.addr}
	chunk := make([]byte, 1<<20)
	for range 64 { // far more than loopback socket buffers hold
		if err := s.Send(context.Background(), to, typeData, chunk, sender.Async); err != nil {
			t.Fatal(err)
		}
	}
	waiting := make(chan error, 1)
	go func() { waiting <- s.Send(context.Background(), to, typeData, []byte("x"), sender.Sync) }()
	// The writer is blocked once the kernel stops taking bytes.
	awaitStats(t, s, stuck.addr, margin, func(st sender.PeerStats) bool { return st.Inflight > 0 && st.Queued > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), margin)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v after %v", err, time.Since(start))
	}
	if e := peerErrs(t, <-waiting)[stuck.addr]; !errors.Is(e, sender.ErrClosed) {
		t.Errorf("waiting send: %v, want ErrClosed", e)
	}
}

// TestSendToSeveral: a Send to several peers waits for all of them at once
// (one wake-up for the last answer), and each peer's outcome is its own:
// healthy peers answer, a paused one fails with ErrTimeout after the
// timeout, and many such Sends at once keep their answers apart.
func TestSendToSeveral(t *testing.T) {
	leakcheck.Check(t)
	const timeout = 500 * time.Millisecond
	var handled atomic.Int64
	ok := func(ctx context.Context, m receiver.Message) ([]byte, error) {
		handled.Add(1)
		return nil, nil
	}
	a, b := startReceiver(t, "a", ok), startReceiver(t, "b", ok)
	paused := startRawPeer(t, readHello, "127.0.0.1:0")
	s := newSender(t, func(c *sender.Config) { c.Timeout = timeout })

	tests := []struct {
		name      string
		to        []netip.AddrPort
		mode      sender.Mode
		ctxFor    time.Duration // the caller's deadline, 0 for none
		wantFail  []netip.AddrPort
		wantErr   error
		wantAtMin time.Duration // the call returns no sooner
	}{
		{"two healthy, sync", []netip.AddrPort{a.addr, b.addr}, sender.Sync, 0, nil, nil, 0},
		{"two healthy, ack", []netip.AddrPort{a.addr, b.addr}, sender.Ack, 0, nil, nil, 0},
		{"healthy and paused", []netip.AddrPort{a.addr, paused.addr, b.addr}, sender.Sync, 0, []netip.AddrPort{paused.addr}, sender.ErrTimeout, timeout * 3 / 4},
		{"the caller's deadline first", []netip.AddrPort{paused.addr, a.addr}, sender.Sync, timeout / 4, []netip.AddrPort{paused.addr}, context.DeadlineExceeded, timeout / 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.ctxFor > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxFor)
				defer cancel()
			}
			start := time.Now()
			err := s.Send(ctx, tc.to, typeData, []byte("x"), tc.mode)
			took := time.Since(start)
			errs := map[netip.AddrPort]error{}
			if err != nil {
				errs = peerErrs(t, err)
			}
			if len(errs) != len(tc.wantFail) {
				t.Fatalf("failed for %v, want %v", errs, tc.wantFail)
			}
			for _, p := range tc.wantFail {
				if !errors.Is(errs[p], tc.wantErr) {
					t.Errorf("%v: %v, want %v", p, errs[p], tc.wantErr)
				}
			}
			if took < tc.wantAtMin || took > timeout+margin {
				t.Errorf("returned after %v, want between %v and %v", took, tc.wantAtMin, timeout+margin)
			}
			t.Logf("%s: %v", tc.name, took)
		})
	}

	// Many at once, to the two healthy peers: every call answered, every
	// message handled once.
	before := handled.Load()
	const callers, each = 16, 50
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range each {
				if err := s.Send(context.Background(), []netip.AddrPort{a.addr, b.addr}, typeData, []byte("y"), sender.Sync); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := handled.Load()-before, int64(2*callers*each); got != want {
		t.Errorf("handled %d, want %d", got, want)
	}
}
