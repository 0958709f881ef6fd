package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/membership"
)

// counters are the manager's statistics.
type counters struct {
	created, expired, rejected, rebinds       atomic.Uint64
	sent, sendFailures, received, applied     atomic.Uint64
	stale, gaps, conflicts, repairs, fetched  atomic.Uint64
	refusedEnded, stalls                      atomic.Uint64
	aeRounds, aeMoved, aeNanos, aeFailures    atomic.Uint64
	shortCommits, tooFewCopies, standIns      atomic.Uint64
	lagging, changedUnder, implausible        atomic.Uint64
	notMember, catchUpRefused, olderThanSeen  atomic.Uint64
	unconfirmedRefused                        atomic.Uint64
	copied, moved                             atomic.Uint64
	transferSessions, transferNanos, timeouts atomic.Uint64
}

// Stats is a snapshot of the manager's counters.
type Stats struct {
	Mode             string        `json:"mode"` // how sessions are spread: "delta" (every node holds every session)
	Sessions         int           `json:"sessions"`
	Members          int           `json:"members"` // the other members this node replicates to, as its events say
	Created          uint64        `json:"created"`
	Expired          uint64        `json:"expired"`
	Rejected         uint64        `json:"rejected"` // refused by max_active
	Rebinds          uint64        `json:"rebinds"`  // route rewrites after failover
	Sent             uint64        `json:"sent"`
	SendFailures     uint64        `json:"send_failures"`
	Received         uint64        `json:"received"`
	Applied          uint64        `json:"applied"`
	Stale            uint64        `json:"stale"`     // duplicates and outdated changes ignored
	Gaps             uint64        `json:"gaps"`      // changes for a version this node did not have
	Conflicts        uint64        `json:"conflicts"` // concurrent writers on two nodes
	Repairs          uint64        `json:"repairs"`   // sessions fetched whole to close a gap
	Fetched          uint64        `json:"fetched"`   // sessions fetched on demand during state transfer
	Transferred      uint64        `json:"transferred"`
	TransferDuration time.Duration `json:"transfer_duration"`
	TransferTimeouts uint64        `json:"transfer_timeouts"`
	TransferState    string        `json:"transfer_state"`
	Copied           uint64        `json:"copied"`        // backup mode: sessions copied to a new backup
	Moved            uint64        `json:"moved"`         // backup mode: copies dropped, no longer owner nor backup
	Tombstones       int           `json:"tombstones"`    // ended sessions remembered, so they cannot come back
	RefusedEnded     uint64        `json:"refused_ended"` // changes and copies refused because the session had ended
	// Anti-entropy: rounds run (and failed), copies and tombstones they
	// moved either way, the time they took, and this node's own stalls.
	SyncRounds   uint64        `json:"sync_rounds"`
	SyncFailures uint64        `json:"sync_failures"`
	SyncMoved    uint64        `json:"sync_moved"`
	SyncDuration time.Duration `json:"sync_duration"`
	Stalls       uint64        `json:"stalls"`
	// ShortCommits: commits some member did not apply (repaired later);
	// TooFewCopies: those that failed the sync rule (the user got 503).
	ShortCommits uint64 `json:"short_commits"`
	TooFewCopies uint64 `json:"too_few_copies"`
	// ChangedUnder: commits refused because another node's change landed
	// during the request (ErrChangedUnder; the user got 503).
	ChangedUnder uint64 `json:"changed_under"`
	// Implausible: changes, copies and ends from other nodes refused for
	// a version that jumps absurdly far (forged or corrupt).
	Implausible uint64 `json:"implausible"`
	// NotMember: requests for sessions (state, fetch, digest, pushes)
	// refused because the caller was not a member of this node's view.
	NotMember uint64 `json:"not_member"`
	// UnconfirmedRefused: whole copies pushed by a member that had not
	// answered a round trip, nor did within 1.5 s, refused.
	UnconfirmedRefused uint64 `json:"unconfirmed_refused"`
	// Lagging: times a member that kept missing sync commits was set
	// aside (not waited for) for a while.
	Lagging uint64 `json:"lagging"`
	// Behind: members this node is catching up with (they, or it, were
	// cut off or stopped); CatchingUp: all of them. CatchUpRefused: loads
	// answered ErrCatchingUp (the user got 503).
	Behind int `json:"behind"`
	// Unconfirmed: members that have not answered a round trip yet; sync
	// commits do not wait for them unless the rule needs them.
	Unconfirmed    int    `json:"unconfirmed"`
	CatchingUp     bool   `json:"catching_up"`
	CatchUpRefused uint64 `json:"catch_up_refused"`
	// OlderThanSeen: loads whose copy was older than the version the
	// client had seen (LoadSeen), so the holders were asked first.
	OlderThanSeen uint64 `json:"older_than_seen"`
}

