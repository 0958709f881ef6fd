package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The Go-native session API: typed getters, Pop, Exists, Clear, flash
// values and "remember me", named after alexedwards/scs where the meaning
// is the same, so that a handler written for scs or gorilla/sessions reads
// the same on flock. Every change goes through the one path Set and Delete
// take (markDirty), so it is replicated like any other.

// internalPrefix marks the attributes flock keeps for itself in the
// session (flash values, the remember-me choice): they are replicated,
// persisted and transferred like any attribute, with no change to the
// wire format, so a node of an earlier release carries them untouched.
// No application key can begin with it (ErrReservedKey).
const internalPrefix = "\x00flock."

const (
	keyFlash    = internalPrefix + "flash"
	keyRemember = internalPrefix + "remember"
)

func internalKey(key string) bool { return strings.HasPrefix(key, internalPrefix) }

// ErrReservedKey is Set's and Delete's error for a key that begins with
// "\x00flock.": those are flock's own attributes.
var ErrReservedKey = errors.New(`session: keys beginning with "\x00flock." are flock's own`)

// value is Get without its ok and error: the zero value when the key is
// absent or holds a value that does not decode as a T.
func value[T any](s *Session, key string) T {
	v, ok, err := Get[T](s, key)
	if !ok || err != nil {
		var zero T
		return zero
	}
	return v
}

// GetString returns the string stored under key, or "" if the key is
// absent or its value is not a string (msgpack does not convert: a number
// is not a string). Use Get when absent and empty must differ.
func (s *Session) GetString(key string) string { return value[string](s, key) }

// GetInt returns the integer stored under key, or 0 if the key is absent or
// its value is not an integer. Any Go integer type that was Set decodes,
// if it fits in an int (a value that does not is 0).
func (s *Session) GetInt(key string) int { return value[int](s, key) }

// GetInt64 is GetInt for an int64.
func (s *Session) GetInt64(key string) int64 { return value[int64](s, key) }

// GetFloat64 returns the float stored under key (a float32 or float64 that
// was Set, or an integer), or 0 if the key is absent or holds no number.
// scs calls it GetFloat.
func (s *Session) GetFloat64(key string) float64 { return value[float64](s, key) }

// GetBool returns the bool stored under key, or false if the key is absent
// or its value is not a bool.
func (s *Session) GetBool(key string) bool { return value[bool](s, key) }

// GetTime returns the time stored under key, or the zero time if the key is
// absent or its value is not a time. It is the same instant as the one Set,
// in time.Local, without a monotonic reading: compare times with Equal,
// not ==.
func (s *Session) GetTime(key string) time.Time { return value[time.Time](s, key) }

// GetBytes returns the bytes stored under key, or nil if the key is absent
// or its value is neither bytes nor a string.
func (s *Session) GetBytes(key string) []byte { return value[[]byte](s, key) }

// Exists reports whether key holds a value.
func (s *Session) Exists(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.attrs[key]
	return ok
}

// Pop decodes the value stored under key into a fresh T and deletes the
// key, in one step: two requests popping one key concurrently on this node
// do not both get it. The delete is replicated like Delete's. ok is false
// when the key is absent; when the key cannot be deleted (ErrCommitted,
// ErrInvalidated) Pop returns the error and the value stays, so nothing
// shown is lost. A value that does not decode is deleted all the same, and
// the error says why it was not returned.
func Pop[T any](s *Session, key string) (v T, ok bool, err error) {
	s.mu.Lock()
	b, ok := s.attrs[key]
	if !ok {
		s.mu.Unlock()
		return v, false, nil
	}
	err = s.deleteLocked(key)
	s.mu.Unlock()
	if err != nil {
		return v, true, err
	}
	return decodeValue[T](key, b)
}

// pop is Pop without its ok and error.
func pop[T any](s *Session, key string) T {
	v, ok, err := Pop[T](s, key)
	if !ok || err != nil {
		var zero T
		return zero
	}
	return v
}

// PopString returns the string stored under key and deletes the key: a
// one-time message. It returns "" if the key is absent, its value is not a
// string, or the key cannot be deleted (the response has committed).
func (s *Session) PopString(key string) string { return pop[string](s, key) }

// PopInt is PopString for an int.
func (s *Session) PopInt(key string) int { return pop[int](s, key) }

