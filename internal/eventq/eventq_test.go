package eventq

import (
	"testing"
	"time"
)

func TestNeverBlocksAndKeepsNewest(t *testing.T) {
	q := New[string](3)
	for i := range 10 { // nobody is reading: push must still return
		q.Push(string(rune('a' + i)))
	}
	if got := q.Dropped(); got != 7 {
		t.Fatalf("dropped = %d, want 7", got)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { q.Run(stop); close(done) }()
	var names string
	for range 3 {
		names += <-q.Out()
	}
	if names != "hij" {
		t.Errorf("delivered %q, want the newest three in order, %q", names, "hij")
	}
	q.Push("z")
	if e := <-q.Out(); e != "z" {
		t.Errorf("got %q after refill", e)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after stop")
	}
	if _, ok := <-q.Out(); ok {
		t.Error("out not closed after stop")
	}
}
