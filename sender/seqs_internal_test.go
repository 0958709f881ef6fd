package sender

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
)

func addrN(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 4000)
}

// TestDroppedSequencesBounded: the sequence numbers kept for dropped peers
// stay within maxForgotten addresses however many are dropped, and a peer
// re-created for any of them, kept or let go, never reuses a number its
// address was sent.
func TestDroppedSequencesBounded(t *testing.T) {
	s := New(DefaultConfig())
	defer s.Close(context.Background())
	const n = 3 * maxForgotten
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		s.dropped(addrN(i), uint64(10*(i+1)))
		if len(s.seqs) > maxForgotten {
			t.Fatalf("%d addresses kept, at most %d", len(s.seqs), maxForgotten)
		}
	}
	if s.seqFloor == 0 {
		t.Fatal("addresses were let go without raising the floor")
	}
	last := addrN(n - 1)
	if got := s.newPeerSeq(last); got != 10*n {
		t.Errorf("the address dropped last continues from %d, want %d", got, 10*n)
	}
	for i := range n - 1 {
		if got, sent := s.newPeerSeq(addrN(i)), uint64(10*(i+1)); got < sent {
			t.Fatalf("address %d continues from %d, below the %d it was sent", i, got, sent)
		}
	}
	if len(s.seqs) != 0 {
		t.Errorf("%d entries left after every address was used again", len(s.seqs))
	}
}

// TestSequenceLetGoStillDelivers: a receiver that remembers this sender gets
// the messages of a peer whose sequence number was let go (it starts past
// the floor: a gap for the receiver, not copies).
func TestSequenceLetGoStillDelivers(t *testing.T) {
	leakcheck.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	rc := receiver.DefaultConfig()
	rc.Local = membership.Member{ID: membership.ID{1}, Name: "r", Domain: "test", Addr: addr, Started: time.Now()}
	r := receiver.New(ln, rc)
	var got atomic.Int64
	r.Handle(FirstType, func(context.Context, receiver.Message) ([]byte, error) { got.Add(1); return nil, nil })
	r.Start()
	defer r.Stop(context.Background())

	cfg := DefaultConfig()
	cfg.Local = membership.Member{ID: membership.ID{2}, Name: "s", Domain: "test", Addr: netip.MustParseAddrPort("127.0.0.1:1"), Started: time.Now()}
	s := New(cfg)
	defer s.Close(context.Background())
	send := func(n int) {
		t.Helper()
		for range n {
			if err := s.Send(context.Background(), []netip.AddrPort{addr}, FirstType, []byte("x"), Sync); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(5)
	s.Forget(addr)
	s.mu.Lock()
	for i := range maxForgotten { // others dropped since: addr's number is let go
		s.dropped(addrN(i), 100) // above addr's 5: the receiver sees a gap
	}
	_, kept := s.seqs[addr]
	s.mu.Unlock()
	if kept {
		t.Fatal("the address's number is still kept")
	}
	send(3)
	if n := got.Load(); n != 8 {
		t.Errorf("handler ran %d times for 8 messages (duplicates suppressed: %d)", n, r.Stats().Duplicates)
	}
}
