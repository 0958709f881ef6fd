package sender

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/wire"
)

// maxBatch bounds one write: enough to amortise the system call, small
// enough that acknowledgements keep flowing.
const maxBatch = 1 << 20

// msg is one message on its way to one peer.
type msg struct {
	peer  *peer
	seq   uint64
	frame []byte
	buf   *[]byte // frame's pooled buffer, if it has one
	gen   uint64  // the connection it was last written to
	mode  wire.Mode
	tries int        // connections it was written to (or that failed to open for it)
	done  chan error // buffered; nil for async messages
	reply []byte     // a sync message's answer, set before done is
	// answered: done has had its answer, an ack-mode message's on receipt;
	// it stays in flight until its handler has returned.
	answered bool
	group    *group // the Send's, when it waits for several answers
}

// answer gives m its outcome, once (p.mu held).
func (m *msg) answer(err error) {
	m.answered = true
	m.done <- err
	if m.group != nil {
		m.group.add(-1)
	}
}

// peer is the ordered connection to one member. One goroutine (run) writes
// and owns reconnection; one per connection reads acknowledgements.
type peer struct {
	s    *TCP
	addr netip.AddrPort
	wake chan struct{}
	quit chan struct{}

	mu       sync.Mutex
	pending  []*msg // not yet written, in sequence order
	inflight []*msg // written to conn, not yet acknowledged, in sequence order
	bytes    int64
	seq      uint64
	conn     net.Conn
	seal     *wire.Sealer // seals what is written to conn, when keyed
	sealBuf  []byte       // the writer's: sealed frames of one batch
	// writeGen and writeSet are the writer's: the connection whose write
	// deadline it set last, and when that deadline was set.
	writeGen uint64
	writeSet time.Time
	gen      uint64 // increments per connection, so a stale reader's failure is ignored
	// progress is when an acknowledgement was last seen, or inflight
	// last became non-empty; moves counts those events, and the writer's
	// periodic check turns a change of it into a new progress time: no
	// clock read per acknowledgement, and a stall is found at most one
	// check late, never early.
	progress time.Time
	moves    uint64
	movesAt  uint64 // moves at progress
	stopErr  error  // set once: why the peer stopped
	emptied  chan struct{}
	// holds counts callers between looking the peer up and queueing
	// their message (TCP.peer, enqueue); lastUse is when the last one
	// queued. A peer with neither is dropped once idle (TCP.reap).
	holds   int
	lastUse time.Time
	usedSeq uint64 // seq at lastUse: a later seq is a use not yet timed (noteUse)
	stats   PeerStats
	byType  [256]uint64 // messages queued, by type
}

func newPeer(s *TCP, addr netip.AddrPort) *peer {
	return &peer{s: s, addr: addr, wake: make(chan struct{}, 1), quit: make(chan struct{}), lastUse: time.Now()}
}

func (p *peer) log() logrus.FieldLogger { return p.s.log.WithField("peer", p.addr) }

func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueue queues a message and releases the caller's hold (see TCP.peer).
// The frame is built under the lock so that sequence numbers follow queue
// order.
func (p *peer) enqueue(t wire.Type, payload []byte, mode wire.Mode, g *group) (*msg, error) {
	size := int64(wire.HeaderLen + len(payload) + 64)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holds--
	if p.stopErr != nil {
		return nil, p.stopErr
	}
	if p.bytes+size > p.s.cfg.QueueLimit {
		return nil, fmt.Errorf("%w: %d bytes waiting for %v, limit %d", ErrQueueFull, p.bytes, p.addr, p.s.cfg.QueueLimit)
	}
	p.seq++
	m := &msg{peer: p, seq: p.seq, mode: mode}
	m.buf = getFrame(int(size))
	var b []byte
	if m.buf != nil {
		b = *m.buf
	} else {
		b = make([]byte, 0, size)
	}
	m.frame = wire.AppendMessage(b, t, wire.Envelope{From: p.s.local.ID, Seq: m.seq, Mode: mode, Payload: payload})
	if mode != wire.Async {
		m.done, m.group = p.s.done(), g
	}
	p.pending = append(p.pending, m)
	p.bytes += int64(len(m.frame))
	p.byType[t]++
	p.signal()
	return m, nil
}

