package sender

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/membership"
)

// Ping asks the process at addr to answer, on a connection of its own so
// that the answer cannot queue behind data, and returns the member that
// answered. A kernel that accepts the connection is not enough: a paused
// or stuck process does not answer within the timeout.
func (s *TCP) Ping(ctx context.Context, addr netip.AddrPort) (membership.Member, error) {
	p, err := s.call(ctx, addr, wire.TypePing)
	if err != nil {
		return membership.Member{}, err
	}
	return toMember(p), nil
}

// Leave tells the member at addr that this node is leaving, and waits for
// its answer.
func (s *TCP) Leave(ctx context.Context, addr netip.AddrPort) error {
	_, err := s.call(ctx, addr, wire.TypeLeave)
	return err
}

func (s *TCP) call(ctx context.Context, addr netip.AddrPort, t wire.Type) (wire.Peer, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, err)
	}
	defer conn.Close()
	// The deadline bounds the whole exchange; a cancelled ctx closes the
	// connection to end a blocked read at once.
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if conn, err = s.secure(ctx, conn); err != nil {
		return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, timedOut(ctx, err))
	}

	var nb [8]byte
	rand.Read(nb[:])
	nonce := binary.BigEndian.Uint64(nb[:])
	rd := wire.NewReader(conn, s.cfg.MaxFrame)
	b := wire.AppendHello(nil, s.local)
	b = wire.AppendPing(b, t, nonce)
	if ring := s.cfg.Keyring; ring != nil {
		seal, err := wire.ClientHandshake(conn, rd, ring)
		if err != nil {
			return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, timedOut(ctx, err))
		}
		hello := wire.FrameLen(b)
		sealed := seal.Seal(nil, b[:hello])
		b = seal.Seal(sealed, b[hello:])
	}
	if _, err := conn.Write(b); err != nil {
		return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, err)
	}
	for range 16 { // a pong is the first frame a receiver writes; allow a few strays, not a stream
		f, err := rd.Next(nil)
		if err != nil {
			return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, timedOut(ctx, err))
		}
		if f.Type != wire.TypePong {
			continue
		}
		n, p, err := wire.ParsePong(f.Body)
		if err != nil {
			return wire.Peer{}, fmt.Errorf("%v %v: %w", t, addr, err)
		}
		if n == nonce {
			return p, nil
		}
	}
	return wire.Peer{}, fmt.Errorf("%v %v: no answer among the frames it sent", t, addr)
}

// timedOut marks err as ErrTimeout when it is one. The connection's deadline
// is the context's: a read can time out a moment before the context
// reports it.
func timedOut(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	} else if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// secure opens TLS on conn when the sender is configured for it; conn is
// closed if the handshake fails.
func (s *TCP) secure(ctx context.Context, conn net.Conn) (net.Conn, error) {
	if s.cfg.TLS == nil {
		return conn, nil
	}
	tc := tls.Client(conn, s.cfg.TLS)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}
