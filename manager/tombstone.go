package manager

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"
)

// Tombstones: an ended session (invalidated, expired) leaves a tombstone for
// at least the session timeout plus the longest delay a message can have, so
// that a change of it still on its way (a concurrent write on another node,
// a state-transfer page, an answer to a fetch, a replica that was away)
// cannot bring it back. Logout wins over any concurrent write; an expiry
// loses to a write made after the version it expired.

// maxTombs bounds the tombstones a node keeps; past it the oldest go first.
// At about 100 bytes each, a million is 100 MB: a node ending more sessions
// than that per session timeout has more memory than that.
const maxTombs = 1 << 20

type tomb struct {
	Version     uint64
	Invalidated bool
	// Moved: the session lives on under another id (a route rewrite,
	// RenewID); a copy under this one up to the rename's version must not
	// come back either (a replica that missed the rename would hand it out
	// again). A copy written after it under the old id beats it, as it
	// beats an expiry: that happens only when the rename reached too few
	// members, so its id was never handed out and the client went on with
	// the old one, whose changes were acknowledged.
	Moved bool
	until time.Time
}

// wins reports whether the end it records beats a copy at version.
func (t tomb) wins(version uint64) bool { return t.Invalidated || version <= t.Version }

// ended is the tombstone on the wire.
func (t tomb) ended(id string) ended {
	return ended{ID: id, Version: t.Version, Invalidated: t.Invalidated, Moved: t.Moved}
}

type tombs struct {
	mu    sync.Mutex
	keep  time.Duration
	byID  map[string]tomb
	order []tombRef // in the order added; until grows along it
}

type tombRef struct {
	id    string
	until time.Time
}

func (t *tombs) init(keep time.Duration) {
	t.keep = keep
	t.byID = make(map[string]tomb)
}

// add records that id ended at version (e.Version; e.ID is ignored); a
// later end of the same id keeps the greater version, and an invalidation
// or a move stays one.
func (t *tombs) add(id string, e ended, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.byID[id]
	nt := tomb{Version: max(e.Version, old.Version), Invalidated: e.Invalidated || old.Invalidated,
		Moved: e.Moved || old.Moved, until: now.Add(t.keep)}
	t.byID[id] = nt
	if !had || !old.until.Equal(nt.until) {
		t.order = append(t.order, tombRef{id, nt.until})
	}
	t.pruneLocked(now)
	for len(t.byID) > maxTombs && len(t.order) > 0 {
		t.dropFirstLocked()
	}
}

// get returns the tombstone of id, if there is one.
func (t *tombs) get(id string) (tomb, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tb, ok := t.byID[id]
	return tb, ok
}

// remove forgets the tombstone of id: a newer copy beat an expiry.
func (t *tombs) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, id)
}

// prune drops the tombstones kept long enough.
func (t *tombs) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
}

func (t *tombs) pruneLocked(now time.Time) {
	for len(t.order) > 0 && now.After(t.order[0].until) {
		t.dropFirstLocked()
	}
	if cap(t.order) > 1024 && len(t.order) < cap(t.order)/4 {
		t.order = slices.Clone(t.order) // give back what pruning freed
	}
}

func (t *tombs) dropFirstLocked() {
	r := t.order[0]
	t.order = t.order[1:]
	if tb, ok := t.byID[r.id]; ok && tb.until.Equal(r.until) {
		delete(t.byID, r.id)
	}
}

// len is the number of tombstones.
func (t *tombs) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// entries returns the tombstones whose id is accepted by keep.
func (t *tombs) entries(keep func(id string) bool) []ended {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ended
	for id, tb := range t.byID {
		if keep(id) {
			out = append(out, tb.ended(id))
		}
	}
	return out
}

// ended is a tombstone on the wire.
type ended struct {
	ID          string `msgpack:"i"`
	Version     uint64 `msgpack:"v"`
	Invalidated bool   `msgpack:"x,omitempty"`
	Moved       bool   `msgpack:"mv,omitempty"` // renamed away, not ended
}

