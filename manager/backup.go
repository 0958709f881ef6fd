package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/membership"
)

// Backup mode (Resin's clustered sessions, Tomcat's BackupManager): each
// session lives on two nodes only. Its owner is the node its id names, or,
// when that node is gone, the member that was its backup; its backup is
// the member of highest rendezvous weight for the session's id other than
// the owner, in another zone when one has a member (see holders). Every
// node computes the same answer from the membership it sees, so no one has
// to be told.
type backupPlacement struct {
	m    *Manager
	ring atomic.Pointer[ring] // rebuilt on every change of the member view

	mu sync.Mutex
	// backupAt: for the sessions this node owns, the member it last copied
	// each to; rebalance copies again when the ring names another one.
	backupAt map[string]string
	// retry: backups whose copies failed, and when to try again.
	retry map[string]backoff
	// moved remembers ids renamed away (route rewrites, RenewID) for a
	// session timeout, so a node recovering from disk learns that its old
	// copies live on under another id.
	moved map[string]time.Time

	// orphaned: copies this node is neither owner nor backup of, since
	// when; only step touches it.
	orphaned map[string]time.Time
	// zones: the zone each member announced, kept after it left (see
	// members).
	zones map[string]string
}

// newRing is the ring of the configured placement; p.mu must be held (or
// p not yet shared).
func (p *backupPlacement) newRing(view []membership.Member) *ring {
	r := newRing(p.m.c.Local(), view, p.zones)
	r.byName = p.m.cfg.Placement == PlacementRing
	return r
}

// maxZonesKept bounds the zones remembered of members gone.
const maxZonesKept = 4096

var _ placement = (*backupPlacement)(nil)

func newBackup(m *Manager) *backupPlacement {
	p := &backupPlacement{
		m:        m,
		backupAt: make(map[string]string),
		retry:    make(map[string]backoff),
		moved:    make(map[string]time.Time),
		orphaned: make(map[string]time.Time),
		zones:    make(map[string]string),
	}
	p.ring.Store(p.newRing(nil))
	return p
}

// ring is one view of the members, this node included, sorted by name,
// with the zone each announced.
type ring struct {
	names   []string
	members map[string]membership.Member
	seeds   map[string]uint64 // per member: its name hashed once, not per session
	zones   map[string]string // of members in the view and of members gone (see members)
	byName  bool              // PlacementRing: the backup is the next member by name
}

func newRing(local membership.Member, ms []membership.Member, gone map[string]string) *ring {
	r := &ring{
		names:   make([]string, 0, len(ms)+1),
		members: make(map[string]membership.Member, len(ms)),
		seeds:   make(map[string]uint64, len(ms)+1),
		zones:   make(map[string]string, len(ms)+1+len(gone)),
	}
	for name, z := range gone {
		r.zones[name] = z
	}
	for _, mb := range append([]membership.Member{local}, ms...) {
		r.names = append(r.names, mb.Name)
		r.seeds[mb.Name] = mix64(fnvString(fnvOffset64, mb.Name))
		r.zones[mb.Name] = mb.Zone
		if mb.Name != local.Name {
			r.members[mb.Name] = mb
		}
	}
	slices.Sort(r.names)
	return r
}

func (r *ring) alive(name string) bool {
	_, ok := slices.BinarySearch(r.names, name)
	return ok
}

// next is the first member after name by name, name excluded, wrapping
// round; "" when name is alone.
func (r *ring) next(name string) string {
	i, found := slices.BinarySearch(r.names, name)
	if found {
		i++
	}
	if n := r.names[i%len(r.names)]; n != name {
		return n
	}
	return ""
}

// mix64 is SplitMix64's finalizer: the weights of one session for two
// members must look independent, which FNV alone does not give.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Placement is rendezvous (highest-random-weight) hashing: every member
// has a weight for every session, and a session's backup is the member of
// highest weight other than its owner. When an owner dies, its sessions'
// new owners are their backups, spread over all survivors, and their new
// backups spread likewise; when a member joins, it becomes the backup of
// about 1/N of the sessions, and nothing else moves. A ring by name, as
// before, gave every session of an owner the same backup: its death put
// all of them on one survivor, which had to copy them all at once.

