package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flockhq/flock/membership"
)

// view is the manager's list of the other members, kept from the cluster's
// membership events (and seeded once, at Start, from Members).
type view struct {
	mu      sync.Mutex
	members map[string]membership.Member // by name
	// heard: names an event was heard for; the seed leaves them alone, so
	// a snapshot taken before an event cannot undo it.
	heard map[string]bool
	list  []membership.Member // members sorted by name; replaced, never changed in place
	// changed is closed and replaced on every change.
	changed chan struct{}
	// behind: the members this node must compare copies with before it
	// trusts its own, each with the generation of its mark. A member that
	// had failed and is heard from again as the same process (a healed
	// partition, a pause) missed what happened meanwhile, and this node may
	// have missed what it did; after a stall of this node, every member is.
	// An anti-entropy round with the member that began after the mark
	// clears it; the member leaving the view does too.
	behind map[string]uint64
	gen    uint64
	// spoken: the member processes (by id) that have exchanged messages
	// with this node over the transport (sent one, answered or
	// acknowledged one), and when last. Only those can hold a copy this
	// node lacks, so only those are marked behind: a name that was only
	// ever heard in heartbeats (a member that never spoke, or a forged
	// one on a network without a key) cannot hold up this node's reads.
	// Kept past a failure (the member that comes back as the same process
	// is the one to catch up with); bounded by maxSpoken, the oldest go.
	// "When" is a count of calls, not a clock: only the order matters, and
	// it is noted on every replicated write.
	spoken    map[membership.ID]uint64
	spokenSeq uint64
	// draining: members that said they are shutting down (Drain), by
	// name, with the id of the process that said it; an event of the
	// name clears it.
	draining map[string]membership.ID
	// lost is when a member last failed: for a while after, this node may
	// be the one cut off, and a session it lacks may live on the others.
	lost time.Time
	// confirmed: the members (name -> id) that answered a round trip, and
	// confirming those a round trip is being tried with (see confirm.go).
	confirmed, confirming map[string]membership.ID
	// confirmedCh is closed, and replaced, when a member is confirmed.
	confirmedCh chan struct{}
	// unconfirmed counts the members not in confirmed, recounted under mu
	// whenever either changes, so that commits and answers find out
	// without the lock that there is nobody to confirm (the usual case).
	unconfirmed atomic.Int32
}

// maxSpoken bounds view.spoken: far more processes than a cluster has.
const maxSpoken = 1024

func (v *view) init() {
	v.members = make(map[string]membership.Member)
	v.heard = make(map[string]bool)
	v.changed = make(chan struct{})
	v.behind = make(map[string]uint64)
	v.spoken = make(map[membership.ID]uint64)
	v.draining = make(map[string]membership.ID)
	v.confirmed = make(map[string]membership.ID)
	v.confirming = make(map[string]membership.ID)
	v.confirmedCh = make(chan struct{})
}

// spokeWith notes that these member processes exchanged messages with
// this node.
func (m *Manager) spokeWith(ms ...membership.Member) {
	if len(ms) == 0 {
		return
	}
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	v.spokenSeq++
	for _, mb := range ms {
		v.spoken[mb.ID] = v.spokenSeq
	}
	for len(v.spoken) > maxSpoken {
		var oldest membership.ID
		var at uint64
		for id, n := range v.spoken {
			if at == 0 || n < at {
				oldest, at = id, n
			}
		}
		delete(v.spoken, oldest)
	}
}

