package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"
)

// The heartbeat wire format, version 1. All integers are big-endian.
//
//	off  size  field
//	0    4     magic "FLKB"
//	4    1     version (1)
//	5    1     command (1 alive, 2 leaving)
//	6    1     flags (must be 0; bit 0 is reserved for an authentication tag)
//	7    1     reserved (must be 0)
//	8    16    member id
//	24   8     process start, unix nanoseconds
//	32   8     sequence number, +1 per heartbeat sent
//	40   2     receiver port
//	42   1     receiver IP length n (4 or 16)
//	43   n     receiver IP
//	     1     name length m (1..MaxNameLen)
//	     m     name (UTF-8, no control characters)
//	     1     domain length d (0..MaxNameLen)
//	     d     domain (UTF-8, no control characters)
//	     1     zone length z (1..MaxNameLen), only if a zone is set
//	     z     zone (UTF-8, no control characters)
//
// The packet ends exactly after the domain, or after the zone: other
// trailing bytes are an error. The zone is optional so that a member
// without one sends what earlier releases read; those releases refuse a
// heartbeat that carries one, so zones are configured once every node
// runs a release that reads them (see the README's upgrade notes).
const (
	heartbeatMagic   = "FLKB"
	HeartbeatVersion = 1
	headerLen        = 40
	// MaxNameLen bounds member names and domains.
	MaxNameLen = 255
	// MaxHeartbeatLen is the largest valid heartbeat; anything longer is
	// rejected before it is parsed.
	MaxHeartbeatLen = headerLen + 2 + 1 + 16 + 1 + MaxNameLen + 1 + MaxNameLen + 1 + MaxNameLen
	minHeartbeatLen = headerLen + 2 + 1 + 4 + 1 + 1 + 1
)

// Command is what a heartbeat announces.
type Command uint8

const (
	CommandAlive   Command = 1
	CommandLeaving Command = 2
)

func (c Command) String() string {
	switch c {
	case CommandAlive:
		return "alive"
	case CommandLeaving:
		return "leaving"
	}
	return fmt.Sprintf("Command(%d)", uint8(c))
}

// Errors returned by DecodeHeartbeat, wrapped with the detail.
var (
	ErrShort     = errors.New("heartbeat too short")
	ErrLong      = errors.New("heartbeat too long")
	ErrForeign   = errors.New("not a flock heartbeat")
	ErrVersion   = errors.New("unsupported heartbeat version")
	ErrMalformed = errors.New("malformed heartbeat")
)

// Heartbeat is one announcement of a member.
type Heartbeat struct {
	Command Command
	Seq     uint64
	Member  Member
}

// AppendBinary appends the wire form of h to b.
func (h Heartbeat) AppendBinary(b []byte) ([]byte, error) {
	m := h.Member
	if err := checkText("name", m.Name, 1); err != nil {
		return b, err
	}
	if err := checkText("domain", m.Domain, 0); err != nil {
		return b, err
	}
	if err := checkText("zone", m.Zone, 0); err != nil {
		return b, err
	}
	if !m.Addr.IsValid() || m.Addr.Port() == 0 || m.Addr.Addr().IsUnspecified() {
		return b, fmt.Errorf("%w: receiver address %q cannot be advertised", ErrMalformed, m.Addr)
	}
	if h.Command != CommandAlive && h.Command != CommandLeaving {
		return b, fmt.Errorf("%w: command %d", ErrMalformed, h.Command)
	}
	b = append(b, heartbeatMagic...)
	b = append(b, HeartbeatVersion, byte(h.Command), 0, 0)
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Started.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint16(b, m.Addr.Port())
	ip := m.Addr.Addr().Unmap()
	b = append(b, byte(ip.BitLen()/8))
	b = append(b, ip.AsSlice()...)
	b = append(b, byte(len(m.Name)))
	b = append(b, m.Name...)
	b = append(b, byte(len(m.Domain)))
	b = append(b, m.Domain...)
	if m.Zone != "" {
		b = append(b, byte(len(m.Zone)))
		b = append(b, m.Zone...)
	}
	return b, nil
}

