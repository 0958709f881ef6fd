package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/clock"
	"github.com/flockhq/flock/membership"
)

// Anti-entropy: two members compare what they hold and exchange what
// differs, in both directions. It runs when a member comes back as the same
// process (it missed what happened while it was away), when this node finds
// it was stalled itself, when a node that concluded it was alone sees a
// member, and in the background, one member every AntiEntropyInterval, so
// that any divergence (a lost last change, a member that missed a logout)
// lives at most a few intervals.
//
// A round is two steps. The asker sends one sum per bucket of ids (256
// buckets: a session's bucket is a hash of its id); the other answers which
// sums differ. For those buckets only, the asker sends its digest (id,
// version, origin, content hash per session; its tombstones) and the other
// answers with the copies of its own that win or that the asker lacks, its
// tombstones the asker lacks, and the ids whose asker copy wins, which the
// asker then pushes. Equal replicas cost 2 KiB a round.

const aeBuckets = 256

// maxDigestEntries bounds the entries of one digest request.
const maxDigestEntries = 2048

// digestEntry describes one session's copy.
type digestEntry struct {
	ID      string `msgpack:"i"`
	Version uint64 `msgpack:"v"`
	Origin  string `msgpack:"o"`
	Hash    uint64 `msgpack:"h"`
	// Unsure: a copy nobody acknowledged (a commit that got too few
	// copies). It takes part, or two members left holding different
	// unacknowledged copies would never compare them; any acknowledged
	// copy beats it.
	Unsure bool `msgpack:"u,omitempty"`
}

// digestRequest is one step of a round: Sums (first step), or the digest
// of Buckets (second step).
type digestRequest struct {
	Sums    []uint64      `msgpack:"s,omitempty"`
	Buckets []int         `msgpack:"b,omitempty"`
	Entries []digestEntry `msgpack:"e,omitempty"`
	Ended   []ended       `msgpack:"t,omitempty"`
}

// digestReply answers a digestRequest.
type digestReply struct {
	Differ   []int      `msgpack:"d,omitempty"`
	Sessions []snapshot `msgpack:"s,omitempty"`
	Ended    []ended    `msgpack:"e,omitempty"`
	Want     []string   `msgpack:"w,omitempty"`
	// More: the answer was cut at its size bound; ask again.
	More bool `msgpack:"m,omitempty"`
}

// FNV-1a, inline: a round hashes every session held, and the hash.Hash
// of hash/fnv allocates per call.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime64
	}
	return h
}

func fnvUint64(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h = (h ^ (v & 0xff)) * fnvPrime64
		v >>= 8
	}
	return h
}

func bucketOf(id string) int {
	h := uint32(fnvOffset32)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * fnvPrime32
	}
	return int(h % aeBuckets)
}

func entryHash(e digestEntry) uint64 {
	h := fnvString(fnvOffset64, e.ID)
	h = fnvUint64(h, e.Version)
	h = fnvString(h, e.Origin)
	h = fnvUint64(h, e.Hash)
	if e.Unsure {
		h = (h ^ 1) * fnvPrime64 // a copy in doubt never sums like an acknowledged one
	}
	return h
}

func tombHash(e ended) uint64 {
	h := uint64(fnvOffset64)
	h *= fnvPrime64 // a 0 byte first: tombstones never sum like sessions
	h = fnvString(h, e.ID)
	h = fnvUint64(h, e.Version)
	var x uint64
	if e.Invalidated {
		x = 1
	}
	if e.Moved {
		x |= 2 // nodes of the previous release never send it: their sums stay equal
	}
	return (h ^ x) * fnvPrime64
}

// digest is what this node holds of the sessions it shares with peer, in
// the given buckets (all, if buckets is nil).
type digest struct {
	entries map[string]digestEntry
	ended   map[string]ended
}

func (m *Manager) digestFor(peer string, buckets map[int]bool) digest {
	in := func(id string) bool {
		return (buckets == nil || buckets[bucketOf(id)]) && m.place.shares(id, peer)
	}
	d := digest{entries: make(map[string]digestEntry), ended: make(map[string]ended)}
	m.mu.RLock()
	all := make([]*Session, 0, len(m.sessions))
	for id, s := range m.sessions {
		if in(id) {
			all = append(all, s)
		}
	}
	m.mu.RUnlock()
	for _, s := range all {
		s.mu.Lock()
		if e, ok := s.digestEntry(); ok {
			d.entries[s.id] = e
		}
		s.mu.Unlock()
	}
	for _, e := range m.tombs.entries(in) {
		d.ended[e.ID] = e
	}
	return d
}