// onEvent is the manager's membership subscriber: it must not block.
func (m *Manager) onEvent(e membership.Event) {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	name := e.Member.Name
	if name == m.local {
		return // this node, restarted elsewhere or seen by mistake: never its own peer
	}
	v.heard[name] = true
	delete(v.draining, name) // a new process, or the same one gone or back
	switch e.Type {
	case membership.Joined, membership.Rejoined:
		cur, had := v.members[name]
		v.members[name] = e.Member
		if v.confirmed[name] != e.Member.ID {
			delete(v.confirmed, name) // another process under the name
		}
		m.startConfirmingLocked(e.Member)
		if e.Type == membership.Rejoined {
			// It missed what happened while it was away, and this node
			// may have missed what it did: compare and exchange.
			m.log.WithField("member", name).Info("member rejoined; comparing copies with it before serving from them")
			m.markBehindLocked(name)
			m.kickSync(name)
		} else {
			delete(v.behind, name) // a new process: it transfers state itself
			m.countBehindLocked()
			if m.transfer.state() == "none" {
				// This node concluded it was alone: what the newcomer
				// holds never came here.
				m.kickSync(name)
			}
		}
		if had && cur == e.Member {
			return // already in the view (seeded at Start): nothing changed
		}
	case membership.Left, membership.Failed:
		// By id: a restart under the same name may be heard of first.
		if cur, ok := v.members[name]; !ok || cur.ID != e.Member.ID {
			return
		}
		delete(v.members, name)
		delete(v.behind, name)
		delete(v.confirmed, name)
		m.lag.forget(name)
		if e.Type == membership.Failed {
			v.lost = m.clock.Now()
		}
	default:
		return
	}
	m.viewChanged(e)
}

// seedView adds the members the cluster lists now that no event has been
// heard for: those that joined before the manager subscribed.
func (m *Manager) seedView() {
	ms := m.c.Members()
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, st := range ms {
		name := st.Name
		if name == m.local || v.heard[name] {
			continue
		}
		v.heard[name] = true
		v.members[name] = st.Member
		m.viewChanged(membership.Event{Type: membership.Joined, Member: st.Member, Time: m.clock.Now(), Reason: "member at start"})
	}
}

// viewChanged rebuilds the sorted list, tells the placement and wakes the
// waiters; v.mu must be held.
func (m *Manager) viewChanged(e membership.Event) {
	v := &m.view
	list := make([]membership.Member, 0, len(v.members))
	for _, mb := range v.members {
		list = append(list, mb)
	}
	slices.SortFunc(list, func(a, b membership.Member) int { return strings.Compare(a.Name, b.Name) })
	v.list = list
	v.recountUnconfirmedLocked()
	m.countBehindLocked()
	// A draining member is still a member (it gets every change it
	// should) but owns nothing any more: the placement does without it,
	// so its sessions pass to the next owners, which hold them already.
	placed := list
	if len(v.draining) > 0 {
		placed = slices.DeleteFunc(slices.Clone(list), func(mb membership.Member) bool { return v.draining[mb.Name] == mb.ID })
	}
	m.place.members(e, placed)
	close(v.changed)
	v.changed = make(chan struct{})
}

// snapshot returns the members and a channel closed at the next change.
func (v *view) snapshot() ([]membership.Member, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.list, v.changed
}

// memberWait bounds how long a request from a node not (yet) in the view
// waits for it to appear there: a joiner's first heartbeat and its first
// request race, and the request must not lose.
const memberWaitDefault = 2 * time.Second

// errNotMember refuses a request of a node that is not a member: sessions
// are answered, and taken, only between members.
var errNotMember = errors.New("manager: refused: the caller is not a member of this node's view")

// fromMember checks that the sender of a request is a member (same name and
// id), waiting up to m.memberWait for the membership event that makes it one.
func (m *Manager) fromMember(ctx context.Context, from membership.Member) error {
	var wait <-chan time.Time
	for {
		ms, changed := m.view.snapshot()
		if slices.ContainsFunc(ms, func(mb membership.Member) bool { return mb.ID == from.ID && mb.Name == from.Name }) {
			return nil
		}
		if wait == nil {
			t := time.NewTimer(m.memberWait)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-changed:
		case <-wait:
			m.stats.notMember.Add(1)
			return fmt.Errorf("%w (%s, id %s)", errNotMember, from.Name, from.ID)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// members returns the other members, sorted by name (not to be modified).
func (m *Manager) members() []membership.Member {
	ms, _ := m.view.snapshot()
	return ms
}

// recentlyLost: a member failed less than OrphanGrace ago (drop time and a
// probe: until every node's view agrees, this node may be the one cut off).
func (m *Manager) recentlyLost() bool {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.lost.IsZero() && m.clock.Now().Sub(v.lost) < m.cfg.OrphanGrace
}

// isMemberProcess reports whether mb is in the view, by name and id.
func (m *Manager) isMemberProcess(mb membership.Member) bool {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.members[mb.Name]
	return ok && cur.ID == mb.ID
}

// isMember reports whether a member is called name.
func (m *Manager) isMember(name string) bool {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.members[name]
	return ok
}

// awaitMembers returns the members; while there are none, it waits for
// the first to appear until ctx ends, done is closed or timeout fires.
func (m *Manager) awaitMembers(ctx context.Context, done <-chan struct{}, timeout <-chan time.Time) []membership.Member {
	for {
		ms, changed := m.view.snapshot()
		if len(ms) > 0 {
			return ms
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case <-timeout:
			return nil
		case <-changed:
		}
	}
}

// settleMembers waits until the member view has not changed for 100 ms
// (at most JoinWait) and returns it.
func (m *Manager) settleMembers() []membership.Member {
	const quiet = 100 * time.Millisecond
	deadline := m.clock.After(max(m.cfg.JoinWait, quiet))
	for {
		ms, changed := m.view.snapshot()
		select {
		case <-m.ctx.Done():
			return ms
		case <-deadline:
			return m.members()
		case <-m.clock.After(quiet):
			return m.members()
		case <-changed:
		}
	}
}

func oldest(ms []membership.Member) membership.Member {
	o := ms[0]
	for _, mb := range ms[1:] {
		if mb.Started.Before(o.Started) || (mb.Started.Equal(o.Started) && mb.Name < o.Name) {
			o = mb
		}
	}
	return o
}

// markBehindLocked marks members (every member, when names is empty) as
// ones to catch up with; v.mu must be held.
func (m *Manager) markBehindLocked(names ...string) {
	v := &m.view
	if len(names) == 0 {
		for name := range v.members {
			names = append(names, name)
		}
	}
	for _, name := range names {
		if mb, ok := v.members[name]; ok {
			if _, spoke := v.spoken[mb.ID]; !spoke {
				continue // it never held a copy this node could lack
			}
			v.gen++
			v.behind[name] = v.gen
		}
	}
	m.countBehindLocked()
}

// markAllBehind marks every member as one to catch up with (a stall).
func (m *Manager) markAllBehind() {
	m.view.mu.Lock()
	defer m.view.mu.Unlock()
	m.markBehindLocked()
}

// countBehindLocked publishes the counts the hot path reads; v.mu held.
// Marks are made for members only and go with them (onEvent).
func (m *Manager) countBehindLocked() {
	v := &m.view
	m.behindN.Store(int32(len(v.behind)))
	// Behind every member: this node was the one cut off (or stopped), so
	// a balancer should send it no users until it has caught up.
	m.behindAll.Store(len(v.behind) > 0 && len(v.behind) == len(v.members))
}

// behindMark returns the generation of name's mark, if it is marked.
func (m *Manager) behindMark(name string) (uint64, bool) {
	m.view.mu.Lock()
	defer m.view.mu.Unlock()
	g, ok := m.view.behind[name]
	return g, ok
}

// caughtUp clears name's mark if it is still the one of generation gen: a
// mark made while the round ran needs a round of its own.
func (m *Manager) caughtUp(name string, gen uint64) bool {
	m.view.mu.Lock()
	defer m.view.mu.Unlock()
	if g, ok := m.view.behind[name]; !ok || g != gen {
		return false
	}
	delete(m.view.behind, name)
	m.countBehindLocked()
	return true
}

// behindMembers lists the members marked behind, sorted by name.
func (m *Manager) behindMembers() []membership.Member {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []membership.Member
	for _, mb := range v.list {
		if _, ok := v.behind[mb.Name]; ok {
			out = append(out, mb)
		}
	}
	return out
}

// isBehind reports whether name is marked.
func (m *Manager) isBehind(name string) bool {
	_, ok := m.behindMark(name)
	return ok
}
