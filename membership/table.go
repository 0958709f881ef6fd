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
//
// Names are unique among live processes, and the process that had a name
// first keeps it:
//
//   - A process announcing the name of a member that is alive (heard within
//     the drop time) does not replace it. The newcomer is refused (counted
//     in NameConflicts, with a warning) until the holder is shown gone: it
//     leaves, goes silent, or fails a probe of its address (a probe answered
//     by another process counts as failed). The newcomer then takes the
//     name at once, as a restart: the holder is reported failed ("restarted
//     as <id>"), the newcomer joined.
//   - A newcomer is a restart at once, without a probe, when the holder is
//     already silent past the drop time (suspect) without having answered a
//     probe lately, or when the newcomer started later and announces the
//     holder's very address (only one process can listen there).
//   - A process that hears another announce its own name and that other
//     started before it (the same start time: the smaller id is first) is
//     the duplicate: it reports a Conflict event about the other process,
//     once per process, and whoever runs it should stop. The first process
//     ignores the later one, and answers it at once (so it learns soon).
type table struct {
	local    Member
	dropTime time.Duration
	reprobe  time.Duration // 0: fail silent members without a probe
	// probeClashes: a member whose name another process announces is
	// probed before it is kept or replaced (a prober is configured).
	probeClashes bool
	members      map[ID]*entry
	byName       map[string]ID
	// claims holds, per name held by a member, the process refused it
	// last (the one that started first, if several), to take the name at
	// once when its holder goes. Bounded by the members.
	claims map[string]*claim
	// gone remembers members that said they were leaving, until dropTime has
	// passed, so a heartbeat that was overtaken by the leave does not bring
	// the member back.
	gone map[ID]time.Time
	// failed remembers members declared failed, for failedMemory, so that
	// the same process heard from again is reported as Rejoined: it missed
	// what happened while it was away. Bounded by maxFailed.
	failed map[ID]time.Time
	// conflicts remembers the processes reported as holding this node's
	// name, so each is reported once. Bounded by maxConflicts.
	conflicts map[ID]time.Time
	lastSweep time.Time
	counters  Stats
	// joins is the budget of new members (see full), as of joinsAt.
	joins   float64
	joinsAt time.Time
}

type entry struct {
	Status
	seq uint64
	// probing: a TCP probe of the member is under way; probed: when the
	// last one was answered; clashProbed: when it was last probed because
	// another process announced its name.
	probing     bool
	probed      time.Time
	clashProbed time.Time
}

// claim is a process refused a name because a live member holds it.
type claim struct {
	Member
	seq uint64
	at  time.Time // last heard
}

// verdict is what one input to the table leads to.
type verdict struct {
	events []Event
	// probes are members to probe now: holders of a name another process
	// announces.
	probes []Member
	note   string // a warning for the log; "" for none
	// answer: this node should announce itself at once (to a newcomer, or
	// to a later process that announces this node's name).
	answer bool
	// limited: the heartbeat was refused by the table's bounds.
	limited bool
}

func newTable(local Member, dropTime, reprobe time.Duration) *table {
	return &table{
		local:     local,
		dropTime:  dropTime,
		reprobe:   reprobe,
		members:   make(map[ID]*entry),
		byName:    make(map[string]ID),
		claims:    make(map[string]*claim),
		gone:      make(map[ID]time.Time),
		failed:    make(map[ID]time.Time),
		conflicts: make(map[ID]time.Time),
	}
}

// How long and how many failed members are remembered for Rejoined. A
// process silent for longer than an hour that comes back is still reported,
// as Joined; what it holds is as stale either way, and consumers treat both
// as a member to bring up to date. Processes reported in a Conflict are
// remembered as long, fewer of them.
const (
	failedMemory = time.Hour
	maxFailed    = 4096
	maxConflicts = 64
)

// remember records id at now in m, forgetting the oldest entry when m holds
// limit already.
func remember(m map[ID]time.Time, id ID, now time.Time, limit int) {
	if _, ok := m[id]; !ok && len(m) >= limit {
		var oldest ID
		var at time.Time
		for other, when := range m {
			if at.IsZero() || when.Before(at) {
				oldest, at = other, when
			}
		}
		delete(m, oldest)
	}
	m[id] = now
}

// fail removes e as failed and remembers it.
func (t *table) fail(e *entry, now time.Time) {
	t.remove(e)
	remember(t.failed, e.ID, now, maxFailed)
}

