package receiver_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

const typeData = receiver.FirstType

// slack bounds what should be immediate: generous, the test machine is a
// shared 2-core box and the race detector slows everything down.
const slack = 5 * time.Second

func peerInfo(name string, addr netip.AddrPort) membership.Member {
	var id membership.ID
	copy(id[:], name+"-0123456789abcdef")
	return membership.Member{ID: id, Name: name, Domain: "test", Addr: addr, Started: time.Now().Round(0)}
}

func toPeer(m membership.Member) wire.Peer {
	return wire.Peer{ID: wire.ID(m.ID), Name: m.Name, Domain: m.Domain, Addr: m.Addr, Started: m.Started}
}

// helloFrame is the hello of member p.
func helloFrame(p membership.Member) []byte { return wire.AppendHello(nil, toPeer(p)) }

// startReceiver runs a receiver on loopback; the test's cleanup stops it.
func startReceiver(t *testing.T, h receiver.Handler, edit ...func(*receiver.Config)) (*receiver.TCP, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := receiver.DefaultConfig()
	cfg.Local = peerInfo("receiver", addr)
	for _, e := range edit {
		e(&cfg)
	}
	r := receiver.New(ln, cfg)
	if h != nil {
		r.Handle(typeData, h)
	}
	r.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), slack)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return r, addr
}

func newSender(t *testing.T, name string, edit ...func(*sender.Config)) *sender.TCP {
	t.Helper()
	cfg := sender.DefaultConfig()
	cfg.Local = peerInfo(name, netip.MustParseAddrPort("127.0.0.1:1"))
	cfg.Timeout = slack
	for _, e := range edit {
		e(&cfg)
	}
	s := sender.New(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), slack)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// served checks that the receiver still serves a well-behaved sender.
func served(t *testing.T, s *sender.TCP, addr netip.AddrPort) {
	t.Helper()
	if err := s.Send(context.Background(), []netip.AddrPort{addr}, typeData, []byte("still there?"), sender.Sync); err != nil {
		t.Fatalf("a well-behaved sender is not served: %v", err)
	}
}

// reconnects is how often s had to reconnect, over all its peers.
func reconnects(s *sender.TCP) uint64 {
	var n uint64
	for _, st := range s.Stats() {
		n += st.Reconnects
	}
	return n
}

// raw is a hand-driven client connection.
type raw struct {
	t  *testing.T
	c  net.Conn
	rd *wire.Reader
}

func dial(t *testing.T, addr netip.AddrPort) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c, rd: wire.NewReader(c, wire.DefaultMaxFrame)}
}

func (c *raw) write(b []byte) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(slack))
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func msgFrame(from membership.ID, seq uint64, mode wire.Mode, payload string) []byte {
	return wire.AppendMessage(nil, wire.Type(typeData), wire.Envelope{From: wire.ID(from), Seq: seq, Mode: mode, Payload: []byte(payload)})
}

// sameAck compares acks; AckBody holds a slice, so == does not.
func sameAck(a, b wire.AckBody) bool {
	return a.Seq == b.Seq && a.Status == b.Status && a.Err == b.Err && bytes.Equal(a.Reply, b.Reply)
}

// ack reads the next frame, which must be an ack.
func (c *raw) ack() wire.AckBody {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(slack))
	f, err := c.rd.Next(nil)
	if err != nil {
		c.t.Fatalf("reading an ack: %v", err)
	}
	if f.Type != wire.TypeAck {
		c.t.Fatalf("got a %v frame, want an ack", f.Type)
	}
	a, err := wire.ParseAck(f.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return a
}

// closedWithin waits for the receiver to close the connection (EOF or a
// reset, never a timeout of the client's own) and returns how long it took.
func (c *raw) closedWithin(d time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.c.Read(buf)
		if err == nil {
			continue // acks or pongs owed before the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %v", d)
		}
		return time.Since(start)
	}
}

// stillOpen checks the receiver has not closed the connection, waiting
// briefly for a close that should not come.
func (c *raw) stillOpen(d time.Duration) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.c.Read(b[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("connection closed (or sent data) when it should be idle and open: %v", err)
	}
}

// counter is a handler that records the payloads of the messages it sees.
type counter struct {
	mu       sync.Mutex
	payloads []string
	fail     func(payload string) error // optional
}

