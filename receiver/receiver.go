package receiver

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/refuse"
	"github.com/flockhq/flock/internal/syncx"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/tlsid"
)

// FirstType is the first message type an application may use; the types
// below it are the transport's own control frames.
const FirstType uint8 = uint8(wire.FirstApp)

// Receiver is what the cluster needs of a receiver: TCP is the one flock
// ships, and an implementation may come from outside the module (an
// in-memory network for tests).
type Receiver interface {
	// Handle registers h for messages of type t (at least FirstType). It
	// must be called before Start.
	Handle(t uint8, h Handler)
	// Start begins to accept and serve connections, until Stop.
	Start()
	// Stop ends every connection and waits until the receiver's goroutines
	// have ended, or ctx ends first; handlers see their context cancelled.
	Stop(ctx context.Context) error
	// Stats returns the receiver's counters.
	Stats() Stats
}

var _ Receiver = (*TCP)(nil)

// Message is one application message as a handler sees it.
type Message struct {
	From    membership.Member // who sent it, as its hello said
	Type    uint8
	Payload []byte // owned by the handler
}

// Handler applies a message. It runs on the reader of the sender's
// connection, so the messages of one sender are applied one at a time, in
// the order they were sent; a slow handler slows that sender only.
//
// For a sync message, the result travels back to the sender: the error, or
// else the reply (what the sender's Request returns). For async and ack
// messages nobody waits for either, so both are dropped. The receiver
// copies a reply it keeps, so the handler may reuse its memory.
type Handler func(ctx context.Context, m Message) (reply []byte, err error)

// Observer hears about the members that call: a hello or ping shows the
// caller is alive; a leave that it is going. Static membership feeds on it.
type Observer interface {
	Seen(m membership.Member)
	Leaving(m membership.Member)
}

// Config configures a receiver.
type Config struct {
	// Local answers pings: the member this node is.
	Local membership.Member
	// MaxFrame bounds a frame's body; a larger one closes the connection.
	// It bounds the acks this receiver writes too (peers share the
	// configuration), so a reply must fit in it.
	MaxFrame int
	// IdleTimeout closes a connection that sends nothing for this long.
	IdleTimeout time.Duration
	// FrameTimeout bounds the time from a frame's first byte to its last,
	// so a peer that trickles bytes (slow loris) cannot hold a reader.
	FrameTimeout time.Duration
	// HelloTimeout bounds the time from accept to a complete hello (the
	// keyring's and TLS handshakes included): a caller that does not say
	// who it is soon is let go. Until the hello, frames are at most
	// wire.MaxAuthFrame bytes and the connection holds small buffers.
	HelloTimeout time.Duration
	// MaxConns and MaxConnsPerIP bound the connections open at once, in
	// all and from one address: a connection beyond either is closed at
	// accept (counted as "limit"), so the cluster port cannot use up the
	// process's file descriptors.
	MaxConns, MaxConnsPerIP int
	// MaxBuffered bounds the bytes of large frame bodies (over 64 KiB)
	// held at once by all connections: a frame that finds the budget spent
	// waits up to FrameTimeout for bytes to come back, then its connection
	// is closed (reason "limit"). At least MaxFrame.
	MaxBuffered int64
	Observer    Observer
	// Keyring, if set, is required of every caller: a connection must
	// open with the handshake that proves the caller holds a key of the
	// cluster, and every frame after it must be sealed. Anything else is
	// refused and counted (Stats.Refused).
	Keyring *keyring.Keyring
	// TLS, if set, is required of every caller: the connection is a TLS
	// 1.3 one whose client certificate the configuration verifies (see
	// package tlsid), and the hello must name a member the certificate
	// names. Refusals are counted as "tls" and "identity".
	TLS    *tls.Config
	Logger logrus.FieldLogger
}

// DefaultConfig returns the defaults of conf/server.toml.
func DefaultConfig() Config {
	return Config{
		MaxFrame:      wire.DefaultMaxFrame,
		IdleTimeout:   60 * time.Second,
		FrameTimeout:  10 * time.Second,
		HelloTimeout:  2 * time.Second,
		MaxConns:      1024,
		MaxConnsPerIP: 64,
		MaxBuffered:   32 << 20,
	}
}

