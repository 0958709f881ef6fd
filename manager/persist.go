package manager

import (
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/internal/sessionlog"
)

// persister writes the sessions this node changes to its persist_dir,
// behind the requests: Commit only marks the session, a goroutine writes
// and fsyncs in batches, so a slow disk delays durability, never a
// response (Resin's write-behind persistence).
type persister struct {
	log   *sessionlog.Log
	mu    sync.Mutex
	dirty map[string]bool   // sessions to write
	gone  map[string]uint64 // sessions ended: tombstones to write, by version
	wake  chan struct{}
}

// lagWarn is the backlog past which the writer says it is falling behind.
const lagWarn = 10000

func openPersister(dir string) (*persister, error) {
	l, err := sessionlog.Open(dir, sessionlog.DefaultOptions())
	if err != nil {
		return nil, fmt.Errorf("manager: persist_dir: %w", err)
	}
	return &persister{log: l, dirty: map[string]bool{}, gone: map[string]uint64{}, wake: make(chan struct{}, 1)}, nil
}

func (p *persister) changed(id string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.dirty[id] = true
	delete(p.gone, id)
	p.mu.Unlock()
	p.signal()
}

func (p *persister) ended(id string, version uint64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.dirty, id)
	p.gone[id] = version
	p.mu.Unlock()
	p.signal()
}

func (p *persister) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// loadPersisted installs the sessions found on disk; what the other nodes
// hold is compared afterwards by version (the newest wins).
func (m *Manager) loadPersisted() {
	if m.persist == nil {
		return
	}
	n, bad := 0, 0
	for _, r := range m.persist.log.Records() {
		var snap snapshot
		if err := decode(r.Data, &snap); err != nil || snap.ID != r.ID {
			bad++
			continue
		}
		if _, ok := m.install(snap, false); ok {
			n++
		}
	}
	st := m.persist.log.Stats()
	m.log.WithFields(logrus.Fields{"sessions": n, "unreadable": bad, "truncated_bytes": st.TruncatedBytes}).Info("sessions read from disk")
}

// runPersist writes marked sessions every 100 ms (or sooner when woken),
// compacts the log now and then, and flushes once more on stop.
func (m *Manager) runPersist() {
	p := m.persist
	tick := m.clock.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	compact := m.clock.NewTicker(time.Minute)
	defer compact.Stop()
	for {
		select {
		case <-m.ctx.Done():
			m.writePersisted()
			if err := p.log.Close(); err != nil {
				m.log.WithError(err).Error("closing the session log")
			}
			return
		case <-p.wake:
		case <-tick.C():
		case <-compact.C():
			if err := p.log.Compact(); err != nil {
				m.log.WithError(err).Warn("compacting the session log failed")
			}
			continue
		}
		m.writePersisted()
	}
}

func (m *Manager) writePersisted() {
	p := m.persist
	p.mu.Lock()
	dirty, gone := p.dirty, p.gone
	p.dirty, p.gone = map[string]bool{}, map[string]uint64{}
	p.mu.Unlock()
	if len(dirty) == 0 && len(gone) == 0 {
		return
	}
	start := m.clock.Now()
	var errs int
	for id := range dirty {
		m.mu.RLock()
		s := m.sessions[id]
		m.mu.RUnlock()
		if s == nil {
			continue
		}
		s.mu.Lock()
		snap, version := s.toSnapshot(), s.version
		s.mu.Unlock()
		b, err := msgpack.Marshal(snap)
		if err == nil {
			err = p.log.Put(sessionlog.Record{ID: id, Version: version, Data: b})
		}
		if err != nil {
			errs++
		}
	}
	for id, v := range gone {
		if err := p.log.Put(sessionlog.Record{ID: id, Version: v + 1, Deleted: true}); err != nil {
			errs++
		}
	}
	if err := p.log.Flush(); err != nil {
		errs++
	}
	took := m.clock.Now().Sub(start)
	fields := logrus.Fields{"sessions": len(dirty), "ended": len(gone), "took": took.Round(time.Millisecond)}
	switch {
	case errs > 0:
		m.log.WithFields(fields).WithField("errors", errs).Error("writing sessions to disk failed")
	case len(dirty)+len(gone) > lagWarn || took > time.Second:
		m.log.WithFields(fields).Warn("session persistence is falling behind")
	}
}