func (d digest) sums() []uint64 {
	sums := make([]uint64, aeBuckets)
	for _, e := range d.entries {
		sums[bucketOf(e.ID)] += entryHash(e)
	}
	for _, e := range d.ended {
		sums[bucketOf(e.ID)] += tombHash(e)
	}
	return sums
}

// sumsFor is digestFor(peer, nil).sums() without the digest: the first step
// of every round, the whole cost of a round between equal replicas.
func (m *Manager) sumsFor(peer string) []uint64 {
	sums := make([]uint64, aeBuckets)
	m.mu.RLock()
	all := make([]*Session, 0, len(m.sessions))
	for id, s := range m.sessions {
		if m.place.shares(id, peer) {
			all = append(all, s)
		}
	}
	m.mu.RUnlock()
	for _, s := range all {
		s.mu.Lock()
		if e, ok := s.digestEntry(); ok {
			sums[bucketOf(e.ID)] += entryHash(e)
		}
		s.mu.Unlock()
	}
	for _, e := range m.tombs.entries(func(id string) bool { return m.place.shares(id, peer) }) {
		sums[bucketOf(e.ID)] += tombHash(e)
	}
	return sums
}

// digestEntry describes s for a digest; s.mu must be held. A copy being
// committed takes no part until its commit settles; one nobody
// acknowledged takes part, marked.
func (s *Session) digestEntry() (digestEntry, bool) {
	if s.isNew || s.invalid || s.inFlight {
		return digestEntry{}, false
	}
	return digestEntry{ID: s.id, Version: s.version, Origin: s.origin, Hash: s.contentHash(), Unsure: s.unsure}, true
}

// beats reports whether copy a wins over copy b: an acknowledged copy over
// one in doubt, then the higher version, the greater origin, the greater
// content hash (as install decides).
func beats(a, b digestEntry) bool {
	switch {
	case a.Unsure != b.Unsure:
		return !a.Unsure
	case a.Version != b.Version:
		return a.Version > b.Version
	case a.Origin != b.Origin:
		return a.Origin > b.Origin
	}
	return a.Hash > b.Hash
}

// syncWith runs one anti-entropy round with peer and reports how many
// copies and tombstones moved either way.
func (m *Manager) syncWith(ctx context.Context, peer membership.Member) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	start := time.Now()
	var first digestReply
	if err := m.askDigest(ctx, peer, digestRequest{Sums: m.sumsFor(peer.Name)}, &first); err != nil {
		return 0, err
	}
	if len(first.Differ) == 0 {
		m.stats.aeRounds.Add(1)
		m.stats.aeNanos.Add(uint64(time.Since(start)))
		return 0, nil
	}
	mine := m.digestFor(peer.Name, nil)
	perBucket := make([]int, aeBuckets)
	for id := range mine.entries {
		perBucket[bucketOf(id)]++
	}
	for id := range mine.ended {
		perBucket[bucketOf(id)]++
	}
	moved := 0
	for len(first.Differ) > 0 {
		// As many differing buckets per request as fit (one at least).
		var req digestRequest
		n, entries := 0, 0
		for n < len(first.Differ) && (n == 0 || entries+perBucket[first.Differ[n]] <= maxDigestEntries) {
			b := first.Differ[n]
			if b < 0 || b >= aeBuckets {
				return moved, fmt.Errorf("manager: anti-entropy with %s: bucket %d out of range", peer.Name, b)
			}
			req.Buckets = append(req.Buckets, b)
			entries += perBucket[b]
			n++
		}
		first.Differ = first.Differ[n:]
		set := make(map[int]bool, len(req.Buckets))
		for _, b := range req.Buckets {
			set[b] = true
		}
		d := mine // the first pass sends what the round began with
		for round := 0; round < 64; round++ {
			if round > 0 {
				d = m.digestFor(peer.Name, set) // changed by the last answer
			}
			req.Entries, req.Ended = req.Entries[:0], req.Ended[:0]
			for _, e := range d.entries {
				if set[bucketOf(e.ID)] {
					req.Entries = append(req.Entries, e)
				}
			}
			for _, e := range d.ended {
				if set[bucketOf(e.ID)] {
					req.Ended = append(req.Ended, e)
				}
			}
			var rep digestReply
			if err := m.askDigest(ctx, peer, req, &rep); err != nil {
				return moved, err
			}
			m.receive(sessions{Sessions: rep.Sessions, Ended: rep.Ended})
			moved += len(rep.Sessions) + len(rep.Ended) + len(rep.Want)
			if err := m.pushIDs(ctx, peer, rep.Want); err != nil {
				return moved, err
			}
			if !rep.More {
				break
			}
		}
	}
	m.stats.aeRounds.Add(1)
	m.stats.aeMoved.Add(uint64(moved))
	m.stats.aeNanos.Add(uint64(time.Since(start)))
	return moved, nil
}