// PopInt64 is PopString for an int64.
func (s *Session) PopInt64(key string) int64 { return pop[int64](s, key) }

// PopFloat64 is PopString for a float64 (scs: PopFloat).
func (s *Session) PopFloat64(key string) float64 { return pop[float64](s, key) }

// PopBool is PopString for a bool.
func (s *Session) PopBool(key string) bool { return pop[bool](s, key) }

// PopTime is PopString for a time.Time (see GetTime).
func (s *Session) PopTime(key string) time.Time { return pop[time.Time](s, key) }

// PopBytes is PopString for bytes.
func (s *Session) PopBytes(key string) []byte { return pop[[]byte](s, key) }

// Clear removes every attribute the application set, and the flash values;
// the session itself, its id and its remember-me choice stay (Invalidate
// ends it). The deletes are replicated like Delete's.
func (s *Session) Clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.changeable("*"); err != nil {
		return err
	}
	for k := range s.attrs {
		if k != keyRemember {
			delete(s.attrs, k)
			s.hashed = false
			s.markDirty(k)
		}
	}
	return nil
}

// maxFlashes bounds the flash values kept: a handler that adds one per
// request and a user who never sees them must not grow the session without
// bound (the oldest go first).
const maxFlashes = 64

// AddFlash adds a one-time message, shown by the next request that calls
// Flashes, on whichever node serves it (gorilla's AddFlash). At most 64
// are kept; past that the oldest goes.
func (s *Session) AddFlash(msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var flashes []string
	if b, ok := s.attrs[keyFlash]; ok {
		// A value that does not decode (none of ours) is replaced.
		flashes, _, _ = decodeValue[[]string](keyFlash, b)
	}
	flashes = append(flashes, msg)
	if len(flashes) > maxFlashes {
		flashes = flashes[len(flashes)-maxFlashes:]
	}
	return s.setLocked(keyFlash, flashes)
}

// Flashes returns the flash messages, oldest first, and removes them (nil if
// there are none, or if they cannot be removed because the response has
// committed: they then stay for the next request).
func (s *Session) Flashes() []string { return pop[[]string](s, keyFlash) }

// RememberMe makes the session's cookie persistent (on) or a browser
// session cookie (off), whatever [session] cookie_persist says. The choice
// is an attribute of the session, replicated, so every node that serves
// the session sets the same cookie: with Max-Age, when the session would
// expire (ExpiresAt). It has no effect when the id travels in a header.
func (s *Session) RememberMe(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(keyRemember, on)
}

// Persistent reports whether the session's cookie is persistent: what
// RememberMe chose, or def (the configuration's default) if it was never
// called.
func (s *Session) Persistent(def bool) bool {
	v, ok, err := Get[bool](s, keyRemember)
	if !ok || err != nil {
		return def
	}
	return v
}

// ExpiresAt is when the session expires if no request uses it until then:
// its last access plus its max inactive interval, or its creation plus the
// configured lifetime, whichever is sooner. The node that served it last
// keeps it a little longer (touches travel in batches), never shorter.
func (s *Session) ExpiresAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.lastAccess.Add(s.maxInactive)
	if l := s.m.cfg.Lifetime; l > 0 {
		if end := s.created.Add(l); end.Before(at) {
			at = end
		}
	}
	return at
}

// pastLifetime reports whether s outlived the configured lifetime; s.mu
// held. The creation time is replicated with the session, so every node
// reaches the same verdict at the same time, without a touch's grace: a
// request does not extend a lifetime.
func (s *Session) pastLifetime(now time.Time) bool {
	l := s.m.cfg.Lifetime
	return l > 0 && !s.created.IsZero() && now.Sub(s.created) > l
}

// ErrSessionExists is CreateID's error when a session of that id exists,
// or existed and ended moments ago.
var ErrSessionExists = errors.New("a session with this id exists")

// CreateID starts a new session under id, which the caller chose: for
// stores whose library makes its own tokens (the scs bridge derives a
// flock id from scs's token). id must pass ValidID. A session that ended
// under id moments ago cannot be made again: its copies elsewhere would
// refuse it.
func (m *Manager) CreateID(ctx context.Context, id string) (*Session, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("manager: %q is not a session id", id)
	}
	if _, ended := m.tombs.get(id); ended {
		return nil, fmt.Errorf("manager: session %s: %w (it ended)", m.ref(id), ErrSessionExists)
	}
	return m.create(id)
}

