package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/membership"
)

// Asking another member for sessions: each question is one cluster request,
// answered by the member's handler on its reader of this node's connection
// (the answer rides the acknowledgement), so an answer can only ever arrive
// for a question asked, and a member that dies mid-answer fails the request
// within its deadline.

// errNotReady answers a fetch on a node that has not caught up yet.
var errNotReady = errors.New("manager: not ready: still catching up with the members")

// maxFetch bounds the ids of one fetch.
const maxFetch = 1024

// fetch asks a member for sessions by id, installs what it answers and
// returns the answer.
func (m *Manager) fetch(ctx context.Context, from membership.Member, ids []string) (sessions, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	in, err := m.ask(ctx, from, typeFetch, fetch{IDs: ids})
	if err != nil {
		return sessions{}, fmt.Errorf("manager: fetch from %s: %w", from.Name, err)
	}
	return in, nil
}

// pull asks a member for all its sessions (those whose id names route, if
// route is set), a page of at most TransferBatch bytes at a time, installs
// each page as it arrives and returns how many sessions came, once the last
// page has arrived or ctx ended. One page is in flight at a time, so neither
// side ever holds more than one.
func (m *Manager) pull(ctx context.Context, from membership.Member, route string) (int, error) {
	n, after := 0, ""
	for {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
		page, err := m.ask(rctx, from, typeState, stateRequest{Route: route, After: after, Limit: m.cfg.TransferBatch})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return n, fmt.Errorf("manager: pull from %s: %w", from.Name, err)
		}
		n += len(page.Sessions)
		if page.Last {
			return n, nil
		}
		if page.Next <= after {
			return n, fmt.Errorf("manager: pull from %s: page after %q does not move on", from.Name, m.ref(after))
		}
		after = page.Next
	}
}

// ask sends question to a member and installs the sessions it answers.
func (m *Manager) ask(ctx context.Context, to membership.Member, t cluster.MessageType, question any) (sessions, error) {
	b, err := msgpack.Marshal(question)
	if err != nil {
		return sessions{}, fmt.Errorf("encode: %w", err)
	}
	m.stats.sent.Add(1)
	reply, err := m.c.Request(ctx, to, t, b)
	if err != nil {
		m.stats.sendFailures.Add(1)
		return sessions{}, err
	}
	m.spokeWith(to)
	m.confirm(to)
	var in sessions
	if err := decode(reply, &in); err != nil {
		return sessions{}, err
	}
	m.stats.received.Add(1)
	m.receive(in)
	return in, nil
}

// receive applies the tombstones, installs whole sessions and forgets the
// ids renamed away. It returns the sessions not installed because this
// node holds another copy that beats them.
func (m *Manager) receive(in sessions) (beaten []string) {
	for _, e := range in.Ended {
		m.ended(e, true)
	}
	for _, snap := range in.Sessions {
		if s, ok := m.install(snap, true); !ok && s != nil {
			s.mu.Lock()
			same := s.version == snap.Version && s.origin == snap.Origin
			s.mu.Unlock()
			if !same {
				beaten = append(beaten, snap.ID)
			}
		}
	}
	// An id renamed away whose end came along carries the rename's
	// version, and ended has settled it: a copy written under the old id
	// after the rename stays. An id that comes bare (an earlier release's
	// page, or a tombstone that timed out) drops the copy as before.
	if len(in.Moved) > 0 {
		settled := make(map[string]bool, len(in.Ended))
		for _, e := range in.Ended {
			settled[e.ID] = true
		}
		m.dropRenamed(slices.DeleteFunc(in.Moved, func(id string) bool { return settled[id] }))
	}
	return beaten
}

// push sends whole sessions to a member, which installs those newer than
// its own.
func (m *Manager) push(ctx context.Context, to membership.Member, snaps []snapshot) error {
	b, err := msgpack.Marshal(sessions{Sessions: snaps, Last: true})
	if err != nil {
		return fmt.Errorf("manager: encode: %w", err)
	}
	return m.c.Send(ctx, []membership.Member{to}, typeSessions, b, cluster.Ack)
}

// handleSessions receives whole sessions pushed by a member: backup
// mode's copies, a whole copy for a member that lacked a change's base, a
// stand-in's copy. Answers to this node's own requests (state, fetch)
// never come this way: they ride the request's acknowledgement, so they
// can only answer a question asked. A push is taken only from a member
// that has answered a round trip (see confirm.go).
func (m *Manager) handleSessions(ctx context.Context, msg cluster.Message) ([]byte, error) {
	if err := m.fromMember(ctx, msg.From); err != nil {
		return nil, err
	}
	if err := m.awaitConfirmed(ctx, msg.From); err != nil {
		return nil, err
	}
	var in sessions
	if err := decode(msg.Payload, &in); err != nil {
		return nil, err
	}
	m.stats.received.Add(1)
	if beaten := m.receive(in); in.Must && len(beaten) > 0 {
		return nil, fmt.Errorf("%s: %d sessions not installed, a copy here beats them (first %s)", refusedConflict, len(beaten), m.ref(beaten[0]))
	}
	return nil, nil
}

