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
)

// Config configures a TCP sender.
type Config struct {
	// Local is this node, introduced to every peer in the hello frame.
	Local wire.Peer
	// Timeout bounds how long a send waits for its acknowledgement and
	// how long a connection may go without acknowledging what it was sent.
	Timeout time.Duration
	// MaxRetries is how many times a message is re-sent on a new
	// connection after the one it was written to failed (Tomcat's
	// maxRetryAttempts).
	MaxRetries int
	// QueueLimit bounds the bytes queued or unacknowledged per peer.
	QueueLimit int64
	// MaxFrame bounds the frames a peer may answer with.
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
)

// RemoteError is the error a peer's handler returned for a sync message.
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
	return &TCP{cfg: cfg, log: log.WithField("component", "sender"), ctx: ctx, cancel: cancel, peers: make(map[netip.AddrPort]*peer), seqs: make(map[netip.AddrPort]uint64)}
}

// Send delivers payload as a message of type t to every address in to, in
// parallel. In Async mode it returns once the message is queued for each
// peer; in Ack mode when each peer has read it; in Sync mode when each
// peer's handler has returned. It fails per peer, never waits longer than
// the timeout (or ctx), and a slow or dead peer does not delay the others.
func (s *TCP) Send(ctx context.Context, to []netip.AddrPort, t wire.Type, payload []byte, mode wire.Mode) error {
	if t < wire.FirstApp {
		return fmt.Errorf("sender: type %d is reserved for the transport", t)
	}
	var failed []PeerError
	waits := make([]*msg, 0, len(to))
	for _, addr := range to {
		p, err := s.peer(addr)
		if err == nil {
			var m *msg
			if m, err = p.enqueue(t, payload, mode); err == nil && m.done != nil {
				waits = append(waits, m)
			}
		}
		if err != nil {
			failed = append(failed, PeerError{addr, err})
		}
	}
	if len(waits) > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		for _, m := range waits {
			var err error
			select {
			case err = <-m.done:
			case <-wctx.Done():
				select {
				case err = <-m.done: // answered just in time
				default:
					if err = ctx.Err(); err == nil {
						err = ErrTimeout
						s.failure(m.peer.addr, err)
					}
				}
			}
			if err != nil {
				failed = append(failed, PeerError{m.peer.addr, err})
			}
		}
	}
	if len(failed) > 0 {
		return &Error{Peers: failed}
	}
	return nil
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
	ByType map[wire.Type]uint64
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
		st.ByType = make(map[wire.Type]uint64)
		for t, n := range p.byType {
			if n > 0 {
				st.ByType[wire.Type(t)] = n
			}
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	return out
}
