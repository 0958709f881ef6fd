package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// frameOf is one application frame with a body of n bytes.
func frameOf(t *testing.T, n int) []byte {
	t.Helper()
	b := AppendMessage(nil, Type(16), Envelope{Seq: 1, Payload: make([]byte, n)})
	return b
}

// TestBudgetHoldsLargeFrames: readers sharing a budget hold at most its
// bytes of large bodies; a frame that finds it spent waits, and gets it
// when another reader moves on; small frames take nothing.
func TestBudgetHoldsLargeFrames(t *testing.T) {
	const big = 200 << 10
	b := NewBudget(300 << 10)
	r1 := NewReader(bytes.NewReader(append(frameOf(t, big), frameOf(t, 10)...)), 1<<20)
	r2 := NewReader(bytes.NewReader(frameOf(t, big)), 1<<20)
	r1.SetBudget(b, 50*time.Millisecond)
	r2.SetBudget(b, time.Second)

	if _, err := r1.Next(nil); err != nil {
		t.Fatal(err)
	}
	if free := b.Free(); free > 300<<10-big {
		t.Fatalf("free %d after a %d-byte frame", free, big)
	}
	got := make(chan error, 1)
	go func() { _, err := r2.Next(nil); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("the second large frame was read while the first held the budget: %v", err)
	case <-time.After(20 * time.Millisecond): // it waits; what is awaited is its not returning
	}
	if _, err := r1.Next(nil); err != nil { // the small frame: releases the large one, takes nothing
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting frame: %v", err)
	}
	r2.Release()
	if _, err := r1.Next(nil); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	if free := b.Free(); free != 300<<10 {
		t.Errorf("free %d at the end, want all %d", free, 300<<10)
	}

	// Spent for longer than the wait: the frame is refused.
	hog := NewReader(bytes.NewReader(frameOf(t, big)), 1<<20)
	hog.SetBudget(b, time.Second)
	if _, err := hog.Next(nil); err != nil {
		t.Fatal(err)
	}
	late := NewReader(bytes.NewReader(frameOf(t, big)), 1<<20)
	late.SetBudget(b, 30*time.Millisecond)
	if _, err := late.Next(nil); !errors.Is(err, ErrBudget) {
		t.Fatalf("a frame past the budget: %v, want ErrBudget", err)
	}
}

// TestGrowKeepsReadAhead: a reader given a larger buffer after some frames
// loses none of the bytes it had read ahead.
func TestGrowKeepsReadAhead(t *testing.T) {
	var stream []byte
	for i := range 5 {
		stream = append(stream, AppendMessage(nil, Type(16), Envelope{Seq: uint64(i + 1), Payload: bytes.Repeat([]byte{byte(i)}, 300)})...)
	}
	r := NewReaderSize(bytes.NewReader(stream), 1<<20, 1024)
	for i := range 5 {
		if i == 2 {
			r.Grow(ReadBuffer)
		}
		f, err := r.Next(nil)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		e, err := ParseEnvelope(f.Body)
		if err != nil || e.Seq != uint64(i+1) || len(e.Payload) != 300 || e.Payload[0] != byte(i) {
			t.Fatalf("frame %d: %+v, %v", i, e, err)
		}
	}
	if _, err := r.Next(nil); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}
