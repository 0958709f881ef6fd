package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/membership"
)

// A member counts for the sync rule only once it has answered a message
// (a round trip through its manager, not a transport ping): until then a
// commit sends it every change without waiting for it, unless the rule
// needs it. A process that announces itself and answers pings but never
// acknowledges what it is sent cannot make every write wait the send
// timeout, nor count as a copy. Whole copies it pushes are taken only once
// it has answered, too (awaitConfirmed).

// Backoff of the confirming round trips: a joiner's first request can beat
// its member event on the other side (which then waits for it, see
// fromMember), and a member that does not answer is tried less often, but
// again at most a second after a try failed: a hello is a few bytes, and a
// member that comes through again must not wait long to count.
//
// confirmWait bounds how long a pushed copy waits for its sender's round
// trip. Handlers run on the reader of the sender's connection, and so does
// the answer to a hello on the other side: two members pushing to each
// other before either confirmed the other each hold the connection the
// other's answer needs. A short bound breaks that knot (both pushes are
// refused, and retried); usually the answer is a millisecond away.
const (
	confirmFirst = 100 * time.Millisecond
	confirmMax   = time.Second
	confirmWait  = 1500 * time.Millisecond
)

// confirmedMember reports whether mb answered a round trip (as this id).
func (m *Manager) confirmedMember(mb membership.Member) bool {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.confirmed[mb.Name] == mb.ID
}

// recountUnconfirmedLocked sets v.unconfirmed; v.mu must be held.
func (v *view) recountUnconfirmedLocked() {
	n := 0
	for name, mb := range v.members {
		if v.confirmed[name] != mb.ID {
			n++
		}
	}
	v.unconfirmed.Store(int32(n))
}

// confirm notes that mb answered.
func (m *Manager) confirm(mb membership.Member) {
	v := &m.view
	if v.unconfirmed.Load() == 0 {
		return // every member has (an answer is noted on every fetch)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.members[mb.Name]; ok && cur.ID == mb.ID && v.confirmed[mb.Name] != mb.ID {
		v.confirmed[mb.Name] = mb.ID
		v.recountUnconfirmedLocked()
		close(v.confirmedCh)
		v.confirmedCh = make(chan struct{})
	}
}

// errUnconfirmed refuses whole copies pushed by a member that has not
// answered a round trip.
var errUnconfirmed = errors.New("manager: refused: the sender has not answered a round trip")

// awaitConfirmed returns when from (a member of the view) has answered a
// round trip, or fails after confirmWait (at most the request timeout): a
// pushed copy is taken only from a member that answers. The round trip is
// asked from the member's join on (runConfirm), so by the time its first
// push arrives it has usually been answered.
func (m *Manager) awaitConfirmed(ctx context.Context, from membership.Member) error {
	var wait <-chan time.Time
	for {
		v := &m.view
		v.mu.Lock()
		if v.confirmed[from.Name] == from.ID {
			v.mu.Unlock()
			return nil
		}
		if cur, ok := v.members[from.Name]; ok && cur.ID == from.ID {
			m.startConfirmingLocked(cur)
		}
		ch := v.confirmedCh
		v.mu.Unlock()
		if wait == nil {
			t := time.NewTimer(min(confirmWait, m.cfg.RequestTimeout))
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-ch:
		case <-wait:
			m.stats.unconfirmedRefused.Add(1)
			return fmt.Errorf("%w (%s, id %s)", errUnconfirmed, from.Name, from.ID)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// roundTrip asks mb for a hello and confirms it if it answers.
func (m *Manager) roundTrip(ctx context.Context, mb membership.Member) error {
	_, err := m.c.Request(ctx, mb, typeHello, nil)
	var refused *cluster.RemoteError
	if err != nil && !errors.As(err, &refused) {
		return err
	}
	// A refusal is an answer too: a member of an earlier release knows
	// no hello and says so.
	m.confirm(mb)
	return nil
}

// splitConfirmed divides to into the members a commit waits for and those
// it does not, the unconfirmed, keeping at least need in the first; forced
// are the unconfirmed it keeps there, whose answers confirm them.
func (m *Manager) splitConfirmed(to []membership.Member, need int) (wait, forced, unconfirmed []membership.Member) {
	v := &m.view
	if v.unconfirmed.Load() == 0 {
		return to, nil, nil
	}
	v.mu.Lock()
	for _, mb := range to {
		if v.confirmed[mb.Name] == mb.ID {
			wait = append(wait, mb)
		} else {
			unconfirmed = append(unconfirmed, mb)
		}
	}
	v.mu.Unlock()
	n := min(max(need-len(wait), 0), len(unconfirmed))
	forced, unconfirmed = unconfirmed[:n], unconfirmed[n:]
	return append(wait, forced...), forced, unconfirmed
}

// startConfirming runs the round trips with a member new to the view, once
// per member id; v.mu must be held.
func (m *Manager) startConfirmingLocked(mb membership.Member) {
	v := &m.view
	if v.confirmed[mb.Name] == mb.ID || v.confirming[mb.Name] == mb.ID || !m.started.Load() {
		return
	}
	v.confirming[mb.Name] = mb.ID
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.runConfirm(mb)
	}()
}

// runConfirm asks mb for a round trip until it answers, leaves the view
// (as this id) or the manager stops.
func (m *Manager) runConfirm(mb membership.Member) {
	defer func() {
		v := &m.view
		v.mu.Lock()
		if v.confirming[mb.Name] == mb.ID {
			delete(v.confirming, mb.Name)
		}
		v.mu.Unlock()
	}()
	wait := confirmFirst
	for {
		v := &m.view
		v.mu.Lock()
		cur, ok := v.members[mb.Name]
		done := v.confirmed[mb.Name] == mb.ID
		v.mu.Unlock()
		if !ok || cur.ID != mb.ID || done {
			return
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
		err := m.roundTrip(ctx, mb)
		cancel()
		if err == nil {
			return
		}
		m.log.WithField("member", mb.Name).WithError(err).Debug("member did not answer a round trip yet")
		t := time.NewTimer(wait)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, confirmMax)
	}
}

// handleHello answers a round trip at once: it tells nothing, so it needs
// no membership check, and must not hold the caller's connection while
// this node's view catches up with it.
func (m *Manager) handleHello(context.Context, cluster.Message) ([]byte, error) {
	return nil, nil
}
