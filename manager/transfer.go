package manager

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/membership"
)

// transferState tracks the state transfer of a joining node.
type transferState struct {
	mu    sync.Mutex
	phase string // "pending", "running", "done", "timed out", "none" (no members)
}

func (t *transferState) set(p string) {
	t.mu.Lock()
	t.phase = p
	t.mu.Unlock()
}

func (t *transferState) state() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.phase == "" {
		return "pending"
	}
	return t.phase
}

func (m *Manager) transferred() bool {
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}

// runTransfer asks the oldest member for all its sessions, streamed in
// batches, and installs each batch as it arrives: changes that arrive in the
// meantime are kept by version, so nothing stops while it runs.
func (m *Manager) runTransfer() {
	defer close(m.ready)
	wait, cancelWait := context.WithTimeout(m.ctx, m.cfg.JoinWait)
	ms := m.awaitMembers(wait, nil)
	cancelWait()
	if m.ctx.Err() != nil {
		return
	}
	if len(ms) == 0 {
		m.transfer.set("none")
		return
	}
	if m.cfg.StateTransferTimeout <= 0 {
		m.transfer.set("skipped")
		return
	}
	if m.cfg.Mode == ModeBackup {
		// Recovery asks every member, not just the first heard of: let the
		// view settle (the others answer a newcomer's heartbeat at once).
		m.recover(m.settleMembers(ms))
		return
	}
	from := oldest(ms)
	m.transfer.set("running")
	start := time.Now()
	log := m.log.WithField("member", from.Name)
	log.Info("state transfer started")
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	ch, done, err := m.request(ctx, from, typeState, func(req uint64) any { return stateRequest{Req: req} })
	if err != nil {
		m.stats.timeouts.Add(1)
		m.transfer.set("failed")
		log.WithError(err).Warn("state transfer request failed; serving what arrives by replication")
		return
	}
	defer done()
	n := 0
	for {
		select {
		case in := <-ch:
			n += len(in.Sessions)
			if !in.Last {
				continue
			}
			d := time.Since(start)
			m.stats.transferSessions.Add(uint64(n))
			m.stats.transferNanos.Store(uint64(d))
			m.transfer.set("done")
			log.WithFields(logrus.Fields{"sessions": n, "took": d.Round(time.Millisecond)}).Info("state transfer done")
			return
		case <-ctx.Done():
			if m.ctx.Err() != nil {
				return
			}
			m.stats.timeouts.Add(1)
			m.transfer.set("timed out")
			log.WithFields(logrus.Fields{"sessions": n, "timeout": m.cfg.StateTransferTimeout}).Warn("state transfer timed out; serving what arrived")
			return
		}
	}
}

// awaitMembers returns the members; while there are none, it waits for
// the first to appear until ctx ends or done is closed.
func (m *Manager) awaitMembers(ctx context.Context, done <-chan struct{}) []membership.Member {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ms := m.members(); len(ms) > 0 {
			return ms
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case <-tick.C:
		}
	}
}

// handleState streams every session to a joining member, in batches of at
// most TransferBatch bytes, each acknowledged before the next is built, so
// neither side ever holds more than a batch in flight.
func (m *Manager) handleState(ctx context.Context, msg flock.Message) error {
	var r stateRequest
	if err := decode(msg.Payload, &r); err != nil {
		return err
	}
	to := msg.From
	m.spawn(func() { m.streamSessions(to, r.Req, r.Route) })
	return nil
}

func (m *Manager) streamSessions(to membership.Member, req uint64, route string) {
	m.mu.RLock()
	all := make([]*Session, 0, len(m.sessions))
	for id, s := range m.sessions {
		if route == "" || Route(id) == route {
			all = append(all, s)
		}
	}
	m.mu.RUnlock()

	send := func(batch sessions) bool {
		b, err := msgpack.Marshal(batch)
		if err != nil {
			m.log.WithError(err).Error("encode state batch")
			return false
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
		defer cancel()
		if err := m.c.Send(ctx, []membership.Member{to}, typeSessions, b, flock.Sync); err != nil {
			m.log.WithField("member", to.Name).WithError(err).Warn("state transfer to member failed")
			return false
		}
		return true
	}
	batch := sessions{Req: req}
	size := 0
	for _, s := range all {
		s.mu.Lock()
		if s.invalid || s.isNew {
			s.mu.Unlock()
			continue // new sessions reach the member by their first commit
		}
		snap := s.toSnapshot()
		s.mu.Unlock()
		batch.Sessions = append(batch.Sessions, snap)
		size += 64 + len(snap.ID)
		for k, v := range snap.Attrs {
			size += len(k) + len(v) + 8
		}
		if size >= m.cfg.TransferBatch {
			if !send(batch) {
				return
			}
			batch, size = sessions{Req: req}, 0
		}
	}
	batch.Last = true
	if route != "" {
		batch.Moved = m.movedFor(route)
	}
	if send(batch) {
		m.log.WithFields(logrus.Fields{"member": to.Name, "sessions": len(all)}).Info("sent sessions to a joining member")
	}
}

// recover is backup mode's start: a node holds only what it owns, so it
// asks every member for the sessions whose id names it (a restart under the
// same name: the backup, or the node that took them over, has them) and
// keeps, for each, the newest version (Resin's recovery).
func (m *Manager) recover(ms []membership.Member) {
	m.transfer.set("running")
	start := time.Now()
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	type answer struct {
		n   int
		err error
	}
	results := make(chan answer, len(ms))
	for _, mb := range ms {
		go func() {
			ch, done, err := m.request(ctx, mb, typeState, func(req uint64) any { return stateRequest{Req: req, Route: m.local} })
			if err != nil {
				results <- answer{err: err}
				return
			}
			defer done()
			n := 0
			for {
				select {
				case in := <-ch:
					n += len(in.Sessions)
					if in.Last {
						results <- answer{n: n}
						return
					}
				case <-ctx.Done():
					results <- answer{n: n, err: ctx.Err()}
					return
				}
			}
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
	d := time.Since(start)
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

// settleMembers waits until the member list has not grown for 100 ms (at
// most JoinWait) and returns it.
func (m *Manager) settleMembers(ms []membership.Member) []membership.Member {
	const quiet = 100 * time.Millisecond
	deadline := time.Now().Add(max(m.cfg.JoinWait, quiet))
	last, since := len(ms), time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) && time.Since(since) < quiet {
		select {
		case <-m.ctx.Done():
			return ms
		case <-tick.C:
		}
		if cur := m.members(); len(cur) != last {
			ms, last, since = cur, len(cur), time.Now()
		}
	}
	return ms
}