func (h *counter) handle(_ context.Context, m receiver.Message) ([]byte, error) {
	h.mu.Lock()
	h.payloads = append(h.payloads, string(m.Payload))
	h.mu.Unlock()
	if h.fail != nil {
		return nil, h.fail(string(m.Payload))
	}
	return nil, nil
}

func (h *counter) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.payloads)
}

func header(magic string, version, typ, flags byte, n uint32) []byte {
	b := append([]byte(magic), version, typ, flags, 0)
	return binary.BigEndian.AppendUint32(b, n)
}

// TestOversizeFrame: a header announcing more than MaxFrame closes the
// connection at once, before any body arrives (so nothing was allocated for
// it), and other connections keep being served.
func TestOversizeFrame(t *testing.T) {
	const maxFrame = 1 << 10
	tests := []struct {
		name     string
		maxFrame int
		announce uint32
		// heapBound, if set, bounds the bytes the whole process allocates
		// while the frame is rejected.
		heapBound uint64
	}{
		{"max+1", maxFrame, maxFrame + 1, 0},
		{"4GiB", maxFrame, 1<<32 - 1, 0},
		// With a large maximum, allocating the body would show in the heap.
		{"8MiB+1, no allocation", 8 << 20, 8<<20 + 1, 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			r, addr := startReceiver(t, func(context.Context, receiver.Message) ([]byte, error) { return nil, nil }, func(c *receiver.Config) {
				c.MaxFrame = tc.maxFrame
				// Long timeouts, so only the size check can close promptly.
				c.IdleTimeout, c.FrameTimeout = time.Minute, time.Minute
			})
			s := newSender(t, "good")
			served(t, s, addr)

			c := dial(t, addr)
			hello := helloFrame(peerInfo("attacker", netip.MustParseAddrPort("127.0.0.1:2")))
			c.write(hello)
			c.stillOpen(50 * time.Millisecond) // the hello alone is fine
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			c.write(header("FLKT", wire.Version, byte(typeData), 0, tc.announce))
			c.closedWithin(slack)
			if tc.heapBound > 0 {
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if d := after.TotalAlloc - before.TotalAlloc; d > tc.heapBound {
					t.Errorf("rejecting the frame allocated %d bytes, want < %d", d, tc.heapBound)
				}
			}
			if got := r.Stats().Rejected; got != 1 {
				t.Errorf("Rejected = %d, want 1", got)
			}
			served(t, s, addr)
			if n := reconnects(s); n != 0 {
				t.Errorf("the good sender reconnected %d times", n)
			}
			// A frame of exactly the maximum is fine.
			ok := dial(t, addr)
			ok.write(hello)
			f := maxMessage(peerInfo("attacker", netip.AddrPort{}).ID, tc.maxFrame)
			ok.write(f)
			if a := ok.ack(); a.Seq != 1 || a.Status != wire.Applied {
				t.Errorf("frame of exactly the maximum: ack %+v", a)
			}
		})
	}
}

// maxMessage is a sync message, seq 1, whose body is exactly max bytes.
func maxMessage(from membership.ID, max int) []byte {
	for n := max; n >= 0; n-- {
		f := msgFrame(from, 1, wire.Sync, strings.Repeat("x", n))
		if len(f)-wire.HeaderLen == max {
			return f
		}
	}
	panic("no payload size gives a body of exactly the maximum")
}