// hashID is the part of every weight that depends on the session only.
func hashID(id string) uint64 { return fnvString(fnvOffset64, id) }

// choose is the member of highest weight for the session hashed to h,
// skipping skip and skip2, preferring one whose zone is not zone (when
// zone is set), so that an owner and its backup do not share a zone while
// another has a member. "" when no member is left.
func (r *ring) choose(h uint64, zone, skip, skip2 string) string {
	if zone != "" {
		if n := r.heaviest(h, func(n string) bool { return n == skip || n == skip2 || r.zones[n] == zone }); n != "" {
			return n
		}
	}
	return r.heaviest(h, func(n string) bool { return n == skip || n == skip2 })
}

// heaviest is the member of highest weight for the session hashed to h
// among those skip leaves; "" when it leaves none.
func (r *ring) heaviest(h uint64, skip func(name string) bool) string {
	best := ""
	var w uint64
	for _, n := range r.names {
		if skip(n) {
			continue
		}
		if x := mix64(h ^ r.seeds[n]); best == "" || x > w {
			best, w = n, x
		}
	}
	return best
}

// holders are the owner and the backup of session id: the owner is the
// node its route names while that node is a member, else the member that
// was its backup; "" for a backup when the owner is alone.
func (r *ring) holders(id string) (owner, backup string) {
	if r.byName {
		owner = Route(id)
		if !r.alive(owner) {
			owner = r.next(owner)
		}
		return owner, r.next(owner)
	}
	h := hashID(id)
	route := Route(id)
	owner = route
	if !r.alive(route) {
		owner = r.choose(h, r.zones[route], route, "")
	}
	return owner, r.choose(h, r.zones[owner], owner, route)
}

// Holders is where backup mode keeps session id in a cluster of the named
// members: its owner and its backup ("" when the owner is alone), under
// placement (PlacementRendezvous or PlacementRing), with each member's
// zone from zones (nil: none). Every node computes the same from the same
// members; tools and tests use it to check from outside where a session
// should be.
func Holders(id string, names []string, zones map[string]string, placement string) (owner, backup string) {
	if len(names) == 0 {
		return "", ""
	}
	ms := make([]membership.Member, len(names))
	for i, n := range names {
		ms[i] = membership.Member{Name: n, Zone: zones[n]}
	}
	r := newRing(ms[0], ms[1:], nil)
	r.byName = placement == PlacementRing
	return r.holders(id)
}

func (r *ring) owner(id string) string {
	o, _ := r.holders(id)
	return o
}

func (r *ring) backupOf(id string) string {
	_, b := r.holders(id)
	return b
}

// standIns: for each failed holder, the member of next highest weight that
// is neither this node nor a holder already: the backup-to-be.
func (p *backupPlacement) standIns(id string, failed []membership.Member) []membership.Member {
	r := p.ring.Load()
	owner, backup := r.holders(id)
	skip := map[string]bool{p.m.local: true, owner: true, backup: true}
	h := hashID(id)
	var out []membership.Member
	for range failed {
		best := r.heaviest(h, func(n string) bool { return skip[n] })
		if best == "" {
			break
		}
		skip[best] = true
		out = append(out, r.members[best])
	}
	return out
}

// takeover: the owner the ring names now.
func (p *backupPlacement) takeover(id string) string { return p.ring.Load().owner(id) }

// keeps: the owner keeps its sessions on disk, whoever served the change.
func (p *backupPlacement) keeps(id string) bool { return p.ring.Load().owner(id) == p.m.local }

// shares: the owner and its backup hold the session.
func (p *backupPlacement) shares(id, peer string) bool {
	owner, b := p.ring.Load().holders(id)
	local := p.m.local
	return (owner == local && b == peer) || (owner == peer && b == local)
}

// members rebuilds the ring: once per change of the view, not per commit.
func (p *backupPlacement) members(e membership.Event, view []membership.Member) {
	p.mu.Lock()
	if e.Type == membership.Left || e.Type == membership.Failed {
		delete(p.retry, e.Member.Name) // the backoff of a member gone
	}
	// The zones of members gone, for the sessions their routes name: the
	// new owner is the member that was the backup, chosen by the old
	// owner's zone. Bounded like the member table; a name forgotten past
	// that only costs an even (zone-blind) pick.
	if len(p.zones) >= maxZonesKept {
		clear(p.zones)
	}
	for _, mb := range view {
		p.zones[mb.Name] = mb.Zone
	}
	p.ring.Store(p.newRing(view))
	p.mu.Unlock()
}