// Stats returns the manager's counters.
func (m *Manager) Stats() Stats {
	st := Stats{
		Mode:     m.cfg.Mode,
		Sessions: m.Len(), Members: len(m.members()), Created: m.stats.created.Load(), Expired: m.stats.expired.Load(),
		Rejected: m.stats.rejected.Load(), Rebinds: m.stats.rebinds.Load(),
		Sent: m.stats.sent.Load(), SendFailures: m.stats.sendFailures.Load(),
		Received: m.stats.received.Load(), Applied: m.stats.applied.Load(), Stale: m.stats.stale.Load(),
		Gaps: m.stats.gaps.Load(), Conflicts: m.stats.conflicts.Load(), Repairs: m.stats.repairs.Load(),
		Fetched: m.stats.fetched.Load(), Transferred: m.stats.transferSessions.Load(),
		TransferDuration: time.Duration(m.stats.transferNanos.Load()), TransferTimeouts: m.stats.timeouts.Load(),
		TransferState: m.transfer.state(),
		Copied:        m.stats.copied.Load(), Moved: m.stats.moved.Load(),
		Tombstones: m.tombs.len(), RefusedEnded: m.stats.refusedEnded.Load(),
		SyncRounds: m.stats.aeRounds.Load(), SyncFailures: m.stats.aeFailures.Load(), SyncMoved: m.stats.aeMoved.Load(),
		SyncDuration: time.Duration(m.stats.aeNanos.Load()), Stalls: m.stats.stalls.Load(), CatchingUp: m.CatchingUp(),
		ShortCommits: m.stats.shortCommits.Load(), TooFewCopies: m.stats.tooFewCopies.Load(), ChangedUnder: m.stats.changedUnder.Load(), Implausible: m.stats.implausible.Load(), NotMember: m.stats.notMember.Load(),
		Lagging: m.stats.lagging.Load(), Behind: int(m.behindN.Load()), CatchUpRefused: m.stats.catchUpRefused.Load(),
		OlderThanSeen: m.stats.olderThanSeen.Load(),
		Unconfirmed:   int(m.view.unconfirmed.Load()), UnconfirmedRefused: m.stats.unconfirmedRefused.Load(),
	}
	return st
}

// maxPayloadDepth bounds the nesting of a message body: the deepest the
// manager writes is four (sessions, their list, a snapshot, its
// attributes); attribute values are opaque bytes at that level.
const maxPayloadDepth = 16

// decode decodes a message body, checked first (wire.CheckMsgpack): a
// hostile body can neither recurse msgpack's decoder off the stack nor make
// it allocate by counts the bytes do not hold. The format is ours, so a
// field this node does not know is refused, not ignored: a message is
// understood whole or not at all.
func decode(p []byte, v any) error {
	if err := wire.CheckMsgpack(p, maxPayloadDepth); err != nil {
		return fmt.Errorf("manager: decode: %w", err)
	}
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(p))
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("manager: decode: %w", err)
	}
	return nil
}

// decodeDelta is decode for the hot path: the delta's own parser, which
// checks the bytes as it reads them (parseDelta).
func decodeDelta(p []byte, d *delta, known knownNames) error {
	if err := parseDelta(p, d, known); err != nil {
		return fmt.Errorf("manager: decode: %w", err)
	}
	return nil
}

