// Package sender delivers messages to the other members over TCP.
//
// TCP keeps one connection per peer, written by one goroutine from a
// bounded queue, so the messages one node sends to a peer arrive in the
// order they were sent, exactly once, even across a reconnect: what was
// written but not acknowledged is re-sent on the next connection and the
// receiver drops the copies it already applied.
package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/syncx"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/membership"
)

// Sender is what the cluster needs of a sender: TCP is the one flock ships,
// and an implementation may come from outside the module (an in-memory
// network for tests). Peers are named by the address of their receiver.
type Sender interface {
	// Send delivers payload as a message of type t (at least FirstType) to
	// every peer of to, waiting as mode says. A failure is a *Error naming
	// each peer it failed for.
	Send(ctx context.Context, to []netip.AddrPort, t uint8, payload []byte, mode Mode) error
	// Request sends payload as a sync message of type t to one peer and
	// returns the reply of its handler. A failure is a *Error naming the
	// peer; a handler's error is a *RemoteError inside it.
	Request(ctx context.Context, to netip.AddrPort, t uint8, payload []byte) ([]byte, error)
	// Ping asks the process at addr whether it is there and returns the
	// member that answered.
	Ping(ctx context.Context, addr netip.AddrPort) (membership.Member, error)
	// Leave tells the member at addr that this node is leaving.
	Leave(ctx context.Context, addr netip.AddrPort) error
	// Forget drops the connection to addr (a member that left or failed),
	// failing what is queued for it.
	Forget(addr netip.AddrPort)
	// Drain waits until everything queued so far is delivered or failed.
	Drain(ctx context.Context) error
	// Close fails what is queued, closes every connection and waits until
	// the sender's goroutines have ended, or ctx ends first.
	Close(ctx context.Context) error
	// Stats describes the connection to each peer.
	Stats() []PeerStats
}

var _ Sender = (*TCP)(nil)

// FirstType is the first message type an application may use; the types
// below it are the transport's own control frames.
const FirstType uint8 = uint8(wire.FirstApp)

// Mode is how a send waits for a message.
type Mode uint8

const (
	// Async: the send returns once the message is queued.
	Async = Mode(wire.Async)
	// Ack: the send returns when the receiver has read the message.
	Ack = Mode(wire.Ack)
	// Sync: the send returns when the receiver's handler has returned, with
	// its error if it failed.
	Sync = Mode(wire.Sync)
)

func (m Mode) String() string { return wire.Mode(m).String() }

// ParseMode reads a mode by its name, as configuration writes it.
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Async, Ack, Sync} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown send mode %q; allowed: async, ack, sync", s)
}

// Config configures a TCP sender.
type Config struct {
	// Local is this node, introduced to every peer in the hello frame.
	Local membership.Member
	// Timeout bounds how long a send waits for its acknowledgement and
	// how long a connection may go without acknowledging what it was sent.
	Timeout time.Duration
	// MaxRetries is how many times a message is re-sent on a new
	// connection after the one it was written to failed (Tomcat's
	// maxRetryAttempts).
	MaxRetries int
	// QueueLimit bounds the bytes queued or unacknowledged per peer.
	QueueLimit int64
	// MaxFrame bounds the frames a peer may answer with: an ack with a
	// larger reply fails its request with ErrReplyTooLarge.
	MaxFrame int
	// IdleTimeout is how long the state of a peer (its writer goroutine,
	// its timer, its connection) is kept once nothing is queued or in
	// flight for it and nothing was sent to it: then it is dropped, and the
	// next send to that address starts afresh (continuing the sequence
	// numbers). It bounds the peers the sender holds to those it sent to
	// lately, whatever comes late for members that are gone (Forget drops a
	// peer at once, but a late repair or answer re-creates it). The default
	// is the receiver's idle timeout, after which the connection would have
	// been closed anyway.
	IdleTimeout time.Duration
	// OnFailure is told each time sending to a peer fails (refused,
	// broken, stalled), so membership can check whether the peer is dead.
	// It is called on sender goroutines and must not block.
	OnFailure func(addr netip.AddrPort, err error)
	// Keyring, if set, authenticates and encrypts every connection: a
	// handshake proves both sides hold a key of the cluster, then every
	// frame is sealed. Peers must hold a keyring too.
	Keyring *keyring.Keyring
	// TLS, if set, opens every connection with a TLS 1.3 handshake (see
	// package tlsid); peers must require it too.
	TLS    *tls.Config
	Logger logrus.FieldLogger
}

