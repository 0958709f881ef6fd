package clock

import (
	"context"
	"testing"
	"time"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func recv(ch <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-ch:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestFakeAfter(t *testing.T) {
	f := NewFake(start)
	if got := f.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v", got)
	}
	if at, ok := recv(f.After(0)); !ok || !at.Equal(start) {
		t.Fatalf("After(0) = %v, %v; want the time at once", at, ok)
	}
	late, early := f.After(2*time.Second), f.After(time.Second)
	if f.Waiters() != 2 {
		t.Fatalf("waiters = %d, want 2", f.Waiters())
	}
	f.Advance(999 * time.Millisecond)
	if _, ok := recv(early); ok {
		t.Fatal("fired early")
	}
	f.Advance(time.Millisecond)
	if at, ok := recv(early); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("early = %v, %v", at, ok)
	}
	if _, ok := recv(late); ok {
		t.Fatal("late fired early")
	}
	f.Advance(10 * time.Second)
	if at, ok := recv(late); !ok || !at.Equal(start.Add(2*time.Second)) {
		t.Fatalf("late = %v, %v; want its due time", at, ok)
	}
	if got := f.Now(); !got.Equal(start.Add(11 * time.Second)) {
		t.Fatalf("Now = %v", got)
	}
	if f.Waiters() != 0 {
		t.Fatalf("waiters = %d after firing", f.Waiters())
	}
}

func TestFakeTicker(t *testing.T) {
	f := NewFake(start)
	tk := f.NewTicker(time.Second)
	if f.Waiters() != 0 {
		t.Fatal("a ticker nobody waits on counts")
	}
	c := tk.C()
	if f.Waiters() != 1 {
		t.Fatal("a ticker waited on does not count")
	}
	f.Advance(time.Second)
	if f.Waiters() != 0 {
		t.Fatal("a ticker with a tick pending counts")
	}
	if at, ok := recv(c); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("tick = %v, %v", at, ok)
	}
	// A slow receiver: ticks are dropped, the first one waits.
	f.Advance(5 * time.Second)
	if at, ok := recv(tk.C()); !ok || !at.Equal(start.Add(2*time.Second)) {
		t.Fatalf("tick = %v, %v; want the first undelivered", at, ok)
	}
	if _, ok := recv(tk.C()); ok {
		t.Fatal("dropped ticks delivered")
	}
	if f.Waiters() != 1 {
		t.Fatalf("waiters = %d", f.Waiters())
	}
	tk.Stop()
	f.Advance(time.Hour)
	if _, ok := recv(tk.C()); ok {
		t.Fatal("tick after Stop")
	}
	if f.Waiters() != 0 {
		t.Fatal("a stopped ticker counts")
	}
	defer func() {
		if recover() == nil {
			t.Error("NewTicker(0) did not panic")
		}
	}()
	f.NewTicker(0)
}

// TestFakeOrder: what falls due in one Advance fires in time order, ties
// in the order the waiters were made.
func TestFakeOrder(t *testing.T) {
	f := NewFake(start)
	a := f.NewTicker(3 * time.Second)
	b := f.After(3 * time.Second)
	c := f.After(time.Second)
	f.Advance(3 * time.Second)
	for _, w := range []struct {
		name string
		ch   <-chan time.Time
		at   time.Duration
	}{{"a", a.C(), 3 * time.Second}, {"b", b, 3 * time.Second}, {"c", c, time.Second}} {
		if at, ok := recv(w.ch); !ok || !at.Equal(start.Add(w.at)) {
			t.Errorf("%s = %v, %v", w.name, at, ok)
		}
	}
}

// TestFakeBlockUntil: a loop on a ticker, driven step by step: BlockUntil
// returns once the loop has handled a tick and waits again.
func TestFakeBlockUntil(t *testing.T) {
	f := NewFake(start)
	handled := make(chan time.Time, 10)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := f.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tk.C():
				handled <- now
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		if err := f.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		f.Advance(time.Second)
		if err := f.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if n := len(handled); n != i {
			t.Fatalf("after %d steps %d ticks handled", i, n)
		}
	}
	close(stop)
	<-done
	short, cancel2 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel2()
	if err := f.BlockUntilContext(short, 1); err == nil {
		t.Fatal("BlockUntil returned with nobody waiting")
	}
}

func TestReal(t *testing.T) {
	c := Real()
	if d := time.Since(c.Now()); d < 0 || d > time.Minute {
		t.Fatalf("Real().Now off by %v", d)
	}
	tk := c.NewTicker(time.Millisecond)
	defer tk.Stop()
	<-tk.C()
	<-c.After(time.Millisecond)
}