// handleDelta applies a change made on another node. Deltas of one sender
// arrive in order; a delta for a version this node does not have (a gap,
// or a concurrent writer) is not applied: the whole session is fetched from
// the sender instead.
func (m *Manager) handleDelta(ctx context.Context, msg cluster.Message) error {
	var d delta
	if err := decodeDelta(msg.Payload, &d, knownNames{msg.From.Name, m.local}); err != nil {
		return err
	}
	m.stats.received.Add(1)
	if !ValidID(d.ID) || (d.Old != "" && !ValidID(d.Old)) {
		return fmt.Errorf("manager: delta for malformed session id %q", d.ID)
	}
	// The jump past the local copy is checked below, where its version is
	// read anyway: deltas are the hot path.
	if d.Version > maxVersion || d.Base >= d.Version {
		m.stats.implausible.Add(1)
		return fmt.Errorf("manager: delta refused: v%d of session %s on base v%d is implausible (versions follow their base, at most %d)",
			d.Version, m.ref(d.ID), d.Base, uint64(maxVersion))
	}
	if d.Old != "" {
		// A rename moves the copy before the check below could stop it.
		if why := m.implausible(d.Old, d.Version); why != "" {
			m.stats.implausible.Add(1)
			return fmt.Errorf("manager: delta refused: %s", why)
		}
	}
	if m.refused(d.ID, d.Version) || (d.Old != "" && m.refusedEnded(d.Old, d.Version)) {
		return nil // the session ended: a change still on its way must not bring it back
	}
	m.mu.Lock()
	s := m.sessions[d.ID]
	if s == nil && d.Old != "" {
		if s = m.sessions[d.Old]; s != nil && s.newerThan(d.Base) {
			// Written under the old id after the copy this rename was made
			// from: the rename reached too few members and its id was not
			// handed out; the old id lives on, with changes that were
			// acknowledged. Its late rename must not take them away.
			s = nil
		} else if s != nil {
			delete(m.sessions, d.Old)
			delete(m.touched, d.Old)
			s.mu.Lock()
			s.id = d.ID
			s.mu.Unlock()
			m.sessions[d.ID] = s
		}
	}
	if d.Old != "" {
		m.place.renamed(d.Old, d.ID, false)
		m.alias.add(d.Old, d.ID, m.clock.Now())
		m.tombs.add(d.Old, ended{Version: d.Version, Moved: true}, m.clock.Now())
	}
	if s == nil {
		if !d.Full {
			m.mu.Unlock()
			m.stats.gaps.Add(1)
			if d.Sync {
				return fmt.Errorf("%s: session %s is not held here", refusedBehind, m.ref(d.ID))
			}
			m.scheduleRepair(d.ID, m.place.repairFrom(d.ID, msg.From))
			return nil
		}
		s = &Session{m: m, id: d.ID, attrs: make(map[string][]byte)}
		s.mu.Lock() // before it is published: nobody sees it half-built
		m.sessions[d.ID] = s
		m.mu.Unlock()
		s.applyDelta(d)
		s.mu.Unlock()
		m.stats.applied.Add(1)
		m.keep(d.ID)
		m.fire(true, func(l Listener) {
			if l.Created != nil {
				l.Created(d.ID, true)
			}
		})
		return nil
	}
	m.mu.Unlock()

	s.mu.Lock()
	if why := m.jumpTooFar(d.ID, d.Version, s.version); why != "" {
		s.mu.Unlock()
		m.stats.implausible.Add(1)
		return fmt.Errorf("manager: delta refused: %s", why)
	}
	// A change applies only on exactly the copy it was made from: the
	// same version made by the same node. A base of the same number made
	// elsewhere is a concurrent writer's, and the change would land on
	// different contents. A whole copy newer than this node's replaces it
	// (a sync writer's only when this node is behind it, not a fork).
	behind := d.Base > s.version
	exact := d.Base == s.version && d.BaseOrigin == s.origin
	switch {
	case d.Version == s.version && d.Origin == s.origin && !s.unsure:
		s.mu.Unlock()
		m.stats.stale.Add(1) // a duplicate
		return nil
	case exact || (d.Full && (behind || (s.unsure && d.Version >= s.sure) || (!d.Sync && d.Version > s.version))):
		// (A whole copy older than the version last acknowledged here
		// was on its way from a node that stopped, say: it replaces no
		// copy, in doubt or not.)
		s.applyDelta(d)
		s.unsure = false // a member built on this copy, or replaced it whole
		s.mu.Unlock()
		m.stats.applied.Add(1)
		m.keep(d.ID)
		m.fireAttrs(d)
		return nil
	case d.Sync:
		// The writer waits for this answer and settles the refusal: it
		// pushes its whole copy to a member behind it, and puts its own
		// copy in doubt when too few members applied the change. Fetching
		// the writer's copy from here could spread a change nobody will
		// acknowledge over one that was.
		held := fmt.Sprintf("holds v%d of %s, the change is v%d of %s on v%d of %s",
			s.version, s.origin, d.Version, d.Origin, d.Base, d.BaseOrigin)
		unsure := s.unsure
		s.mu.Unlock()
		if behind || unsure {
			m.stats.gaps.Add(1)
			return fmt.Errorf("%s: session %s %s", refusedBehind, m.ref(d.ID), held)
		}
		m.stats.conflicts.Add(1)
		return fmt.Errorf("%s: session %s %s", refusedConflict, m.ref(d.ID), held)
	case d.Version < s.version:
		s.mu.Unlock()
		m.stats.stale.Add(1)
		return nil
	}
	// Async: a version this node cannot build on: a gap (behind) or a
	// concurrent change on two nodes. The higher version wins, a tie goes
	// to the greater node name; if the sender's copy wins, fetch it whole.
	wins := d.Version > s.version || (d.Version == s.version && d.Origin > s.origin)
	s.mu.Unlock()
	if behind {
		m.stats.gaps.Add(1)
	} else {
		m.stats.conflicts.Add(1)
	}
	if wins {
		m.scheduleRepair(d.ID, m.place.repairFrom(d.ID, msg.From))
	}
	return nil
}