// MarshalBinary returns the wire form of h.
func (h Heartbeat) MarshalBinary() ([]byte, error) {
	return h.AppendBinary(make([]byte, 0, 128))
}

// DecodeHeartbeat parses one packet. It never panics, and every error wraps
// one of ErrShort, ErrLong, ErrForeign, ErrVersion or ErrMalformed.
func DecodeHeartbeat(p []byte) (Heartbeat, error) {
	if len(p) >= len(heartbeatMagic) && string(p[:len(heartbeatMagic)]) != heartbeatMagic {
		return Heartbeat{}, fmt.Errorf("%w: magic %q", ErrForeign, p[:len(heartbeatMagic)])
	}
	if len(p) < minHeartbeatLen {
		return Heartbeat{}, fmt.Errorf("%w: %d bytes, need at least %d", ErrShort, len(p), minHeartbeatLen)
	}
	if len(p) > MaxHeartbeatLen {
		return Heartbeat{}, fmt.Errorf("%w: %d bytes, at most %d", ErrLong, len(p), MaxHeartbeatLen)
	}
	if p[4] != HeartbeatVersion {
		return Heartbeat{}, fmt.Errorf("%w: %d (this node speaks %d)", ErrVersion, p[4], HeartbeatVersion)
	}
	var h Heartbeat
	h.Command = Command(p[5])
	if h.Command != CommandAlive && h.Command != CommandLeaving {
		return Heartbeat{}, fmt.Errorf("%w: unknown command %d", ErrMalformed, p[5])
	}
	if p[6] != 0 || p[7] != 0 {
		return Heartbeat{}, fmt.Errorf("%w: flags %#x/%#x set (authenticated heartbeats are not supported)", ErrMalformed, p[6], p[7])
	}
	m := &h.Member
	copy(m.ID[:], p[8:24])
	if m.ID.IsZero() {
		return Heartbeat{}, fmt.Errorf("%w: zero member id", ErrMalformed)
	}
	m.Started = time.Unix(0, int64(binary.BigEndian.Uint64(p[24:32]))).UTC()
	h.Seq = binary.BigEndian.Uint64(p[32:40])

	r := reader{b: p, off: headerLen}
	port := r.uint16()
	ip, ok := netip.AddrFromSlice(r.bytes(int(r.byte())))
	if r.err != nil {
		return Heartbeat{}, r.err
	}
	if !ok || port == 0 || ip.IsUnspecified() || ip.IsMulticast() || ip.Is4In6() {
		return Heartbeat{}, fmt.Errorf("%w: receiver address %v port %d", ErrMalformed, ip, port)
	}
	m.Addr = netip.AddrPortFrom(ip, port)
	m.Name = string(r.bytes(int(r.byte())))
	m.Domain = string(r.bytes(int(r.byte())))
	if r.err == nil && r.off < len(p) {
		if m.Zone = string(r.bytes(int(r.byte()))); r.err == nil && m.Zone == "" {
			return Heartbeat{}, fmt.Errorf("%w: empty zone field (a member without a zone sends none)", ErrMalformed)
		}
	}
	if r.err != nil {
		return Heartbeat{}, r.err
	}
	if r.off != len(p) {
		return Heartbeat{}, fmt.Errorf("%w: %d trailing bytes", ErrLong, len(p)-r.off)
	}
	if err := checkText("name", m.Name, 1); err != nil {
		return Heartbeat{}, err
	}
	if err := checkText("domain", m.Domain, 0); err != nil {
		return Heartbeat{}, err
	}
	if err := checkText("zone", m.Zone, 0); err != nil {
		return Heartbeat{}, err
	}
	return h, nil
}

// reader consumes p from off, turning any overrun into a sticky error, so the
// decoder reads like the layout table instead of a ladder of length checks.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.err = fmt.Errorf("%w: field at offset %d needs %d bytes, %d left", ErrShort, r.off, n, len(r.b)-r.off)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func checkText(field, s string, min int) error {
	if len(s) < min || len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s length %d, allowed %d..%d", ErrMalformed, field, len(s), min, MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, field)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: %s contains control character %#x", ErrMalformed, field, c)
		}
	}
	return nil
}