func (m *Manager) askDigest(ctx context.Context, peer membership.Member, req digestRequest, rep *digestReply) error {
	b, err := marshal(req)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	reply, err := m.c.Request(rctx, peer, typeDigest, b)
	if err != nil {
		return fmt.Errorf("manager: anti-entropy with %s: %w", peer.Name, err)
	}
	m.spokeWith(peer)
	return decode(reply, rep)
}

// pushIDs sends this node's copies of ids to peer, in batches.
func (m *Manager) pushIDs(ctx context.Context, peer membership.Member, ids []string) error {
	var batch []snapshot
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
		defer cancel()
		err := m.push(pctx, peer, batch)
		batch, size = nil, 0
		return err
	}
	for _, id := range ids {
		snap, ok := m.transferCopyOf(id)
		if !ok {
			continue
		}
		batch = append(batch, snap)
		if size += snapshotSize(snap); size >= m.cfg.TransferBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// handleDigest answers one step of another member's anti-entropy round.
func (m *Manager) handleDigest(ctx context.Context, msg cluster.Message) ([]byte, error) {
	if err := m.fromMember(ctx, msg.From); err != nil {
		return nil, err
	}
	var req digestRequest
	if err := decode(msg.Payload, &req); err != nil {
		return nil, err
	}
	peer := msg.From.Name
	if req.Sums != nil {
		if len(req.Sums) != aeBuckets {
			return nil, fmt.Errorf("manager: digest of %d buckets; want %d", len(req.Sums), aeBuckets)
		}
		mine := m.sumsFor(peer)
		var rep digestReply
		for b := range aeBuckets {
			if mine[b] != req.Sums[b] {
				rep.Differ = append(rep.Differ, b)
			}
		}
		return marshal(rep)
	}
	if len(req.Buckets) > aeBuckets || len(req.Entries)+len(req.Ended) > 4*maxDigestEntries {
		return nil, errors.New("manager: digest too large")
	}
	set := make(map[int]bool, len(req.Buckets))
	for _, b := range req.Buckets {
		if b < 0 || b >= aeBuckets {
			return nil, fmt.Errorf("manager: digest bucket %d out of range", b)
		}
		set[b] = true
	}
	// The asker's tombstones apply here as if their ends were heard.
	for _, e := range req.Ended {
		if set[bucketOf(e.ID)] {
			m.ended(e, true)
		}
	}
	mine := m.digestFor(peer, set)
	var rep digestReply
	size := 0
	give := func(id string) {
		if rep.More {
			return
		}
		snap, ok := m.transferCopyOf(id)
		if !ok {
			return
		}
		rep.Sessions = append(rep.Sessions, snap)
		if size += snapshotSize(snap); size >= m.cfg.TransferBatch {
			rep.More = true
		}
	}
	seen := make(map[string]bool, len(req.Entries)+len(req.Ended))
	for _, e := range req.Entries {
		if !set[bucketOf(e.ID)] || !ValidID(e.ID) {
			continue
		}
		seen[e.ID] = true
		if own, ok := mine.entries[e.ID]; ok {
			switch {
			case own == e:
			case beats(own, e):
				give(e.ID)
			default:
				rep.Want = append(rep.Want, e.ID)
			}
			continue
		}
		if t, ok := mine.ended[e.ID]; ok && (tomb{Version: t.Version, Invalidated: t.Invalidated, Moved: t.Moved}).wins(e.Version) {
			rep.Ended = append(rep.Ended, t)
			continue
		}
		rep.Want = append(rep.Want, e.ID)
	}
	for _, e := range req.Ended {
		seen[e.ID] = true
	}
	for id := range mine.entries {
		if !seen[id] {
			give(id)
		}
	}
	for id, t := range mine.ended {
		if !seen[id] {
			rep.Ended = append(rep.Ended, t)
		}
	}
	return marshal(rep)
}

// runAntiEntropy runs the rounds: at once with a member named on kick,
// with the members marked behind until a round with each succeeded, and
// one member every AntiEntropyInterval, in turn.
func (m *Manager) runAntiEntropy() {
	interval := m.cfg.AntiEntropyInterval
	period := interval
	if m.cfg.StallAfter > 0 && (period <= 0 || m.cfg.StallAfter/2 < period) {
		period = m.cfg.StallAfter / 2 // how soon a failed catch-up is tried again
	}
	var tick clock.Ticker // nil: no background rounds
	if period > 0 {
		tick = m.clock.NewTicker(period)
		defer tick.Stop()
	}
	lastRound := m.clock.Now()
	next := 0
	for {
		var ticks <-chan time.Time
		if tick != nil {
			ticks = tick.C() // each time: the fake clock counts a waiter by it
		}
		select {
		case <-m.ctx.Done():
			return
		case name := <-m.aeKick:
			m.syncNamed(name)
			m.aeBusy.Add(-1) // taken by kickSync
		case <-m.aeWake:
			m.catchUp()
			m.aeBusy.Add(-1) // taken by wakeCatchUp
		case <-ticks:
			m.catchUp()
			now := m.clock.Now()
			if interval > 0 && now.Sub(lastRound) >= interval {
				lastRound = now
				if ms := m.members(); len(ms) > 0 {
					next = (next + 1) % len(ms)
					m.syncOne(ms[next])
				}
			}
		}
	}
}

// runStallWatch watches for this node's own stalls: a process that did not
// run for longer than StallAfter (SIGSTOP, a VM or GC pause) missed what
// the others did, and catches up with every member before it trusts its
// copies again. It does nothing else, so that time spent on work (a long
// anti-entropy round) is never taken for a stall.
func (m *Manager) runStallWatch() {
	tick := m.clock.NewTicker(m.cfg.StallAfter / 2)
	defer tick.Stop()
	last := m.clock.Now()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C():
			// Now, not the tick's time: a tick taken late is the stall.
			now := m.clock.Now()
			if gap := now.Sub(last); gap > m.cfg.StallAfter {
				m.stats.stalls.Add(1)
				m.log.WithField("stalled", gap.Round(time.Millisecond)).Warn("this node did not run for a while; catching up with every member before serving from its copies")
				m.markAllBehind()
				m.wakeCatchUp()
			}
			last = now
		}
	}
}

