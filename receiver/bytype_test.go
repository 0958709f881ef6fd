package receiver_test

import (
	"context"
	"maps"
	"net/netip"
	"testing"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/sender"
)

// TestCountsByType: sender and receiver count the application messages of
// each type (what the metrics export), transport frames not included.
func TestCountsByType(t *testing.T) {
	leakcheck.Check(t)
	h := &counter{}
	r, addr := startReceiver(t, h.handle)
	s := newSender(t, "types")
	to := []netip.AddrPort{addr}
	for range 3 {
		if err := s.Send(context.Background(), to, typeData, []byte("x"), sender.Sync); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody handles typeData+1: it is counted all the same.
	if err := s.Send(context.Background(), to, typeData+1, []byte("y"), sender.Sync); err == nil {
		t.Fatal("a message nobody handles succeeded")
	}
	want := map[uint8]uint64{typeData: 3, typeData + 1: 1}
	if got := r.Stats().ByType; !maps.Equal(got, want) {
		t.Errorf("receiver ByType = %v, want %v", got, want)
	}
	st := s.Stats()
	if len(st) != 1 || !maps.Equal(st[0].ByType, want) {
		t.Errorf("sender stats = %+v, want ByType %v", st, want)
	}
}