// TCP accepts cluster connections and hands their messages to handlers.
type TCP struct {
	cfg      Config
	local    wire.Peer // cfg.Local, as pongs carry it
	log      logrus.FieldLogger
	ln       net.Listener
	handlers map[wire.Type]Handler
	ctx      context.Context
	cancel   context.CancelFunc

	// failLog rate-limits "message failed" (one a second, with the count
	// of those not logged): a member sent changes it is behind on, or a
	// peer floods bad messages, must not flood the log.
	failLog struct {
		sync.Mutex
		last       time.Time
		suppressed int
	}

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	perIP   map[netip.Addr]int // open connections by source address
	senders map[wire.ID]*senderState
	pruned  time.Time // when senders was last swept for forgotten ones
	budget  *wire.Budget
	stopped bool
	wg      sync.WaitGroup

	stats   counters
	refused *refuse.Counter
}

// senderState is what survives a sender's reconnect: the last sequence
// number applied, so a message re-sent after a retry is recognised, and how
// recent sync messages went, so the copy is answered as the original was.
type senderState struct {
	mu       sync.Mutex // held while a message of this sender is applied
	lastSeq  uint64
	started  bool
	failures map[uint64]string // recent failed sync messages, for re-sent copies
	replies  replyCache
	conns    int       // open connections; guarded by TCP.mu
	idleFrom time.Time // when conns fell to 0; guarded by TCP.mu
}

// counters are the receiver's statistics.
type counters struct {
	Connections, Frames, Bytes, Messages, Duplicates, Rejected, HandlerErrors, NoHandler atomic.Uint64
	Reads, Writes                                                                        atomic.Uint64
	// ByType counts application messages read, by type.
	ByType [256]atomic.Uint64
}

// Stats is a snapshot of the receiver's counters.
type Stats struct {
	Connections   uint64 // connections accepted
	Open          int    // connections open now
	Frames        uint64 // frames read
	Bytes         uint64 // frame bytes read
	Reads         uint64 // read system calls on members' connections (Frames/Reads is the batching)
	Writes        uint64 // write system calls of acknowledgements and answers
	Messages      uint64 // application messages handed to handlers
	Duplicates    uint64 // re-sent messages recognised and not applied again
	Rejected      uint64 // connections closed for a protocol error
	HandlerErrors uint64 // handlers that returned an error
	NoHandler     uint64 // messages of a type nobody handles
	// ByType counts the application messages read, duplicates included,
	// by type; types never received are absent.
	ByType map[uint8]uint64
	// Refused counts the connections closed for what they sent, by
	// reason (see package refuse); reasons never seen are absent.
	Refused map[string]uint64
}

// New prepares a receiver on ln; register handlers, then call Start.
func New(ln net.Listener, cfg Config) *TCP {
	log := logx.OrDiscard(cfg.Logger)
	def := DefaultConfig()
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = def.MaxFrame
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = def.FrameTimeout
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = def.HelloTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = def.MaxConns
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = def.MaxConnsPerIP
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = def.MaxBuffered
	}
	cfg.MaxBuffered = max(cfg.MaxBuffered, int64(cfg.MaxFrame)+keyring.TagSize)
	ctx, cancel := context.WithCancel(context.Background())
	return &TCP{
		cfg:      cfg,
		local:    toPeer(cfg.Local),
		log:      log.WithField("component", "receiver"),
		ln:       ln,
		handlers: make(map[wire.Type]Handler),
		ctx:      ctx,
		cancel:   cancel,
		conns:    make(map[net.Conn]struct{}),
		perIP:    make(map[netip.Addr]int),
		senders:  make(map[wire.ID]*senderState),
		budget:   wire.NewBudget(cfg.MaxBuffered),
		refused:  refuse.New(log.WithField("component", "receiver")),
	}
}

// Handle registers h for messages of type t. It must be called before Start.
func (r *TCP) Handle(t uint8, h Handler) {
	if t < FirstType {
		panic(fmt.Sprintf("receiver: type %d is reserved for the transport", t))
	}
	r.handlers[wire.Type(t)] = h
}