// handleFetch answers a request for sessions by id.
func (m *Manager) handleFetch(ctx context.Context, msg cluster.Message) ([]byte, error) {
	if err := m.fromMember(ctx, msg.From); err != nil {
		return nil, err
	}
	var f fetch
	if err := decode(msg.Payload, &f); err != nil {
		return nil, err
	}
	if len(f.IDs) > maxFetch {
		return nil, fmt.Errorf("manager: fetch of %d sessions; at most %d", len(f.IDs), maxFetch)
	}
	if !m.transferred() {
		// A node still catching up (state transfer, an owner's recovery)
		// would answer "not held" for sessions it is about to get: the
		// asker is sent to another member instead of creating afresh.
		return nil, errNotReady
	}
	out := sessions{Last: true, Behind: m.behindN.Load() > 0}
	m.mu.RLock()
	for _, id := range f.IDs {
		if s := m.sessions[id]; s != nil {
			s.mu.Lock()
			snap := s.toSnapshot()
			// Nobody acknowledged it (yet): it goes marked so, and the
			// asker settles it with the other holders before serving it.
			snap.Unsure = s.private()
			s.mu.Unlock()
			out.Sessions = append(out.Sessions, snap)
		} else if tb, ok := m.tombs.get(id); ok {
			out.Ended = append(out.Ended, tb.ended(id))
		} else {
			out.Missing = append(out.Missing, id)
		}
	}
	m.mu.RUnlock()
	return encodeReply(out)
}

// handleState answers one page of a pull: the sessions after r.After in id
// order, up to r.Limit bytes (and never more than this node's own
// TransferBatch, so a page always fits in a frame).
func (m *Manager) handleState(ctx context.Context, msg cluster.Message) ([]byte, error) {
	if err := m.fromMember(ctx, msg.From); err != nil {
		return nil, err
	}
	var r stateRequest
	if err := decode(msg.Payload, &r); err != nil {
		return nil, err
	}
	limit := m.cfg.TransferBatch
	if r.Limit > 0 && r.Limit < limit {
		limit = r.Limit
	}
	want := func(id string) bool { return id > r.After && (r.Route == "" || Route(id) == r.Route) }
	m.mu.RLock()
	ids := make([]string, 0, len(m.sessions))
	for id := range m.sessions {
		if want(id) {
			ids = append(ids, id)
		}
	}
	m.mu.RUnlock()
	// The tombstones go with the sessions, in the same id order, so a
	// session that ends while the pull runs cannot come back on the puller.
	ends := make(map[string]ended)
	for _, e := range m.tombs.entries(want) {
		ends[e.ID] = e
		ids = append(ids, e.ID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	page := sessions{}
	size := 0
	for i, id := range ids {
		if size >= limit {
			page.Next = ids[i-1]
			return encodeReply(page)
		}
		if e, ok := ends[id]; ok {
			page.Ended = append(page.Ended, e)
			size += 32 + len(id)
		}
		snap, ok := m.transferCopyOf(id)
		if !ok {
			continue // ended or gone since the ids were taken, or not replicated yet
		}
		page.Sessions = append(page.Sessions, snap)
		size += snapshotSize(snap)
	}
	page.Last = true
	if r.Route != "" {
		page.Moved = m.place.renamedAway(r.Route)
	}
	return encodeReply(page)
}

// copyOf is a whole copy of session id to send another member, unless
// this node does not hold it, it ended, or it is new (a new session reaches
// the others by its first commit).
func (m *Manager) copyOf(id string) (snapshot, bool) {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return snapshot{}, false
	}
	return s.shared()
}

// transferCopyOf is copyOf for a state transfer: a copy not acknowledged
// (yet) goes too, marked Unsure, since a joiner that lacked the session
// would answer its user's next request with a new one.
func (m *Manager) transferCopyOf(id string) (snapshot, bool) {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return snapshot{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid || s.isNew {
		return snapshot{}, false
	}
	snap := s.toSnapshot()
	snap.Unsure = s.private()
	return snap, true
}

// shared is a whole copy of s, unless it ended, was never replicated, or
// holds a change nobody acknowledged (yet).
func (s *Session) shared() (snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid || s.isNew || s.private() {
		return snapshot{}, false
	}
	return s.toSnapshot(), true
}

// committing is a whole copy of s for its own commit to send (in flight,
// so not shared), unless it ended meanwhile.
func (s *Session) committing() (snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return snapshot{}, false
	}
	return s.toSnapshot(), true
}

// snapshotSize estimates a snapshot's encoded bytes.
func snapshotSize(s snapshot) int {
	size := 64 + len(s.ID) + len(s.Origin) + len(s.AccessedBy)
	for k, v := range s.Attrs {
		size += len(k) + len(v) + 8
	}
	return size
}

func encodeReply(out sessions) ([]byte, error) {
	b, err := msgpack.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("manager: encode sessions: %w", err)
	}
	return b, nil
}
