package manager

import (
	"sync"
	"time"
)

// transferState tracks how a starting node brings its copies up to date:
// delta mode's state transfer, backup mode's recovery.
type transferState struct {
	mu    sync.Mutex
	phase string // "pending", "running", "done", "timed out", "failed", "skipped", "none" (no members)
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

// runStart waits up to JoinWait for the first member (membership hears of
// the others only after the cluster started) and has the placement bring
// this node up to date from the members; Ready is closed after.
func (m *Manager) runStart() {
	defer close(m.ready)
	ms := m.members()
	if len(ms) == 0 && m.cfg.JoinWait > 0 {
		ms = m.awaitMembers(m.ctx, nil, m.clock.After(m.cfg.JoinWait))
	}
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
	m.place.start(ms)
}

// every runs f every d on the manager's clock until Stop.
func (m *Manager) every(d time.Duration, f func(now time.Time)) {
	tick := m.clock.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-tick.C():
			f(now)
		}
	}
}