// Addr is the address the receiver listens on.
func (r *TCP) Addr() net.Addr { return r.ln.Addr() }

// Start accepts connections until Stop.
func (r *TCP) Start() {
	r.wg.Add(1)
	go r.accept()
}

// Stop closes the listener and every connection and returns when all the
// receiver's goroutines have ended (handlers see their context cancelled).
func (r *TCP) Stop(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	err := r.ln.Close()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.cancel()
	if err := syncx.Wait(ctx, &r.wg); err != nil {
		return fmt.Errorf("receiver: stop: %w", err)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("receiver: %w", err)
	}
	return nil
}

// Stats returns the receiver's counters.
func (r *TCP) Stats() Stats {
	r.mu.Lock()
	open := len(r.conns)
	r.mu.Unlock()
	return Stats{
		Connections: r.stats.Connections.Load(), Open: open,
		Frames: r.stats.Frames.Load(), Bytes: r.stats.Bytes.Load(),
		Reads: r.stats.Reads.Load(), Writes: r.stats.Writes.Load(),
		Messages: r.stats.Messages.Load(), Duplicates: r.stats.Duplicates.Load(),
		Rejected: r.stats.Rejected.Load(), HandlerErrors: r.stats.HandlerErrors.Load(),
		NoHandler: r.stats.NoHandler.Load(), ByType: byType(&r.stats.ByType),
		Refused: r.refused.Snapshot(),
	}
}

func byType(c *[256]atomic.Uint64) map[uint8]uint64 {
	m := make(map[uint8]uint64)
	for t := range c {
		if n := c[t].Load(); n > 0 {
			m[uint8(t)] = n
		}
	}
	return m
}

func (r *TCP) accept() {
	defer r.wg.Done()
	var backoff time.Duration
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little rather
			// than spin, and keep serving the connections already open.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.log.WithError(err).Warn("accept failed")
			select {
			case <-time.After(backoff):
				continue
			case <-r.ctx.Done():
				return
			}
		}
		backoff = 0
		ip := remoteIP(c)
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			c.Close()
			return
		}
		if len(r.conns) >= r.cfg.MaxConns || r.perIP[ip] >= r.cfg.MaxConnsPerIP {
			open, fromIP := len(r.conns), r.perIP[ip]
			r.mu.Unlock()
			// Counted before the close, so that whoever sees the close
			// also sees the count.
			r.stats.Rejected.Add(1)
			r.refused.Refuse(refuse.Limit, c.RemoteAddr().String(),
				fmt.Errorf("%d connections open, %d from this address (at most %d, %d)", open, fromIP, r.cfg.MaxConns, r.cfg.MaxConnsPerIP))
			c.Close()
			continue
		}
		r.conns[c] = struct{}{}
		r.perIP[ip]++
		r.wg.Add(1)
		r.mu.Unlock()
		r.stats.Connections.Add(1)
		go r.serve(c)
	}
}