// finish completes m, which the caller has taken out of the queues; p.mu
// must be held. settle must follow once the queues are updated.
func (p *peer) finish(m *msg, err error) {
	p.bytes -= int64(len(m.frame))
	if err != nil {
		p.stats.Failed++
	}
	if m.done != nil && !m.answered {
		m.answer(err)
	} else if err != nil {
		p.log().WithFields(logrus.Fields{"seq": m.seq}).WithError(err).Debug("message lost")
	}
}

// settle wakes Drain once nothing is queued or in flight; p.mu must be held.
func (p *peer) settle() {
	if len(p.pending) == 0 && len(p.inflight) == 0 && p.emptied != nil {
		close(p.emptied)
		p.emptied = nil
	}
}

// stop ends the peer: everything queued fails with err.
func (p *peer) stop(err error) {
	p.mu.Lock()
	if p.stopErr != nil {
		p.mu.Unlock()
		return
	}
	p.stopErr = err
	if p.conn != nil {
		// Unblock a writer stuck on a full socket; shutdown does the rest.
		p.conn.Close()
	}
	p.mu.Unlock()
	close(p.quit)
}

// run is the writer: it connects, writes batches in order and reconnects
// with backoff, until stop, or until the peer has been idle for
// IdleTimeout.
func (p *peer) run() {
	check := time.NewTicker(max(min(p.s.cfg.Timeout, p.s.cfg.IdleTimeout)/4, 10*time.Millisecond))
	defer check.Stop()
	var backoff time.Duration
	for {
		select {
		case <-p.quit:
			p.shutdown()
			return
		case <-p.wake:
			// Let the goroutines that are ready run first: the writes they
			// are about to queue then go out in this batch, one system call
			// for many messages, at the cost of no timer and no delay when
			// nothing else is ready.
			runtime.Gosched()
		case now := <-check.C:
			p.checkProgress()
			if p.idle(now) && p.s.reap(p, now) {
				p.shutdown()
				return
			}
			continue
		}
		for {
			frames, conn, gen, seal := p.takeBatch()
			if len(frames) == 0 {
				break
			}
			if conn == nil {
				if err := p.connect(); err != nil {
					p.broken(0, fmt.Errorf("connect: %w", err))
					backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
					select {
					case <-time.After(backoff):
						p.signal() // try again with what is still queued
					case <-p.quit:
					}
					break
				}
				backoff = 0
				continue
			}
			// A write deadline set less than 1/16 of the timeout ago is
			// kept: moving it updates a runtime timer, per batch under
			// load, and a write may then fail up to 1/16 early.
			if now := time.Now(); gen != p.writeGen || now.Sub(p.writeSet) >= p.s.cfg.Timeout/16 {
				conn.SetWriteDeadline(now.Add(p.s.cfg.Timeout))
				p.writeGen, p.writeSet = gen, now
			}
			var err error
			if seal != nil {
				b := p.sealBuf[:0]
				for _, f := range frames {
					b = seal.Seal(b, f)
				}
				_, err = conn.Write(b)
				if p.sealBuf = b; cap(b) > 4*maxBatch {
					p.sealBuf = nil // a huge frame's buffer is not worth keeping
				}
			} else {
				bufs := net.Buffers(frames)
				_, err = bufs.WriteTo(conn)
			}
			if err != nil {
				p.broken(gen, fmt.Errorf("write: %w", err))
				break
			}
		}
	}
}

