package wire

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/flockhq/flock/keyring"
)

// A keyed connection (both sides hold a cluster keyring) starts with a
// handshake of two auth frames, in the clear:
//
//	caller   -> acceptor: auth [1, key id (4 bytes), caller nonce (32 bytes)]
//	acceptor -> caller:   auth [1, key id, acceptor nonce (32 bytes), proof (32 bytes)]
//
// Both sides derive the connection's keys from the ring key and both nonces
// (keyring.Key.Derive); the proof shows the acceptor holds the key, and the
// caller's first sealed frame (its hello) shows the caller does. From then
// on every frame in either direction is sealed: the FlagAuth bit is set, the
// body is the AES-GCM ciphertext of the plain body followed by its 16-byte
// tag, the 12-byte header (with the sealed length) is the associated data,
// and the nonce is the frame's position in its direction of the stream
// (0, 1, 2, ...). A frame changed, dropped, replayed, reordered or taken from
// another connection fails to open, and the connection closes.

// AuthNonceSize is the length of each side's handshake nonce.
const AuthNonceSize = 32

// ErrUnauthenticated: a keyed node read a frame that is not sealed, or a
// sealed one that does not open.
var ErrUnauthenticated = errors.New("frame not authenticated")

// ErrKeyRemoved: a rotation took the connection's key out of the keyring;
// the connection ends, and a new one uses a current key.
var ErrKeyRemoved = errors.New("the connection's key was removed from the keyring")

// Auth is the body of an auth frame. Proof is empty in the caller's.
type Auth struct {
	Key   keyring.ID
	Nonce [AuthNonceSize]byte
	Proof []byte
}

// AppendAuth appends a whole auth frame.
func AppendAuth(b []byte, a Auth) []byte {
	b, start := begin(b, TypeAuth)
	n := 3
	if a.Proof != nil {
		n = 4
	}
	b = appendArray(b, n)
	b = appendUint(b, 1)
	b = appendBin(b, a.Key[:])
	b = appendBin(b, a.Nonce[:])
	if a.Proof != nil {
		b = appendBin(b, a.Proof)
	}
	return finish(b, start)
}

// ParseAuth decodes an auth frame's body.
func ParseAuth(body []byte) (Auth, error) {
	d := decoder{b: body}
	n := d.arrayOf(3, "auth")
	var a Auth
	if v := d.uint(); d.err == nil && v != 1 {
		d.fail("auth version %d", v)
	}
	if k := d.bin(); d.err == nil {
		if len(k) != len(a.Key) {
			d.fail("key id of %d bytes", len(k))
		}
		copy(a.Key[:], k)
	}
	if nonce := d.bin(); d.err == nil {
		if len(nonce) != len(a.Nonce) {
			d.fail("nonce of %d bytes", len(nonce))
		}
		copy(a.Nonce[:], nonce)
	}
	known := 3
	if n > 3 {
		a.Proof = d.bin()
		known = 4
	}
	d.end(n, known)
	if d.err != nil {
		return Auth{}, d.err
	}
	return a, nil
}

// Sealer seals the frames of one direction of a connection; one goroutine
// at a time may use it.
type Sealer struct {
	aead  cipher.AEAD
	key   *keyring.Key
	seq   uint64
	nonce [12]byte
}

// Key is the ring key the connection was opened with.
func (s *Sealer) Key() *keyring.Key { return s.key }

// Seal appends to dst the sealed form of frame, a whole plain frame as the
// Append functions write it.
func (s *Sealer) Seal(dst, frame []byte) []byte {
	start := len(dst)
	dst = append(dst, frame[:HeaderLen]...)
	dst[start+6] |= FlagAuth
	binary.BigEndian.PutUint32(dst[start+8:], uint32(len(frame)-HeaderLen+keyring.TagSize))
	// The nonce lives in s: a local array passed to the interface method
	// would escape, one allocation per frame.
	binary.BigEndian.PutUint64(s.nonce[4:], s.seq)
	s.seq++
	// The header is both the associated data and the prefix dst grows
	// from: Seal reads it before it writes past it.
	return s.aead.Seal(dst, s.nonce[:], frame[HeaderLen:], dst[start:start+HeaderLen])
}

