package manager

import (
	"context"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
)

// runExpiry sweeps for expired sessions every ExpireInterval, looking at no
// more than ExpireBatch sessions per tick, so a node with a million sessions
// spreads the work instead of stalling on it.
func (m *Manager) runExpiry() {
	var queue []string // ids still to look at in this round
	m.every(m.cfg.ExpireInterval, func(now time.Time) {
		if len(queue) == 0 {
			m.mu.RLock()
			queue = make([]string, 0, len(m.sessions))
			for id := range m.sessions {
				queue = append(queue, id)
			}
			m.mu.RUnlock()
		}
		m.tombs.prune(now)
		n := min(len(queue), m.cfg.ExpireBatch)
		m.expire(now, queue[:n])
		queue = queue[n:]
	})
}

func (m *Manager) expire(now time.Time, ids []string) {
	for _, id := range ids {
		m.mu.Lock()
		s := m.sessions[id]
		if s == nil {
			m.mu.Unlock()
			continue
		}
		s.mu.Lock()
		if !s.expiredAt(now, m.local) {
			s.mu.Unlock()
			m.mu.Unlock()
			continue
		}
		s.invalid = true
		primary := s.accessedBy == m.local
		version := s.version
		s.mu.Unlock()
		m.forget(id)
		m.mu.Unlock()
		m.stats.expired.Add(1)
		m.tombs.add(id, ended{Version: version}, now)
		m.persist.ended(id, version)
		m.fire(false, func(l Listener) {
			if l.Destroyed != nil {
				l.Destroyed(id, "expired", false)
			}
		})
		// The node that served the session last tells the others; the
		// rest expire their copies on their own, a little later.
		if primary {
			b, err := msgpack.Marshal(expire{ID: id, Version: version, Reason: "expired"})
			if err == nil {
				ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
				err = m.c.Broadcast(ctx, typeExpire, b, cluster.Async)
				cancel()
			}
			if err != nil {
				m.log.WithField("session", m.ref(id)).WithError(err).Debug("expiry not replicated")
			}
		}
	}
}

// runTouches sends, every TouchInterval, one message with the last-access
// times of the sessions this node served without changing them, so no copy
// expires while the session is in use elsewhere, at the cost of one
// message per interval instead of one per request.
func (m *Manager) runTouches() {
	m.every(m.cfg.TouchInterval, func(time.Time) {
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
		m.sendTouches(ctx)
		cancel()
	})
}

func (m *Manager) sendTouches(ctx context.Context) {
	m.mu.Lock()
	if len(m.touched) == 0 {
		m.mu.Unlock()
		return
	}
	t := touch{By: m.local, Entries: make([]touchEntry, 0, len(m.touched))}
	for id := range m.touched {
		if s := m.sessions[id]; s != nil {
			s.mu.Lock()
			t.Entries = append(t.Entries, touchEntry{ID: id, Access: unixNano(s.lastAccess)})
			s.mu.Unlock()
		}
	}
	clear(m.touched)
	m.mu.Unlock()
	const chunk = 10000 // keeps one message well under max_frame
	for len(t.Entries) > 0 {
		n := min(len(t.Entries), chunk)
		b, err := msgpack.Marshal(touch{By: t.By, Entries: t.Entries[:n]})
		if err == nil {
			err = m.c.Broadcast(ctx, typeTouch, b, cluster.Async)
		}
		if err != nil {
			m.log.WithError(err).Debug("touch batch not replicated")
		}
		t.Entries = t.Entries[n:]
	}
}
