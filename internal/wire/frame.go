// Package wire is the frame and envelope codec that flock's sender and
// receiver share.
//
// A frame is a 12-byte header and a body:
//
//	off size field
//	0   4    magic "FLKT"
//	4   1    protocol version (1)
//	5   1    type: 1..15 control frames of the transport, 16..255 application messages
//	6   1    flags: bit 0 marks a sealed frame (see seal.go): the body is
//	         encrypted and ends with its authentication tag; other bits must be 0
//	7   1    reserved, 0
//	8   4    body length, big-endian
//	12  n    body: a msgpack array, whose layout depends on the type
//
// Application frames carry an Envelope: the sender's member id, its sequence
// number on this stream, the send mode and the payload (msgpack encoded by
// the layer above).
package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/flockhq/flock/keyring"
)

const (
	magic     = "FLKT"
	Version   = 1
	HeaderLen = 12
	// DefaultMaxFrame bounds a frame's body unless configured otherwise.
	DefaultMaxFrame = 16 << 20
)

// Type says what a frame carries.
type Type uint8

// Control frames, handled by the transport itself.
const (
	TypeHello Type = 1 // first frame of every connection: who is calling
	TypeAck   Type = 2 // sender <- receiver: messages up to Seq arrived (and how the last one went)
	TypePing  Type = 3 // "are you there?", answered by the process, not the kernel
	TypePong  Type = 4 // the answer to a ping, naming the member that answered
	TypeLeave Type = 5 // the caller is leaving the cluster; answered with a pong
	TypeAuth  Type = 6 // the handshake of a keyed connection (seal.go)

	// FirstApp is the first type free for application messages.
	FirstApp Type = 16
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeAck:
		return "ack"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	case TypeLeave:
		return "leave"
	case TypeAuth:
		return "auth"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// FlagAuth marks a sealed frame: its body is encrypted and authenticated
// with the keys of its connection.
const FlagAuth = 1 << 0

// Errors of the codec; each is wrapped with the detail.
var (
	ErrMagic     = errors.New("not a flock frame")
	ErrVersion   = errors.New("unsupported protocol version")
	ErrTooLarge  = errors.New("frame larger than the maximum")
	ErrFlags     = errors.New("unsupported frame flags")
	ErrMalformed = errors.New("malformed frame body")
)

// Mode is how a sender waits for a message.
type Mode uint8

const (
	// Async: the send returns once the message is queued.
	Async Mode = 0
	// Ack: the send returns when the receiver has read the message.
	Ack Mode = 1
	// Sync: the send returns when the receiver's handler has returned.
	Sync Mode = 2
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

// ID is a member id: random per process start.
type ID [16]byte

// Frame is one decoded frame. Body aliases memory the frame owns alone.
type Frame struct {
	Type  Type
	Flags uint8
	Body  []byte
}

// begin appends a header with a placeholder length; finish patches it.
func begin(b []byte, t Type) ([]byte, int) {
	start := len(b)
	b = append(b, magic...)
	return append(b, Version, byte(t), 0, 0, 0, 0, 0, 0), start
}

func finish(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+8:], uint32(len(b)-start-HeaderLen))
	return b
}

// FrameLen is the length of the whole frame at the start of b, as its
// header says; b must hold at least a header.
func FrameLen(b []byte) int { return HeaderLen + int(binary.BigEndian.Uint32(b[8:12])) }

// ParseHeader checks a frame header and returns the type, flags and body
// length. max bounds the length before anything is allocated for it.
func ParseHeader(h []byte, max int) (Type, uint8, int, error) {
	if len(h) < HeaderLen {
		return 0, 0, 0, fmt.Errorf("%w: header of %d bytes", ErrMalformed, len(h))
	}
	if string(h[:4]) != magic {
		return 0, 0, 0, fmt.Errorf("%w: magic %q", ErrMagic, h[:4])
	}
	if h[4] != Version {
		return 0, 0, 0, fmt.Errorf("%w: %d (this node speaks %d)", ErrVersion, h[4], Version)
	}
	t, flags := Type(h[5]), h[6]
	if flags&^FlagAuth != 0 {
		return 0, 0, 0, fmt.Errorf("%w: %#x", ErrFlags, flags)
	}
	if h[7] != 0 {
		return 0, 0, 0, fmt.Errorf("%w: reserved header byte %#x", ErrMalformed, h[7])
	}
	if t == 0 || (t > TypeAuth && t < FirstApp) {
		return 0, 0, 0, fmt.Errorf("%w: unknown type %d", ErrMalformed, t)
	}
	n := binary.BigEndian.Uint32(h[8:12])
	if uint64(n) > uint64(max) {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, max)
	}
	return t, flags, int(n), nil
}

