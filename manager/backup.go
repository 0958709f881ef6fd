package manager

import (
	"context"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/membership"
)

// Backup mode (Resin's clustered sessions, Tomcat's BackupManager): each
// session lives on two nodes only. Its owner is the node its id names, or,
// when that node is gone, the node after it on the ring of members sorted
// by name; its backup is the node after the owner. Every node computes the
// same answer from the membership it sees, so no one has to be told.
const (
	ModeDelta  = "delta"
	ModeBackup = "backup"
)

// ring is one view of the members, this node included, sorted by name.
type ring struct {
	names   []string
	members map[string]membership.Member
}

func (m *Manager) ring() ring {
	ms := m.members()
	r := ring{names: make([]string, 0, len(ms)+1), members: make(map[string]membership.Member, len(ms))}
	r.names = append(r.names, m.local)
	for _, mb := range ms {
		r.names = append(r.names, mb.Name)
		r.members[mb.Name] = mb
	}
	slices.Sort(r.names)
	return r
}

func (r ring) alive(name string) bool {
	_, ok := slices.BinarySearch(r.names, name)
	return ok
}

// next is the first member after name on the ring, name excluded; "" when
// name is alone.
func (r ring) next(name string) string {
	i, found := slices.BinarySearch(r.names, name)
	if found {
		i++
	}
	n := r.names[i%len(r.names)]
	if n == name {
		return ""
	}
	return n
}

// owner is the node that serves session id: the one its route names while
// that node is a member, else the one after it, which held the backup.
func (r ring) owner(id string) string {
	if route := Route(id); r.alive(route) {
		return route
	}
	return r.next(Route(id))
}

// backup is where owner copies its sessions; "" when owner is alone.
func (r ring) backup(owner string) string { return r.next(owner) }

// replicaTargets is where a commit of s goes: in delta mode every member; in
// backup mode the backup when this node owns the session, else the owner
// and the owner's backup (a request that landed here: the change is stored
// back, Resin's load/store). The store-back goes to both from here rather
// than to the owner for it to pass on: the owner would have to send to its
// backup from inside its message handler, on the reader of this node's
// connection, and store-backs going round the ring then wait on each other
// in a cycle that only the send timeout breaks. borrowed reports a session
// this node keeps no copy of; owned that this node is its owner.
func (m *Manager) replicaTargets(id string) (to []membership.Member, borrowed, owned bool) {
	if m.cfg.Mode != ModeBackup {
		return m.members(), false, false
	}
	r := m.ring()
	owner := r.owner(id)
	if owner == m.local {
		if b := r.backup(m.local); b != "" {
			return []membership.Member{r.members[b]}, false, true
		}
		return nil, false, true
	}
	to = []membership.Member{r.members[owner]}
	b := r.backup(owner)
	if b != "" && b != m.local {
		to = append(to, r.members[b])
	}
	return to, b != m.local, false
}

// loadFromOwner fetches session id from its owner for a request that landed
// on this node (backup mode, a non-sticky balancer): the owner's copy is
// the truth. If the owner cannot be reached (it died and membership has not
// noticed yet), the owner's backup is asked, and if this node is the
// backup, its copy is served rather than nothing.
func (m *Manager) loadFromOwner(ctx context.Context, id string) {
	if Route(id) == m.local {
		return // this node is alive, so it owns what its route names: no ring to build per request
	}
	r := m.ring()
	owner := r.owner(id)
	if owner == m.local || owner == "" {
		return
	}
	if _, err := m.fetch(ctx, r.members[owner], []string{id}); err != nil {
		m.log.WithFields(logrus.Fields{"session": short(id), "member": owner}).WithError(err).Debug("load from owner failed")
		b := r.backup(owner)
		if b == "" || b == m.local {
			return
		}
		if _, err := m.fetch(ctx, r.members[b], []string{id}); err != nil {
			m.log.WithFields(logrus.Fields{"session": short(id), "member": b}).WithError(err).Debug("load from the owner's backup failed")
			return
		}
	}
	m.stats.fetched.Add(1)
}

// repairSource is where a session this node cannot build a change on is
// fetched whole from: the sender in delta mode; in backup mode the owner,
// since the sender may have served one request for it and kept no copy.
func (m *Manager) repairSource(id string, from membership.Member) membership.Member {
	if m.cfg.Mode != ModeBackup {
		return from
	}
	r := m.ring()
	if o := r.owner(id); o != m.local {
		return r.members[o]
	}
	return from
}

// dropBorrowed forgets a session this node served for its owner.
func (m *Manager) dropBorrowed(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := s.ID()
	if m.sessions[id] == s {
		delete(m.sessions, id)
		delete(m.touched, id)
	}
}

