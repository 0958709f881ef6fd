// Package clock lets code that reads the time or waits for it be driven by
// a test: Real is the wall clock, Fake moves only when told to, and fires
// what fell due in order, so rules such as "expires after five minutes
// unused" can be tested without waiting five minutes, or at all.
package clock

import "time"

// Clock is the time as code sees it.
type Clock interface {
	Now() time.Time
	// NewTicker returns a ticker that delivers the time every d, dropping
	// ticks for a slow receiver, as time.NewTicker does; d must be positive.
	NewTicker(d time.Duration) Ticker
	// After delivers the time once, after d.
	After(d time.Duration) <-chan time.Time
}

// Ticker delivers ticks on C until Stop.
//
// Call C where the ticks are received (in the select of a loop, not once
// before it): a Fake counts a ticker whose owner has asked for C since its
// last tick as a waiter (see Fake.BlockUntil).
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real returns the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }
