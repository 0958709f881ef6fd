package membership

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"
)

// table is the membership view as pure state: heartbeats and the clock go
// in, events come out. Keeping it free of sockets and goroutines lets the
// tests drive every rule (drop, leave, restart, name clash, local stall)
// with a fake clock.
type table struct {
	local    Member
	dropTime time.Duration
	reprobe  time.Duration // 0: fail silent members without a probe
	members  map[ID]*entry
	byName   map[string]ID
	// gone remembers members that said they were leaving, until dropTime has
	// passed, so a heartbeat that was overtaken by the leave does not bring
	// the member back.
	gone map[ID]time.Time
	// failed remembers members declared failed, for failedMemory, so that
	// the same process heard from again is reported as Rejoined: it missed
	// what happened while it was away. Bounded by maxFailed.
	failed    map[ID]time.Time
	lastSweep time.Time
	counters  Stats
}

type entry struct {
	Status
	seq uint64
	// probing: a TCP probe of the member is under way; probed: when the
	// last one was answered.
	probing bool
	probed  time.Time
}

func newTable(local Member, dropTime, reprobe time.Duration) *table {
	return &table{
		local:    local,
		dropTime: dropTime,
		reprobe:  reprobe,
		members:  make(map[ID]*entry),
		byName:   make(map[string]ID),
		gone:     make(map[ID]time.Time),
		failed:   make(map[ID]time.Time),
	}
}

// How long and how many failed members are remembered for Rejoined. A
// process silent for longer than an hour that comes back is still reported,
// as Joined; what it holds is as stale either way, and consumers treat both
// as a member to bring up to date.
const (
	failedMemory = time.Hour
	maxFailed    = 4096
)

// fail removes e as failed and remembers it.
func (t *table) fail(e *entry, now time.Time) {
	t.remove(e)
	if len(t.failed) >= maxFailed {
		var oldest ID
		var at time.Time
		for id, when := range t.failed {
			if at.IsZero() || when.Before(at) {
				oldest, at = id, when
			}
		}
		delete(t.failed, oldest)
	}
	t.failed[e.ID] = now
}

// observe applies one heartbeat received at now. It returns the events it
// caused and, when something deserves a warning, a note for the log.
func (t *table) observe(h Heartbeat, now time.Time) ([]Event, string) {
	m := h.Member
	if m.ID == t.local.ID {
		return nil, "" // our own heartbeat, looped back
	}
	t.counters.HeartbeatsReceived++
	switch {
	case m.Domain != t.local.Domain:
		t.counters.ForeignDomain++
		return nil, ""
	case m.Name == t.local.Name:
		t.counters.NameConflicts++
		return nil, fmt.Sprintf("member %s at %s announces this node's name %q; names must be unique, ignoring it", shortID(m.ID), m.Addr, m.Name)
	}
	if _, left := t.gone[m.ID]; left {
		return nil, ""
	}

	if h.Command == CommandLeaving {
		t.gone[m.ID] = now.Add(t.dropTime)
		e, ok := t.members[m.ID]
		if !ok {
			return nil, ""
		}
		t.remove(e)
		return []Event{{Type: Left, Member: e.Member, Time: now, Reason: "leaving"}}, ""
	}

	if e, ok := t.members[m.ID]; ok {
		if h.Seq > e.seq+1 {
			t.counters.HeartbeatsLost += h.Seq - e.seq - 1
		}
		if h.Seq > e.seq {
			e.seq = h.Seq
		}
		e.LastSeen = now
		e.State = Alive
		e.probed = time.Time{}
		return nil, ""
	}

	var evs []Event
	if oldID, clash := t.byName[m.Name]; clash {
		old := t.members[oldID]
		if !newer(m, old.Member) {
			t.counters.NameConflicts++
			return nil, fmt.Sprintf("members %s and %s both announce the name %q; keeping the one that started last", old.Member, m, m.Name)
		}
		// Same name, later start: the node was restarted before its old
		// run was dropped. Report both halves so nothing above keeps a
		// dead run's state under a live name.
		t.fail(old, now)
		evs = append(evs, Event{Type: Failed, Member: old.Member, Time: now, Reason: "restarted as " + shortID(m.ID)})
	}
	t.members[m.ID] = &entry{Status: Status{Member: m, State: Alive, LastSeen: now}, seq: h.Seq}
	t.byName[m.Name] = m.ID
	if _, back := t.failed[m.ID]; back {
		delete(t.failed, m.ID)
		return append(evs, Event{Type: Rejoined, Member: m, Time: now, Reason: "heard from again after it failed"}), ""
	}
	return append(evs, Event{Type: Joined, Member: m, Time: now, Reason: "heartbeat"}), ""
}

