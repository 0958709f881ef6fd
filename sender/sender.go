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
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/syncx"
	"github.com/flockhq/flock/internal/wire"
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

func (m Mode) String() string {
	switch m {
	case Async:
		return "async"
	case Ack:
		return "ack"
	case Sync:
		return "sync"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

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
	// OnFailure is told each time sending to a peer fails (refused,
	// broken, stalled), so membership can check whether the peer is dead.
	// It is called on sender goroutines and must not block.
	OnFailure func(addr netip.AddrPort, err error)
	Logger    logrus.FieldLogger
}

// DefaultConfig returns the defaults of conf/server.toml (Tomcat's).
func DefaultConfig() Config {
	return Config{
		Timeout:    3 * time.Second,
		MaxRetries: 1,
		QueueLimit: 64 << 20,
		MaxFrame:   wire.DefaultMaxFrame,
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

	mu     sync.Mutex
	peers  map[netip.AddrPort]*peer
	seqs   map[netip.AddrPort]uint64 // last sequence number sent to a forgotten peer
	closed bool
	wg     sync.WaitGroup
}

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
	log := logx.OrDiscard(cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	return &TCP{cfg: cfg, local: toPeer(cfg.Local), log: log.WithField("component", "sender"), ctx: ctx, cancel: cancel, peers: make(map[netip.AddrPort]*peer), seqs: make(map[netip.AddrPort]uint64)}
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
	for _, addr := range to {
		m, err := s.enqueue(addr, t, payload, mode)
		if err == nil && m.done != nil {
			waits = append(waits, m)
		}
		if err != nil {
			failed = append(failed, PeerError{addr, err})
		}
	}
	if len(waits) > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		for _, m := range waits {
			if err := s.await(ctx, wctx, m); err != nil {
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
	m, err := s.enqueue(to, t, payload, Sync)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		err = s.await(ctx, wctx, m)
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

func (s *TCP) enqueue(addr netip.AddrPort, t uint8, payload []byte, mode Mode) (*msg, error) {
	p, err := s.peer(addr)
	if err != nil {
		return nil, err
	}
	return p.enqueue(wire.Type(t), payload, wire.Mode(mode))
}

// await returns the outcome of m, or gives up on it when wctx (ctx bounded
// by the timeout) ends: with ctx's error if that is why, else ErrTimeout.
func (s *TCP) await(ctx, wctx context.Context, m *msg) error {
	select {
	case err := <-m.done:
		return err
	case <-wctx.Done():
		select {
		case err := <-m.done: // answered just in time
			return err
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.failure(m.peer.addr, ErrTimeout)
		return ErrTimeout
	}
}

func (s *TCP) failure(addr netip.AddrPort, err error) {
	if s.cfg.OnFailure != nil {
		s.cfg.OnFailure(addr, err)
	}
}

// peer returns the connection state of addr, starting its writer.
func (s *TCP) peer(addr netip.AddrPort) (*peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if p := s.peers[addr]; p != nil {
		return p, nil
	}
	p := newPeer(s, addr)
	// A peer used again after Forget continues its old stream: its
	// receiver may still know the old sequence numbers, and would take
	// new messages that reuse them for copies of old ones.
	p.seq = s.seqs[addr]
	delete(s.seqs, addr)
	s.peers[addr] = p
	s.wg.Add(1)
	go func() { defer s.wg.Done(); p.run() }()
	return p, nil
}

// Forget closes the connection to addr (a member that left or failed);
// what is still queued for it fails with ErrForgotten.
func (s *TCP) Forget(addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[addr]
	delete(s.peers, addr)
	if p != nil {
		p.stop(ErrForgotten)
		// Stopped, p takes no more messages: its sequence is final.
		p.mu.Lock()
		s.seqs[addr] = p.seq
		p.mu.Unlock()
	}
}

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
	Failed     uint64 // messages given up on
	Retried    uint64 // messages re-sent after a reconnect
	Reconnects uint64
	// ByType counts the messages queued for the peer, by type; types
	// never sent are absent.
	ByType map[uint8]uint64
}

// Stats describes every peer the sender has a connection state for.
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
	return wire.Peer{ID: wire.ID(m.ID), Name: m.Name, Domain: m.Domain, Addr: m.Addr, Started: m.Started}
}

func toMember(p wire.Peer) membership.Member {
	return membership.Member{ID: membership.ID(p.ID), Name: p.Name, Domain: p.Domain, Addr: p.Addr, Started: p.Started}
}