// create makes a session under id, or a fresh random id if id is "".
func (m *Manager) create(id string) (*Session, error) {
	now := m.clock.Now()
	s := &Session{
		m: m, origin: m.local, created: now, lastAccess: now, accessedBy: m.local,
		maxInactive: m.cfg.SessionTimeout, attrs: make(map[string][]byte), isNew: true,
	}
	m.mu.Lock()
	if held := len(m.sessions); m.cfg.MaxActive > 0 && held >= m.cfg.MaxActive {
		m.mu.Unlock()
		m.stats.rejected.Add(1)
		return nil, fmt.Errorf("manager: %w: %d held, max_active %d", ErrTooManySessions, held, m.cfg.MaxActive)
	}
	if id != "" {
		if _, taken := m.sessions[id]; taken {
			m.mu.Unlock()
			return nil, fmt.Errorf("manager: session %s: %w", m.ref(id), ErrSessionExists)
		}
		s.id = id
	}
	for s.id == "" {
		s.id = newID(m.local)
		if _, taken := m.sessions[s.id]; taken {
			s.id = ""
		}
	}
	m.sessions[s.id] = s
	m.mu.Unlock()
	m.stats.created.Add(1)
	m.fire(false, func(l Listener) {
		if l.Created != nil {
			l.Created(s.id, false)
		}
	})
	return s, nil
}

// Range calls f with every session this node holds (in delta mode, every
// session of the cluster; in backup mode, those it owns or backs up), in no
// order, until f returns false. Expired and invalidated sessions are
// skipped. f may use the session but must not call Range.
func (m *Manager) Range(f func(*Session) bool) {
	m.mu.RLock()
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.RUnlock()
	now := m.clock.Now()
	for _, s := range all {
		s.mu.Lock()
		gone := s.invalid || s.expiredAt(now, m.local)
		s.mu.Unlock()
		if !gone && !f(s) {
			return
		}
	}
}

// integerType reports whether T is a plain integer type (int, uint8,
// time.Duration…) with no msgpack decoder of its own: those decodeInteger
// decodes, because msgpack narrows an integer that does not fit without a
// word (300 into an int8 is 44, -1 into a uint8 255).
func integerType[T any]() bool {
	var v T
	switch any(&v).(type) {
	case msgpack.CustomDecoder, msgpack.Unmarshaler:
		return false
	}
	switch reflect.TypeFor[T]().Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// errOutOfRange: the stored integer does not fit the type asked for.
var errOutOfRange = errors.New("integer out of range")

// decodeInteger decodes b into the integer type T: any integer that fits
// (whatever type was Set), nil as 0; anything else, or an integer that does
// not fit, is the zero T and an error.
func decodeInteger[T any](key string, b []byte) (v T, ok bool, err error) {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	var rd bytes.Reader
	rd.Reset(b)
	dec.Reset(&rd)
	x, err := dec.DecodeInterfaceLoose()
	if err != nil {
		return v, true, fmt.Errorf("manager: session attribute %q: %w", key, err)
	}
	rv := reflect.ValueOf(&v).Elem()
	fits := true
	switch x := x.(type) {
	case nil:
		return v, true, nil
	case int64:
		if rv.CanInt() {
			fits = !rv.OverflowInt(x)
			if fits {
				rv.SetInt(x)
			}
		} else {
			fits = x >= 0 && !rv.OverflowUint(uint64(x))
			if fits {
				rv.SetUint(uint64(x))
			}
		}
	case uint64:
		if rv.CanInt() {
			fits = x <= math.MaxInt64 && !rv.OverflowInt(int64(x))
			if fits {
				rv.SetInt(int64(x))
			}
		} else {
			fits = !rv.OverflowUint(x)
			if fits {
				rv.SetUint(x)
			}
		}
	default:
		return v, true, fmt.Errorf("manager: session attribute %q: a %T, not an integer", key, x)
	}
	if !fits {
		var zero T
		return zero, true, fmt.Errorf("manager: session attribute %q: %v into %T: %w", key, x, v, errOutOfRange)
	}
	return v, true, nil
}