// newer reports whether a started after b; ties go to the larger id so that
// every node picks the same winner.
func newer(a, b Member) bool {
	if !a.Started.Equal(b.Started) {
		return a.Started.After(b.Started)
	}
	return bytes.Compare(a.ID[:], b.ID[:]) > 0
}

// sweep drops members silent for longer than dropTime, or, when members are
// confirmed before they are dropped (reprobe > 0), returns them as suspects
// to probe. If the local process
// itself was frozen (SIGSTOP, a stalled VM, an overloaded host) for longer
// than half the drop time, the silence it measured during the freeze is its
// own: that time is not held against the members, so they are not all
// declared failed the moment this node wakes up. A member that is really
// gone still fails, one drop time of unfrozen watching later.
func (t *table) sweep(now time.Time) ([]Event, []Member, string) {
	var note string
	if !t.lastSweep.IsZero() {
		if gap := now.Sub(t.lastSweep); gap > t.dropTime/2 {
			for _, e := range t.members {
				if e.LastSeen = e.LastSeen.Add(gap); e.LastSeen.After(now) {
					e.LastSeen = now
				}
			}
			t.counters.LocalStalls++
			note = fmt.Sprintf("this node was stalled for %v; that time does not count against members", gap.Round(time.Millisecond))
		}
	}
	t.lastSweep = now
	for id, until := range t.gone {
		if now.After(until) {
			delete(t.gone, id)
		}
	}
	for id, at := range t.failed {
		if now.Sub(at) > failedMemory {
			delete(t.failed, id)
		}
	}
	var evs []Event
	var suspects []Member
	for _, e := range t.members {
		silent := now.Sub(e.LastSeen)
		switch {
		case silent <= t.dropTime, e.probing:
		case t.reprobe > 0:
			// Ask the process before calling it dead (its heartbeats may be
			// all that is lost), and again every reprobe while it stays
			// silent but answers.
			if now.Sub(e.probed) >= t.reprobe {
				e.State, e.probing = Suspect, true
				suspects = append(suspects, e.Member)
			}
		default:
			t.fail(e, now)
			evs = append(evs, Event{Type: Failed, Member: e.Member, Time: now, Reason: "silent for " + silent.Round(time.Millisecond).String()})
		}
	}
	slices.SortFunc(evs, func(a, b Event) int { return strings.Compare(a.Member.Name, b.Member.Name) })
	return evs, suspects, note
}

// suspect starts a probe of member id outside the sweep (a send to it
// failed), unless one is under way or answered within reprobe.
func (t *table) suspect(id ID, now time.Time) (Member, bool) {
	e, ok := t.members[id]
	if !ok || e.probing || t.reprobe == 0 || (!e.probed.IsZero() && now.Sub(e.probed) < t.reprobe) {
		return Member{}, false
	}
	e.probing = true
	return e.Member, true
}

// probed applies the outcome of a probe of id: answered by the same process
// it stays (Suspect while its heartbeats are missing); otherwise it fails.
func (t *table) probed(id ID, answer Member, err error, now time.Time) []Event {
	e, ok := t.members[id]
	if !ok {
		return nil
	}
	e.probing = false
	if err == nil && answer.ID == id {
		e.probed = now
		return nil
	}
	reason := fmt.Sprintf("silent for %v, probe failed: %v", now.Sub(e.LastSeen).Round(time.Millisecond), err)
	if err == nil {
		reason = fmt.Sprintf("its address is answered by another run (%s)", shortID(answer.ID))
	}
	t.fail(e, now)
	return []Event{{Type: Failed, Member: e.Member, Time: now, Reason: reason}}
}

func (t *table) remove(e *entry) {
	delete(t.members, e.ID)
	if t.byName[e.Name] == e.ID {
		delete(t.byName, e.Name)
	}
}

func (t *table) snapshot() []Status {
	out := make([]Status, 0, len(t.members))
	for _, e := range t.members {
		out = append(out, e.Status)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stats counts what a membership service saw since it started.
type Stats struct {
	HeartbeatsSent     uint64 // alive and leaving announcements sent
	HeartbeatsReceived uint64 // valid heartbeats received from other processes
	HeartbeatsLost     uint64 // gaps in members' sequence numbers
	Rejected           uint64 // packets that were not valid heartbeats
	ForeignDomain      uint64 // valid heartbeats of another domain, ignored
	NameConflicts      uint64 // heartbeats ignored because another member holds the name
	LocalStalls        uint64 // times this node found itself frozen past half the drop time
	EventsDropped      uint64 // events lost because the consumer fell behind
}