// TestProtocolErrors: each violation closes its connection, counts as
// rejected, reaches no handler, and the receiver keeps serving others.
func TestProtocolErrors(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{}
	r, addr := startReceiver(t, h.handle, func(c *receiver.Config) {
		c.IdleTimeout, c.FrameTimeout = time.Minute, time.Minute
	})
	s := newSender(t, "good")
	served(t, s, addr)

	bad := peerInfo("bad", netip.MustParseAddrPort("127.0.0.1:2"))
	other := peerInfo("other", netip.MustParseAddrPort("127.0.0.1:3"))
	hello := helloFrame(bad)
	foreign := bad
	foreign.Domain = "elsewhere"
	then := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	tests := []struct {
		name  string
		bytes []byte
	}{
		{"garbage instead of hello", []byte("GET / HTTP/1.1\r\nHost: flock\r\n\r\n")},
		{"wrong magic", then(header("FLKX", wire.Version, byte(wire.TypeHello), 0, 0))},
		{"wrong version", then(header("FLKT", wire.Version+1, byte(wire.TypeHello), 0, 0))},
		{"auth flag", then(hello, header("FLKT", wire.Version, byte(typeData), wire.FlagAuth, 0))},
		{"unknown type after hello", then(hello, header("FLKT", wire.Version, 7, 0, 0))},
		{"type zero", then(hello, header("FLKT", wire.Version, 0, 0, 0))},
		{"application frame before hello", msgFrame(bad.ID, 1, wire.Sync, "early")},
		{"ping before hello", wire.AppendPing(nil, wire.TypePing, 1)},
		{"hello of another domain", helloFrame(foreign)},
		{"second hello", then(hello, hello)},
		{"second hello of someone else", then(hello, helloFrame(other))},
		{"malformed hello", then(header("FLKT", wire.Version, byte(wire.TypeHello), 0, 3), []byte{0x91, 0x95, 0xc4})},
		{"envelope from someone else", then(hello, msgFrame(other.ID, 1, wire.Sync, "spoofed"))},
		{"malformed envelope", then(hello, header("FLKT", wire.Version, byte(typeData), 0, 2), []byte{0x94, 0xc0})},
		{"ack from a client", then(hello, wire.AppendAck(nil, wire.AckBody{Seq: 1, Status: wire.Applied}))},
		{"pong from a client", then(hello, wire.AppendPong(nil, 1, toPeer(bad)))},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			c.write(tc.bytes)
			c.closedWithin(slack)
			if got := r.Stats().Rejected; got != uint64(i+1) {
				t.Errorf("Rejected = %d, want %d", got, i+1)
			}
			served(t, s, addr)
		})
	}
	if n := reconnects(s); n != 0 {
		t.Errorf("the good sender reconnected %d times", n)
	}
	if got := h.seen(); len(got) != len(tests)+1 {
		t.Errorf("handler saw %d messages, want only the good sender's %d", len(got), len(tests)+1)
	}
}

// TestSlowClients: a frame must complete within FrameTimeout, and a
// connection that sends nothing is closed after IdleTimeout; meanwhile the
// receiver serves others.
func TestSlowClients(t *testing.T) {
	const short, long = 200 * time.Millisecond, 2 * time.Second
	hello := helloFrame(peerInfo("slow", netip.MustParseAddrPort("127.0.0.1:2")))
	tests := []struct {
		name        string
		idle, frame time.Duration
		send        []byte
		trickle     bool // send one byte of a frame every 40ms, forever
		want        time.Duration
	}{
		{"half a header", long, short, header("FLKT", wire.Version, byte(wire.TypeHello), 0, 100)[:6], false, short},
		{"hello, then half a header", long, short, slices.Concat(hello, header("FLKT", wire.Version, byte(typeData), 0, 100)[:6]), false, short},
		{"header, no body", long, short, slices.Concat(hello, header("FLKT", wire.Version, byte(typeData), 0, 100)), false, short},
		{"trickled frame", long, short, nil, true, short},
		{"nothing at all", short, long, nil, false, short},
		{"hello, then nothing", short, long, hello, false, short},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			r, addr := startReceiver(t, func(context.Context, receiver.Message) ([]byte, error) { return nil, nil }, func(c *receiver.Config) {
				c.IdleTimeout, c.FrameTimeout = tc.idle, tc.frame
			})
			s := newSender(t, "good")
			c := dial(t, addr)
			start := time.Now()
			if len(tc.send) > 0 {
				c.write(tc.send)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if tc.trickle {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f := slices.Concat(hello, msgFrame(peerInfo("slow", netip.AddrPort{}).ID, 1, wire.Sync, strings.Repeat("x", 100)))
					tick := time.NewTicker(40 * time.Millisecond)
					defer tick.Stop()
					for _, b := range f {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						if _, err := c.c.Write([]byte{b}); err != nil {
							return
						}
					}
				}()
			}
			// While the slow client holds its connection, others are served.
			served(t, s, addr)
			c.closedWithin(slack)
			took := time.Since(start)
			close(stop)
			wg.Wait()
			if took < tc.want*3/4 {
				t.Errorf("closed after %v, before the %v timeout", took, tc.want)
			}
			if took > tc.want+2*time.Second {
				t.Errorf("closed after %v, want about %v", took, tc.want)
			}
			// A stalled frame is a protocol error; an idle connection is
			// closed quietly (the good sender's may be closed as idle too).
			idle := tc.idle == short
			if got := r.Stats().Rejected; idle != (got == 0) {
				t.Errorf("Rejected = %d; idle close %v: want a stalled frame counted and idle closes not", got, idle)
			}
			served(t, s, addr)
		})
	}
}