// opener opens the frames of one direction of a connection.
type opener struct {
	aead  cipher.AEAD
	key   *keyring.Key
	seq   uint64
	nonce [12]byte
}

func (o *opener) open(hdr, body []byte) ([]byte, error) {
	if o.key.Removed() {
		return nil, fmt.Errorf("%w (key %v)", ErrKeyRemoved, o.key.ID())
	}
	binary.BigEndian.PutUint64(o.nonce[4:], o.seq) // in o, as in Sealer.Seal
	out, err := o.aead.Open(body[:0], o.nonce[:], body, hdr)
	if err != nil {
		return nil, fmt.Errorf("%w: frame %d does not open (forged, replayed, reordered or corrupt)", ErrUnauthenticated, o.seq)
	}
	o.seq++
	return out, nil
}

// ClientHandshake runs the caller's half of the handshake on a fresh
// connection: it writes the caller's auth frame to w, reads the acceptor's
// from rd and checks its proof. From then on rd opens what the acceptor
// sends, and the returned Sealer seals what the caller sends.
func ClientHandshake(w io.Writer, rd *Reader, ring *keyring.Keyring) (*Sealer, error) {
	k := ring.Primary()
	hello := Auth{Key: k.ID()}
	rand.Read(hello.Nonce[:])
	if _, err := w.Write(AppendAuth(nil, hello)); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	f, err := rd.Next(nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if f.Type != TypeAuth {
		return nil, fmt.Errorf("handshake: %w: the peer answered with %v (does it hold no keyring?)", ErrUnauthenticated, f.Type)
	}
	answer, err := ParseAuth(f.Body)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w: %w", ErrUnauthenticated, err)
	}
	if answer.Key != hello.Key {
		return nil, fmt.Errorf("handshake: %w: answered with key %v, asked %v", ErrUnauthenticated, answer.Key, hello.Key)
	}
	st, err := k.Derive(hello.Nonce[:], answer.Nonce[:])
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if subtle.ConstantTimeCompare(answer.Proof, st.Proof[:]) != 1 {
		return nil, fmt.Errorf("handshake: %w: the peer does not prove it holds key %v", ErrUnauthenticated, k.ID())
	}
	rd.open = &opener{aead: st.Server, key: k}
	return &Sealer{aead: st.Client, key: k}, nil
}

// ServerHandshake answers the caller's auth frame f: it returns the answer
// to write, and the Sealer for what the acceptor sends. From then on rd
// opens what the caller sends; the caller is authenticated once its first
// frame opens.
func ServerHandshake(f Frame, rd *Reader, ring *keyring.Keyring) ([]byte, *Sealer, error) {
	if f.Type != TypeAuth {
		return nil, nil, fmt.Errorf("%w: %v before the handshake", ErrUnauthenticated, f.Type)
	}
	hello, err := ParseAuth(f.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: handshake: %w", ErrUnauthenticated, err)
	}
	if hello.Proof != nil {
		return nil, nil, fmt.Errorf("%w: handshake: a caller's auth frame carries a proof", ErrUnauthenticated)
	}
	k := ring.Lookup(hello.Key)
	if k == nil {
		return nil, nil, fmt.Errorf("handshake: %w (key id %v)", keyring.ErrUnknownKey, hello.Key)
	}
	answer := Auth{Key: k.ID()}
	rand.Read(answer.Nonce[:])
	st, err := k.Derive(hello.Nonce[:], answer.Nonce[:])
	if err != nil {
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	answer.Proof = st.Proof[:]
	rd.open = &opener{aead: st.Client, key: k}
	return AppendAuth(nil, answer), &Sealer{aead: st.Server, key: k}, nil
}
