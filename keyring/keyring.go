// Package keyring holds a cluster's shared secret keys and the two ways
// flock uses them: sealing single packets (membership heartbeats) and
// deriving the keys of one connection (the transport's handshake).
//
// The first key of a ring seals; every key opens. Keys therefore rotate
// without downtime: add the new key on every node, then make it first on
// every node, then remove the old one. Each step is a [Keyring.Set] (flockd
// does it on SIGHUP), and no node ever seals with a key another node cannot
// open.
//
// Every key is 32 random bytes, used with AES-256-GCM. A key is named on
// the wire by a 4-byte id derived from it (a hash, not the key), so a node
// tries only the key a packet names.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Size is the length of a key in bytes.
const Size = 32

// IDSize is the length of a key id on the wire.
const IDSize = 4

// NonceSize is the length of the random nonce of a sealed packet.
const NonceSize = 12

// TagSize is the length of the authentication tag AES-GCM appends.
const TagSize = 16

// PacketOverhead is what SealPacket adds to a plaintext.
const PacketOverhead = IDSize + NonceSize + TagSize

// MaxKeys bounds a ring: rotation needs two, a few more are a mistake.
const MaxKeys = 16

// Errors of the package, wrapped with the detail.
var (
	// ErrUnknownKey: a packet or handshake names a key this ring lacks.
	ErrUnknownKey = errors.New("sealed with a key this node does not hold")
	// ErrForged: the tag does not match: the bytes were changed, or sealed
	// by someone without the key.
	ErrForged = errors.New("authentication failed")
	// ErrKey: a key is not valid.
	ErrKey = errors.New("invalid key")
)

// ID names a key on the wire.
type ID [IDSize]byte

func (id ID) String() string { return fmt.Sprintf("%x", id[:]) }

// Key is one secret of a ring.
type Key struct {
	id     ID
	secret [Size]byte
	aead   cipher.AEAD
	// removed is set once a rotation takes the key out of its ring:
	// connections opened with it stop.
	removed atomic.Bool
}

// ID is the key's public name.
func (k *Key) ID() ID { return k.id }

// Removed reports whether the key has left its ring.
func (k *Key) Removed() bool { return k.removed.Load() }

