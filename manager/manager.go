// Package manager is flock's session store. A change made on one node is
// committed as a versioned delta and replicated to the nodes that hold the
// session: in delta mode (Tomcat's DeltaManager) every node, so any node
// can serve any session; in backup mode (Tomcat's BackupManager) its owner
// and one backup. Either way a session survives the death of the node that
// served it.
//
// The mode is a placement behind the session API: the valve and the
// handlers see Session, Load, Create and Commit, whatever the mode, and the
// core (versions, expiry, touches, listeners, persistence) is shared.
package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/clock"
	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/syncx"
	"github.com/flockhq/flock/membership"
)

// Cluster is what the manager needs of the cluster; *cluster.Cluster has it.
type Cluster interface {
	Local() membership.Member
	// Members is read once, at Start, for the members that joined before
	// the manager subscribed.
	Members() []membership.Status
	// Subscribe has f called with every membership event, in order, on
	// one goroutine; New calls it, before the cluster starts. f does not
	// block.
	Subscribe(f func(membership.Event))
	Handle(t cluster.MessageType, h cluster.Handler)
	Send(ctx context.Context, to []membership.Member, t cluster.MessageType, payload []byte, mode cluster.Mode) error
	Broadcast(ctx context.Context, t cluster.MessageType, payload []byte, mode cluster.Mode) error
	// Request asks one member and returns its handler's answer.
	Request(ctx context.Context, to membership.Member, t cluster.MessageType, payload []byte) ([]byte, error)
}

var _ Cluster = (*cluster.Cluster)(nil)

// Listener hears about sessions. Each function may be nil. remote says the
// change was made on another node and arrived by replication.
type Listener struct {
	Created          func(id string, remote bool)
	Destroyed        func(id, reason string, remote bool)
	AttributeChanged func(id, key string, deleted, remote bool)
}

// Config configures a Manager.
type Config struct {
	// Route is this node's name: the suffix of the session ids it creates.
	Route string
	// Mode is ModeDelta (every node holds every session) or ModeBackup
	// (an owner and one backup per session).
	Mode string
	// Placement is where backup mode puts a session's backup:
	// PlacementRendezvous (the default) or PlacementRing.
	Placement      string
	SessionTimeout time.Duration
	// Lifetime bounds a session's life from its creation, however busy
	// (scs's Lifetime): past it the session expires on every node as an
	// idle one does. 0 is no bound.
	Lifetime time.Duration
	// MaxActive bounds the sessions this node holds; 0 is no limit.
	MaxActive int
	// Replication is when Commit returns: cluster.Async (queued), cluster.Ack
	// (the members have the change) or cluster.Sync (they applied it).
	Replication          cluster.Mode
	StateTransferTimeout time.Duration
	// JoinWait is how long the state transfer waits for the first member
	// to appear before it concludes that this node is alone: membership
	// hears of the others only after the cluster started. 0 does not wait.
	JoinWait time.Duration
	// AlwaysSave replicates the whole session on every commit, for
	// handlers that change values without calling Set.
	AlwaysSave bool
	// NotifyOnReplication fires listeners for changes from other nodes too.
	NotifyOnReplication bool
	ExpireInterval      time.Duration
	// ExpireBatch bounds the sessions the expiry sweep looks at per tick.
	ExpireBatch   int
	TouchInterval time.Duration
	// RequestTimeout bounds a fetch of sessions from another node.
	RequestTimeout time.Duration
	// TransferBatch bounds the bytes of one state-transfer message.
	TransferBatch int
	// RebalanceInterval is how often backup mode checks the ring and moves
	// sessions whose owner or backup changed.
	RebalanceInterval time.Duration
	// OrphanGrace is how long backup mode keeps a copy this node is neither
	// owner nor backup of before dropping it: long enough for every node's
	// membership to agree after a failure (drop_time plus a probe).
	OrphanGrace time.Duration
	// SyncMinCopies is how many other members must have applied a change
	// for a Commit in Sync replication to succeed (at most the members
	// there are: a node left alone keeps serving). Commit still waits for
	// every member up to the send timeout; a member that missed the change
	// is repaired by anti-entropy. Fewer copies: ErrTooFewCopies.
	SyncMinCopies int
	// MaxSessionBytes bounds a session's encoded attributes: a larger one
	// could not be replicated in one frame, so Set refuses it.
	MaxSessionBytes int
	// AntiEntropyInterval is how often this node compares its copies with
	// one other member (in turn) and exchanges what differs; 0 turns the
	// background rounds off (rounds still run when a member comes back).
	AntiEntropyInterval time.Duration
	// StallAfter: a node that finds it did not run for longer (SIGSTOP, a
	// VM or GC pause) catches up with every member, not ready meanwhile;
	// 0 does not watch. Half the membership drop time: a stall the others
	// may have noticed.
	StallAfter time.Duration
	// PersistDir, if set, keeps the sessions this node changes on disk, so
	// a restart under the same name recovers them.
	PersistDir string
	Logger     logrus.FieldLogger
	// Clock is the time of expiry, touches, rebalance and the other rules
	// of the manager; nil is the wall clock.
	Clock clock.Clock
}

// DefaultConfig returns the defaults of conf/server.toml.
func DefaultConfig() Config {
	return Config{
		Route:                "node1",
		Mode:                 ModeDelta,
		Placement:            PlacementRendezvous,
		RebalanceInterval:    250 * time.Millisecond,
		AntiEntropyInterval:  5 * time.Second,
		SyncMinCopies:        1,
		MaxSessionBytes:      1 << 20,
		MaxActive:            100_000,
		StallAfter:           1500 * time.Millisecond,
		OrphanGrace:          10 * time.Second,
		SessionTimeout:       30 * time.Minute,
		Replication:          cluster.Sync,
		StateTransferTimeout: 60 * time.Second,
		JoinWait:             time.Second,
		NotifyOnReplication:  true,
		ExpireInterval:       time.Second,
		ExpireBatch:          10000,
		TouchInterval:        5 * time.Second,
		RequestTimeout:       3 * time.Second,
		TransferBatch:        1 << 20,
	}
}

// Errors of the manager.
var (
	// ErrTooManySessions: max_active is reached; the valve answers 503.
	ErrTooManySessions = errors.New("too many active sessions")
	ErrStopped         = errors.New("manager stopped")
	// ErrTooFewCopies: a Sync commit reached fewer members than
	// SyncMinCopies; the change is kept here, and the valve answers 503.
	ErrTooFewCopies = errors.New("change applied by too few members")
	// ErrCatchingUp: this node is catching up with a member (it, or this
	// node, was cut off or stopped) that may hold a newer copy of the
	// session, and that member did not answer for it; the valve answers
	// 503 and the user's next request is served once it did.
	ErrCatchingUp = errors.New("catching up with a member that may hold a newer copy")
	// ErrTooLarge: the session would be larger than MaxSessionBytes.
	ErrTooLarge = errors.New("session too large to replicate")
)

// Manager holds the sessions of one node.
type Manager struct {
	cfg   Config
	c     Cluster
	log   logrus.FieldLogger
	local string
	// domain keys the session references (see Ref).
	domain string
	// repairLog limits "repair failed" (one per gap a peer causes).
	repairLog logx.Limiter
	clock     clock.Clock
	place     placement // what the mode decides
	// memberWait: how long a request of a node not in the view waits for
	// it to join (memberWaitDefault; tests shorten it).
	memberWait time.Duration
	view       view    // the other members, from membership events
	tombs      tombs   // sessions that ended, so their copies cannot come back
	alias      aliases // old ids of renamed sessions
	lag        lag     // members that keep missing sync commits

	aeKick chan string  // members to run an anti-entropy round with now
	aeBusy atomic.Int32 // anti-entropy rounds under way
	// behindN, behindAll: how many members the view marks behind, and
	// whether that is every member (see view.behind); read per request.
	behindN   atomic.Int32
	behindAll atomic.Bool
	// aeWake asks the anti-entropy loop to catch up with the members
	// marked behind (after a stall).
	aeWake chan struct{}

	mu       sync.RWMutex
	sessions map[string]*Session
	touched  map[string]bool // accessed here since the last touch batch

	lmu       sync.RWMutex
	listeners []Listener

	repairs chan repair
	ready   chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool

	persist     *persister // nil without a persist_dir
	transfer    transferState
	stats       counters
	replication histogram // how long Commit's broadcast takes
}

type repair struct {
	id   string
	from membership.Member
}

// TouchesPerTimeout is how many touch batches at least fit in a session
// timeout: a copy of a session served elsewhere learns of its use before it
// could expire, even with a batch lost.
const TouchesPerTimeout = 4

// ErrTouchInterval: touches too rare for the session timeout would let a
// copy expire while the session is in use on another node.
var ErrTouchInterval = errors.New("touch interval must be at most the session timeout / 4")

// CheckTouch reports whether last-access times sent every touch keep the
// copies of a session that expires after timeout alive. The configuration
// file's checks (package conf) apply it too, so the rule is written once.
func CheckTouch(touch, timeout time.Duration) error {
	if touch <= 0 || timeout <= 0 || touch > timeout/TouchesPerTimeout {
		return fmt.Errorf("touch interval %v, session timeout %v: %w", touch, timeout, ErrTouchInterval)
	}
	return nil
}

// New builds a manager on c, registers its message handlers and subscribes
// to membership events; call it before the cluster starts, and Start after.
func New(c Cluster, cfg Config) (*Manager, error) {
	def := DefaultConfig()
	if cfg.Route == "" || cfg.SessionTimeout <= 0 {
		return nil, fmt.Errorf("manager: a route and a positive session timeout are required")
	}
	if cfg.Lifetime < 0 {
		return nil, fmt.Errorf("manager: lifetime %v is negative (0: none)", cfg.Lifetime)
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = def.ExpireInterval
	}
	if cfg.ExpireBatch <= 0 {
		cfg.ExpireBatch = def.ExpireBatch
	}
	if cfg.TouchInterval <= 0 {
		cfg.TouchInterval = def.TouchInterval
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = def.RequestTimeout
	}
	if cfg.TransferBatch <= 0 {
		cfg.TransferBatch = def.TransferBatch
	}
	if cfg.RebalanceInterval <= 0 {
		cfg.RebalanceInterval = def.RebalanceInterval
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = def.OrphanGrace
	}
	if cfg.SyncMinCopies <= 0 {
		cfg.SyncMinCopies = def.SyncMinCopies
	}
	if cfg.MaxSessionBytes <= 0 {
		cfg.MaxSessionBytes = def.MaxSessionBytes
	}
	if err := CheckTouch(cfg.TouchInterval, cfg.SessionTimeout); err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	log := logx.OrDiscard(cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		memberWait: memberWaitDefault,
		cfg:        cfg,
		c:          c,
		log:        log.WithField("component", "manager"),
		local:      cfg.Route,
		domain:     c.Local().Domain,
		repairLog:  logx.Limiter{Every: 10 * time.Second},
		clock:      cfg.Clock,
		sessions:   make(map[string]*Session),
		touched:    make(map[string]bool),
		repairs:    make(chan repair, 1024),
		aeKick:     make(chan string, 64),
		aeWake:     make(chan struct{}, 1),
		ready:      make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
	}
	if m.clock == nil {
		m.clock = clock.Real()
	}
	m.view.init()
	// Long enough for any copy or change of an ended session still on its
	// way: the session timeout, the touch grace, and a send with its retry.
	m.tombs.init(cfg.SessionTimeout + 2*cfg.TouchInterval + 2*cfg.RequestTimeout)
	m.alias.init(cfg.SessionTimeout)
	m.lag.init()
	var err error
	if m.place, err = newPlacement(m); err != nil {
		cancel()
		return nil, err
	}
	if cfg.PersistDir != "" {
		p, err := openPersister(cfg.PersistDir)
		if err != nil {
			cancel()
			return nil, err
		}
		m.persist = p
	}
	c.Handle(typeDelta, m.spoke(oneWay(m.handleDelta)))
	c.Handle(typeExpire, m.spoke(oneWay(m.handleExpire)))
	c.Handle(typeTouch, m.spoke(oneWay(m.handleTouch)))
	c.Handle(typeFetch, m.spoke(m.handleFetch))
	c.Handle(typeSessions, m.spoke(m.handleSessions))
	c.Handle(typeState, m.spoke(m.handleState))
	c.Handle(typeDigest, m.spoke(m.handleDigest))
	c.Handle(typeDraining, m.spoke(oneWay(m.handleDraining)))
	c.Handle(typeHello, m.handleHello)
	c.Subscribe(m.onEvent)
	return m, nil
}

// AddListener adds l; listeners fire on the goroutine that made the change.
func (m *Manager) AddListener(l Listener) {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	m.listeners = append(m.listeners, l)
}

func (m *Manager) fire(remote bool, f func(Listener)) {
	if remote && !m.cfg.NotifyOnReplication {
		return
	}
	m.lmu.RLock()
	ls := m.listeners
	m.lmu.RUnlock()
	for _, l := range ls {
		f(l)
	}
}

// Start brings this node's copies up to date from the cluster in the
// background (delta mode's state transfer, backup mode's recovery) and
// starts the expiry sweep, the touch batches and the mode's periodic work.
// Ready is closed once the transfer has ended.
func (m *Manager) Start(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("manager: already started")
	}
	m.seedView()
	m.view.mu.Lock()
	for _, mb := range m.view.members {
		m.startConfirmingLocked(mb) // heard of before Start, or seeded just now
	}
	m.view.mu.Unlock()
	if m.persist != nil {
		m.loadPersisted()
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.runPersist() }()
	}
	m.wg.Add(5)
	go func() { defer m.wg.Done(); m.runAntiEntropy() }()
	go func() { defer m.wg.Done(); m.runStart() }()
	go func() { defer m.wg.Done(); m.runRepairs() }()
	go func() { defer m.wg.Done(); m.runExpiry() }()
	go func() { defer m.wg.Done(); m.runTouches() }()
	if d := m.place.period(); d > 0 {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.every(d, m.place.step) }()
	}
	if m.cfg.StallAfter > 0 {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.runStallWatch() }()
	}
	return nil
}

// Ready is closed when the node holds the cluster's sessions (or the state
// transfer timed out); a load balancer should not send it users before.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Stop sends the last touch batch and ends the manager's goroutines.
func (m *Manager) Stop(ctx context.Context) error {
	if m.started.Load() {
		m.sendTouches(ctx)
	}
	m.cancel()
	if err := syncx.Wait(ctx, &m.wg); err != nil {
		return fmt.Errorf("manager: stop: %w", err)
	}
	return nil
}

// oneWay makes a handler of a message that is never a request.
func oneWay(h func(context.Context, cluster.Message) error) cluster.Handler {
	return func(ctx context.Context, msg cluster.Message) ([]byte, error) { return nil, h(ctx, msg) }
}

// Len is the number of sessions this node holds.
func (m *Manager) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.sessions)
}

// Create starts a new session on this node. It is replicated when first
// committed.
func (m *Manager) Create(ctx context.Context) (*Session, error) {
	return m.create("")
}

// maxLoadTries bounds Load's fetches of one id (see Load).
const maxLoadTries = 3

// Load returns the session with this id and marks it accessed, or nil if
// the node has no such session (unknown, expired, or a malformed id). A
// copy the node should serve but lacks is fetched first, as the mode says:
// in delta mode while the state transfer runs, in backup mode from the
// session's owner.
func (m *Manager) Load(ctx context.Context, id string) (*Session, error) {
	return m.LoadSeen(ctx, id, 0)
}

// LoadSeen is Load for a client that has seen version seen of the session
// (the valve's version cookie): a copy older than that, which this node
// holds because a change reached the other members and not yet this one,
// is not served. The holders' copies are fetched first, the newest wins;
// if the copy is still older and a holder did not answer, LoadSeen returns
// ErrCatchingUp (503: the user's next request is served from the newer
// copy). If every holder answered and none has it, the claim was wrong (a
// forged cookie, or the copies that had it are gone) and the copy is
// served. A claim implausibly far ahead is ignored, so a forged cookie
// costs at most one round of fetches per request.
func (m *Manager) LoadSeen(ctx context.Context, id string, seen uint64) (*Session, error) {
	if !ValidID(id) {
		return nil, nil
	}
	var s *Session
	var unanswered error
	for range maxLoadTries {
		fetched := false
		if m.started.Load() {
			fetched, unanswered = m.place.load(ctx, id)
		}
		m.mu.RLock()
		s = m.sessions[id]
		m.mu.RUnlock()
		// A copy fetched for this request can be gone already: another
		// request served by it for its owner ended and dropped it.
		if s != nil || !fetched || ctx.Err() != nil {
			break
		}
	}
	if s == nil {
		// An old id of a renamed session finds it under its new id.
		if to := m.alias.resolve(id, m.clock.Now()); to != "" {
			return m.LoadSeen(ctx, to, seen)
		}
		if unanswered != nil {
			// It may exist where nobody answered: not unknown, so the
			// valve neither creates a new session nor drops the cookie.
			m.stats.catchUpRefused.Add(1)
			return nil, fmt.Errorf("manager: session %s: %w: %w", m.ref(id), ErrCatchingUp, unanswered)
		}
		if _, ended := m.tombs.get(id); seen > 0 && !ended && m.recentlyLost() {
			// The client has seen this session change, and a member failed
			// moments ago: this node may be the one cut off from the
			// session's holders. Come again rather than start over.
			m.stats.catchUpRefused.Add(1)
			return nil, fmt.Errorf("manager: session %s: %w: a member that may hold it failed moments ago", m.ref(id), ErrCatchingUp)
		}
		return nil, nil
	}
	now := m.clock.Now()
	s.mu.Lock()
	if s.invalid || s.expiredAt(now, m.local) {
		s.mu.Unlock()
		return nil, nil
	}
	older := seen > s.version && seen-s.version <= maxVersionJump
	if doubt := m.behindN.Load() > 0; s.unsure || doubt || older {
		// In doubt (nobody acknowledged this copy), behind members that
		// may hold a newer one (this node, or they, were cut off or
		// stopped), or older than the client has seen: the holders'
		// copies are taken first, the newest wins.
		s.mu.Unlock()
		failed := m.settle(ctx, s)
		s.mu.Lock()
		stillOlder := older && s.version < seen
		s.mu.Unlock()
		for _, name := range failed {
			if stillOlder || m.isBehind(name) {
				m.stats.catchUpRefused.Add(1)
				return nil, fmt.Errorf("manager: session %s: %w: %s did not answer", m.ref(id), ErrCatchingUp, name)
			}
		}
		if stillOlder && m.recentlyLost() {
			// Every holder still in the view answered and none has what
			// the client saw, but a member failed moments ago: the newer
			// copy may have been there (a holder the failed send just
			// dropped from the view). Come again rather than build on the
			// older one.
			m.stats.catchUpRefused.Add(1)
			return nil, fmt.Errorf("manager: session %s: %w: older than the client's v%d, and a member that may hold it failed moments ago", m.ref(id), ErrCatchingUp, seen)
		}
		if older {
			m.stats.olderThanSeen.Add(1)
		}
		s.mu.Lock()
		if s.invalid {
			s.mu.Unlock()
			return nil, nil
		}
	}
	s.lastAccess, s.accessedBy = now, m.local
	s.mu.Unlock()
	m.mu.RLock()
	touched := m.touched[id]
	m.mu.RUnlock()
	if !touched { // reads are the hot path: take the write lock once per batch
		m.mu.Lock()
		m.touched[id] = true
		m.mu.Unlock()
	}
	return s, nil
}

// settle replaces a copy in doubt (its last change reached too few members,
// and the user was answered 503) with the best copy its holders have, so
// that a change nobody acknowledged is neither served nor built on. When
// every holder answered and none has a copy, this one stands (it was never
// replicated); when some did not answer, it stays in doubt and is served
// as it is, this node being cut off from them. It returns the holders that
// did not answer.
func (m *Manager) settle(ctx context.Context, s *Session) (failed []string) {
	id := s.ID()
	holders := m.place.targets(id).to
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, mb := range holders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.fetch(ctx, mb, []string{id}); err != nil {
				mu.Lock()
				failed = append(failed, mb.Name)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsure && len(failed) == 0 {
		s.unsure = false
	}
	return failed
}

// expiredAt: unused for longer than its max inactive interval, or older
// than the configured lifetime. A copy that another node served last gets
// two touch intervals of grace, since that node's last-access times arrive
// in batches.
func (s *Session) expiredAt(now time.Time, local string) bool {
	if s.pastLifetime(now) {
		return true
	}
	limit := s.maxInactive
	if s.accessedBy != local {
		limit += 2 * s.m.cfg.TouchInterval
	}
	return now.Sub(s.lastAccess) > limit
}

// Commit replicates what the request changed in s, as the replication mode
// says; the valve calls it when the response commits. A session with no
// change costs nothing (its access time travels in the next touch batch).
func (m *Manager) Commit(ctx context.Context, s *Session) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	if s.invalid {
		s.mu.Unlock()
		return nil
	}
	changed := s.isNew || len(s.dirty) > 0 || s.renamedFrom != "" || s.maxChanged
	if changed && s.changedUnder && !s.isNew && s.renamedFrom == "" && m.cfg.Replication == cluster.Sync {
		// The request may have read the session before the other node's
		// change landed: its change is dropped, and this copy, which mixes
		// both, is in doubt until the next Load takes the members' copy.
		id := s.id
		s.changedUnder = false
		s.dirty, s.maxChanged = nil, false
		if !s.unsure {
			s.sure = s.version // the other node's change, acknowledged
		}
		s.unsure, s.hashed = true, false
		s.mu.Unlock()
		m.stats.changedUnder.Add(1)
		// Take the members' copy now, so that this node does not hold
		// contents nobody else has under their version until its next
		// Load; a copy borrowed for the request goes (the owner keeps it).
		if m.place.targets(id).borrowed {
			m.dropBorrowed(s)
		} else {
			m.settle(ctx, s)
		}
		return fmt.Errorf("manager: session %s: %w; not replicated, retry the request", m.ref(id), ErrChangedUnder)
	}
	if !changed && !m.cfg.AlwaysSave {
		id := s.id
		s.mu.Unlock()
		if m.place.targets(id).borrowed {
			// A read served for another owner: keep no copy to go stale.
			m.dropBorrowed(s)
		}
		return nil
	}
	d := delta{ID: s.id, Old: s.renamedFrom, Base: s.version, BaseOrigin: s.origin, Origin: m.local, Access: unixNano(s.lastAccess)}
	if s.isNew {
		d.Base, d.BaseOrigin = 0, ""
		d.Created = unixNano(s.created)
	}
	s.version++
	s.origin = m.local
	d.Version = s.version
	d.MaxInactive = int64(s.maxInactive)
	if m.cfg.AlwaysSave || s.isNew {
		d.Full = true
		d.Set = cloneAttrs(s.attrs)
		d.Created = unixNano(s.created)
	} else {
		for _, k := range s.dirty {
			if v, ok := s.attrs[k]; ok {
				if d.Set == nil {
					d.Set = make(map[string][]byte, len(s.dirty))
				}
				d.Set[k] = v
			} else {
				d.Del = append(d.Del, k)
			}
		}
		slices.Sort(d.Del)
	}
	dirty := s.dirty
	s.dirty, s.isNew, s.renamedFrom, s.maxChanged = nil, false, "", false
	if d.Old != "" {
		// The old id must not come back from a replica that misses this.
		m.tombs.add(d.Old, ended{Version: d.Version, Moved: true}, m.clock.Now())
	}
	waits := m.cfg.Replication == cluster.Sync && len(m.place.targets(d.ID).to) > 0
	s.inFlight = waits
	s.mu.Unlock()
	if waits {
		defer func() {
			s.mu.Lock()
			s.inFlight = false
			s.mu.Unlock()
		}()
	}

	for _, k := range dirty {
		_, set := d.Set[k]
		m.fire(false, func(l Listener) {
			if l.AttributeChanged != nil {
				l.AttributeChanged(d.ID, k, !set, false)
			}
		})
	}
	m.mu.Lock()
	delete(m.touched, d.ID) // the delta carries the access time
	m.mu.Unlock()
	p := m.place.targets(d.ID)
	if p.borrowed {
		// Served for its owner: the change is stored back there, and this
		// node keeps no copy to go stale.
		defer m.dropBorrowed(s)
	} else {
		m.persist.changed(d.ID)
	}
	if len(p.to) == 0 {
		return nil // alone: nothing to replicate, nothing to time
	}
	m.place.committing(d.ID, p)
	start := time.Now() // the histogram times real work, whatever the clock
	to := p.to
	// Unconfirmed members the commit waits for all the same (the rule
	// needs them): their answers confirm them.
	var forced []membership.Member
	d.Sync = m.cfg.Replication == cluster.Sync // lagging members too: none may fetch a copy not yet acknowledged
	if m.cfg.Replication == cluster.Sync {
		var lagging, unconfirmed []membership.Member
		need := min(m.cfg.SyncMinCopies, len(p.to))
		to, lagging = m.lag.split(p.to, need, m.clock.Now())
		to, forced, unconfirmed = m.splitConfirmed(to, need)
		if lagging = append(lagging, unconfirmed...); len(lagging) > 0 {
			// Sent every change, not waited for; repaired by anti-entropy.
			if err := m.sendTo(ctx, lagging, typeDelta, d, cluster.Async); err != nil {
				m.log.WithError(err).Debug("change not queued for a lagging member")
			}
		}
	}
	err := m.broadcastTo(ctx, to, typeDelta, d)
	n := len(to)
	if behind := refusedAs(err, to, refusedBehind); len(behind) > 0 {
		// Members that lack the change's base (they missed earlier ones)
		// get the whole copy; applied there, they count.
		err = m.pushWhole(ctx, s, behind, err)
	}
	if m.cfg.Replication == cluster.Sync {
		failed := failedOf(err, to)
		for _, mb := range forced {
			if !slices.ContainsFunc(failed, func(f membership.Member) bool { return f.Addr == mb.Addr }) {
				m.confirm(mb) // an acknowledged commit is a round trip
			}
		}
		for _, name := range m.lag.record(to, failed, m.clock.Now()) {
			m.stats.lagging.Add(1)
			m.log.WithField("member", name).Warn("member keeps missing sync commits; not waiting for it for a while (anti-entropy repairs it)")
		}
	}
	// Stand-ins take the place of holders that did not answer, never of
	// one that refused the change: it holds another copy, and a whole copy
	// pushed around it would fork the session.
	refused := refusedAs(err, to, refusedPrefix)
	failed := slices.DeleteFunc(failedOf(err, to), func(mb membership.Member) bool {
		return slices.ContainsFunc(refused, func(r membership.Member) bool { return r.Addr == mb.Addr })
	})
	if len(failed) > 0 {
		// A holder that failed (dead, not yet dropped by membership) is
		// stood in for by the member that takes its place once it is
		// dropped, so the change is not left on this node alone.
		if alt := m.place.standIns(d.ID, failed); len(alt) > 0 {
			if snap, ok := s.committing(); ok {
				// Its own bound: the holder may have used up ctx timing out.
				actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RequestTimeout)
				altErr := m.sendTo(actx, alt, typeSessions, sessions{Sessions: []snapshot{snap}, Last: true}, cluster.Sync)
				cancel()
				n += len(alt)
				if altErr == nil || len(peersOf(altErr)) > 0 {
					// judge counts the members that failed: the stand-ins
					// that took the change offset the holders that did not.
					err = &cluster.SendError{Peers: append(peersOf(err), peersOf(altErr)...)}
					m.stats.standIns.Add(uint64(len(alt) - len(peersOf(altErr))))
				} else {
					err = errors.Join(err, altErr)
				}
			}
		}
	}
	m.replication.observe(time.Since(start))
	m.place.committed(ctx, d, p)
	err = m.judge(d.ID, n, err)
	if errors.Is(err, ErrTooFewCopies) {
		// Nobody (or too few) acknowledged this version: it must not beat
		// the members' copy, which may hold a change that was.
		s.mu.Lock()
		if s.version == d.Version && s.origin == m.local {
			if !s.unsure {
				s.sure = d.Base // what this change was built on was acknowledged
			}
			s.unsure = true
		}
		s.mu.Unlock()
	}
	return err
}

// pushWhole sends s whole to members that refused a change to it for
// lacking its base, and returns the commit's error (sent) with those
// members' failures replaced by the push's.
func (m *Manager) pushWhole(ctx context.Context, s *Session, to []membership.Member, sent error) error {
	snap, ok := s.committing()
	if !ok {
		return sent
	}
	// Its own bound: the first send may have used up ctx.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RequestTimeout)
	err := m.sendTo(pctx, to, typeSessions, sessions{Sessions: []snapshot{snap}, Last: true, Must: true}, cluster.Sync)
	cancel()
	if err != nil && len(peersOf(err)) == 0 {
		return errors.Join(sent, err)
	}
	var peers []cluster.PeerError
	for _, pe := range peersOf(sent) {
		if !slices.ContainsFunc(to, func(mb membership.Member) bool { return mb.Addr == pe.Addr }) {
			peers = append(peers, pe)
		}
	}
	peers = append(peers, peersOf(err)...)
	if len(peers) == 0 {
		return nil
	}
	return &cluster.SendError{Peers: peers}
}

// failedOf lists the members of to that a send's error names.
func failedOf(err error, to []membership.Member) []membership.Member {
	var out []membership.Member
	for _, pe := range peersOf(err) {
		for _, mb := range to {
			if mb.Addr == pe.Addr {
				out = append(out, mb)
			}
		}
	}
	return out
}

// peersOf returns the per-member failures of a send's error.
func peersOf(err error) []cluster.PeerError {
	if err == nil {
		return nil // the usual case, several times a commit: no errors.As target escapes
	}
	var se *cluster.SendError
	if errors.As(err, &se) {
		return se.Peers
	}
	return nil
}

// judge applies the sync rule to a commit sent to n members: in Sync
// replication it succeeds once min(SyncMinCopies, n) of them applied the
// change; fewer is ErrTooFewCopies. A shortfall above the rule is counted
// (anti-entropy repairs those members), never an error for the user. In
// Ack and Async replication a failed send is counted and returned as it is.
func (m *Manager) judge(id string, n int, err error) error {
	if err == nil {
		return nil
	}
	failed := n
	var se *cluster.SendError
	if errors.As(err, &se) {
		failed = len(se.Peers)
	}
	m.stats.shortCommits.Add(1)
	if m.cfg.Replication != cluster.Sync {
		return err
	}
	if applied, need := n-failed, min(m.cfg.SyncMinCopies, n); applied < need {
		m.stats.tooFewCopies.Add(1)
		return fmt.Errorf("manager: session %s: %w: %d of %d members, %d required: %w", m.ref(id), ErrTooFewCopies, applied, n, need, err)
	}
	return nil
}

func cloneAttrs(a map[string][]byte) map[string][]byte {
	c := make(map[string][]byte, len(a))
	for k, v := range a {
		c[k] = v // values are never changed in place, only replaced
	}
	return c
}

// broadcast sends v to every member in the configured replication mode.
func (m *Manager) broadcast(ctx context.Context, t cluster.MessageType, v any) error {
	return m.broadcastTo(ctx, m.members(), t, v)
}

// broadcastTo sends v to the members to in the configured replication mode.
func (m *Manager) broadcastTo(ctx context.Context, to []membership.Member, t cluster.MessageType, v any) error {
	return m.sendTo(ctx, to, t, v, m.cfg.Replication)
}

// sendTo sends v to the members to, waiting as mode says.
func (m *Manager) sendTo(ctx context.Context, to []membership.Member, t cluster.MessageType, v any, mode cluster.Mode) error {
	if len(to) == 0 {
		return nil // alone: nothing to encode or send
	}
	b, err := marshal(v)
	if err != nil {
		return err
	}
	m.stats.sent.Add(1)
	err = m.c.Send(ctx, to, t, b, mode)
	switch {
	case mode == cluster.Async:
	case err == nil:
		m.spokeWith(to...)
	default:
		failed := failedOf(err, to)
		m.spokeWith(slices.DeleteFunc(slices.Clone(to), func(mb membership.Member) bool { return slices.Contains(failed, mb) })...)
	}
	if err != nil {
		m.stats.sendFailures.Add(1)
		return fmt.Errorf("manager: replicate: %w", err)
	}
	return nil
}

// spoke wraps a handler: the caller spoke with this node.
func (m *Manager) spoke(h cluster.Handler) cluster.Handler {
	return func(ctx context.Context, msg cluster.Message) ([]byte, error) {
		m.spokeWith(msg.From)
		return h(ctx, msg)
	}
}

// rename moves s to newID (RenewID, or a route rewrite after failover).
func (m *Manager) rename(s *Session, newID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return ErrInvalidated
	}
	if _, taken := m.sessions[newID]; taken {
		return fmt.Errorf("manager: session id %s already exists", m.ref(newID))
	}
	delete(m.sessions, s.id)
	delete(m.touched, s.id)
	m.persist.ended(s.id, s.version)
	m.place.renamed(s.id, newID, true)
	m.alias.add(s.id, newID, m.clock.Now())
	if s.renamedFrom == "" && !s.isNew {
		s.renamedFrom = s.id // the others know it by its first name
	}
	s.id = newID
	m.sessions[newID] = s
	return nil
}