// wakeCatchUp asks the anti-entropy loop for a catch-up; it never blocks.
func (m *Manager) wakeCatchUp() {
	m.aeBusy.Add(1)
	select {
	case m.aeWake <- struct{}{}:
	default:
		m.aeBusy.Add(-1) // one is pending already
	}
}

// catchUp runs a round with each member marked behind.
func (m *Manager) catchUp() {
	for _, mb := range m.behindMembers() {
		m.syncOne(mb)
	}
}

func (m *Manager) syncNamed(name string) {
	for _, mb := range m.members() {
		if mb.Name == name {
			m.syncOne(mb)
			return
		}
	}
}

func (m *Manager) syncOne(mb membership.Member) {
	m.aeBusy.Add(1)
	defer m.aeBusy.Add(-1)
	gen, marked := m.behindMark(mb.Name)
	n, err := m.syncWith(m.ctx, mb)
	log := m.log.WithFields(logrus.Fields{"member": mb.Name, "moved": n})
	switch {
	case err != nil && m.ctx.Err() == nil:
		m.stats.aeFailures.Add(1)
		if marked {
			log.WithError(err).Info("catching up with a member failed; trying again")
		} else {
			log.WithError(err).Debug("anti-entropy round failed")
		}
		return
	case n > 0:
		log.Info("anti-entropy repaired copies")
	}
	if marked && err == nil && m.caughtUp(mb.Name, gen) {
		log.Info("caught up with member")
	}
}

// kickSync asks for a round with the member called name; it never blocks
// (a full queue drops the ask: the background rounds come anyway).
func (m *Manager) kickSync(name string) {
	m.aeBusy.Add(1) // until the round ran: a test waiting for quiet sees it
	select {
	case m.aeKick <- name:
	default:
		m.aeBusy.Add(-1)
	}
}

// CatchingUp reports whether this node is bringing its copies up to date
// with every member (after a stall, or a partition that cut it off): a
// load balancer should send it no users meanwhile. Behind some members
// only, it still serves, checking each session with them first (Load).
func (m *Manager) CatchingUp() bool { return m.behindAll.Load() }