func newKey(secret []byte) (*Key, error) {
	if len(secret) != Size {
		return nil, fmt.Errorf("%w: %d bytes, need %d", ErrKey, len(secret), Size)
	}
	k := &Key{}
	copy(k.secret[:], secret)
	if k.secret == ([Size]byte{}) {
		return nil, fmt.Errorf("%w: all zero", ErrKey)
	}
	sum := sha256.Sum256(append([]byte("flock key id v1\x00"), secret...))
	copy(k.id[:], sum[:IDSize])
	block, err := aes.NewCipher(k.secret[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return k, nil
}

// Keyring is a cluster's keys; safe for concurrent use. The zero value is
// not usable: build one with New or Parse.
type Keyring struct {
	mu   sync.Mutex // serialises Set
	keys atomic.Pointer[[]*Key]
}

// New returns a ring of the given keys, the first of which seals.
func New(secrets ...[]byte) (*Keyring, error) {
	r := &Keyring{}
	if err := r.Set(secrets...); err != nil {
		return nil, err
	}
	return r, nil
}

// Parse returns a ring of base64-encoded keys (standard or URL alphabet,
// padded or not), the first of which seals.
func Parse(encoded ...string) (*Keyring, error) {
	secrets, err := Decode(encoded...)
	if err != nil {
		return nil, err
	}
	return New(secrets...)
}

// Decode decodes base64 keys, naming the position of a bad one (never its
// text: it may be a real key with a typo).
func Decode(encoded ...string) ([][]byte, error) {
	out := make([][]byte, 0, len(encoded))
	for i, s := range encoded {
		s = strings.TrimSpace(s)
		var b []byte
		var err error
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err = enc.DecodeString(s); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: key %d is not base64", ErrKey, i+1)
		}
		if len(b) != Size {
			return nil, fmt.Errorf("%w: key %d has %d bytes, need %d (generate one with flockctl keygen)", ErrKey, i+1, len(b), Size)
		}
		out = append(out, b)
	}
	return out, nil
}

// Set replaces the keys, the first of which seals from now on. Keys that
// stay keep working for the connections opened with them; keys that go are
// marked removed.
func (r *Keyring) Set(secrets ...[]byte) error {
	if len(secrets) == 0 {
		return fmt.Errorf("%w: a keyring needs at least one key", ErrKey)
	}
	if len(secrets) > MaxKeys {
		return fmt.Errorf("%w: %d keys, at most %d", ErrKey, len(secrets), MaxKeys)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var old []*Key
	if p := r.keys.Load(); p != nil {
		old = *p
	}
	keys := make([]*Key, 0, len(secrets))
	for i, s := range secrets {
		k, err := newKey(s)
		if err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
		for _, o := range old {
			if subtle.ConstantTimeCompare(o.secret[:], k.secret[:]) == 1 {
				k = o // the same key: its connections go on
			}
		}
		for _, o := range keys {
			if o.id == k.id {
				return fmt.Errorf("%w: key %d appears twice", ErrKey, i+1)
			}
		}
		keys = append(keys, k)
	}
	for _, o := range old {
		kept := false
		for _, k := range keys {
			kept = kept || k == o
		}
		if !kept {
			o.removed.Store(true)
		}
	}
	r.keys.Store(&keys)
	return nil
}

// IDs lists the ids of the keys, the sealing one first; for status pages.
func (r *Keyring) IDs() []ID {
	keys := *r.keys.Load()
	ids := make([]ID, len(keys))
	for i, k := range keys {
		ids[i] = k.id
	}
	return ids
}

// Derive returns, for every key of the ring in order (the sealing one
// first), a key of Size bytes derived from it for purpose by HKDF-SHA256.
// Another protocol that must hold raw keys (gossip membership's own
// encryption) then never shares a key with sealing or the transport: a
// weakness of one use cannot become a weakness of the other.
func (r *Keyring) Derive(purpose string) ([][]byte, error) {
	keys := *r.keys.Load()
	out := make([][]byte, len(keys))
	for i, k := range keys {
		d, err := hkdf.Key(sha256.New, k.secret[:], nil, "flock derived key v1\x00"+purpose, Size)
		if err != nil {
			return nil, fmt.Errorf("keyring: derive %q: %w", purpose, err)
		}
		out[i] = d
	}
	return out, nil
}

// Primary is the key that seals.
func (r *Keyring) Primary() *Key { return (*r.keys.Load())[0] }

// Lookup returns the key named id, or nil.
func (r *Keyring) Lookup(id ID) *Key {
	for _, k := range *r.keys.Load() {
		if k.id == id {
			return k
		}
	}
	return nil
}

// Generate returns a fresh random key, base64-encoded.
func Generate() string {
	var b [Size]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	return base64.StdEncoding.EncodeToString(b[:])
}

// SealPacket appends to dst the sealed form of plaintext: the primary
// key's id, a random nonce, and the ciphertext with its tag. ad (the
// packet's clear header) is authenticated, not encrypted. Random nonces
// suit packets: they need no state, and a key seals far fewer than the
// 2^32 packets after which they would risk repeating.
func (r *Keyring) SealPacket(dst, ad, plaintext []byte) []byte {
	k := r.Primary()
	dst = append(dst, k.id[:]...)
	var nonce [NonceSize]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return k.aead.Seal(dst, nonce[:], plaintext, ad)
}

// OpenPacket checks and decrypts what SealPacket wrote, appending the
// plaintext to dst. Every error wraps ErrUnknownKey or ErrForged.
func (r *Keyring) OpenPacket(dst, ad, sealed []byte) ([]byte, error) {
	if len(sealed) < PacketOverhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a sealed packet", ErrForged, len(sealed))
	}
	k := r.Lookup(ID(sealed[:IDSize]))
	if k == nil {
		return nil, fmt.Errorf("%w (key id %x)", ErrUnknownKey, sealed[:IDSize])
	}
	out, err := k.aead.Open(dst, sealed[IDSize:IDSize+NonceSize], sealed[IDSize+NonceSize:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrForged, err)
	}
	return out, nil
}

// Stream holds the keys of one connection, derived from a ring key and a
// nonce of each side, so no two connections share keys and nothing recorded
// from one opens on another.
type Stream struct {
	Key *Key
	// Client seals what the connecting side sends; Server what the
	// accepting side sends.
	Client, Server cipher.AEAD
	// Proof is what the accepting side returns to show it holds the key.
	Proof [32]byte
}

// Derive returns the keys of a connection from the nonces of both sides.
func (k *Key) Derive(clientNonce, serverNonce []byte) (*Stream, error) {
	salt := make([]byte, 0, len(clientNonce)+len(serverNonce))
	salt = append(append(salt, clientNonce...), serverNonce...)
	prk, err := hkdf.Extract(sha256.New, k.secret[:], salt)
	if err != nil {
		return nil, err
	}
	s := &Stream{Key: k}
	for _, d := range []struct {
		info string
		out  *cipher.AEAD
	}{{"flock/1 client", &s.Client}, {"flock/1 server", &s.Server}} {
		b, err := hkdf.Expand(sha256.New, prk, d.info, Size)
		if err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(b)
		if err != nil {
			return nil, err
		}
		if *d.out, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	p, err := hkdf.Expand(sha256.New, prk, "flock/1 proof", len(s.Proof))
	if err != nil {
		return nil, err
	}
	copy(s.Proof[:], p)
	return s, nil
}
