// Package membership tells a node who else is in its cluster.
//
// The Service interface is what the rest of flock depends on; Multicast is
// the first implementation (UDP heartbeats, in the manner of Tomcat's
// McastService). Every implementation reports the same three events, so a
// user swaps one for another in configuration and nothing above notices.
package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Service is a running membership view. Start and Stop may each be called
// once; Events is closed after Stop returns.
type Service interface {
	// Start joins the cluster and begins to announce the local member.
	Start(ctx context.Context) error
	// Stop announces that the local member leaves, then releases every
	// resource. It returns when all goroutines of the service have ended.
	Stop(ctx context.Context) error
	// Local is the member this process announces.
	Local() Member
	// Members is a snapshot of the other members, sorted by name.
	Members() []Status
	// Events delivers Joined, Left, Failed, Rejoined (and Conflict, when
	// another live process holds this node's name) in the order they
	// happened.
	// A consumer that falls far behind loses the oldest events (Members is
	// always exact), so a slow reader can never stall the heartbeat loop.
	Events() <-chan Event
}

// The optional capabilities of a Service. The cluster uses each one a
// service has; a service without it still works, with less: no early
// probes, no members learned from the transport, no counters.

// Suspecter is a Service that can check a member at once, because sending to
// its receiver failed, instead of waiting for its heartbeats to stop. It
// must not block.
type Suspecter interface {
	SuspectAddr(addr netip.AddrPort)
}

// Observer is a Service that learns of members from the transport: a member
// that called this node is alive (or, with leaving, says goodbye). It must
// not block.
type Observer interface {
	Observe(m Member, leaving bool)
}

// Acknowledger is a Service told when the cluster has handed an event to
// every subscriber, in the order of Events. An in-memory service for tests
// uses it to make a membership change synchronous. It must not block.
type Acknowledger interface {
	Handled(e Event)
}

// Reporter is a Service that keeps counters.
type Reporter interface {
	Stats() Stats
}

// Errors of the timing rules, shared by every implementation and by the
// configuration file's checks (package conf), so each rule is written once.
var (
	// ErrDropTime: a drop time shorter than two heartbeat intervals would
	// drop a healthy member after one lost heartbeat.
	ErrDropTime = errors.New("drop time must be at least twice the heartbeat frequency")
	// ErrProbeTimeout: the probe of a silent member must end within the
	// drop time, or a dead member outlives it.
	ErrProbeTimeout = errors.New("probe timeout must be positive and at most the drop time")
)

// CheckTiming reports whether members announcing themselves every frequency
// and dropped after dropTime of silence make a usable failure detector.
func CheckTiming(frequency, dropTime time.Duration) error {
	if frequency <= 0 || dropTime < 2*frequency {
		return fmt.Errorf("frequency %v, drop time %v: %w", frequency, dropTime, ErrDropTime)
	}
	return nil
}

// CheckProbe reports whether a probe bounded by probeTimeout fits in
// dropTime.
func CheckProbe(probeTimeout, dropTime time.Duration) error {
	if probeTimeout <= 0 || probeTimeout > dropTime {
		return fmt.Errorf("probe timeout %v, drop time %v: %w", probeTimeout, dropTime, ErrProbeTimeout)
	}
	return nil
}

// ID names one run of a member process. It is random per start, so a
// restarted node is a new member even when its name and address are the same.
type ID [16]byte

// NewID returns a random ID.
func NewID() (ID, error) {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		return ID{}, fmt.Errorf("membership: random id: %w", err)
	}
	return id, nil
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID, which no real member has.
func (id ID) IsZero() bool { return id == ID{} }

// Member is what a node announces about itself.
type Member struct {
	ID      ID
	Name    string         // unique per node; the route suffix of its session ids
	Domain  string         // members of another domain are ignored
	Addr    netip.AddrPort // where the node's receiver accepts cluster traffic
	Started time.Time      // when the process started; the oldest member is the first in line for state transfer
	// Zone is where the node runs (a rack, an availability zone), if
	// configured: backup mode keeps a session's two copies in two zones
	// when it can.
	Zone string
}

func (m Member) String() string { return fmt.Sprintf("%s(%s@%s)", m.Name, shortID(m.ID), m.Addr) }

func shortID(id ID) string { return id.String()[:8] }

// State is how sure a node is that a member is there.
type State int

const (
	// Alive: heard from within the drop time.
	Alive State = iota + 1
	// Suspect: silent, but not yet confirmed dead (used by failure
	// detectors that check a member over TCP before they drop it).
	Suspect
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText makes State readable in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (s *State) UnmarshalText(b []byte) error {
	for _, v := range []State{Alive, Suspect} {
		if string(b) == v.String() {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("membership: unknown state %q", b)
}

// Status is a member as the local node currently sees it.
type Status struct {
	Member
	State    State
	LastSeen time.Time
}

// EventType says what happened to a member.
type EventType int

const (
	// Joined: a member was seen for the first time (or again, after it had
	// failed).
	Joined EventType = iota + 1
	// Left: a member said it was leaving.
	Left
	// Failed: a member went silent, or was replaced by a restart under the
	// same name.
	Failed
	// Rejoined: a member that had failed is heard from again, as the same
	// process (a pause, a GC or VM stall, a healed partition). It missed
	// what happened meanwhile, and what it holds may be stale.
	Rejoined
	// Conflict: another process announces this node's name, is alive (it
	// was just heard) and started before this one (at the same instant,
	// the one with the smaller id counts as first). This process is the
	// duplicate: the others keep the first one as the member of that name
	// and refuse this one, and whoever runs this process should stop it
	// (flockd exits with ErrNameTaken). Member is the other process, whose
	// Addr says where it runs; the event comes once per such process.
	// Nothing else changes: the service goes on until it is stopped.
	Conflict
)

// ErrNameTaken is the error of a node that is told, by a Conflict event,
// that another live process holds its name.
var ErrNameTaken = errors.New("membership: this node's name is held by another live process")

func (t EventType) String() string {
	switch t {
	case Joined:
		return "joined"
	case Left:
		return "left"
	case Failed:
		return "failed"
	case Rejoined:
		return "rejoined"
	case Conflict:
		return "conflict"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// MarshalText makes EventType readable in JSON.
func (t EventType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Event is one change of membership.
type Event struct {
	Type   EventType
	Member Member
	Time   time.Time
	Reason string // why, for people reading logs: "heartbeat", "leaving", "silent for 3s", "restarted as <id> (...)"
}