// ended records that a session ended here (or was told it ended) and drops
// a copy it beats. It reports whether a copy was dropped.
func (m *Manager) ended(e ended, remote bool) bool {
	if !ValidID(e.ID) {
		return false
	}
	if remote && m.implausible(e.ID, e.Version) != "" {
		m.stats.implausible.Add(1)
		return false
	}
	m.tombs.add(e.ID, e, m.clock.Now())
	m.mu.Lock()
	s := m.sessions[e.ID]
	if s == nil {
		m.mu.Unlock()
		return false
	}
	s.mu.Lock()
	if !(tomb{Version: e.Version, Invalidated: e.Invalidated, Moved: e.Moved}).wins(s.version) {
		// Written after the version that expired: the session lives on.
		s.mu.Unlock()
		m.mu.Unlock()
		m.tombs.remove(e.ID)
		return false
	}
	s.invalid = true
	version := s.version
	s.mu.Unlock()
	m.forget(e.ID)
	m.mu.Unlock()
	m.persist.ended(e.ID, version)
	if e.Moved {
		return true // it lives on under its new id: nothing was destroyed
	}
	reason := "expired"
	if e.Invalidated {
		reason = "invalidated"
	}
	m.fire(remote, func(l Listener) {
		if l.Destroyed != nil {
			l.Destroyed(e.ID, reason, remote)
		}
	})
	return true
}

// refused reports whether a copy of id at version must not be kept because
// the session ended; a copy that beats an expiry removes its tombstone.
func (m *Manager) refused(id string, version uint64) bool {
	tb, ok := m.tombs.get(id)
	if !ok {
		return false
	}
	if tb.wins(version) {
		m.stats.refusedEnded.Add(1)
		return true
	}
	m.tombs.remove(id)
	return false
}

// Versions count a session's changes, one at a time. A change from another
// node that moves a version further than maxVersionJump past this node's
// copy, or any version above maxVersion, is forged or corrupt: applied, it
// would pin the session (every real change "stale" until it expires) or
// end it for good.
const (
	maxVersionJump = 1 << 20
	maxVersion     = 1 << 40
)

// implausible says why version v of session id, from another node, is
// refused, or returns "".
func (m *Manager) implausible(id string, v uint64) string {
	if v > maxVersion {
		return fmt.Sprintf("version %d of session %s is implausible (at most %d)", v, m.ref(id), uint64(maxVersion))
	}
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return ""
	}
	s.mu.Lock()
	local := s.version
	s.mu.Unlock()
	return m.jumpTooFar(id, v, local)
}

// jumpTooFar says why version v of session id is refused against the local
// copy's version local, or returns "".
func (m *Manager) jumpTooFar(id string, v, local uint64) string {
	if v > local+maxVersionJump {
		return fmt.Sprintf("version %d of session %s jumps %d past this node's v%d (at most %d)", v, m.ref(id), v-local, local, maxVersionJump)
	}
	return ""
}

// refusedEnded is refused for a session that ended, not one renamed away:
// a rename's own change still applies to a copy under the old id.
func (m *Manager) refusedEnded(id string, version uint64) bool {
	if tb, ok := m.tombs.get(id); ok && tb.Moved && !tb.Invalidated {
		return false
	}
	return m.refused(id, version)
}

// contentHash is the hash of a session's attributes, the same on every node
// that holds the same contents: keys sorted, each key and value with its
// length. s.mu must be held; it is cached until the attributes change.
func (s *Session) contentHash() uint64 {
	if !s.hashed {
		s.hash, s.hashed = hashAttrs(s.attrs), true
	}
	return s.hash
}

func hashAttrs(attrs map[string][]byte) uint64 {
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := fnv.New64a()
	var n [8]byte
	put := func(b []byte) {
		l := len(b)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(b)
	}
	for _, k := range keys {
		put([]byte(k))
		put(attrs[k])
	}
	return h.Sum64()
}