// observe applies one heartbeat (or what the transport heard of a member)
// received at now.
func (t *table) observe(h Heartbeat, now time.Time) verdict {
	m := h.Member
	if m.ID == t.local.ID {
		return verdict{} // our own heartbeat, looped back
	}
	t.counters.HeartbeatsReceived++
	switch {
	case m.Domain != t.local.Domain:
		t.counters.ForeignDomain++
		return verdict{}
	case m.Name == t.local.Name:
		return t.ownName(h, now)
	}
	if _, left := t.gone[m.ID]; left {
		return verdict{}
	}

	if h.Command == CommandLeaving {
		t.gone[m.ID] = now.Add(t.dropTime)
		if c := t.claims[m.Name]; c != nil && c.ID == m.ID {
			delete(t.claims, m.Name)
		}
		e, ok := t.members[m.ID]
		if !ok {
			return verdict{}
		}
		t.remove(e)
		evs := []Event{{Type: Left, Member: e.Member, Time: now, Reason: "leaving"}}
		return t.verdict(append(evs, t.handOver(e.Name, now)...))
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
		return verdict{}
	}

	if holder, clash := t.byName[m.Name]; clash {
		return t.clash(t.members[holder], h, now)
	}
	if why := t.full(now); why != "" {
		// A flood of heartbeats under new names (a misconfigured
		// neighbour, or a hostile one without a key) would make each a
		// member and a replication target.
		t.counters.MembersRefused++
		return verdict{note: why, limited: true}
	}
	return t.verdict(t.admit(m, h.Seq, now, now))
}

// The member table's bounds: at most maxMembers other members, and new
// ones admitted at joinRate a second with bursts of joinBurst (a whole
// cluster starting at once is one burst).
const (
	maxMembers = 512
	joinRate   = 20
	joinBurst  = 128
)

// full reports why a new member cannot be admitted now ("" if it can),
// taking a join from the budget if it can.
func (t *table) full(now time.Time) string {
	if len(t.members) >= maxMembers {
		return fmt.Sprintf("member table full (%d members): heartbeats of new members ignored", maxMembers)
	}
	if t.joinsAt.IsZero() {
		t.joins, t.joinsAt = joinBurst, now
	}
	t.joins = min(joinBurst, t.joins+now.Sub(t.joinsAt).Seconds()*joinRate)
	t.joinsAt = now
	if t.joins < 1 {
		return fmt.Sprintf("more than %d new members a second: heartbeats of new members ignored for now", joinRate)
	}
	t.joins--
	return ""
}

// verdict wraps evs, answering a newcomer.
func (t *table) verdict(evs []Event) verdict {
	v := verdict{events: evs}
	for _, e := range evs {
		if e.Type == Joined {
			v.answer = true
		}
	}
	return v
}

// ownName handles a process other than this one that announces this node's
// name: the one that started first keeps it.
func (t *table) ownName(h Heartbeat, now time.Time) verdict {
	m := h.Member
	if h.Command == CommandLeaving {
		return verdict{}
	}
	t.counters.NameConflicts++
	if !newer(t.local, m) {
		return verdict{answer: true, note: fmt.Sprintf(
			"member %s announces this node's name %q but started after this process: it is the duplicate; ignoring it", m, m.Name)}
	}
	if _, told := t.conflicts[m.ID]; told {
		return verdict{note: fmt.Sprintf("member %s, started before this process, holds this node's name %q: this process is the duplicate and should stop", m, m.Name)}
	}
	remember(t.conflicts, m.ID, now, maxConflicts)
	return verdict{events: []Event{{Type: Conflict, Member: m, Time: now, Reason: fmt.Sprintf(
		"the name %q is held by %s at %s, alive and started %v before this process", m.Name, shortID(m.ID), m.Addr, t.local.Started.Sub(m.Started))}}}
}

// clash handles h, from a process that announces the name of member old.
func (t *table) clash(old *entry, h Heartbeat, now time.Time) verdict {
	m := h.Member
	t.claim(m, h.Seq, now)
	switch silent := now.Sub(old.LastSeen); {
	case silent > t.dropTime && (old.probed.IsZero() || now.Sub(old.probed) > t.dropTime):
		// Silent (suspect, if it is being probed), and no probe answered
		// lately: a member whose heartbeats alone are lost would have.
		return t.verdict(t.drop(old, now, fmt.Sprintf("silent for %v", silent.Round(time.Millisecond))))
	case m.Addr == old.Addr && newer(m, old.Member) && !t.probeClashes:
		// Without a prober, a later run at the same address is taken for
		// a restart. With one, the probe below decides: whoever answers at
		// that address is the live process, so a forged heartbeat does not
		// evict a member that still answers.
		return t.verdict(t.drop(old, now, "its address is announced by a later run"))
	}
	t.counters.NameConflicts++
	v := verdict{note: fmt.Sprintf("member %s announces the name %q of live member %s; keeping the live one until it leaves, goes silent or fails a probe", m, m.Name, old.Member)}
	if t.probeClashes && !old.probing && (old.clashProbed.IsZero() || now.Sub(old.clashProbed) >= t.dropTime) {
		old.probing, old.clashProbed = true, now
		v.probes = []Member{old.Member}
	}
	return v
}

