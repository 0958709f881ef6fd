package receiver_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// Connections beyond the budget, in all or from one address, are closed at
// accept and counted; the ones within it are served.
func TestConnectionBudget(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{}
	r, addr := startReceiver(t, h.handle, func(cfg *receiver.Config) {
		cfg.MaxConns, cfg.MaxConnsPerIP = 3, 2
	})
	dialFrom := func(src string) *raw {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &raw{t: t, c: c, rd: wire.NewReader(c, wire.DefaultMaxFrame)}
	}
	a1, a2 := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	waitOpen(t, r, 2)
	took := dialFrom("127.0.0.1").closedWithin(slack) // a third from one address
	t.Logf("third connection from one address closed after %v", took)
	b1 := dialFrom("127.0.0.2")
	waitOpen(t, r, 3)
	dialFrom("127.0.0.3").closedWithin(slack) // a fourth in all
	if got := r.Stats().Refused["limit"]; got != 2 {
		t.Errorf("refused as limit: %d, want 2", got)
	}
	// Those within the budget work.
	for i, c := range []*raw{a1, a2, b1} {
		p := peerInfo(string(rune('a'+i)), netip.MustParseAddrPort("127.0.0.1:1"))
		c.write(helloFrame(p))
		c.write(msgFrame(p.ID, 1, wire.Sync, "x"))
		if a := c.ack(); a.Seq != 1 {
			t.Errorf("connection %d: ack %+v", i, a)
		}
	}
}

func waitOpen(t *testing.T, r *receiver.TCP, n int) {
	t.Helper()
	deadline := time.Now().Add(slack)
	for r.Stats().Open != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", r.Stats().Open, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A caller that does not complete its hello within HelloTimeout is let go
// (and counted); until the hello, a frame larger than a hello is refused.
// A real sender, which says hello at once, is not affected.
func TestHelloBudget(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{}
	r, addr := startReceiver(t, h.handle, func(cfg *receiver.Config) {
		cfg.HelloTimeout = 200 * time.Millisecond
		cfg.IdleTimeout = time.Minute
	})
	silent := dial(t, addr)
	took := silent.closedWithin(slack)
	if took < 150*time.Millisecond {
		t.Errorf("closed after %v, before the hello timeout", took)
	}
	t.Logf("silent caller closed after %v (hello timeout 200ms)", took)
	if got := r.Stats().Refused["limit"]; got != 1 {
		t.Errorf("refused as limit: %d, want 1", got)
	}

	big := dial(t, addr)
	big.write(header("FLKT", wire.Version, byte(wire.TypeHello), 0, wire.MaxAuthFrame+1))
	big.closedWithin(slack)
	if got := r.Stats().Refused["malformed"]; got != 1 {
		t.Errorf("a large first frame refused as malformed: %d, want 1", got)
	}

	s := newSender(t, "s")
	if err := s.Send(context.Background(), []netip.AddrPort{addr}, typeData, make([]byte, 64<<10), sender.Sync); err != nil {
		t.Fatalf("a real sender: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // past the hello timeout: the connection stays
	if err := s.Send(context.Background(), []netip.AddrPort{addr}, typeData, []byte("y"), sender.Sync); err != nil {
		t.Fatalf("a real sender after the hello timeout: %v", err)
	}
	for _, st := range s.Stats() {
		if st.Reconnects != 0 {
			t.Errorf("the sender reconnected %d times", st.Reconnects)
		}
	}
}