// serve reads one connection until it fails or the receiver stops.
func (r *TCP) serve(c net.Conn) {
	defer r.wg.Done()
	defer func() {
		ip := remoteIP(c)
		r.mu.Lock()
		delete(r.conns, c)
		if r.perIP[ip]--; r.perIP[ip] <= 0 {
			delete(r.perIP, ip)
		}
		r.mu.Unlock()
		c.Close()
	}()
	conn := c
	helloBy := time.Now().Add(r.cfg.HelloTimeout)
	if cfg := r.cfg.TLS; cfg != nil {
		tc := tls.Server(c, cfg)
		c.SetDeadline(helloBy) // a caller that stalls the handshake is let go
		if err := tc.HandshakeContext(r.ctx); err != nil {
			r.stats.Rejected.Add(1)
			r.refused.Refuse(refuse.TLS, c.RemoteAddr().String(), err)
			return
		}
		c.SetDeadline(time.Time{})
		conn = tc
	}
	// Small buffers and frames until the caller has said who it is (and,
	// keyed, proved it holds the key): the hello swaps them for full ones.
	cs := &connServer{r: r, c: conn, rd: wire.NewReaderSize(countedReader{conn, &r.stats.Reads}, r.cfg.MaxFrame, preHelloBuffer),
		w: bufio.NewWriterSize(countedWriter{conn, &r.stats.Writes}, 512), helloBy: helloBy}
	cs.rd.SetMax(wire.MaxAuthFrame)
	cs.rd.SetBudget(r.budget, r.cfg.FrameTimeout)
	err := cs.run()
	cs.rd.Release()
	if cs.sender != nil {
		r.release(wire.ID(cs.from.ID))
	}
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, errIdle):
	case errors.Is(err, errProtocol):
		r.stats.Rejected.Add(1)
		reason := refuse.Malformed
		switch {
		case errors.Is(err, keyring.ErrUnknownKey):
			reason = refuse.UnknownKey
		case errors.Is(err, wire.ErrUnauthenticated) && cs.rd.Sealed():
			reason = refuse.Forged
		case errors.Is(err, wire.ErrUnauthenticated), errors.Is(err, wire.ErrFlags), errors.Is(err, errNoKey):
			reason = refuse.Unauthenticated
		case errors.Is(err, tlsid.ErrWrongName), errors.Is(err, tlsid.ErrNoCertificate):
			reason = refuse.Identity
		case errors.Is(err, errNoHello), errors.Is(err, wire.ErrBudget):
			reason = refuse.Limit
		}
		r.refused.Refuse(reason, c.RemoteAddr().String(), err)
	default:
		r.log.WithFields(logrus.Fields{"remote": c.RemoteAddr(), "member": cs.from.Name}).WithError(err).Debug("connection ended")
	}
}

var (
	errProtocol = errors.New("protocol error")
	errIdle     = errors.New("idle connection closed")
	errNoKey    = errors.New("the caller offers a key, and this node holds no keyring")
	errNoHello  = errors.New("no hello in time")
)

// preHelloBuffer is a connection's read buffer until its hello: room for
// the largest frame read before it (wire.MaxAuthFrame and a header), no
// more, so that connections that never say hello hold little memory.
const preHelloBuffer = 4 << 10

// connServer is the state of one connection's reader.
type connServer struct {
	r      *TCP
	c      net.Conn
	rd     *wire.Reader
	w      *bufio.Writer
	wbuf   []byte
	seal   *wire.Sealer // seals what this side writes, once keyed
	sbuf   []byte       // sealed copy of wbuf
	from   membership.Member
	sender *senderState
	// helloBy: the hello must be complete by then.
	helloBy time.Time
	// acked is the highest sequence number acknowledged on this connection;
	// received the highest read. Async messages are acknowledged together,
	// when the reader runs out of buffered frames.
	acked, received uint64
	// readFor is the wait the read deadline was last set for, at readSet.
	readFor time.Duration
	readSet time.Time
}

// readWithin sets the read deadline to now+d, or to the hello's deadline
// if that comes first and the hello has not been read yet. Under load it
// is called per frame, and moving a deadline updates a runtime timer: a
// deadline for the same wait set less than d/16 ago is kept, so a wait may
// end up to 1/16 of d early.
func (cs *connServer) readWithin(d time.Duration) {
	now := time.Now()
	if cs.sender != nil && cs.readFor == d && now.Sub(cs.readSet) < d/16 {
		return
	}
	t, wait := now.Add(d), d
	if cs.sender == nil && cs.helloBy.Before(t) {
		t, wait = cs.helloBy, 0 // not a deadline to keep past the hello
	}
	cs.c.SetReadDeadline(t)
	cs.readFor, cs.readSet = wait, now
}