// TestKeepsBusyConnection: the idle timeout does not close a connection that
// keeps sending, even past IdleTimeout in total.
func TestKeepsBusyConnection(t *testing.T) {
	leakcheck.Check(t)
	_, addr := startReceiver(t, func(context.Context, receiver.Message) ([]byte, error) { return nil, nil }, func(c *receiver.Config) {
		c.IdleTimeout, c.FrameTimeout = 300*time.Millisecond, 300*time.Millisecond
	})
	s := newSender(t, "good")
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		served(t, s, addr)
		time.Sleep(50 * time.Millisecond) // pacing: the point is traffic spread over time
	}
	if n := reconnects(s); n != 0 {
		t.Errorf("a busy connection was closed: %d reconnects", n)
	}
}

// TestSyncFailureAck: a handler's error travels back to a sync sender as a
// *sender.RemoteError; async and ack senders do not hear of it.
func TestSyncFailureAck(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{fail: func(p string) error {
		if strings.HasPrefix(p, "bad") {
			return fmt.Errorf("cannot apply %q", p)
		}
		return nil
	}}
	r, addr := startReceiver(t, h.handle)
	s := newSender(t, "good")
	to := []netip.AddrPort{addr}
	tests := []struct {
		mode    sender.Mode
		payload string
		wantErr string
	}{
		{sender.Sync, "good", ""},
		{sender.Sync, "bad one", `cannot apply "bad one"`},
		{sender.Sync, "good again", ""},
		{sender.Ack, "bad in ack mode", ""},
		{sender.Async, "bad in async mode", ""},
		{sender.Sync, "bad two", `cannot apply "bad two"`},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String()+" "+tc.payload, func(t *testing.T) {
			err := s.Send(context.Background(), to, typeData, []byte(tc.payload), tc.mode)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Send = %v, want success", err)
				}
				return
			}
			var re *sender.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("Send = %v, want a *sender.RemoteError", err)
			}
			if re.Msg != tc.wantErr {
				t.Errorf("remote error %q, want %q", re.Msg, tc.wantErr)
			}
			var se *sender.Error
			if !errors.As(err, &se) || len(se.Peers) != 1 || se.Peers[0].Addr != addr {
				t.Errorf("Send = %#v, want an error naming %v only", err, addr)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.seen(); len(got) != len(tests) {
		t.Errorf("handler saw %v, want %d messages", got, len(tests))
	}
	if st := r.Stats(); st.HandlerErrors != 4 {
		t.Errorf("HandlerErrors = %d, want 4", st.HandlerErrors)
	}
	if n := reconnects(s); n != 0 {
		t.Errorf("a failed handler cost the connection: %d reconnects", n)
	}
}

// TestAckBeforeHandler: an ack-mode message is acknowledged when read, not
// when its handler returns.
func TestAckBeforeHandler(t *testing.T) {
	leakcheck.Check(t)
	// A "block" message's handler hands the test a gate and waits for it.
	entered := make(chan chan struct{}, 16)
	_, addr := startReceiver(t, func(ctx context.Context, m receiver.Message) ([]byte, error) {
		if strings.HasPrefix(string(m.Payload), "block") {
			gate := make(chan struct{})
			entered <- gate
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return nil, nil
	})

	t.Run("ack mode", func(t *testing.T) {
		s := newSender(t, "acker")
		done := make(chan error, 1)
		go func() {
			done <- s.Send(context.Background(), []netip.AddrPort{addr}, typeData, []byte("block"), sender.Ack)
		}()
		gate := <-entered
		defer func() { close(gate) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ack send: %v", err)
			}
		case <-time.After(slack / 2):
			close(gate)
			<-done
			gate = make(chan struct{})
			t.Fatal("an ack-mode send waited for the handler")
		}
	})
}

