package manager

import (
	"sync"
	"time"
)

// Aliases: a session whose route was rewritten after a failover keeps
// answering to its old id for a session timeout, on every node that
// heard of the rename, so a second tab, a request already in flight or a
// client that ignored the new cookie finds it instead of a new empty
// session; the valve then sends the new cookie.

// maxAliases bounds the aliases kept; past it the oldest go first.
const maxAliases = 1 << 18

type aliases struct {
	mu    sync.Mutex
	keep  time.Duration
	to    map[string]alias
	order []string // old ids in the order added
}

type alias struct {
	id    string
	until time.Time
}

func (a *aliases) init(keep time.Duration) {
	a.keep = keep
	a.to = make(map[string]alias)
}

// add records that old is now called id, if id is old's rebindID (a
// failover rewrite). A new random part (RenewID after a login) gets no
// alias: an id planted before the login must stay worthless.
func (a *aliases) add(old, id string, now time.Time) {
	if old == "" || old == id || rebindID(old, Route(id)) != id {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, had := a.to[old]; !had {
		a.order = append(a.order, old)
	}
	a.to[old] = alias{id: id, until: now.Add(a.keep)}
	for len(a.order) > 0 {
		first := a.order[0]
		al, ok := a.to[first]
		if ok && now.Before(al.until) && len(a.to) <= maxAliases {
			break
		}
		a.order = a.order[1:]
		if ok && (!now.Before(al.until) || len(a.to) > maxAliases) {
			delete(a.to, first)
		}
	}
}

// resolve follows old to the id it lives on as now (at most a few renames
// deep: RenewID after a failover rename); "" if it has none.
func (a *aliases) resolve(old string, now time.Time) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := ""
	for range 4 {
		al, ok := a.to[old]
		if !ok || now.After(al.until) {
			break
		}
		id, old = al.id, al.id
	}
	return id
}

// len is the number of aliases kept.
func (a *aliases) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.to)
}