// remoteIP is the caller's address, for the per-address budget; the zero
// address (one budget for all) for a listener that is not TCP.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (cs *connServer) run() error {
	r := cs.r
	for {
		if cs.rd.Buffered() == 0 {
			// About to block on the network: send the acks owed so far,
			// then wait for the next frame for at most the idle timeout.
			if err := cs.flush(); err != nil {
				return err
			}
			cs.readWithin(r.cfg.IdleTimeout)
		}
		inFrame := false
		f, err := cs.rd.Next(func() {
			inFrame = true
			if !cs.rd.FrameBuffered() { // else no read can block: no deadline to move
				cs.readWithin(r.cfg.FrameTimeout)
			}
		})
		if err != nil {
			if errors.Is(err, wire.ErrMagic) || errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrFlags) ||
				errors.Is(err, wire.ErrTooLarge) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrUnauthenticated) ||
				errors.Is(err, wire.ErrBudget) {
				return fmt.Errorf("%w: %w", errProtocol, err)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if cs.sender == nil && !time.Now().Before(cs.helloBy) {
					return fmt.Errorf("%w: %w (%v)", errProtocol, errNoHello, r.cfg.HelloTimeout)
				}
				if !inFrame {
					// Idle: normal; the sender reconnects when it needs to.
					return errIdle
				}
				return fmt.Errorf("%w: frame not complete within %v: %w", errProtocol, r.cfg.FrameTimeout, err)
			}
			return err
		}
		r.stats.Frames.Add(1)
		r.stats.Bytes.Add(uint64(wire.HeaderLen + len(f.Body)))
		if err := cs.frame(f); err != nil {
			return err
		}
	}
}

func (cs *connServer) frame(f wire.Frame) error {
	r := cs.r
	if ring := r.cfg.Keyring; ring != nil && !cs.rd.Sealed() {
		// Nothing but the handshake is read from a caller not yet keyed.
		answer, seal, err := wire.ServerHandshake(f, cs.rd, ring)
		if err != nil {
			return fmt.Errorf("%w: %w", errProtocol, err)
		}
		cs.seal = seal
		if _, err := cs.w.Write(answer); err != nil {
			return err
		}
		return cs.flushWriter()
	}
	if f.Type == wire.TypeAuth {
		if r.cfg.Keyring == nil {
			return fmt.Errorf("%w: %w", errProtocol, errNoKey)
		}
		return fmt.Errorf("%w: second handshake", errProtocol)
	}
	if cs.sender == nil && f.Type != wire.TypeHello {
		return fmt.Errorf("%w: %v before hello", errProtocol, f.Type)
	}
	switch f.Type {
	case wire.TypeHello:
		if cs.sender != nil {
			return fmt.Errorf("%w: second hello", errProtocol)
		}
		p, err := wire.ParseHello(f.Body)
		if err != nil {
			return fmt.Errorf("%w: hello: %w", errProtocol, err)
		}
		if p.Domain != r.cfg.Local.Domain {
			return fmt.Errorf("%w: caller %s is of domain %q, this node of %q", errProtocol, p.Name, p.Domain, r.cfg.Local.Domain)
		}
		if tc, ok := cs.c.(*tls.Conn); ok {
			if err := tlsid.CheckPeer(tc.ConnectionState(), p.Name); err != nil {
				return fmt.Errorf("%w: hello: %w", errProtocol, err)
			}
		}
		cs.from = toMember(p)
		cs.sender = r.acquire(p.ID)
		cs.rd.SetMax(r.cfg.MaxFrame) // the hello opened: the caller holds the key
		cs.rd.Grow(wire.ReadBuffer)
		if err := cs.w.Flush(); err != nil {
			return err
		}
		cs.w = bufio.NewWriterSize(countedWriter{cs.c, &r.stats.Writes}, 16<<10)
		if o := r.cfg.Observer; o != nil {
			o.Seen(cs.from)
		}
		return nil
	case wire.TypePing, wire.TypeLeave:
		nonce, err := wire.ParsePing(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %v: %w", errProtocol, f.Type, err)
		}
		if o := r.cfg.Observer; o != nil {
			if f.Type == wire.TypeLeave {
				o.Leaving(cs.from)
			} else {
				o.Seen(cs.from)
			}
		}
		cs.wbuf = wire.AppendPong(cs.wbuf[:0], nonce, r.local)
		return cs.write(cs.wbuf)
	case wire.TypeAck, wire.TypePong:
		return fmt.Errorf("%w: unexpected %v", errProtocol, f.Type)
	}
	e, err := wire.ParseEnvelope(f.Body)
	if err != nil {
		return fmt.Errorf("%w: %v: %w", errProtocol, f.Type, err)
	}
	if e.From != wire.ID(cs.from.ID) {
		return fmt.Errorf("%w: envelope from %x on the connection of %x", errProtocol, e.From, cs.from.ID)
	}
	return cs.message(f.Type, e)
}

