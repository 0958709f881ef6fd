// Package refuse counts, by reason, the packets and connections a node
// refuses, and logs them without letting a flood of them flood the log.
package refuse

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
)

// Reason is why something was refused.
type Reason uint8

// The reasons, as /metrics labels them.
const (
	// Unauthenticated: not sealed where a key is required, or sealed where
	// no key is held.
	Unauthenticated Reason = iota
	// UnknownKey: sealed with a key this node does not hold.
	UnknownKey
	// Forged: sealed, but the seal does not open: changed, replayed on
	// another connection, reordered, or made without the key.
	Forged
	// Replayed: a valid packet seen before (a sequence number not above
	// the last one of its sender).
	Replayed
	// Stale: a packet whose timestamp is outside the allowed clock skew.
	Stale
	// NotMember: a caller that is not a current member asked for what only
	// members get.
	NotMember
	// Malformed: bytes that do not follow the protocol.
	Malformed
	// TLS: a TLS handshake that failed (no certificate, another CA, not
	// TLS at all).
	TLS
	// Identity: a certificate that does not name the member the caller
	// says it is.
	Identity
	// Limit: a connection beyond the receiver's budget (in all, or from
	// one address), or a caller that did not say hello in time.
	Limit
	numReasons
)

var names = [numReasons]string{"unauthenticated", "unknown_key", "forged", "replayed", "stale", "not_member", "malformed", "tls", "identity", "limit"}

func (r Reason) String() string {
	if r < numReasons {
		return names[r]
	}
	return "unknown"
}

// Reasons lists every reason, for exporting all of them even at zero.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Counter counts refusals and logs them, at most one line a second with
// the number left out since the last; safe for concurrent use.
type Counter struct {
	n   [numReasons]atomic.Uint64
	log logrus.FieldLogger

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// New returns a counter that logs to log as a warning.
func New(log logrus.FieldLogger) *Counter { return &Counter{log: logx.OrDiscard(log)} }

// Refuse counts one refusal of what came from from, and logs it unless
// one was logged within the last second.
func (c *Counter) Refuse(r Reason, from string, err error) {
	if r >= numReasons {
		r = Malformed
	}
	c.n[r].Add(1)
	c.mu.Lock()
	now := time.Now()
	if !c.last.IsZero() && now.Sub(c.last) < time.Second {
		c.suppressed++
		c.mu.Unlock()
		return
	}
	n := c.suppressed
	c.last, c.suppressed = now, 0
	c.mu.Unlock()
	c.log.WithFields(logrus.Fields{"source": from, "reason": r.String(), "not_logged": n}).WithError(err).Warn("refused")
}

// Count returns the refusals of one reason so far.
func (c *Counter) Count(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return c.n[r].Load()
}

// Snapshot returns the non-zero counts by reason name.
func (c *Counter) Snapshot() map[string]uint64 {
	m := make(map[string]uint64)
	for i := range c.n {
		if v := c.n[i].Load(); v > 0 {
			m[Reason(i).String()] = v
		}
	}
	return m
}