// Reader reads frames from a stream.
type Reader struct {
	src io.Reader // what r buffers
	r   *bufio.Reader
	max int
	hdr [HeaderLen]byte
	// refused is the body length of the frame Next just refused as too
	// large, still to be read from the stream; -1 when there is none.
	refused int64
	// open, once a handshake has set it, opens every frame; a frame that
	// is not sealed is refused.
	open *opener
	// budget, if set, holds the bytes of large frame bodies (SetBudget);
	// held is what the last frame took.
	budget     *Budget
	budgetWait time.Duration
	held       int64
}

// SetMax changes the bound on frame bodies: a node that requires a
// handshake reads an unauthenticated caller's first frame with a small one.
func (r *Reader) SetMax(max int) { r.max = max }

// MaxAuthFrame bounds the bodies of the frames a keyed node reads before
// the caller is authenticated: the handshake and the hello.
const MaxAuthFrame = 2 << 10

// Sealed reports whether a handshake has keyed the reader.
func (r *Reader) Sealed() bool { return r.open != nil }

// NewReader reads frames of at most max body bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	return NewReaderSize(r, max, ReadBuffer)
}

// ReadBuffer is a Reader's buffer once the caller is known (see Grow).
const ReadBuffer = 64 << 10

// NewReaderSize is NewReader with a read buffer of size bytes: a small one
// for a caller not yet known, so that a thousand connections that never
// say hello hold little memory.
func NewReaderSize(r io.Reader, max, size int) *Reader {
	return &Reader{src: r, r: bufio.NewReaderSize(r, size), max: max, refused: -1}
}

// Grow gives the reader a buffer of size bytes, keeping what it has read
// ahead and not yet returned.
func (r *Reader) Grow(size int) {
	if r.r.Size() >= size {
		return
	}
	ahead, _ := r.r.Peek(r.r.Buffered()) // buffered: no read, no error
	src := r.src
	if len(ahead) > 0 {
		src = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), r.src)
	}
	r.r = bufio.NewReaderSize(src, size)
}

// Buffered reports how many bytes are read but not yet returned: zero means
// the next Next will block on the network, the moment to flush replies.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// FrameBuffered reports whether the whole of the next frame is buffered,
// as far as its header says (the header is not checked here: Next does):
// reading it then cannot block, and needs no deadline.
func (r *Reader) FrameBuffered() bool {
	n := r.r.Buffered()
	if n < HeaderLen {
		return false
	}
	h, err := r.r.Peek(HeaderLen)
	if err != nil {
		return false
	}
	return int64(n-HeaderLen) >= int64(binary.BigEndian.Uint32(h[8:12]))
}

// Next reads one frame. started, if not nil, is called once the first byte
// of a frame has arrived, so the caller can switch from an idle timeout to a
// per-frame one.
func (r *Reader) Next(started func()) (Frame, error) {
	r.refused = -1
	r.Release() // the last frame is done with
	if _, err := r.r.Peek(1); err != nil {
		return Frame{}, err
	}
	if started != nil {
		started()
	}
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return Frame{}, unexpected(err)
	}
	limit := r.max
	if r.open != nil {
		limit += keyring.TagSize
	}
	t, flags, n, err := ParseHeader(r.hdr[:], limit)
	if err != nil {
		if errors.Is(err, ErrTooLarge) && r.open == nil {
			r.refused = int64(binary.BigEndian.Uint32(r.hdr[8:12]))
		}
		return Frame{}, err
	}
	switch sealed := flags&FlagAuth != 0; {
	case r.open != nil && !sealed:
		return Frame{}, fmt.Errorf("%w: %v frame in the clear on a keyed connection", ErrUnauthenticated, t)
	case r.open == nil && sealed:
		return Frame{}, fmt.Errorf("%w: sealed %v frame on a connection without keys", ErrFlags, t)
	case sealed && n < keyring.TagSize:
		return Frame{}, fmt.Errorf("%w: sealed frame of %d bytes", ErrUnauthenticated, n)
	}
	var body []byte
	if r.budget != nil && n > UnbudgetedFrame {
		if r.held, err = r.budget.take(int64(n), r.budgetWait); err != nil {
			return Frame{}, err
		}
		// The bytes are reserved: allocated at once, no garbage of
		// growing a buffer, so the budget bounds the memory.
		body = make([]byte, n)
		_, err = io.ReadFull(r.r, body)
	} else {
		body, err = readBody(r.r, n)
	}
	if err != nil {
		return Frame{}, unexpected(err)
	}
	if r.open != nil {
		if body, err = r.open.open(r.hdr[:], body); err != nil {
			return Frame{}, err
		}
		flags &^= FlagAuth
	}
	return Frame{Type: t, Flags: flags, Body: body}, nil
}

