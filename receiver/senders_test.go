package receiver

import (
	"net"
	"testing"

	"github.com/flockhq/flock/internal/wire"
)

// TestSenderStatesAreBounded: connections claiming ever new sender ids
// leave at most 2*MaxConns states, and a sender still connected keeps its
// own.
func TestSenderStatesAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := New(ln, Config{MaxConns: 8})
	kept := wire.ID{0xff}
	mine := r.acquire(kept) // stays connected throughout
	for i := range 10_000 {
		id := wire.ID{byte(i), byte(i >> 8), 1}
		r.acquire(id)
		r.release(id)
		if n := len(r.senders); n > 2*r.cfg.MaxConns {
			t.Fatalf("after %d senders: %d states, bound %d", i+1, n, 2*r.cfg.MaxConns)
		}
	}
	if r.senders[kept] != mine {
		t.Error("the connected sender's state was forgotten")
	}
	t.Logf("10000 claimed ids: %d states kept (bound %d)", len(r.senders), 2*r.cfg.MaxConns)
}