// DefaultConfig returns the defaults of conf/server.toml (Tomcat's).
func DefaultConfig() Config {
	return Config{
		Timeout:     3 * time.Second,
		MaxRetries:  1,
		QueueLimit:  64 << 20,
		MaxFrame:    wire.DefaultMaxFrame,
		IdleTimeout: time.Minute,
	}
}

// Errors a send can fail with, per peer.
var (
	ErrQueueFull = errors.New("send queue full")
	ErrTimeout   = errors.New("no acknowledgement within the timeout")
	ErrClosed    = errors.New("sender closed")
	ErrForgotten = errors.New("peer removed")
	ErrRetries   = errors.New("connection failed and retries are used up")
	// ErrReplyTooLarge: the peer's answer to a request is larger than
	// MaxFrame; the request was applied.
	ErrReplyTooLarge = errors.New("reply larger than the maximum frame")
)

// RemoteError is the error a peer's handler returned for a sync message, or
// the peer's reason for not answering it.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "remote handler: " + e.Msg }

// PeerError is the failure of a send to one peer.
type PeerError struct {
	Addr netip.AddrPort
	Err  error
}

func (e PeerError) Error() string { return e.Addr.String() + ": " + e.Err.Error() }

// Error lists the peers a send failed for; it unwraps to their errors, so
// errors.Is(err, ErrTimeout) asks whether any peer timed out.
type Error struct{ Peers []PeerError }

func (e *Error) Error() string {
	s := make([]string, len(e.Peers))
	for i, p := range e.Peers {
		s[i] = p.Error()
	}
	return "send failed: " + strings.Join(s, "; ")
}

func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Peers))
	for i, p := range e.Peers {
		errs[i] = p.Err
	}
	return errs
}

// TCP is the TCP sender.
type TCP struct {
	cfg    Config
	local  wire.Peer // cfg.Local, as hellos carry it
	log    logrus.FieldLogger
	ctx    context.Context // cancelled by Close: ends dials
	cancel context.CancelFunc

	mu    sync.Mutex
	peers map[netip.AddrPort]*peer
	// seqs is where the sequence of each dropped peer (by Forget, or
	// idle) stopped, for at most maxForgotten addresses; seqFloor is the
	// highest number among those it let go. See newPeerSeq.
	seqs     map[netip.AddrPort]forgotten
	seqFloor uint64
	closed   bool
	wg       sync.WaitGroup
	// timers, dones and groups are kept for reuse: a sync write takes a
	// timer, a channel per peer and a group, and allocating them was a
	// visible part of its cost.
	timers, dones, groups sync.Pool
}

// timer returns a timer that fires after d, for putTimer when done.
func (s *TCP) timer(d time.Duration) *time.Timer {
	if t, ok := s.timers.Get().(*time.Timer); ok {
		t.Reset(d) // since Go 1.23 no stale tick can be left in t.C
		return t
	}
	return time.NewTimer(d)
}

func (s *TCP) putTimer(t *time.Timer) {
	t.Stop()
	s.timers.Put(t)
}

// done returns an empty channel for a message's outcome.
func (s *TCP) done() chan error {
	if c, ok := s.dones.Get().(chan error); ok {
		return c
	}
	return make(chan error, 1)
}

// outcome is the receive of m's outcome. The one value sent on m.done
// (finish sends once) is then taken, so the channel is empty and nobody
// sends on it again: it goes back for reuse.
func (s *TCP) outcome(m *msg, err error) error {
	s.dones.Put(m.done)
	return err
}

// forgotten is what is kept of a dropped peer: where its sequence stopped.
type forgotten struct {
	seq uint64
	at  time.Time
}

// maxForgotten bounds the addresses whose sequence numbers are kept after
// their peer was dropped.
const maxForgotten = 1024

// New returns a sender; peers are connected on first use.
func New(cfg Config) *TCP {
	def := DefaultConfig()
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = def.QueueLimit
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = def.MaxFrame
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	log := logx.OrDiscard(cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	return &TCP{cfg: cfg, local: toPeer(cfg.Local), log: log.WithField("component", "sender"), ctx: ctx, cancel: cancel, peers: make(map[netip.AddrPort]*peer), seqs: make(map[netip.AddrPort]forgotten)}
}

// Send delivers payload as a message of type t to every address in to, in
// parallel. In Async mode it returns once the message is queued for each
// peer; in Ack mode when each peer has read it; in Sync mode when each
// peer's handler has returned. It fails per peer, never waits longer than
// the timeout (or ctx), and a slow or dead peer does not delay the others.
func (s *TCP) Send(ctx context.Context, to []netip.AddrPort, t uint8, payload []byte, mode Mode) error {
	if err := checkSend(t, mode); err != nil {
		return err
	}
	var failed []PeerError
	waits := make([]*msg, 0, len(to))
	// Several answers to wait for: one wake-up when the last is in, not
	// one per answer.
	var g *group
	if mode != Async && len(to) > 1 {
		g = s.group(len(to))
	}
	for _, addr := range to {
		m, err := s.enqueue(addr, t, payload, mode, g)
		if err == nil && m.done != nil {
			waits = append(waits, m)
		}
		if err != nil {
			failed = append(failed, PeerError{addr, err})
		}
	}
	if g != nil {
		// The answers that will never come (not queued) count as in.
		g.add(-(len(to) - len(waits)))
		if len(waits) > 0 {
			failed = append(failed, s.awaitAll(ctx, g, waits)...)
		}
	} else if len(waits) > 0 {
		// A timer, not a context with a deadline: a child of the caller's
		// context registers with it and allocates more, on every write.
		timeout := s.timer(s.cfg.Timeout)
		defer s.putTimer(timeout)
		expired := false
		for _, m := range waits {
			if err := s.await(ctx, timeout.C, &expired, m); err != nil {
				failed = append(failed, PeerError{m.peer.addr, err})
			}
		}
	}
	if len(failed) > 0 {
		return &Error{Peers: failed}
	}
	return nil
}

// Request sends payload as a sync message of type t to the peer at to, in
// order with what else is sent to it, and returns the reply its handler
// returned (nil if empty), which is the caller's. It fails as a sync Send
// does, with a *Error naming to: a *RemoteError inside it if the handler
// failed, ErrReplyTooLarge if the reply does not fit in MaxFrame,
// ErrTimeout without an answer within the timeout, or ctx's error if ctx
// ends first.
func (s *TCP) Request(ctx context.Context, to netip.AddrPort, t uint8, payload []byte) ([]byte, error) {
	if err := checkSend(t, Sync); err != nil {
		return nil, err
	}
	m, err := s.enqueue(to, t, payload, Sync, nil)
	if err == nil {
		timeout := s.timer(s.cfg.Timeout)
		defer s.putTimer(timeout)
		expired := false
		err = s.await(ctx, timeout.C, &expired, m)
	}
	if err != nil {
		return nil, &Error{Peers: []PeerError{{to, err}}}
	}
	// Set before done was answered, so the receive in await orders it.
	return m.reply, nil
}

func checkSend(t uint8, mode Mode) error {
	if t < FirstType {
		return fmt.Errorf("sender: type %d is reserved for the transport", t)
	}
	if mode > Sync {
		return fmt.Errorf("sender: unknown send mode %v", mode)
	}
	return nil
}

func (s *TCP) enqueue(addr netip.AddrPort, t uint8, payload []byte, mode Mode, g *group) (*msg, error) {
	p, err := s.peer(addr)
	if err != nil {
		return nil, err
	}
	return p.enqueue(wire.Type(t), payload, wire.Mode(mode), g)
}

// group counts the answers one Send still waits for; the last one in
// signals done.
type group struct {
	left atomic.Int64
	done chan struct{} // buffered: one signal
}

// group returns a group waiting for n answers, for putGroup when done.
func (s *TCP) group(n int) *group {
	g, ok := s.groups.Get().(*group)
	if !ok {
		g = &group{done: make(chan struct{}, 1)}
	}
	g.left.Store(int64(n))
	return g
}

// add counts n answers in (n < 0); whoever brings left to zero signals,
// once: adding nothing brings nothing.
func (g *group) add(n int) {
	if n != 0 && g.left.Add(int64(n)) == 0 {
		g.done <- struct{}{}
	}
}

// awaitAll returns the failures of waits, the messages of group g, once
// every one is answered, or ctx ends, or the timeout passes: then those
// not answered fail with ctx's error or ErrTimeout.
func (s *TCP) awaitAll(ctx context.Context, g *group, waits []*msg) []PeerError {
	timeout := s.timer(s.cfg.Timeout)
	defer s.putTimer(timeout)
	select {
	case <-g.done:
		// Signalled, so empty again, and nobody counts on it any more.
		s.groups.Put(g)
	case <-ctx.Done():
	case <-timeout.C:
	}
	var failed []PeerError
	for _, m := range waits {
		var err error
		select {
		case err = <-m.done: // in: each answer is sent before it is counted
			err = s.outcome(m, err)
		default:
			if err = ctx.Err(); err == nil {
				s.failure(m.peer.addr, ErrTimeout)
				err = ErrTimeout
			}
		}
		if err != nil {
			failed = append(failed, PeerError{m.peer.addr, err})
		}
	}
	return failed
}

// await returns the outcome of m, or gives up on it when ctx ends or the
// call's deadline passes: timeout fires once, and expired records that it
// has, for the later awaits of the same call.
func (s *TCP) await(ctx context.Context, timeout <-chan time.Time, expired *bool, m *msg) error {
	if !*expired {
		select {
		case err := <-m.done:
			return s.outcome(m, err)
		case <-ctx.Done():
		case <-timeout:
			*expired = true
		}
	}
	select {
	case err := <-m.done: // answered just in time
		return s.outcome(m, err)
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.failure(m.peer.addr, ErrTimeout)
	return ErrTimeout
}

func (s *TCP) failure(addr netip.AddrPort, err error) {
	if s.cfg.OnFailure != nil {
		s.cfg.OnFailure(addr, err)
	}
}

// peer returns the connection state of addr, starting its writer. The peer
// is held for the caller, who must hand it a message (peer.enqueue, which
// releases the hold), so that it is not dropped as idle in between.
func (s *TCP) peer(addr netip.AddrPort) (*peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if p := s.peers[addr]; p != nil {
		p.mu.Lock()
		p.holds++
		p.mu.Unlock()
		return p, nil
	}
	p := newPeer(s, addr)
	p.seq = s.newPeerSeq(addr)
	p.usedSeq = p.seq // used now, at lastUse
	p.holds = 1
	s.peers[addr] = p
	s.wg.Add(1)
	go func() { defer s.wg.Done(); p.run() }()
	return p, nil
}

// newPeerSeq returns the sequence number a new peer for addr continues
// from; s.mu must be held.
//
// A peer used again after it was dropped continues its old stream: its
// receiver may still know the old sequence numbers (it keeps them per
// sender id until no connection of this sender has been open for minutes)
// and would take new messages that reuse them for copies of old ones, and
// drop them. So the last number sent is kept per address, for at most
// maxForgotten addresses: where restarted members get new addresses, dead
// addresses never stop coming. An address whose number was let go (or one
// never sent to) starts after seqFloor, the highest number let go, so after
// anything it was ever sent: a receiver that still remembers this sender
// sees a gap, which it logs and applies (it is what it sees when a
// sender's retries run out), never a copy; a receiver that does not know
// this sender takes any first number.
func (s *TCP) newPeerSeq(addr netip.AddrPort) uint64 {
	if f, ok := s.seqs[addr]; ok {
		delete(s.seqs, addr)
		return f.seq
	}
	return s.seqFloor
}

// dropped records where the sequence of a dropped peer stopped; s.mu must
// be held. Past maxForgotten addresses, the one dropped longest ago is let
// go, raising seqFloor.
func (s *TCP) dropped(addr netip.AddrPort, seq uint64) {
	if len(s.seqs) >= maxForgotten {
		var oldest netip.AddrPort
		var at time.Time
		for a, f := range s.seqs {
			if at.IsZero() || f.at.Before(at) {
				oldest, at = a, f.at
			}
		}
		s.seqFloor = max(s.seqFloor, s.seqs[oldest].seq)
		delete(s.seqs, oldest)
	}
	s.seqs[addr] = forgotten{seq: seq, at: time.Now()}
}

// Forget closes the connection to addr (a member that left or failed);
// what is still queued for it fails with ErrForgotten. A later send to
// addr starts a new peer, dropped again once idle for IdleTimeout.
func (s *TCP) Forget(addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[addr]
	delete(s.peers, addr)
	if p != nil {
		p.stop(ErrForgotten)
		// Stopped, p takes no more messages: its sequence is final.
		p.mu.Lock()
		seq := p.seq
		p.mu.Unlock()
		s.dropped(addr, seq)
	}
}

// reap drops p if it is still the peer of its address and has been idle
// for IdleTimeout at now: nothing queued or in flight, nothing sent since,
// no caller holding it on the way to a send. The check and the removal
// are made under s.mu, where sends look peers up: a send either finds p
// first (and holds it, so it is not dropped) or finds it gone and starts a
// new peer, which continues p's sequence.
func (s *TCP) reap(p *peer, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.peers[p.addr] != p {
		return false
	}
	p.mu.Lock()
	p.noteUse(now)
	idle := p.stopErr == nil && p.holds == 0 && len(p.pending) == 0 && len(p.inflight) == 0 &&
		now.Sub(p.lastUse) >= s.cfg.IdleTimeout
	seq := p.seq
	p.mu.Unlock()
	if !idle {
		return false
	}
	delete(s.peers, p.addr)
	p.stop(errIdle)
	s.dropped(p.addr, seq)
	return true
}

// errIdle stops a peer dropped for being idle. No message can get it: the
// peer had none, and no sender held it.
var errIdle = errors.New("peer dropped: idle")

// Drain waits until every message queued so far is acknowledged or failed,
// for a clean shutdown.
func (s *TCP) Drain(ctx context.Context) error {
	s.mu.Lock()
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, p := range peers {
		if err := p.waitEmpty(ctx); err != nil {
			return fmt.Errorf("sender: drain %v: %w", p.addr, err)
		}
	}
	return nil
}

// Close fails whatever is queued with ErrClosed, closes every connection
// and returns when all the sender's goroutines have ended.
func (s *TCP) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	peers := s.peers
	s.peers = nil
	s.mu.Unlock()
	s.cancel()
	for _, p := range peers {
		p.stop(ErrClosed)
	}
	if err := syncx.Wait(ctx, &s.wg); err != nil {
		return fmt.Errorf("sender: close: %w", err)
	}
	return nil
}

// PeerStats describes the connection to one peer.
type PeerStats struct {
	Addr       netip.AddrPort
	Connected  bool
	Queued     int   // messages waiting to be written
	Inflight   int   // written, not yet acknowledged
	Bytes      int64 // bytes queued or unacknowledged
	Sent       uint64
	SentBytes  uint64
	Writes     uint64 // batches taken for writing, one system call each: Sent/Writes is the batching
	Failed     uint64 // messages given up on
	Retried    uint64 // messages re-sent after a reconnect
	Reconnects uint64
	// ByType counts the messages queued for the peer, by type; types
	// never sent are absent.
	ByType map[uint8]uint64
}

// Stats describes every peer the sender has a connection state for: its
// length is the number of peers held, those sent to within IdleTimeout
// (or with messages still queued).
func (s *TCP) Stats() []PeerStats {
	s.mu.Lock()
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	out := make([]PeerStats, 0, len(peers))
	for _, p := range peers {
		p.mu.Lock()
		st := p.stats
		st.Addr, st.Connected = p.addr, p.conn != nil
		st.Queued, st.Inflight, st.Bytes = len(p.pending), len(p.inflight), p.bytes
		st.ByType = make(map[uint8]uint64)
		for t, n := range p.byType {
			if n > 0 {
				st.ByType[uint8(t)] = n
			}
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	return out
}

func toPeer(m membership.Member) wire.Peer {
	return wire.Peer{ID: wire.ID(m.ID), Name: m.Name, Domain: m.Domain, Addr: m.Addr, Started: m.Started, Zone: m.Zone}
}

func toMember(p wire.Peer) membership.Member {
	return membership.Member{ID: membership.ID(p.ID), Name: p.Name, Domain: p.Domain, Addr: p.Addr, Started: p.Started, Zone: p.Zone}
}