// Rebind gives a session this node's route when its id names a node that
// is no longer a member, or one that said it is draining (Drain), as
// Tomcat's JvmRouteBinderValve does after a failover: a sticky load
// balancer then sends the user here instead of to the dead node. A route naming a live node is left alone, so a
// round-robin balancer does not rename sessions back and forth. It
// reports whether it renamed.
func (m *Manager) Rebind(s *Session) (bool, error) {
	id := s.ID()
	route := Route(id)
	if route == m.local || m.isMember(route) && !m.isDraining(route) {
		return false, nil
	}
	to := m.place.takeover(id)
	if to == "" || to == route {
		return false, nil
	}
	if err := m.rename(s, rebindID(id, to)); err != nil {
		return false, err
	}
	m.stats.rebinds.Add(1)
	return true, nil
}

// Drain tells the members that this node is shutting down, so that they
// take over the routes of the users a balancer moves to them now, rather
// than once this node has left; in backup mode they also stop placing
// sessions on it (its sessions pass to the next owner, which holds them
// as their backup). This node still serves and replicates as before.
// Drain returns when every member has marked this node draining (Sync
// mode), not merely read the notice, so a route a member rebinds after
// Drain returns already avoids this node. A member of an earlier release
// refuses the notice (counted in its handler errors) and changes nothing.
func (m *Manager) Drain(ctx context.Context) error {
	return m.sendTo(ctx, m.members(), typeDraining, draining{}, cluster.Sync)
}

func (m *Manager) handleDraining(ctx context.Context, msg cluster.Message) error {
	if err := m.fromMember(ctx, msg.From); err != nil {
		return err
	}
	var d draining
	if err := decode(msg.Payload, &d); err != nil {
		return err
	}
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	if id, ok := v.draining[msg.From.Name]; ok && id == msg.From.ID {
		return nil // told twice
	}
	v.draining[msg.From.Name] = msg.From.ID
	m.viewChanged(membership.Event{Member: msg.From, Time: m.clock.Now(), Reason: "draining"})
	m.log.WithField("member", msg.From.Name).Info("member draining; its users' routes are taken over here")
	return nil
}

// isDraining reports whether the member called name said it is draining.
func (m *Manager) isDraining(name string) bool {
	v := &m.view
	v.mu.Lock()
	defer v.mu.Unlock()
	id, ok := v.draining[name]
	return ok && v.members[name].ID == id
}

// invalidated removes s on every node.
func (m *Manager) invalidated(s *Session, id string) {
	m.mu.Lock()
	if m.sessions[id] == s {
		m.forget(id)
	}
	delete(m.touched, id)
	m.mu.Unlock()
	s.mu.Lock()
	version, isNew, known := s.version, s.isNew, s.renamedFrom
	s.mu.Unlock()
	m.persist.ended(id, version)
	if known == "" {
		known = id
	} // else renamed since the last commit: the others know the old id only
	now := m.clock.Now()
	m.tombs.add(id, ended{Version: version, Invalidated: true}, now)
	if known != id {
		m.tombs.add(known, ended{Version: version, Invalidated: true}, now)
	}
	m.fire(false, func(l Listener) {
		if l.Destroyed != nil {
			l.Destroyed(id, "invalidated", false)
		}
	})
	if isNew {
		return // the others never heard of it
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RequestTimeout)
	defer cancel()
	if err := m.broadcast(ctx, typeExpire, expire{ID: known, Version: version, Reason: "invalidated"}); err != nil {
		m.log.WithField("session", m.ref(id)).WithError(err).Warn("invalidation not replicated everywhere")
	}
}

// short truncates a session id for logs: enough to grep, not enough to
// hijack.

// Info describes a session for the admin endpoints: never its values,
// never its id (see Ref).
type Info struct {
	Ref        string    `json:"ref"`
	Version    uint64    `json:"version"`
	Size       int       `json:"size"` // bytes of encoded attributes
	Keys       int       `json:"keys"`
	Created    time.Time `json:"created"`
	LastAccess time.Time `json:"last_access"`
	AccessedBy string    `json:"accessed_by"`
	// Hash identifies the contents: two nodes that hold the same hash hold
	// the same attributes.
	Hash string `json:"hash"`
}

// Sessions describes every session this node holds, sorted by reference.
func (m *Manager) Sessions() []Info {
	m.mu.RLock()
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.RUnlock()
	out := make([]Info, 0, len(all))
	for _, s := range all {
		out = append(out, m.info(s))
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Ref, b.Ref) })
	return out
}

// SessionInfo describes the session of id if this node holds it: how an
// operator given an id by its user finds the session (and its reference).
func (m *Manager) SessionInfo(id string) (Info, bool) {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return Info{}, false
	}
	return m.info(s), true
}

func (m *Manager) info(s *Session) Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := 0
	for k, v := range s.attrs {
		size += len(k) + len(v)
	}
	return Info{Ref: m.ref(s.id), Version: s.version, Size: size, Keys: len(s.attrs), Created: s.created.UTC(),
		LastAccess: s.lastAccess.UTC(), AccessedBy: s.accessedBy, Hash: fmt.Sprintf("%016x", s.contentHash())}
}