// takeBatch moves up to maxBatch bytes of pending messages to inflight and
// returns their frames with the connection to write them to. When there is
// no connection it moves nothing and returns a nil conn with one frame, the
// sign to connect first.
func (p *peer) takeBatch() ([][]byte, net.Conn, uint64, *wire.Sealer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return nil, nil, 0, nil
	}
	if p.conn != nil && p.seal != nil && p.seal.Key().Removed() {
		// A rotation took the connection's key out of the ring: open a
		// new connection with the current key. What is in flight on this
		// one is acknowledged there or re-sent, as after any reconnect.
		p.conn.Close()
		p.conn, p.seal = nil, nil
		p.gen++
		p.requeueInflight()
	}
	if p.conn == nil {
		return [][]byte{p.pending[0].frame}, nil, 0, nil
	}
	var frames [][]byte
	n, size := 0, 0
	for n < len(p.pending) && (n == 0 || size+len(p.pending[n].frame) <= maxBatch) {
		m := p.pending[n]
		m.gen = p.gen
		frames = append(frames, m.frame)
		size += len(m.frame)
		if m.tries++; m.tries > 1 {
			p.stats.Retried++
		}
		n++
	}
	if len(p.inflight) == 0 {
		p.moves++
	}
	p.inflight = append(p.inflight, p.pending[:n]...)
	p.pending = append(p.pending[:0], p.pending[n:]...)
	p.stats.Sent += uint64(n)
	p.stats.SentBytes += uint64(size)
	p.stats.Writes++ // the caller writes the batch in one call: no second lock on the hot path
	return frames, p.conn, p.gen, p.seal
}

// requeueInflight puts what was written to a connection given up on back at
// the front of the queue, untouched: it was not failed, only not answered
// yet. p.mu must be held.
func (p *peer) requeueInflight() {
	if len(p.inflight) == 0 {
		return
	}
	p.pending = append(p.inflight, p.pending...)
	p.inflight = nil
}

// connect dials the peer, sends the hello and starts the connection's ack
// reader.
func (p *peer) connect() error {
	d := net.Dialer{Timeout: p.s.cfg.Timeout, KeepAlive: 15 * time.Second}
	conn, err := d.DialContext(p.s.ctx, "tcp", p.addr.String())
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if conn, err = p.s.secure(p.s.ctx, conn); err != nil {
		return err
	}
	rd := wire.NewReader(conn, p.s.cfg.MaxFrame)
	hello := wire.AppendHello(nil, p.s.local)
	conn.SetDeadline(time.Now().Add(p.s.cfg.Timeout))
	var seal *wire.Sealer
	if ring := p.s.cfg.Keyring; ring != nil {
		if seal, err = wire.ClientHandshake(conn, rd, ring); err != nil {
			conn.Close()
			return err
		}
		hello = seal.Seal(nil, hello)
	}
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return err
	}
	conn.SetDeadline(time.Time{})
	p.mu.Lock()
	if p.stopErr != nil {
		p.mu.Unlock()
		conn.Close()
		return p.stopErr
	}
	p.gen++
	p.conn, p.seal = conn, seal
	gen := p.gen
	if p.gen > 1 {
		p.stats.Reconnects++
	}
	p.mu.Unlock()
	p.s.wg.Add(1)
	go func() { defer p.s.wg.Done(); p.readAcks(conn, rd, gen) }()
	return nil
}

// broken handles the failure of connection gen (0: a connection that could
// not be opened): what was in flight goes back to the front of the queue,
// and every message that has used up its tries fails.
func (p *peer) broken(gen uint64, cause error) {
	p.mu.Lock()
	if gen != 0 && gen != p.gen {
		p.mu.Unlock()
		return // an older connection, already handled
	}
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.seal = nil, nil
	}
	if p.stopErr != nil {
		// Stopping: shutdown fails what is queued, with the reason.
		p.mu.Unlock()
		return
	}
	// A connection that breaks with nothing in flight was closed by the
	// peer for being idle: not a failure, the next send reconnects.
	idle := len(p.inflight) == 0 && len(p.pending) == 0
	requeue := append(p.inflight, p.pending...)
	p.inflight, p.pending = nil, requeue[:0:0]
	var failed []*msg
	for _, m := range requeue {
		if gen == 0 {
			m.tries++ // the connection it was queued for never opened
		}
		if m.tries > p.s.cfg.MaxRetries {
			failed = append(failed, m)
		} else {
			p.pending = append(p.pending, m)
		}
	}
	err := fmt.Errorf("%w (%v)", ErrRetries, cause)
	for _, m := range failed {
		p.finish(m, err)
	}
	p.settle()
	p.mu.Unlock()
	if idle {
		p.log().WithError(cause).Debug("idle connection closed")
		return
	}
	p.log().WithError(cause).WithField("failed", len(failed)).Debug("connection failed")
	p.s.failure(p.addr, cause)
	p.signal()
}