// start is the recovery: a node holds only what it owns, so it asks every
// member for the sessions whose id names it (a restart under the same
// name: the backup, or the node that took them over, has them) and keeps,
// for each, the newest version (Resin's recovery). It asks every member,
// not just the first heard of: the view settles first (the others answer
// a newcomer's heartbeat at once).
func (p *backupPlacement) start([]membership.Member) {
	m := p.m
	ms := m.settleMembers()
	if m.ctx.Err() != nil {
		return
	}
	m.transfer.set("running")
	start := m.clock.Now()
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	type answer struct {
		n   int
		err error
	}
	results := make(chan answer, len(ms))
	for _, mb := range ms {
		go func() {
			n, err := m.pull(ctx, mb, m.local)
			results <- answer{n, err}
		}()
	}
	n, failed := 0, 0
	for range ms {
		a := <-results
		n += a.n
		if a.err != nil {
			failed++
		}
	}
	// Then the copies this node is the backup of: a node restarted empty
	// would otherwise hold them only when the owners' rebalance gets to
	// it, and report itself ready while each of those sessions lives on
	// one node. An anti-entropy round with each member exchanges exactly
	// the sessions the two share, in both directions.
	if failed == 0 {
		for _, mb := range ms {
			k, err := m.syncWith(ctx, mb)
			n += k
			if err != nil {
				failed++
				m.log.WithField("member", mb.Name).WithError(err).Warn("recovery: anti-entropy round failed")
			}
		}
	}
	d := m.clock.Now().Sub(start)
	m.stats.transferSessions.Add(uint64(n))
	m.stats.transferNanos.Store(uint64(d))
	if failed > 0 {
		m.stats.timeouts.Add(1)
		m.transfer.set("timed out")
		m.log.WithFields(logrus.Fields{"sessions": n, "members": len(ms), "unanswered": failed}).Warn("recovery incomplete")
		return
	}
	m.transfer.set("done")
	m.log.WithFields(logrus.Fields{"sessions": n, "took": d.Round(time.Millisecond)}).Info("recovered owned sessions")
}

// targets: the backup when this node owns the session, else the owner and
// the owner's backup (a request that landed here: the change is stored
// back, Resin's load/store). The store-back goes to both from here rather
// than to the owner for it to pass on: the owner would have to send to its
// backup from inside its message handler, on the reader of this node's
// connection, and store-backs going round the ring then wait on each other
// in a cycle that only the send timeout breaks.
func (p *backupPlacement) targets(id string) plan {
	r := p.ring.Load()
	local := p.m.local
	owner, b := r.holders(id)
	if owner == local {
		if b != "" {
			return plan{to: []membership.Member{r.members[b]}, owned: true}
		}
		return plan{owned: true}
	}
	to := []membership.Member{r.members[owner]}
	if b != "" && b != local {
		to = append(to, r.members[b])
	}
	return plan{to: to, borrowed: b != local}
}

// committing: the owner's change goes to its backup, which then holds it.
func (p *backupPlacement) committing(id string, pl plan) {
	if pl.owned && len(pl.to) > 0 {
		p.mu.Lock()
		p.backupAt[id] = pl.to[0].Name
		p.mu.Unlock()
	}
}

// committed: after this node committed a session it took over under its
// own route (Rebind, after the owner failed), the copies kept under the
// old id, on the old id's owner and that owner's backup, are nobody's now.
// A target of the change that holds the old id has renamed its copy
// instead. It runs on the request's goroutine, not in a message handler,
// which must never wait on another member.
func (p *backupPlacement) committed(ctx context.Context, d delta, pl plan) {
	if !pl.owned || d.Old == "" || len(pl.to) == 0 {
		return
	}
	m := p.m
	r := p.ring.Load()
	owner, b := r.holders(d.Old)
	var to []membership.Member
	for _, name := range []string{owner, b} {
		if name == "" || name == m.local || slices.ContainsFunc(to, func(mb membership.Member) bool { return mb.Name == name }) ||
			slices.ContainsFunc(pl.to, func(mb membership.Member) bool { return mb.Name == name }) {
			continue
		}
		to = append(to, r.members[name])
	}
	if err := m.broadcastTo(ctx, to, typeExpire, expire{ID: d.Old, Version: d.Version, Reason: "moved"}); err != nil {
		m.log.WithField("session", m.ref(d.Old)).WithError(err).Debug("old copies not dropped")
	}
}

