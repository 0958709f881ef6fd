package manager

import (
	"sync"
	"time"

	"github.com/flockhq/flock/membership"
)

// A member that keeps failing sync commits (slow but alive: it answers
// probes, so membership keeps it) would make every write wait the send
// timeout. After lagAfter commits in a row that it did not take in time,
// it is lagging for lagFor: commits still send it every change, but do not
// wait for it (anti-entropy repairs what it misses), as long as enough other
// members remain to satisfy the sync rule. When lagFor ends it is waited
// for again, and one more miss makes it lag again.
const (
	lagAfter = 3
	lagFor   = 10 * time.Second
)

type lag struct {
	mu     sync.Mutex
	misses map[string]int
	until  map[string]time.Time
}

func (l *lag) init() {
	l.misses = make(map[string]int)
	l.until = make(map[string]time.Time)
}

// split divides to into the members to wait for and those lagging, keeping
// at least need members to wait for.
func (l *lag) split(to []membership.Member, need int, now time.Time) (wait, lagging []membership.Member) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.until) == 0 {
		return to, nil // the usual case, on every commit: nobody set aside
	}
	for _, mb := range to {
		if now.Before(l.until[mb.Name]) {
			lagging = append(lagging, mb)
		} else {
			wait = append(wait, mb)
		}
	}
	for len(wait) < need && len(lagging) > 0 {
		wait, lagging = append(wait, lagging[0]), lagging[1:]
	}
	return wait, lagging
}

// record notes which of the waited-for members missed a commit; it reports
// the members that start lagging now.
func (l *lag) record(waited, failed []membership.Member, now time.Time) (started []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(failed) == 0 && len(l.misses) == 0 && len(l.until) == 0 {
		return nil // the usual case, on every commit: nothing to note or forgive
	}
	missed := make(map[string]bool, len(failed))
	for _, f := range failed {
		missed[f.Name] = true
	}
	for _, mb := range waited {
		if !missed[mb.Name] {
			delete(l.misses, mb.Name)
			delete(l.until, mb.Name)
			continue
		}
		if now.Before(l.until[mb.Name]) {
			continue // lagging already (commits that were on their way when it began)
		}
		l.misses[mb.Name]++
		if l.misses[mb.Name] >= lagAfter {
			l.until[mb.Name] = now.Add(lagFor)
			l.misses[mb.Name] = lagAfter - 1 // after lagFor, one more miss is enough
			started = append(started, mb.Name)
		}
	}
	return started
}

// forget drops what is known of a member that left the view.
func (l *lag) forget(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.misses, name)
	delete(l.until, name)
}

// lagging reports whether name is set aside now: it may lack changes that
// were acknowledged without it.
func (l *lag) lagging(name string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.until[name])
}