// Refusals of a sync change, the start of the member's error as the
// writer reads it.
const (
	refusedPrefix   = "manager: refused: "
	refusedBehind   = refusedPrefix + "behind"   // the member lacks the change's base: send it the whole copy
	refusedConflict = refusedPrefix + "conflict" // the member holds another copy than the change's base
)

// refusedAs lists the members of to whose error for a send starts with why.
func refusedAs(err error, to []membership.Member, why string) []membership.Member {
	var out []membership.Member
	for _, pe := range peersOf(err) {
		var re *cluster.RemoteError
		if !errors.As(pe.Err, &re) || !strings.HasPrefix(re.Msg, why) {
			continue
		}
		for _, mb := range to {
			if mb.Addr == pe.Addr {
				out = append(out, mb)
			}
		}
	}
	return out
}

func (m *Manager) fireAttrs(d delta) {
	for k := range d.Set {
		m.fire(true, func(l Listener) {
			if l.AttributeChanged != nil {
				l.AttributeChanged(d.ID, k, false, true)
			}
		})
	}
	for _, k := range d.Del {
		m.fire(true, func(l Listener) {
			if l.AttributeChanged != nil {
				l.AttributeChanged(d.ID, k, true, true)
			}
		})
	}
}

// applyDelta applies d to s; s.mu must be held.
func (s *Session) applyDelta(d delta) {
	if d.Full {
		s.attrs = make(map[string][]byte, len(d.Set))
	}
	for k, v := range d.Set {
		s.attrs[k] = v
	}
	for _, k := range d.Del {
		delete(s.attrs, k)
	}
	s.hashed = false
	if d.Created != 0 {
		s.created = fromNano(d.Created)
	}
	if d.MaxInactive > 0 {
		s.maxInactive = time.Duration(d.MaxInactive)
	}
	if a := fromNano(d.Access); a.After(s.lastAccess) {
		s.lastAccess, s.accessedBy = a, d.Origin
	}
	s.version, s.origin = d.Version, d.Origin
	s.landed()
}

func (s *Session) toSnapshot() snapshot {
	return snapshot{
		ID: s.id, Version: s.version, Origin: s.origin, Created: unixNano(s.created),
		Access: unixNano(s.lastAccess), AccessedBy: s.accessedBy, MaxInactive: int64(s.maxInactive),
		Attrs: cloneAttrs(s.attrs),
	}
}

// newer reports whether snap beats s (s.mu held): the higher version wins,
// a tie goes to the greater origin, and two copies of one version and origin
// that differ (which causal deltas prevent, but a node restarted from an
// older disk copy could make) to the greater content hash, so that every
// node picks the same one.
func newer(snap snapshot, s *Session) bool {
	switch {
	case snap.Version != s.version:
		return snap.Version > s.version
	case snap.Origin != s.origin:
		return snap.Origin > s.origin
	}
	return hashAttrs(snap.Attrs) > s.contentHash()
}

// install keeps snap if it is newer than what this node holds (see newer)
// and the session has not ended. It reports whether it did.
func (m *Manager) install(snap snapshot, remote bool) (*Session, bool) {
	if !ValidID(snap.ID) || m.refused(snap.ID, snap.Version) {
		return nil, false
	}
	if remote && m.implausible(snap.ID, snap.Version) != "" {
		m.stats.implausible.Add(1)
		return nil, false
	}
	m.mu.Lock()
	s := m.sessions[snap.ID]
	created := s == nil
	if created {
		s = &Session{m: m, id: snap.ID}
		s.mu.Lock() // before it is published: nobody sees it half-built
		m.sessions[snap.ID] = s
	}
	m.mu.Unlock()
	if !created {
		s.mu.Lock()
	}
	// A copy in doubt never replaces one that is not; one that is not
	// always replaces one in doubt; otherwise the newer wins.
	// A copy older than the version last acknowledged here is stale, in
	// doubt or not.
	if !created && (snap.Unsure && !s.unsure || !(s.unsure && !snap.Unsure) && !newer(snap, s) || s.unsure && snap.Version < s.sure) {
		s.mu.Unlock()
		return s, false
	}
	s.unsure = snap.Unsure // any member's copy beats one nobody acknowledged, unless in doubt too
	s.version, s.origin = snap.Version, snap.Origin
	s.created, s.maxInactive = fromNano(snap.Created), time.Duration(snap.MaxInactive)
	if a := fromNano(snap.Access); a.After(s.lastAccess) {
		s.lastAccess, s.accessedBy = a, snap.AccessedBy
	}
	s.attrs = snap.Attrs
	if s.attrs == nil {
		s.attrs = make(map[string][]byte)
	}
	s.hashed = false
	s.mu.Unlock()
	m.keep(snap.ID)
	if created {
		m.fire(remote, func(l Listener) {
			if l.Created != nil {
				l.Created(snap.ID, remote)
			}
		})
	}
	return s, true
}