// idle reports whether p has had nothing to do for IdleTimeout at now; the
// decision is reap's, under the sender's lock.
func (p *peer) idle(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteUse(now)
	return p.holds == 0 && len(p.pending) == 0 && len(p.inflight) == 0 && now.Sub(p.lastUse) >= p.s.cfg.IdleTimeout
}

// noteUse times the messages queued since it last looked: enqueue reads no
// clock, so a peer counts as used at the first check after a send, and is
// dropped at most one check late, never early. p.mu must be held.
func (p *peer) noteUse(now time.Time) {
	if p.seq != p.usedSeq {
		p.usedSeq, p.lastUse = p.seq, now
	}
}

// checkProgress fails a connection that has had unacknowledged messages
// for longer than the timeout: the peer's kernel accepts bytes, but its
// process does not answer (paused, or stuck).
func (p *peer) checkProgress() {
	p.mu.Lock()
	now := time.Now()
	if p.moves != p.movesAt {
		p.movesAt, p.progress = p.moves, now
	}
	stalled := len(p.inflight) > 0 && now.Sub(p.progress) > p.s.cfg.Timeout
	gen := p.gen
	p.mu.Unlock()
	if stalled {
		p.broken(gen, fmt.Errorf("%w: peer stalled", ErrTimeout))
	}
}

// readAcks reads the acknowledgements of one connection until it fails.
func (p *peer) readAcks(conn net.Conn, rd *wire.Reader, gen uint64) {
	for {
		f, err := rd.Next(nil)
		if errors.Is(err, wire.ErrTooLarge) {
			if err = p.skipAck(conn, rd, gen); err == nil {
				continue
			}
		}
		if err == nil && f.Type != wire.TypeAck {
			err = fmt.Errorf("peer sent %v where acks were expected", f.Type)
		}
		var a wire.AckBody
		if err == nil {
			a, err = wire.ParseAck(f.Body)
		}
		if err != nil {
			p.broken(gen, fmt.Errorf("read: %w", err))
			return
		}
		p.ack(a, gen, nil)
	}
}

// skipAck steps over an ack larger than MaxFrame, the answer to a request
// whose reply this node will not take, and fails that request alone: the
// connection and the messages behind it are fine, and breaking it would
// re-send the request only to get the same answer again. Any other frame
// that large is an error; so is a body that takes longer than the timeout.
func (p *peer) skipAck(conn net.Conn, rd *wire.Reader, gen uint64) error {
	conn.SetReadDeadline(time.Now().Add(p.s.cfg.Timeout))
	f, n, err := rd.Skip(32) // an array header and a sequence number take at most 14
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("skipping a frame too large: %w", err)
	}
	if f.Type != wire.TypeAck {
		return fmt.Errorf("%w: %v frame of %d bytes, at most %d", wire.ErrTooLarge, f.Type, n, p.s.cfg.MaxFrame)
	}
	seq, err := wire.ParseAckSeq(f.Body)
	if err != nil {
		return err
	}
	p.ack(wire.AckBody{Seq: seq, Status: wire.Failed}, gen,
		fmt.Errorf("%w: %d bytes, at most %d", ErrReplyTooLarge, n, p.s.cfg.MaxFrame))
	return nil
}

