package membership

import (
	"testing"
	"time"
)

func TestEventQueueNeverBlocksAndKeepsNewest(t *testing.T) {
	q := newEventQueue(3)
	for i := range 10 { // nobody is reading: push must still return
		q.push(Event{Type: Joined, Member: Member{Name: string(rune('a' + i))}})
	}
	if got := q.droppedCount(); got != 7 {
		t.Fatalf("dropped = %d, want 7", got)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { q.run(stop); close(done) }()
	var names string
	for range 3 {
		names += (<-q.out).Member.Name
	}
	if names != "hij" {
		t.Errorf("delivered %q, want the newest three in order, %q", names, "hij")
	}
	q.push(Event{Type: Left, Member: Member{Name: "z"}})
	if e := <-q.out; e.Type != Left || e.Member.Name != "z" {
		t.Errorf("got %+v after refill", e)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after stop")
	}
	if _, ok := <-q.out; ok {
		t.Error("out not closed after stop")
	}
}
