package wire

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBudget: a frame's body could not be given memory in time: the
// frames of the other connections hold the whole budget.
var ErrBudget = errors.New("frame budget exhausted")

// UnbudgetedFrame is the largest body a Reader reads without taking from
// its budget: small frames (acks, pings, most deltas) cost no lock, and a
// thousand connections of such frames hold little.
const UnbudgetedFrame = 64 << 10

// Budget bounds the bytes of frame bodies held at once by all the Readers
// that share it, so that connections sending large frames together cannot
// take more memory than that: a frame waits for bytes to come back.
type Budget struct {
	mu    sync.Mutex
	total int64
	free  int64
	back  chan struct{} // closed, and replaced, when bytes come back
}

// NewBudget is a budget of total bytes.
func NewBudget(total int64) *Budget {
	return &Budget{total: total, free: total, back: make(chan struct{})}
}

// take takes n bytes (at most the whole budget), waiting at most wait.
// It returns what it took.
func (b *Budget) take(n int64, wait time.Duration) (int64, error) {
	n = min(n, b.total)
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return n, nil
		}
		back := b.back
		b.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-back:
		case <-timeout:
			return 0, fmt.Errorf("%w: %d bytes not free within %v (%d in all)", ErrBudget, n, wait, b.total)
		}
	}
}

func (b *Budget) put(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	close(b.back)
	b.back = make(chan struct{})
	b.mu.Unlock()
}

// Free is how many bytes are not held.
func (b *Budget) Free() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.free
}

// SetBudget makes the reader take each large frame's body from b, waiting
// at most wait, before it reads it. The bytes are held until the next
// call of Next or Release: the frame's body is the caller's until then.
func (r *Reader) SetBudget(b *Budget, wait time.Duration) {
	r.budget, r.budgetWait = b, wait
}

// Release gives back what the last frame took from the budget.
func (r *Reader) Release() {
	if r.budget != nil {
		r.budget.put(r.held)
		r.held = 0
	}
}