// TestAcksByMode: what the receiver answers to each mode, on the wire.
// Async: a cumulative Received once it has nothing more to read. Ack:
// Received before the handler runs, then Applied once it returned (so that
// a sender's Drain covers the handler), whatever the handler said. Sync:
// Applied or Failed with the handler's error, after it.
func TestAcksByMode(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{fail: func(p string) error {
		if p == "fail" {
			return errors.New("no")
		}
		return nil
	}}
	_, addr := startReceiver(t, h.handle)
	p := peerInfo("modes", netip.MustParseAddrPort("127.0.0.1:2"))
	c := dial(t, addr)
	c.write(helloFrame(p))
	tests := []struct {
		mode    wire.Mode
		payload string
		want    []wire.AckBody
	}{
		{wire.Async, "ok", []wire.AckBody{{Seq: 1, Status: wire.Received}}},
		{wire.Async, "fail", []wire.AckBody{{Seq: 2, Status: wire.Received}}},
		{wire.Ack, "ok", []wire.AckBody{{Seq: 3, Status: wire.Received}, {Seq: 3, Status: wire.Applied}}},
		{wire.Ack, "fail", []wire.AckBody{{Seq: 4, Status: wire.Received}, {Seq: 4, Status: wire.Applied}}},
		{wire.Sync, "ok", []wire.AckBody{{Seq: 5, Status: wire.Applied}}},
		{wire.Sync, "fail", []wire.AckBody{{Seq: 6, Status: wire.Failed, Err: "no"}}},
	}
	for i, tc := range tests {
		seq := uint64(i + 1)
		c.write(msgFrame(p.ID, seq, tc.mode, tc.payload))
		for _, want := range tc.want {
			if a := c.ack(); !sameAck(a, want) {
				t.Errorf("%v %q: ack %+v, want %+v", tc.mode, tc.payload, a, want)
			}
		}
	}
	// Nothing more than that.
	c.stillOpen(100 * time.Millisecond)
}

// TestDuplicatesAcrossReconnect: a sender re-sends on a new connection what
// it is not sure arrived; the receiver applies each sequence number once
// and answers the copies as it answered the originals.
func TestDuplicatesAcrossReconnect(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{fail: func(p string) error {
		if p == "fail" {
			return errors.New("refused on purpose")
		}
		return nil
	}}
	r, addr := startReceiver(t, h.handle)
	p := peerInfo("resender", netip.MustParseAddrPort("127.0.0.1:2"))
	hello := helloFrame(p)
	payload := func(seq uint64) string {
		if seq == 6 {
			return "fail"
		}
		return fmt.Sprint("message ", seq)
	}
	payloads := func(seqs ...uint64) []string {
		var p []string
		for _, seq := range seqs {
			p = append(p, payload(seq))
		}
		return p
	}

	type step struct {
		seqs []uint64
		want []wire.AckBody
	}
	applied := func(seq uint64) wire.AckBody { return wire.AckBody{Seq: seq, Status: wire.Applied} }
	failed := wire.AckBody{Seq: 6, Status: wire.Failed, Err: "refused on purpose"}
	conns := []step{
		{[]uint64{1, 2, 3}, []wire.AckBody{applied(1), applied(2), applied(3)}},
		{[]uint64{2, 3, 4, 5, 6}, []wire.AckBody{applied(2), applied(3), applied(4), applied(5), failed}},
		{[]uint64{6}, []wire.AckBody{failed}},
		{[]uint64{1, 6, 7}, []wire.AckBody{applied(1), failed, applied(7)}},
	}
	for i, st := range conns {
		c := dial(t, addr)
		c.write(hello)
		for j, seq := range st.seqs {
			c.write(msgFrame(p.ID, seq, wire.Sync, payload(seq)))
			if a := c.ack(); !sameAck(a, st.want[j]) {
				t.Errorf("connection %d, seq %d: ack %+v, want %+v", i+1, seq, a, st.want[j])
			}
		}
		c.c.Close()
	}
	if got, want := h.seen(), payloads(1, 2, 3, 4, 5, 6, 7); !slices.Equal(got, want) {
		t.Errorf("handler saw %v, want %v", got, want)
	}
	if st := r.Stats(); st.Duplicates != 5 {
		t.Errorf("Duplicates = %d, want 5", st.Duplicates)
	}

	// Async copies are suppressed too, and covered by the cumulative ack.
	c := dial(t, addr)
	c.write(slices.Concat(hello, msgFrame(p.ID, 7, wire.Async, "again"), msgFrame(p.ID, 8, wire.Async, "eight")))
	if a := c.ack(); a.Seq != 8 || a.Status != wire.Received {
		t.Errorf("async ack %+v, want cumulative received up to 8", a)
	}
	if got, want := h.seen(), append(payloads(1, 2, 3, 4, 5, 6, 7), "eight"); !slices.Equal(got, want) {
		t.Errorf("handler saw %v, want %v", got, want)
	}
}

