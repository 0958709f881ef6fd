package clock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Fake is a Clock that moves only on Advance. Timers and tickers fire in
// the order of their due times (ties in the order they were made), each
// tick carrying its due time; a ticker whose receiver has not taken the
// previous tick drops the next one, as a time.Ticker does.
//
// A test drives code that waits on the clock in steps: BlockUntil(n) until
// the code is waiting, Advance to fire what falls due, BlockUntil(n) again
// until the code has handled it and waits once more.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	waiters []*fakeWaiter
	wake    chan struct{} // closed and replaced when a waiter may have been added
}

// fakeWaiter is a ticker, or a timer made by After.
type fakeWaiter struct {
	f      *Fake
	seq    uint64 // order of creation, for ties
	at     time.Time
	period time.Duration // 0: a one-shot timer
	ch     chan time.Time
	// armed: a ticker whose owner asked for C since its last tick and has
	// no tick pending, so it is (about to be) blocked on it.
	armed   bool
	stopped bool
}

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, wake: make(chan struct{})}
}

var _ Clock = (*Fake)(nil)

// Now is the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTicker returns a ticker firing every d from now; it panics if d is
// not positive, as time.NewTicker does.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.add(d, d)
	return w
}

// After returns a channel that receives the time once d has passed on the
// clock; at once if d is not positive.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		ch := make(chan time.Time, 1)
		ch <- f.now
		return ch
	}
	w := f.add(d, 0)
	f.signal()
	return w.ch
}

// add registers a waiter due in d; f.mu must be held.
func (f *Fake) add(d, period time.Duration) *fakeWaiter {
	f.seq++
	w := &fakeWaiter{f: f, seq: f.seq, at: f.now.Add(d), period: period, ch: make(chan time.Time, 1)}
	f.waiters = append(f.waiters, w)
	return w
}

// signal wakes BlockUntil; f.mu must be held.
func (f *Fake) signal() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// Advance moves the clock forward by d, firing in order every timer and
// tick that falls due on the way. It does not wait for the receivers.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		var next *fakeWaiter
		for _, w := range f.waiters {
			if next == nil || w.at.Before(next.at) || (w.at.Equal(next.at) && w.seq < next.seq) {
				next = w
			}
		}
		if next == nil || next.at.After(end) {
			break
		}
		if next.at.After(f.now) {
			f.now = next.at
		}
		select {
		case next.ch <- next.at:
			next.armed = false
		default: // the receiver has not taken the last tick: drop this one
		}
		if next.period > 0 {
			next.at = next.at.Add(next.period)
		} else {
			f.remove(next)
		}
	}
	if end.After(f.now) {
		f.now = end
	}
}

// remove forgets w; f.mu must be held.
func (f *Fake) remove(w *fakeWaiter) {
	if i := slices.Index(f.waiters, w); i >= 0 {
		f.waiters = slices.Delete(f.waiters, i, i+1)
	}
}

// Waiters is the number of waiters: timers of After not yet fired, and
// tickers whose owner has asked for C since its last tick and has no tick
// pending.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting()
}

func (f *Fake) waiting() int {
	n := 0
	for _, w := range f.waiters {
		if w.period == 0 || w.armed {
			n++
		}
	}
	return n
}

// BlockUntil waits until at least n waiters are registered (see Waiters):
// the goroutines behind them have handled what the last Advance fired and
// wait on the clock again.
func (f *Fake) BlockUntil(n int) {
	_ = f.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext is BlockUntil giving up when ctx ends, with its error.
func (f *Fake) BlockUntilContext(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		if f.waiting() >= n {
			f.mu.Unlock()
			return nil
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// C is the ticker's channel. Asking for it marks the ticker's owner as
// waiting, unless a tick is pending.
func (w *fakeWaiter) C() <-chan time.Time {
	f := w.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if !w.stopped && !w.armed && len(w.ch) == 0 {
		w.armed = true
		f.signal()
	}
	return w.ch
}

// Stop stops the ticker; no tick is delivered after it returns.
func (w *fakeWaiter) Stop() {
	f := w.f
	f.mu.Lock()
	defer f.mu.Unlock()
	w.stopped, w.armed = true, false
	f.remove(w)
}