// dropOldCopies runs after this node committed a session it took over
// under its own route (Rebind, after the owner failed): the copies kept
// under the old id, on the old id's owner and that owner's backup, are
// nobody's now. A target of the change that holds the old id has renamed
// its copy instead. It runs on the request's goroutine, not in a message
// handler, which must never wait on another member.
func (m *Manager) dropOldCopies(ctx context.Context, d delta, sent []membership.Member) {
	r := m.ring()
	owner := r.owner(d.Old)
	var to []membership.Member
	for _, name := range []string{owner, r.backup(owner)} {
		if name == "" || name == m.local || slices.ContainsFunc(to, func(mb membership.Member) bool { return mb.Name == name }) ||
			slices.ContainsFunc(sent, func(mb membership.Member) bool { return mb.Name == name }) {
			continue
		}
		to = append(to, r.members[name])
	}
	if err := m.broadcastTo(ctx, to, typeExpire, expire{ID: d.Old, Version: d.Version, Reason: "moved"}); err != nil {
		m.log.WithField("session", short(d.Old)).WithError(err).Debug("old copies not dropped")
	}
}

// runRebalance watches the ring and moves sessions when it changes: an
// owner whose backup changed copies its sessions to the new one; the backup
// of a node that is gone becomes the owner and copies them on; a node that
// is neither owner nor backup of a session drops it, after a grace period
// that lets the new backup receive its copy first.
func (m *Manager) runRebalance() {
	tick := time.NewTicker(m.cfg.RebalanceInterval)
	defer tick.Stop()
	orphaned := map[string]time.Time{}
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-tick.C:
			m.rebalance(now, orphaned)
		}
	}
}

func (m *Manager) rebalance(now time.Time, orphaned map[string]time.Time) {
	r := m.ring()
	copies := map[string][]snapshot{}
	var drop []string
	m.mu.RLock()
	for id, s := range m.sessions {
		owner := r.owner(id)
		s.mu.Lock()
		switch {
		case s.isNew || s.invalid:
		case owner == m.local:
			delete(orphaned, id)
			if s.backupAt == "" {
				m.persist.changed(id) // taken over, or recovered: now this node's to keep
			}
			if b := r.backup(m.local); b != "" && s.backupAt != b {
				copies[b] = append(copies[b], s.toSnapshot())
				s.backupAt = b
			}
		case r.backup(owner) == m.local:
			delete(orphaned, id)
		default:
			if since, ok := orphaned[id]; !ok {
				orphaned[id] = now
			} else if now.Sub(since) > m.cfg.OrphanGrace {
				drop = append(drop, id)
			}
		}
		s.mu.Unlock()
	}
	for id := range orphaned {
		// Forget what is dropped now or was removed meanwhile (a borrowed
		// copy, an expiry), so the map cannot grow and a later copy of the
		// same id starts a fresh grace period.
		if _, held := m.sessions[id]; !held || slices.Contains(drop, id) {
			delete(orphaned, id)
		}
	}
	m.mu.RUnlock()
	if len(drop) > 0 {
		m.mu.Lock()
		for _, id := range drop {
			delete(m.sessions, id)
			delete(m.touched, id)
		}
		m.mu.Unlock()
		m.stats.moved.Add(uint64(len(drop)))
	}
	for b, snaps := range copies {
		m.copyTo(r.members[b], snaps)
	}
}

// copyTo sends whole sessions to a member in batches.
func (m *Manager) copyTo(to membership.Member, snaps []snapshot) {
	for len(snaps) > 0 {
		n, size := 0, 0
		for n < len(snaps) && (n == 0 || size < m.cfg.TransferBatch) {
			size += 64 + len(snaps[n].ID)
			for k, v := range snaps[n].Attrs {
				size += len(k) + len(v)
			}
			n++
		}
		b, err := msgpack.Marshal(sessions{Sessions: snaps[:n], Last: true})
		if err == nil {
			ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
			err = m.c.Send(ctx, []membership.Member{to}, typeSessions, b, flock.Ack)
			cancel()
		}
		if err != nil {
			m.log.WithFields(logrus.Fields{"member": to.Name, "sessions": n}).WithError(err).Warn("copy to the backup failed; retrying at the next change")
			m.mu.RLock()
			for _, snap := range snaps[:n] {
				if s := m.sessions[snap.ID]; s != nil {
					s.mu.Lock()
					s.backupAt = ""
					s.mu.Unlock()
				}
			}
			m.mu.RUnlock()
		} else {
			m.stats.copied.Add(uint64(n))
		}
		snaps = snaps[n:]
	}
}

// noteMoved records that id was renamed away.
func (m *Manager) noteMoved(id string) {
	m.movedMu.Lock()
	defer m.movedMu.Unlock()
	if m.moved == nil {
		m.moved = make(map[string]time.Time)
	}
	now := time.Now()
	m.moved[id] = now
	if len(m.moved)%1024 == 0 { // prune now and then: bounded by the renames of one timeout
		for old, at := range m.moved {
			if now.Sub(at) > m.cfg.SessionTimeout {
				delete(m.moved, old)
			}
		}
	}
}

// movedFor lists the remembered renamed-away ids whose route is route.
func (m *Manager) movedFor(route string) []string {
	m.movedMu.Lock()
	defer m.movedMu.Unlock()
	var out []string
	for id := range m.moved {
		if Route(id) == route {
			out = append(out, id)
		}
	}
	return out
}

// forgetMoved drops local copies of sessions another node says were renamed
// away: a disk copy read back after a restart must not come back to life
// under its old id.
func (m *Manager) forgetMoved(ids []string) {
	for _, id := range ids {
		m.mu.Lock()
		s := m.sessions[id]
		if s != nil {
			delete(m.sessions, id)
			delete(m.touched, id)
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