// Skip steps over the body of the frame Next has just refused as too large,
// keeping at most its first keep bytes and discarding the rest as it
// arrives, so that a caller who can settle the frame from a prefix (an ack's
// sequence number) keeps the stream rather than closing it. It returns the
// frame with Body cut to that prefix, and the full body length. Bounding the
// time a skip may take is the caller's business (a read deadline).
func (r *Reader) Skip(keep int) (Frame, int64, error) {
	n := r.refused
	if n < 0 {
		return Frame{}, 0, errors.New("wire: Skip without a frame refused as too large")
	}
	r.refused = -1
	prefix := make([]byte, min(int64(max(keep, 0)), n))
	if _, err := io.ReadFull(r.r, prefix); err != nil {
		return Frame{}, n, unexpected(err)
	}
	if _, err := io.CopyN(io.Discard, r.r, n-int64(len(prefix))); err != nil {
		return Frame{}, n, unexpected(err)
	}
	return Frame{Type: Type(r.hdr[5]), Flags: r.hdr[6], Body: prefix}, n, nil
}

// readBody reads n bytes, growing the buffer as data arrives, so a peer that
// announces a large frame and sends nothing costs a little, not n bytes.
func readBody(r io.Reader, n int) ([]byte, error) {
	const step = 1 << 20
	if n <= step {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, step)
	for len(b) < n {
		chunk := min(n-len(b), step)
		if cap(b)-len(b) < chunk {
			b = append(b, make([]byte, chunk)...)[:len(b)]
		}
		if _, err := io.ReadFull(r, b[len(b):len(b)+chunk]); err != nil {
			return nil, err
		}
		b = b[:len(b)+chunk]
	}
	return b, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Envelope is the body of an application frame.
type Envelope struct {
	From    ID
	Seq     uint64
	Mode    Mode
	Payload []byte
}

// AppendMessage appends a whole application frame.
func AppendMessage(b []byte, t Type, e Envelope) []byte {
	b, start := begin(b, t)
	b = appendArray(b, 4)
	b = appendBin(b, e.From[:])
	b = appendUint(b, e.Seq)
	b = appendUint(b, uint64(e.Mode))
	b = appendBin(b, e.Payload)
	return finish(b, start)
}

// ParseEnvelope decodes an application frame's body; Payload aliases body.
func ParseEnvelope(body []byte) (Envelope, error) {
	d := decoder{b: body}
	n := d.arrayOf(4, "envelope")
	var e Envelope
	from := d.bin()
	if d.err == nil && len(from) != len(e.From) {
		d.fail("sender id of %d bytes", len(from))
	}
	copy(e.From[:], from)
	e.Seq = d.uint()
	mode := d.uint()
	if d.err == nil && mode > uint64(Sync) {
		d.fail("unknown mode %d", mode)
	}
	e.Mode = Mode(mode)
	e.Payload = d.bin()
	d.end(n, 4)
	return e, d.err
}

// AckStatus says how far a message got.
type AckStatus uint8

const (
	Received AckStatus = 1 // read by the receiver
	Applied  AckStatus = 2 // its handler returned without error
	Failed   AckStatus = 3 // its handler returned an error, in Err
)

// AckBody is the body of an ack frame. It is cumulative: every message of
// the stream up to Seq has been read (and, since handlers run in order, the
// handlers of all before Seq have returned); Status is about Seq itself.
type AckBody struct {
	Seq    uint64
	Status AckStatus
	Err    string
	// Reply is what the handler of a sync message answered, with Applied.
	// Parsed, it aliases the body, and is nil when empty.
	Reply []byte
}

// AppendAck appends a whole ack frame.
func AppendAck(b []byte, a AckBody) []byte {
	b, start := begin(b, TypeAck)
	b = appendArray(b, 4)
	b = appendUint(b, a.Seq)
	b = appendUint(b, uint64(a.Status))
	b = appendStr(b, a.Err)
	b = appendBin(b, a.Reply)
	return finish(b, start)
}

// AckLen is the body length of the ack frame AppendAck would write for a,
// so a reply too large for a frame is caught before it is copied.
func AckLen(a AckBody) int {
	return 1 + uintSize(a.Seq) + uintSize(uint64(a.Status)) + strSize(len(a.Err)) + binSize(len(a.Reply))
}

// ParseAck decodes an ack frame's body. Peers before the reply field was
// added write three elements; their acks carry no reply.
func ParseAck(body []byte) (AckBody, error) {
	d := decoder{b: body}
	n := d.arrayOf(3, "ack")
	var a AckBody
	a.Seq = d.uint()
	st := d.uint()
	if d.err == nil && (st < uint64(Received) || st > uint64(Failed)) {
		d.fail("unknown ack status %d", st)
	}
	a.Status = AckStatus(st)
	a.Err = d.str()
	known := 3
	if n > 3 {
		if r := d.bin(); len(r) > 0 {
			a.Reply = r
		}
		known = 4
	}
	d.end(n, known)
	if d.err != nil {
		return AckBody{}, d.err
	}
	return a, nil
}

// ParseAckSeq reads only the sequence number of an ack body, from a prefix
// of it: enough to settle the message an ack too large to read was about.
func ParseAckSeq(prefix []byte) (uint64, error) {
	d := decoder{b: prefix}
	if n := d.arrayHeader(); d.err == nil && n < 3 {
		d.fail("ack: array of %d, need 3", n)
	}
	seq := d.uint()
	return seq, d.err
}

// Peer is who a hello or a pong names: a member as the transport sees it.
type Peer struct {
	ID      ID
	Name    string
	Domain  string
	Addr    netip.AddrPort // its receiver
	Started time.Time
	// Zone is sent as a sixth element only when set: readers of five
	// (earlier releases) skip it, and a peer without one sends what they
	// always read.
	Zone string
}

func appendPeer(b []byte, p Peer) []byte {
	n := 5
	if p.Zone != "" {
		n = 6
	}
	b = appendArray(b, n)
	b = appendBin(b, p.ID[:])
	b = appendStr(b, p.Name)
	b = appendStr(b, p.Domain)
	b = appendStr(b, p.Addr.String())
	b = appendInt(b, p.Started.UnixNano())
	if p.Zone != "" {
		b = appendStr(b, p.Zone)
	}
	return b
}

func (d *decoder) peer() Peer {
	n := d.arrayOf(5, "peer")
	var p Peer
	id := d.bin()
	if d.err == nil && len(id) != len(p.ID) {
		d.fail("member id of %d bytes", len(id))
	}
	copy(p.ID[:], id)
	p.Name = d.str()
	p.Domain = d.str()
	addr := d.str()
	started := d.int()
	if n > 5 {
		if d.isStr() {
			p.Zone = d.str()
		} else {
			d.skip(0) // not a zone: a later release's field
		}
		d.skipN(n-6, 0)
	}
	if d.err != nil {
		return Peer{}
	}
	a, err := netip.ParseAddrPort(addr)
	if err != nil {
		d.fail("receiver address %q: %v", addr, err)
		return Peer{}
	}
	if p.ID == (ID{}) || p.Name == "" {
		d.fail("peer without id or name")
		return Peer{}
	}
	p.Addr = a
	p.Started = time.Unix(0, started).UTC()
	return p
}

// AppendHello appends a hello frame naming the caller.
func AppendHello(b []byte, p Peer) []byte {
	b, start := begin(b, TypeHello)
	b = appendArray(b, 1)
	b = appendPeer(b, p)
	return finish(b, start)
}

// ParseHello decodes a hello frame's body.
func ParseHello(body []byte) (Peer, error) {
	d := decoder{b: body}
	n := d.arrayOf(1, "hello")
	p := d.peer()
	d.end(n, 1)
	return p, d.err
}

// AppendPing appends a ping (or, with TypeLeave, a leave) carrying a nonce
// the answer repeats.
func AppendPing(b []byte, t Type, nonce uint64) []byte {
	b, start := begin(b, t)
	b = appendArray(b, 1)
	b = appendUint(b, nonce)
	return finish(b, start)
}

// ParsePing decodes a ping or leave body.
func ParsePing(body []byte) (uint64, error) {
	d := decoder{b: body}
	n := d.arrayOf(1, "ping")
	nonce := d.uint()
	d.end(n, 1)
	return nonce, d.err
}

// AppendPong appends the answer to a ping: its nonce and who answered.
func AppendPong(b []byte, nonce uint64, p Peer) []byte {
	b, start := begin(b, TypePong)
	b = appendArray(b, 2)
	b = appendUint(b, nonce)
	b = appendPeer(b, p)
	return finish(b, start)
}

// ParsePong decodes a pong body.
func ParsePong(body []byte) (uint64, Peer, error) {
	d := decoder{b: body}
	n := d.arrayOf(2, "pong")
	nonce := d.uint()
	p := d.peer()
	d.end(n, 2)
	return nonce, p, d.err
}