// load fetches session id from its owner for a request that landed on
// this node (a non-sticky balancer): the owner's copy is the truth. If the
// owner cannot be reached (it died and membership has not noticed yet),
// the owner's backup is asked, and if this node is the backup, its copy is
// served rather than nothing.
func (p *backupPlacement) load(ctx context.Context, id string) (bool, error) {
	m := p.m
	if Route(id) == m.local {
		// This node is alive, so it owns what its route names. Until its
		// recovery ends, what it read back from disk may be older than
		// the backup's copy: wait for it rather than serve (and let a
		// write build on) the old one.
		select {
		case <-m.ready:
		case <-ctx.Done():
		}
		return false, nil
	}
	r := p.ring.Load()
	owner, backup := r.holders(id)
	if owner == m.local || owner == "" {
		return false, nil
	}
	in, err := m.fetch(ctx, r.members[owner], []string{id})
	unreachable := err != nil // the owner did not answer: it may hold it
	if err == nil && !in.answers(id) {
		// An owner that restarted (and lost it) or never got it: the
		// backup may still hold the session.
		err = fmt.Errorf("%s holds no copy", owner)
	}
	if err != nil {
		m.log.WithFields(logrus.Fields{"session": m.ref(id), "member": owner}).WithError(err).Debug("load from owner failed")
		b := backup
		if b == "" || b == m.local {
			if unreachable {
				return false, fmt.Errorf("owner %s did not answer: %w", owner, err)
			}
			return false, nil
		}
		var berr error
		if in, berr = m.fetch(ctx, r.members[b], []string{id}); berr != nil {
			m.log.WithFields(logrus.Fields{"session": m.ref(id), "member": b}).WithError(berr).Debug("load from the owner's backup failed")
			if unreachable {
				// Neither holder answered (this node is cut off, or both
				// are down): the session may well exist. Not "unknown":
				// the user is asked to come again, never handed a new one.
				return false, fmt.Errorf("owner %s and its backup %s did not answer: %w", owner, b, errors.Join(err, berr))
			}
			return false, nil
		}
	}
	m.stats.fetched.Add(1)
	if b := backup; b != "" && b != m.local && (in.Behind || m.lag.lagging(owner, m.clock.Now())) {
		// The owner is catching up (it, or a member, was cut off or
		// stopped), or keeps missing changes acknowledged without it (its
		// backup took them): the backup is asked too, the newest copy wins.
		if bin, err := m.fetch(ctx, r.members[b], []string{id}); err != nil {
			m.log.WithFields(logrus.Fields{"session": m.ref(id), "member": b}).WithError(err).Debug("check with the owner's backup failed")
		} else if !in.answers(id) {
			in = bin
		}
	}
	return in.answers(id), nil
}

// repairFrom: the owner, since the sender may have served one request for
// the session and kept no copy.
func (p *backupPlacement) repairFrom(id string, sender membership.Member) membership.Member {
	r := p.ring.Load()
	if o := r.owner(id); o != p.m.local {
		return r.members[o]
	}
	return sender
}

// renamed notes old in the ledger of renamed ids. A rename made here keeps
// the session's backup (the change that follows carries the old id to
// it); one that arrived by replication leaves this node no copy to track.
func (p *backupPlacement) renamed(old, new string, here bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.backupAt[old]
	delete(p.backupAt, old)
	if here && ok {
		p.backupAt[new] = b
	}
	now := p.m.clock.Now()
	p.moved[old] = now
	if len(p.moved)%1024 == 0 { // prune now and then: bounded by the renames of one timeout
		for id, at := range p.moved {
			if now.Sub(at) > p.m.cfg.SessionTimeout {
				delete(p.moved, id)
			}
		}
	}
}