// message applies one application message at most once and acknowledges it
// as its mode asks.
func (cs *connServer) message(t wire.Type, e wire.Envelope) error {
	r := cs.r
	r.stats.ByType[t].Add(1)
	s := cs.sender
	s.mu.Lock()
	defer s.mu.Unlock()
	cs.received = max(cs.received, e.Seq)
	if s.started && e.Seq <= s.lastSeq {
		// A copy re-sent after a reconnect: applied before, answer as then.
		r.stats.Duplicates.Add(1)
		switch e.Mode {
		case wire.Async:
			return nil
		case wire.Sync:
			return cs.ack(s.answerAgain(e.Seq))
		}
		return cs.ack(wire.AckBody{Seq: e.Seq, Status: wire.Applied})
	}
	if s.started && e.Seq != s.lastSeq+1 {
		// The sender gave up on the messages in between (its retries ran
		// out); they are reported failed on its side.
		r.log.WithFields(logrus.Fields{"member": cs.from.Name, "expected": s.lastSeq + 1, "got": e.Seq}).Warn("gap in message sequence")
	}
	s.started, s.lastSeq = true, e.Seq

	var werr error
	if e.Mode == wire.Ack {
		// Acknowledged on receipt: the ack must not wait for the handler.
		// The message is taken (lastSeq) whether or not the ack could be
		// written, so a failed write ends the connection only after the
		// handler has run: a copy re-sent later would be dropped.
		if werr = cs.ack(wire.AckBody{Seq: e.Seq, Status: wire.Received}); werr == nil {
			werr = cs.flushWriter()
		}
	}
	h := r.handlers[t]
	var reply []byte
	var herr error
	if h == nil {
		r.stats.NoHandler.Add(1)
		herr = fmt.Errorf("no handler for message type %d on %s", t, r.cfg.Local.Name)
	} else {
		r.stats.Messages.Add(1)
		reply, herr = h(r.ctx, Message{From: cs.from, Type: uint8(t), Payload: e.Payload})
		if herr != nil {
			r.stats.HandlerErrors.Add(1)
		}
	}
	if werr != nil {
		return werr
	}
	if e.Mode != wire.Sync {
		if herr != nil {
			if ok, n := r.allowFailLog(); ok {
				r.log.WithFields(logrus.Fields{"member": cs.from.Name, "type": t, "seq": e.Seq, "suppressed": n}).WithError(herr).Warn("message failed")
			}
		}
		if e.Mode == wire.Async {
			return nil
		}
		// Ack mode: acknowledged on receipt; this second ack, sent with the
		// next batch, tells the sender the handler is done too, so that
		// Drain covers it. Its error is not the sender's to report.
		return cs.ack(wire.AckBody{Seq: e.Seq, Status: wire.Applied})
	}
	a := wire.AckBody{Seq: e.Seq, Status: wire.Applied, Reply: reply}
	if herr == nil && wire.AckLen(a) > r.cfg.MaxFrame {
		// The sender would refuse the ack: tell it why instead.
		herr = fmt.Errorf("reply of %d bytes to message type %d does not fit in a frame of at most %d bytes", len(reply), t, r.cfg.MaxFrame)
		r.log.WithFields(logrus.Fields{"member": cs.from.Name, "type": t, "seq": e.Seq}).WithError(herr).Warn("reply refused")
	}
	if herr != nil {
		a = wire.AckBody{Seq: e.Seq, Status: wire.Failed, Err: errorText(herr)}
		s.rememberFailure(e.Seq, a.Err)
		return cs.ack(a)
	}
	s.replies.add(e.Seq, reply, 2*r.cfg.MaxFrame)
	return cs.ack(a)
}

// maxErrorText bounds the handler error an ack carries: the ack must fit in
// a frame, and the receiver remembers recent failures per sender.
const maxErrorText = 16 << 10