func (m *Manager) handleExpire(ctx context.Context, msg cluster.Message) error {
	var e expire
	if err := decode(msg.Payload, &e); err != nil {
		return err
	}
	m.stats.received.Add(1)
	if why := m.implausible(e.ID, e.Version); why != "" {
		m.stats.implausible.Add(1)
		return fmt.Errorf("manager: expire refused: %s", why)
	}
	// (ended checks again for the copies that arrive in batches.)
	// Renamed away ("moved"): the session lives on under another id, and
	// the old one must not come back from a replica that missed it.
	m.ended(ended{ID: e.ID, Version: e.Version, Invalidated: e.Reason == "invalidated", Moved: e.Reason == "moved"}, true)
	return nil
}

func (m *Manager) handleTouch(ctx context.Context, msg cluster.Message) error {
	var t touch
	if err := decode(msg.Payload, &t); err != nil {
		return err
	}
	m.stats.received.Add(1)
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range t.Entries {
		if s := m.sessions[e.ID]; s != nil {
			s.mu.Lock()
			if a := fromNano(e.Access); a.After(s.lastAccess) {
				s.lastAccess, s.accessedBy = a, t.By
			}
			s.mu.Unlock()
		}
	}
	return nil
}

// scheduleRepair queues a fetch of session id from a member; a full queue
// drops it (the next delta of that session schedules it again).
func (m *Manager) scheduleRepair(id string, from membership.Member) {
	if !m.isMemberProcess(from) {
		// Only a member holds a copy to repair from; a message that names
		// another sender is not followed by a request to its address.
		m.stats.notMember.Add(1)
		return
	}
	select {
	case m.repairs <- repair{id: id, from: from}:
	default:
		if ok, n := m.repairLog.Allow(time.Now()); ok {
			m.log.WithFields(logrus.Fields{"session": m.ref(id), "suppressed": n}).Warn("repair queue full; waiting for the next change")
		}
	}
}

func (m *Manager) runRepairs() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case r := <-m.repairs:
			in, err := m.fetch(m.ctx, r.from, []string{r.id})
			if err != nil {
				if ok, n := m.repairLog.Allow(time.Now()); ok && !errors.Is(err, context.Canceled) {
					m.log.WithFields(logrus.Fields{"session": m.ref(r.id), "member": r.from.Name, "suppressed": n}).WithError(err).Warn("repair failed")
				}
				continue
			}
			if len(in.Sessions) > 0 {
				m.stats.repairs.Add(1)
			}
		}
	}
}

// forget removes session id from this node; m.mu must be held.
func (m *Manager) forget(id string) {
	delete(m.sessions, id)
	delete(m.touched, id)
	m.place.gone(id)
}

// keep writes a change that arrived from another node to disk, if this node
// keeps the session there (backup mode's owner, with a persist_dir).
func (m *Manager) keep(id string) {
	if m.persist != nil && m.place.keeps(id) {
		m.persist.changed(id)
	}
}

// holds reports whether this node holds session id.
func (m *Manager) holds(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.sessions[id]
	return ok
}

// dropBorrowed forgets a session this node served for its owner.
// A copy other requests still use stays: the last of them drops it.
func (m *Manager) dropBorrowed(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	id, users := s.id, s.open+s.late // the caller's own request counts, if the valve runs it
	s.mu.Unlock()
	if users <= 1 && m.sessions[id] == s {
		m.forget(id)
	}
}

// dropRenamed drops local copies of sessions another node says were
// renamed away: a disk copy read back after a restart must not come back
// to life under its old id.
func (m *Manager) dropRenamed(ids []string) {
	for _, id := range ids {
		m.mu.Lock()
		s := m.sessions[id]
		if s != nil {
			m.forget(id)
		}
		m.mu.Unlock()
		if s != nil {
			s.mu.Lock()
			v := s.version
			s.mu.Unlock()
			m.persist.ended(id, v)
		}
	}
}