func (p *backupPlacement) gone(id string) {
	p.mu.Lock()
	delete(p.backupAt, id)
	p.mu.Unlock()
}

// renamedAway lists the remembered renamed-away ids whose route is route.
func (p *backupPlacement) renamedAway(route string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for id := range p.moved {
		if Route(id) == route {
			out = append(out, id)
		}
	}
	return out
}

func (p *backupPlacement) period() time.Duration { return p.m.cfg.RebalanceInterval }

// step is the rebalance: it moves sessions when the ring changed. An owner
// whose backup changed copies its sessions to the new one; the backup of a
// node that is gone becomes the owner and copies them on; a node that is
// neither owner nor backup of a session drops it, after a grace period
// that lets the new backup receive its copy first.
func (p *backupPlacement) step(now time.Time) {
	m := p.m
	r := p.ring.Load()
	copies := map[string][]snapshot{}
	var drop []string
	m.mu.RLock()
	for id, s := range m.sessions {
		owner, backup := r.holders(id)
		s.mu.Lock()
		switch {
		case s.isNew || s.invalid:
		case owner == m.local:
			delete(p.orphaned, id)
			b := backup
			p.mu.Lock()
			at, known := p.backupAt[id]
			due := b != "" && at != b && !now.Before(p.retry[b].at)
			if due {
				p.backupAt[id] = b
			} else if !known {
				p.backupAt[id] = "" // owned, not copied yet
			}
			p.mu.Unlock()
			if !known {
				m.persist.changed(id) // taken over, or recovered: now this node's to keep
			}
			if due {
				copies[b] = append(copies[b], s.toSnapshot())
			}
		case backup == m.local:
			delete(p.orphaned, id)
		default:
			if since, ok := p.orphaned[id]; !ok {
				p.orphaned[id] = now
			} else if now.Sub(since) > m.cfg.OrphanGrace {
				drop = append(drop, id)
			}
		}
		s.mu.Unlock()
	}
	for id := range p.orphaned {
		// Forget what is dropped now or was removed meanwhile (a borrowed
		// copy, an expiry), so the map cannot grow and a later copy of the
		// same id starts a fresh grace period.
		if _, held := m.sessions[id]; !held || slices.Contains(drop, id) {
			delete(p.orphaned, id)
		}
	}
	m.mu.RUnlock()
	if len(drop) > 0 {
		m.mu.Lock()
		for _, id := range drop {
			m.forget(id)
		}
		m.mu.Unlock()
		m.stats.moved.Add(uint64(len(drop)))
	}
	for b, snaps := range copies {
		failed := p.copyTo(r.members[b], snaps)
		p.mu.Lock()
		if len(failed) == 0 {
			delete(p.retry, b)
			p.mu.Unlock()
			continue
		}
		// Copied again later, not at every step: a backup that does not
		// answer would otherwise get every session re-sent four times a
		// second.
		next := min(max(2*p.retry[b].delay, time.Second), 30*time.Second)
		p.retry[b] = backoff{at: now.Add(next), delay: next}
		for _, id := range failed {
			if p.backupAt[id] == b {
				p.backupAt[id] = ""
			}
		}
		p.mu.Unlock()
	}
}

// backoff is when copies to a backup that failed are tried again.
type backoff struct {
	at    time.Time
	delay time.Duration
}

// copyTo sends whole sessions to a member in batches; it returns the ids
// of the batches that failed.
func (p *backupPlacement) copyTo(to membership.Member, snaps []snapshot) (failed []string) {
	m := p.m
	for len(snaps) > 0 {
		n, size := 0, 0
		for n < len(snaps) && (n == 0 || size < m.cfg.TransferBatch) {
			size += 64 + len(snaps[n].ID)
			for k, v := range snaps[n].Attrs {
				size += len(k) + len(v)
			}
			n++
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
		err := m.push(ctx, to, snaps[:n])
		cancel()
		if err != nil {
			m.log.WithFields(logrus.Fields{"member": to.Name, "sessions": n}).WithError(err).Warn("copy to the backup failed; retrying later")
			for _, snap := range snaps[:n] {
				failed = append(failed, snap.ID)
			}
		} else {
			m.stats.copied.Add(uint64(n))
		}
		snaps = snaps[n:]
	}
	return failed
}
