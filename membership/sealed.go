package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/flockhq/flock/internal/refuse"
	"github.com/flockhq/flock/keyring"
)

// A keyed cluster seals every heartbeat. The sealed form keeps the clear
// header's first eight bytes, with the command hidden and the sealed flag
// set, and carries the whole clear heartbeat inside:
//
//	off  size  field
//	0    4     magic "FLKB"
//	4    1     version (1)
//	5    1     command: 0 (the real one is inside)
//	6    1     flags: 1 (sealed)
//	7    1     reserved (0)
//	8    4     key id (keyring)
//	12   12    random nonce
//	24   n+24  AES-256-GCM of: send time (8 bytes, unix nanoseconds), then
//	           the clear heartbeat; then the 16-byte tag. The first eight
//	           bytes are the associated data.
//
// Nothing but the magic and the key id is readable without the key: member
// ids, names, addresses and the domain stay private, so an attacker cannot
// aim a forged leave at a member. The send time and the sequence number
// make a recorded packet useless: receivers refuse a heartbeat sent more
// than the allowed clock skew ago (or ahead), and one whose sequence number
// is not above the last they saw from its member.
const (
	sealedHeaderLen = 8
	flagSealed      = 1
	// MaxSealedHeartbeatLen is the largest valid sealed heartbeat.
	MaxSealedHeartbeatLen = sealedHeaderLen + keyring.PacketOverhead + 8 + MaxHeartbeatLen
)

// Errors of sealed heartbeats, wrapped with the detail.
var (
	// ErrUnsealed: a keyed node received a heartbeat in the clear.
	ErrUnsealed = errors.New("heartbeat not sealed, and this cluster requires a key")
	// ErrSealed: a node without a keyring received a sealed heartbeat.
	ErrSealed = errors.New("sealed heartbeat, and this node holds no keyring")
	// ErrStale: a heartbeat's send time is outside the allowed clock skew.
	ErrStale = errors.New("heartbeat outside the allowed clock skew")
	// ErrReplayed: a heartbeat's sequence number is not above the last one
	// seen from its member.
	ErrReplayed = errors.New("heartbeat replayed")
)

// SealHeartbeat returns the sealed form of h, sent at now.
func SealHeartbeat(ring *keyring.Keyring, h Heartbeat, now time.Time) ([]byte, error) {
	plain := make([]byte, 8, 8+MaxHeartbeatLen)
	binary.BigEndian.PutUint64(plain, uint64(now.UnixNano()))
	plain, err := h.AppendBinary(plain)
	if err != nil {
		return nil, err
	}
	hdr := []byte{heartbeatMagic[0], heartbeatMagic[1], heartbeatMagic[2], heartbeatMagic[3], HeartbeatVersion, 0, flagSealed, 0}
	return ring.SealPacket(hdr, hdr, plain), nil
}

// isSealed reports whether p claims to be a sealed heartbeat.
func isSealed(p []byte) bool {
	return len(p) >= sealedHeaderLen && string(p[:4]) == heartbeatMagic && p[6] == flagSealed
}

// OpenHeartbeat decodes a packet as a node with ring (nil: no keyring)
// must: sealed if and only if the node is keyed. It returns the heartbeat
// and, for a sealed one, its send time.
func OpenHeartbeat(ring *keyring.Keyring, p []byte) (Heartbeat, time.Time, error) {
	sealed := isSealed(p)
	switch {
	case ring == nil && sealed:
		return Heartbeat{}, time.Time{}, ErrSealed
	case ring == nil:
		h, err := DecodeHeartbeat(p)
		return h, time.Time{}, err
	case !sealed:
		if _, err := DecodeHeartbeat(p); err != nil {
			return Heartbeat{}, time.Time{}, err // not even a heartbeat
		}
		return Heartbeat{}, time.Time{}, ErrUnsealed
	}
	if len(p) > MaxSealedHeartbeatLen {
		return Heartbeat{}, time.Time{}, fmt.Errorf("%w: sealed heartbeat of %d bytes, at most %d", ErrLong, len(p), MaxSealedHeartbeatLen)
	}
	if p[4] != HeartbeatVersion || p[5] != 0 || p[7] != 0 {
		return Heartbeat{}, time.Time{}, fmt.Errorf("%w: sealed header % x", ErrMalformed, p[4:8])
	}
	plain, err := ring.OpenPacket(nil, p[:sealedHeaderLen], p[sealedHeaderLen:])
	if err != nil {
		return Heartbeat{}, time.Time{}, err
	}
	if len(plain) < 8 {
		return Heartbeat{}, time.Time{}, fmt.Errorf("%w: sealed heartbeat without a send time", ErrShort)
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(plain))).UTC()
	h, err := DecodeHeartbeat(plain[8:])
	if err != nil {
		return Heartbeat{}, time.Time{}, err
	}
	return h, sent, nil
}

// refusal is the reason an OpenHeartbeat error counts under.
func refusal(err error) refuse.Reason {
	switch {
	case errors.Is(err, keyring.ErrUnknownKey):
		return refuse.UnknownKey
	case errors.Is(err, keyring.ErrForged):
		return refuse.Forged
	case errors.Is(err, ErrUnsealed), errors.Is(err, ErrSealed):
		return refuse.Unauthenticated
	case errors.Is(err, ErrStale):
		return refuse.Stale
	case errors.Is(err, ErrReplayed):
		return refuse.Replayed
	}
	return refuse.Malformed
}

// replayGuard remembers the last sequence number of each member heard
// lately, so a recorded heartbeat cannot be played again. An entry
// outlives the clock skew twice over: by then the packets it guards
// against are refused as stale.
type replayGuard struct {
	skew time.Duration
	last map[ID]seen
}

type seen struct {
	seq uint64
	at  time.Time
}

// maxGuarded bounds the members remembered. Only key holders can add
// entries, so it guards against a bug, not an attacker.
const maxGuarded = 4096

func newReplayGuard(skew time.Duration) *replayGuard {
	return &replayGuard{skew: skew, last: make(map[ID]seen)}
}

// check accepts a sealed heartbeat h sent at sent and received at now, or
// says why not.
func (g *replayGuard) check(h Heartbeat, sent, now time.Time) error {
	if d := now.Sub(sent); d > g.skew || d < -g.skew {
		return fmt.Errorf("%w: sent %v ago, allowed %v (are the nodes' clocks synchronised?)", ErrStale, d.Round(time.Millisecond), g.skew)
	}
	id := h.Member.ID
	if s, ok := g.last[id]; ok && h.Seq <= s.seq {
		return fmt.Errorf("%w: sequence %d from %s, last seen %d", ErrReplayed, h.Seq, shortID(id), s.seq)
	}
	if _, ok := g.last[id]; !ok && len(g.last) >= maxGuarded {
		g.prune(now)
	}
	g.last[id] = seen{seq: h.Seq, at: now}
	return nil
}

// prune forgets the members not heard for twice the skew, and, if that is
// not enough, the one heard longest ago.
func (g *replayGuard) prune(now time.Time) {
	var oldest ID
	var oldestAt time.Time
	for id, s := range g.last {
		if now.Sub(s.at) > 2*g.skew {
			delete(g.last, id)
			continue
		}
		if oldestAt.IsZero() || s.at.Before(oldestAt) {
			oldest, oldestAt = id, s.at
		}
	}
	if len(g.last) >= maxGuarded {
		delete(g.last, oldest)
	}
}