// allowFailLog reports whether to log a failed message now, and how many
// were not logged since the last one.
func (r *TCP) allowFailLog() (bool, int) {
	r.failLog.Lock()
	defer r.failLog.Unlock()
	now := time.Now()
	if !r.failLog.last.IsZero() && now.Sub(r.failLog.last) < time.Second {
		r.failLog.suppressed++
		return false, 0
	}
	n := r.failLog.suppressed
	r.failLog.last, r.failLog.suppressed = now, 0
	return true, n
}

func errorText(err error) string {
	msg := err.Error()
	if len(msg) <= maxErrorText {
		return msg
	}
	return strings.ToValidUTF8(msg[:maxErrorText], "") + " ... (truncated)"
}

// answerAgain is the ack for a re-sent copy of sync message seq, applied
// before: what the original got, or a failure if its reply is gone; an
// empty success would pass for an answer.
func (s *senderState) answerAgain(seq uint64) wire.AckBody {
	if msg, failed := s.failures[seq]; failed {
		return wire.AckBody{Seq: seq, Status: wire.Failed, Err: msg}
	}
	reply, lost := s.replies.lookup(seq)
	if lost {
		return wire.AckBody{Seq: seq, Status: wire.Failed, Err: fmt.Sprintf(
			"reply no longer available: message %d was applied, and its reply has since been dropped (a receiver keeps the last %d replies of each sender)", seq, keepReplies)}
	}
	return wire.AckBody{Seq: seq, Status: wire.Applied, Reply: reply}
}

func (s *senderState) rememberFailure(seq uint64, msg string) {
	const keep = 256 // a retry re-sends what was in flight, never more than this far back in practice
	if s.failures == nil {
		s.failures = make(map[uint64]string)
	}
	s.failures[seq] = msg
	for old := range s.failures {
		if old+keep < seq {
			delete(s.failures, old)
		}
	}
}

// Bounds of the replies a receiver keeps per sender, for copies re-sent
// after a reconnect. A sender re-sends only what was in flight when its
// connection failed, so the last few replies are the ones asked for again;
// the byte bound (twice MaxFrame, given to add) caps what large replies
// cost, while always leaving room for the newest.
const (
	keepReplies = 16
	// keepLost bounds the sequence numbers remembered as "had a reply, now
	// dropped"; below the oldest of them nothing is known.
	keepLost = 256
)

// replyCache is the recent non-empty replies of one sender's sync messages,
// in sequence order (a sender's sequence only grows), and which older ones
// were dropped: a copy of a message without a reply gets an empty success,
// one whose reply was dropped must not.
type replyCache struct {
	kept  []keptReply
	bytes int
	lost  []uint64 // oldest first
	// unknown: the replies of messages up to here may have been dropped
	// and forgotten (lost overflowed).
	unknown uint64
}

type keptReply struct {
	seq   uint64
	reply []byte
}

// add remembers the reply of message seq, copied, within the bounds.
func (c *replyCache) add(seq uint64, reply []byte, maxBytes int) {
	if len(reply) == 0 {
		return
	}
	c.kept = append(c.kept, keptReply{seq, slices.Clone(reply)})
	c.bytes += len(reply)
	n := 0
	for len(c.kept)-n > keepReplies || c.bytes > maxBytes {
		c.bytes -= len(c.kept[n].reply)
		c.lost = append(c.lost, c.kept[n].seq)
		n++
	}
	c.kept = slices.Delete(c.kept, 0, n) // which clears the tail: no reference survives
	if over := len(c.lost) - keepLost; over > 0 {
		c.unknown = c.lost[over-1]
		c.lost = slices.Delete(c.lost, 0, over)
	}
}

// lookup returns the reply of message seq, or lost if it had one that is
// no longer kept (or may have had: beyond what the cache remembers).
func (c *replyCache) lookup(seq uint64) (reply []byte, lost bool) {
	if i, ok := slices.BinarySearchFunc(c.kept, seq, func(k keptReply, seq uint64) int { return cmp.Compare(k.seq, seq) }); ok {
		return c.kept[i].reply, false
	}
	if _, ok := slices.BinarySearch(c.lost, seq); ok {
		return nil, true
	}
	return nil, seq <= c.unknown
}

func (cs *connServer) ack(a wire.AckBody) error {
	cs.wbuf = wire.AppendAck(cs.wbuf[:0], a)
	err := cs.write(cs.wbuf)
	if cap(cs.wbuf) > 64<<10 {
		cs.wbuf = nil // a large reply's buffer is not worth keeping per connection
	}
	if err != nil {
		return err
	}
	cs.acked = max(cs.acked, a.Seq)
	return nil
}

// write buffers one whole frame, sealed if the connection is keyed.
func (cs *connServer) write(frame []byte) error {
	if cs.seal != nil {
		cs.sbuf = cs.seal.Seal(cs.sbuf[:0], frame)
		frame = cs.sbuf
		defer func() {
			if cap(cs.sbuf) > 64<<10 {
				cs.sbuf = nil
			}
		}()
	}
	if cs.w.Available() < len(frame) {
		// This write flushes the buffer: give it a fresh deadline.
		cs.c.SetWriteDeadline(time.Now().Add(cs.r.cfg.FrameTimeout))
	}
	_, err := cs.w.Write(frame)
	return err
}

// flush writes the acks owed: a cumulative one for async messages read
// since the last ack, then whatever is buffered.
func (cs *connServer) flush() error {
	if cs.received > cs.acked {
		if err := cs.ack(wire.AckBody{Seq: cs.received, Status: wire.Received}); err != nil {
			return err
		}
	}
	return cs.flushWriter()
}

// flushWriter writes whatever is buffered.
func (cs *connServer) flushWriter() error {
	if cs.w.Buffered() == 0 {
		return nil
	}
	cs.c.SetWriteDeadline(time.Now().Add(cs.r.cfg.FrameTimeout))
	return cs.w.Flush()
}

// forgetAfter is how long a sender's state outlives its last connection:
// longer than any retry of a message it sent.
const forgetAfter = 10 * time.Minute

// acquire returns the state of sender id, creating it. The states are
// bounded: twice MaxConns, of which at most MaxConns have a connection;
// the idle ones are forgotten after forgetAfter, the oldest first when the
// bound is reached (ids are chosen by whoever connects).
func (r *TCP) acquire(id wire.ID) *senderState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.senders[id]
	if s == nil {
		r.pruneLocked(time.Now())
		s = &senderState{}
		r.senders[id] = s
	}
	s.conns++
	return s
}

// pruneLocked sweeps the idle states: at most once a minute (a sweep is
// as long as the map), or at once when the map is full.
func (r *TCP) pruneLocked(now time.Time) {
	bound := 2 * r.cfg.MaxConns
	if len(r.senders) < bound && now.Sub(r.pruned) < time.Minute {
		return
	}
	r.pruned = now
	var idle []wire.ID
	for other, s := range r.senders {
		switch {
		case s.conns > 0:
		case now.Sub(s.idleFrom) > forgetAfter:
			delete(r.senders, other)
		default:
			idle = append(idle, other)
		}
	}
	if over := len(r.senders) - bound + 1; over > 0 {
		slices.SortFunc(idle, func(a, b wire.ID) int { return r.senders[a].idleFrom.Compare(r.senders[b].idleFrom) })
		for _, other := range idle[:min(over, len(idle))] {
			delete(r.senders, other)
		}
	}
}

func (r *TCP) release(id wire.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.senders[id]; s != nil {
		if s.conns--; s.conns == 0 {
			s.idleFrom = time.Now()
		}
	}
}

func toPeer(m membership.Member) wire.Peer {
	return wire.Peer{ID: wire.ID(m.ID), Name: m.Name, Domain: m.Domain, Addr: m.Addr, Started: m.Started, Zone: m.Zone}
}

func toMember(p wire.Peer) membership.Member {
	return membership.Member{ID: membership.ID(p.ID), Name: p.Name, Domain: p.Domain, Addr: p.Addr, Started: p.Started, Zone: p.Zone}
}

// countedReader counts the reads that reach the connection (the frame
// reader buffers, so that one read can bring many frames).
type countedReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countedReader) Read(b []byte) (int, error) {
	c.n.Add(1)
	return c.r.Read(b)
}

// countedWriter counts the writes that reach the connection.
type countedWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countedWriter) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.w.Write(b)
}