// ack applies one acknowledgement read on connection gen: every message
// before a.Seq is done (the receiver applies in order), and a.Seq itself as
// its status says, or with fail if that is set.
func (p *peer) ack(a wire.AckBody, gen uint64, fail error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.moves++
	n := 0
	for n < len(p.inflight) && p.inflight[n].seq < a.Seq {
		p.acked(p.inflight[n], nil, gen)
		n++
	}
	if n < len(p.inflight) && p.inflight[n].seq == a.Seq {
		switch m := p.inflight[n]; {
		case fail != nil:
			p.acked(m, fail, gen)
			n++
		case a.Status == wire.Applied && m.mode == wire.Sync:
			m.reply = a.Reply
			p.acked(m, nil, gen)
			n++
		case a.Status == wire.Failed && m.mode == wire.Sync:
			p.acked(m, &RemoteError{Msg: a.Err}, gen)
			n++
		case a.Status != wire.Received || m.mode == wire.Async:
			p.acked(m, nil, gen)
			n++
		case m.mode == wire.Ack && !m.answered:
			// Read: its send returns. It stays in flight until the
			// receiver says its handler has returned, so Drain waits.
			m.answer(nil)
		}
		// Received for a sync message: its handler has yet to answer.
	}
	p.inflight = append(p.inflight[:0], p.inflight[n:]...)
	p.settle()
}

// acked finishes m, acknowledged on connection gen, and recycles its frame
// if the receiver read it from the connection it was last written to: then
// every byte of it has left the writer, which will not write it again.
// (An ack of an older connection can arrive while m is being re-sent.)
func (p *peer) acked(m *msg, err error, gen uint64) {
	p.finish(m, err)
	if m.gen == gen {
		putFrame(m.buf, m.frame)
		m.buf, m.frame = nil, nil
	}
}

// Frames are recycled once their receiver has read them: they are most of
// what a send allocates, and the garbage collector's cycles are what the
// latency of sync sends suffers from most. Pools hold buffers by size
// classes four to a power of two (at most 25% larger than asked), from
// 512 bytes to 64 KiB; larger frames are left to the collector.
const (
	minFrameShift = 9
	maxFrameShift = 16
)

var framePools [(maxFrameShift-minFrameShift)*4 + 1]sync.Pool

// frameClass returns the pool and the capacity for a frame of n bytes; -1
// if frames of that size are not pooled.
func frameClass(n int) (int, int) {
	if n > 1<<maxFrameShift {
		return -1, n
	}
	if n <= 1<<minFrameShift {
		return 0, 1 << minFrameShift
	}
	k := bits.Len(uint(n - 1)) // 1<<(k-1) < n <= 1<<k
	step := 1 << (k - 3)
	j := (n - 1<<(k-1) + step - 1) / step // 1..4
	return (k-1-minFrameShift)*4 + j, 1<<(k-1) + j*step
}

// getFrame returns an empty buffer of capacity at least n, or nil if frames
// of n bytes are not pooled.
func getFrame(n int) *[]byte {
	i, c := frameClass(n)
	if i < 0 {
		return nil
	}
	if b, ok := framePools[i].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, c)
	return &b
}

// putFrame returns frame, taken from buf, to its pool.
func putFrame(buf *[]byte, frame []byte) {
	if buf == nil {
		return
	}
	i, c := frameClass(cap(frame))
	if i < 0 || c != cap(frame) {
		return // grown past its class: not what the pool expects
	}
	*buf = frame[:0]
	framePools[i].Put(buf)
}

// waitEmpty returns when nothing is queued or in flight.
func (p *peer) waitEmpty(ctx context.Context) error {
	p.mu.Lock()
	if len(p.pending) == 0 && len(p.inflight) == 0 || p.stopErr != nil {
		p.mu.Unlock()
		return nil
	}
	if p.emptied == nil {
		p.emptied = make(chan struct{})
	}
	ch := p.emptied
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shutdown fails everything still queued and closes the connection.
func (p *peer) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	all := append(p.inflight, p.pending...)
	p.inflight, p.pending = nil, nil
	for _, m := range all {
		p.finish(m, p.stopErr)
	}
	p.settle()
}