// claim records that m was refused its name, keeping per name the process
// that started first among those heard within the drop time.
func (t *table) claim(m Member, seq uint64, now time.Time) {
	c := t.claims[m.Name]
	if c == nil || c.ID == m.ID || now.Sub(c.at) > t.dropTime || newer(c.Member, m) {
		t.claims[m.Name] = &claim{Member: m, seq: max(seq, claimSeq(c, m.ID)), at: now}
	}
}

func claimSeq(c *claim, id ID) uint64 {
	if c == nil || c.ID != id {
		return 0
	}
	return c.seq
}

// handOver gives the name a member just gave up to the process refused it
// within the drop time, if there is one.
func (t *table) handOver(name string, now time.Time) []Event {
	c := t.claims[name]
	delete(t.claims, name)
	if c == nil || now.Sub(c.at) > t.dropTime {
		return nil
	}
	if _, left := t.gone[c.ID]; left {
		return nil
	}
	return t.admit(c.Member, c.seq, c.at, now)
}

// drop fails member e for cause and hands its name over; a waiting
// process makes it a restart.
func (t *table) drop(e *entry, now time.Time, cause string) []Event {
	t.fail(e, now)
	reason := cause
	if c := t.claims[e.Name]; c != nil && now.Sub(c.at) <= t.dropTime {
		reason = fmt.Sprintf("restarted as %s (%s)", shortID(c.ID), cause)
	}
	return append([]Event{{Type: Failed, Member: e.Member, Time: now, Reason: reason}}, t.handOver(e.Name, now)...)
}

// admit adds m, last heard at seen, as a member.
func (t *table) admit(m Member, seq uint64, seen, now time.Time) []Event {
	t.members[m.ID] = &entry{Status: Status{Member: m, State: Alive, LastSeen: seen}, seq: seq}
	t.byName[m.Name] = m.ID
	delete(t.claims, m.Name)
	if _, back := t.failed[m.ID]; back {
		delete(t.failed, m.ID)
		return []Event{{Type: Rejoined, Member: m, Time: now, Reason: "heard from again after it failed"}}
	}
	return []Event{{Type: Joined, Member: m, Time: now, Reason: "heartbeat"}}
}

// newer reports whether a started after b; ties go to the larger id so that
// every node picks the same order.
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
	for id, at := range t.conflicts {
		if now.Sub(at) > failedMemory {
			delete(t.conflicts, id)
		}
	}
	for name, c := range t.claims {
		if _, held := t.byName[name]; !held || now.Sub(c.at) > t.dropTime {
			delete(t.claims, name)
		}
	}
	var evs []Event
	var suspects []Member
	var dead []*entry
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
			dead = append(dead, e)
		}
	}
	for _, e := range dead {
		evs = append(evs, t.drop(e, now, "silent for "+now.Sub(e.LastSeen).Round(time.Millisecond).String())...)
	}
	// Stable: a failed member stays before the restart that took its name.
	slices.SortStableFunc(evs, func(a, b Event) int { return strings.Compare(a.Member.Name, b.Member.Name) })
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
	return t.drop(e, now, reason)
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
	NameConflicts      uint64 // heartbeats refused because a live process holds the name (this node's, or a member's)
	LocalStalls        uint64 // times this node found itself frozen past half the drop time
	EventsDropped      uint64 // events lost because the consumer fell behind
	MembersRefused     uint64 // new members not admitted: the table was full, or too many joined at once
	// Refused counts the packets refused, by reason (package refuse);
	// reasons never seen are absent.
	Refused map[string]uint64
}

// declareFailed fails member id at once, because a failure detector other
// than the table's silence rule (gossip's SWIM: probes and indirect probes
// by several members, then a suspicion timeout) has declared it dead.
func (t *table) declareFailed(id ID, now time.Time, reason string) []Event {
	e, ok := t.members[id]
	if !ok {
		return nil
	}
	return t.drop(e, now, reason)
}
