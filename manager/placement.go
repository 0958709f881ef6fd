package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/flockhq/flock/membership"
)

// The modes: how sessions are spread over the nodes.
const (
	// ModeDelta (Tomcat's DeltaManager): every node holds every session.
	ModeDelta = "delta"
	// ModeBackup (Tomcat's BackupManager, Resin's clustered sessions): each
	// session lives on its owner and one backup.
	ModeBackup = "backup"
)

// Backup mode's placements: where a session's backup is.
const (
	// PlacementRendezvous: the member of highest rendezvous weight for the
	// session's id, in another zone when there is one (see ring.holders).
	PlacementRendezvous = "rendezvous"
	// PlacementRing: the next member by name after the owner, for every
	// session of that owner; what releases before rendezvous placement
	// did. A cluster rolling up from one of them keeps it until every
	// node runs this release: nodes that disagree on where a session's
	// backup is can fork it.
	PlacementRing = "ring"
)

// placement is what differs between the modes: which nodes hold a session,
// where its changes go and where a missing copy comes from. The core
// (sessions, versions, expiry, touches, listeners, persistence, the rules
// that apply and install changes) is the same for both. An implementation
// keeps whatever state its mode needs; the core never looks at it.
//
// Methods may be called concurrently, except members (one at a time, in
// order) and step (one at a time). Locks: members runs under the view's
// lock; gone and renamed under m.mu; an implementation's own locks are
// taken last and never held while calling back into the core.
type placement interface {
	// start brings this node's copies up to date once Start has found
	// members (ms, not empty): delta mode's state transfer from the oldest
	// member, backup mode's recovery of owned sessions from every member.
	// It sets the transfer state and returns when done; Ready is closed
	// after it.
	start(ms []membership.Member)
	// members is told of every change of the member view, with the event
	// that made it (the members Start found are told as Joined) and the
	// new view (the other members, sorted by name; not to be modified).
	// It runs on the cluster's event goroutine and must not block.
	members(e membership.Event, view []membership.Member)
	// load is Load's first step, once the manager has started: it brings
	// in a copy of id that this node should serve but lacks or may hold
	// stale (delta mode during the state transfer, backup mode from the
	// owner). It reports whether it installed a copy fetched from another
	// member; the error says that a member that may hold it did not
	// answer (Load then answers ErrCatchingUp rather than "unknown").
	load(ctx context.Context, id string) (bool, error)
	// targets is where a change of session id goes, and whether this node
	// keeps a copy.
	targets(id string) plan
	// committing runs just before a change of id is sent to p.to;
	// committed after (with the change sent, d).
	committing(id string, p plan)
	committed(ctx context.Context, d delta, p plan)
	// repairFrom is the member to fetch a whole copy of session id from
	// when a change from sender cannot be applied.
	repairFrom(id string, sender membership.Member) membership.Member
	// renamed: this node's session old is now called new; here says the
	// rename was made on this node (RenewID, Rebind), not replicated.
	renamed(old, new string, here bool)
	// gone: this node no longer holds session id.
	gone(id string)
	// renamedAway lists the ids with this route known to live on under
	// another id, for a member recovering its sessions.
	renamedAway(route string) []string
	// standIns are the members to send a change of session id to, whole,
	// in place of the holders in failed that did not take it (backup
	// mode: the member after a failed backup on the ring, which becomes
	// the backup once membership drops the failed one). None in delta
	// mode, where every member is a holder already.
	standIns(id string, failed []membership.Member) []membership.Member
	// takeover is the route a session whose route names a node that is no
	// longer a member takes: delta mode, the node serving it; backup mode,
	// the session's owner now (the dead node's backup), so that a node that
	// is neither owner nor backup never takes a session over.
	takeover(id string) string
	// keeps reports whether this node keeps session id on disk (with a
	// persist_dir) when a change of it arrives from another node: backup
	// mode's owner does, whichever node served the request.
	keeps(id string) bool
	// shares reports whether this node and the member called peer should
	// both hold session id (anti-entropy compares only those).
	shares(id, peer string) bool
	// period is how often step runs; 0: never.
	period() time.Duration
	// step is the periodic work (backup mode's rebalance).
	step(now time.Time)
}

// plan is where a commit goes.
type plan struct {
	to []membership.Member
	// borrowed: the session was served here for its owner; the change is
	// stored back there and this node keeps no copy.
	borrowed bool
	// owned: this node owns the session (backup mode).
	owned bool
}

// newPlacement builds the placement of the configured mode (delta if none
// is set).
func newPlacement(m *Manager) (placement, error) {
	switch m.cfg.Mode {
	case "", ModeDelta:
		m.cfg.Mode = ModeDelta
		return &deltaPlacement{m: m}, nil
	case ModeBackup:
		switch m.cfg.Placement {
		case "":
			m.cfg.Placement = PlacementRendezvous
		case PlacementRendezvous, PlacementRing:
		default:
			return nil, fmt.Errorf("manager: unknown placement %q; allowed: %q, %q", m.cfg.Placement, PlacementRendezvous, PlacementRing)
		}
		return newBackup(m), nil
	}
	return nil, fmt.Errorf("manager: unknown mode %q; allowed: %q, %q", m.cfg.Mode, ModeDelta, ModeBackup)
}