// TestStop: Stop returns promptly with idle connections open and a handler
// that only ends when its context is cancelled, and leaves no goroutine.
func TestStop(t *testing.T) {
	leakcheck.Check(t)
	entered := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := receiver.DefaultConfig()
	cfg.Local = peerInfo("stopping", addr)
	r := receiver.New(ln, cfg)
	r.Handle(typeData, func(ctx context.Context, m receiver.Message) ([]byte, error) {
		if string(m.Payload) != "forever" {
			return nil, nil
		}
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r.Start()

	// Idle connections: one silent, one that said hello, one of a sender
	// that sent a message.
	dial(t, addr)
	dial(t, addr).write(helloFrame(peerInfo("idle", netip.MustParseAddrPort("127.0.0.1:2"))))
	served(t, newSender(t, "idle-sender"), addr)

	blocked := newSender(t, "blocked", func(c *sender.Config) { c.MaxRetries = 0 })
	sent := make(chan error, 1)
	go func() {
		sent <- blocked.Send(context.Background(), []netip.AddrPort{addr}, typeData, []byte("forever"), sender.Sync)
	}()
	<-entered
	if got := r.Stats().Open; got != 4 {
		t.Errorf("Open = %d before Stop, want 4", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	start := time.Now()
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %v", time.Since(start))
	if got := r.Stats().Open; got != 0 {
		t.Errorf("Open = %d after Stop", got)
	}
	if err := <-sent; err == nil {
		t.Error("the send whose handler was cancelled succeeded")
	}
	if err := r.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr.String(), slack); err == nil {
		c.Close()
		t.Error("the stopped receiver still accepts")
	}
}

// observer records what a receiver's Observer hears.
type observer struct{ seen, leaving chan membership.Member }

func (o observer) Seen(m membership.Member)    { o.seen <- m }
func (o observer) Leaving(m membership.Member) { o.leaving <- m }

// TestPingLeave: Ping answers with the receiver's Local peer; a hello and a
// ping call Seen, a leave Leaving.
func TestPingLeave(t *testing.T) {
	leakcheck.Check(t)
	obs := observer{seen: make(chan membership.Member, 16), leaving: make(chan membership.Member, 16)}
	_, addr := startReceiver(t, nil, func(c *receiver.Config) { c.Observer = obs })
	s := newSender(t, "caller")
	caller := peerInfo("caller", netip.MustParseAddrPort("127.0.0.1:1"))
	local := peerInfo("receiver", addr)

	samePeer := func(t *testing.T, what string, got, want membership.Member) {
		t.Helper()
		// Started is set when the test's peers are made; check it is recent.
		if got.ID != want.ID || got.Name != want.Name || got.Domain != want.Domain || got.Addr != want.Addr ||
			time.Since(got.Started) > time.Minute || time.Since(got.Started) < 0 {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}
	next := func(t *testing.T, ch chan membership.Member, what string) membership.Member {
		t.Helper()
		select {
		case p := <-ch:
			return p
		case <-time.After(slack):
			t.Fatalf("no %s", what)
			return membership.Member{}
		}
	}

	t.Run("ping", func(t *testing.T) {
		got, err := s.Ping(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		samePeer(t, "pong", got, local)
		samePeer(t, "seen on hello", next(t, obs.seen, "Seen for the hello"), caller)
		samePeer(t, "seen on ping", next(t, obs.seen, "Seen for the ping"), caller)
	})
	t.Run("hello", func(t *testing.T) {
		c := dial(t, addr)
		p := peerInfo("data", netip.MustParseAddrPort("127.0.0.1:5"))
		c.write(helloFrame(p))
		samePeer(t, "seen", next(t, obs.seen, "Seen for the hello"), p)
	})
	t.Run("leave", func(t *testing.T) {
		if err := s.Leave(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		next(t, obs.seen, "Seen for the hello")
		samePeer(t, "leaving", next(t, obs.leaving, "Leaving"), caller)
	})
	t.Run("ping a silent process", func(t *testing.T) {
		// The kernel accepts, nobody answers: the ping times out.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = s.Ping(ctx, ln.Addr().(*net.TCPAddr).AddrPort())
		if !errors.Is(err, sender.ErrTimeout) {
			t.Errorf("Ping = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > slack {
			t.Errorf("Ping took %v", d)
		}
	})
}
