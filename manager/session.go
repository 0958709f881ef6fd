package manager

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/internal/wire"
)

// Session is one user's session. Handlers read and write it through the
// valve; values are stored msgpack-encoded, so Get always returns a copy and
// a handler can never change a stored value behind the manager's back (the
// "mutated object not replicated" trap of Tomcat and Resin): only Set and
// Delete change a session, and every change is replicated.
//
// A Session is safe for concurrent use by the requests that share it.
type Session struct {
	m *Manager

	// commitMu orders the replication of this session's changes: a version
	// is sent before the next one is made.
	commitMu sync.Mutex

	mu          sync.Mutex
	id          string
	version     uint64
	origin      string // node that made the current version
	created     time.Time
	lastAccess  time.Time
	accessedBy  string // node that served the last request (the primary, in Tomcat's words)
	maxInactive time.Duration
	attrs       map[string][]byte
	hash        uint64 // contentHash's cache, valid while hashed
	hashed      bool

	// The change since the last commit.
	dirty       []string // keys set or deleted, each once; a request changes few
	isNew       bool     // created here, not yet replicated
	renamedFrom string   // id before RenewID, not yet replicated
	maxChanged  bool
	invalid     bool
	// unsure: this copy's last change, made here, reached fewer members
	// than the sync rule requires (the user was answered 503). Nobody
	// acknowledged it, so it is neither handed out nor built on: the next
	// Load replaces it with the members' copy, and any copy a member sends
	// replaces it.
	unsure bool
	// sure: while unsure, the version the copy had when it last was not:
	// members acknowledged it, so a copy of theirs older than it is stale,
	// not a replacement.
	sure uint64
	// inFlight: a sync commit of this copy's version is on its way and not
	// yet acknowledged: until it is, the copy is not handed out either
	// (an anti-entropy round or a fetch meanwhile could spread it).
	inFlight bool

	// Requests using the session through the valve: open ones (their
	// response has not committed) and late ones (it has, their handler
	// still runs). A change while some are late and none is open would be
	// in no response: Set and Delete refuse it (ErrCommitted).
	open, late int
	// changedUnder: a change made on another node (a delta it sent)
	// landed while requests here used the session. What they read may predate it, so a change
	// of theirs, built on what they read, would overwrite it unseen (an
	// increment on a stale count): in sync replication their commit is
	// refused (ErrChangedUnder) instead.
	changedUnder bool
}

// ErrChangedUnder is Commit's error when, in sync replication, a change
// made on another node landed while the request ran: the request's change
// may be built on what it read before, and would overwrite the other
// unseen. The change is not replicated; the valve answers 503, and the
// next request reads the session afresh.
var ErrChangedUnder = errors.New("the session changed on another node during the request")

// landed notes a change from another node applied to s; s.mu held.
func (s *Session) landed() {
	if s.open+s.late > 0 {
		s.changedUnder = true
	}
}

// private reports whether this copy holds a change not acknowledged (yet),
// which must not reach another member except by its own commit; s.mu held.
func (s *Session) private() bool { return s.unsure || s.inFlight }

// ErrCommitted is returned by Set and Delete when the response of the
// request that changes the session has already committed (the handler
// wrote its body): the change could be in no response and no commit.
// Change the session before writing.
var ErrCommitted = errors.New("session: the response has already committed; change the session before writing")

// RequestStarted, ResponseCommitted and RequestEnded tell the session where
// a request using it stands; the valve calls them (see ErrCommitted).
func (s *Session) RequestStarted() {
	s.mu.Lock()
	if s.open+s.late == 0 {
		s.changedUnder = false // what landed before this request, it reads
	}
	s.open++
	s.mu.Unlock()
}

// ResponseCommitted: the request's response is being committed.
func (s *Session) ResponseCommitted() {
	s.mu.Lock()
	if s.open > 0 {
		s.open--
		s.late++
	}
	s.mu.Unlock()
}

// RequestEnded: the request's handler returned.
func (s *Session) RequestEnded() {
	s.mu.Lock()
	if s.late > 0 {
		s.late--
	}
	s.mu.Unlock()
}

// tooLate reports whether a change now would be in no response; s.mu held.
func (s *Session) tooLate() bool { return s.late > 0 && s.open == 0 }

// ErrInvalidated is returned by operations on a session after Invalidate.
var ErrInvalidated = errors.New("session invalidated")

// ID is the session id: a random part, a dot, and the route of the node
// that created (or last took over) the session.
func (s *Session) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// Version counts the changes made to the session, cluster-wide.
func (s *Session) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// CreatedAt is when the session was created.
func (s *Session) CreatedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// LastAccessed is when a request last used the session, on any node.
func (s *Session) LastAccessed() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAccess
}

// MaxInactiveInterval is how long the session may go unused before it
// expires.
func (s *Session) MaxInactiveInterval() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInactive
}

// SetMaxInactiveInterval changes how long the session may go unused.
func (s *Session) SetMaxInactiveInterval(d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return ErrInvalidated
	}
	if d <= 0 {
		return fmt.Errorf("manager: max inactive interval %v must be positive", d)
	}
	s.maxInactive, s.maxChanged = d, true
	return nil
}

// maxValueDepth bounds the nesting of an attribute value.
const maxValueDepth = 64

// Get decodes the value stored under key into a fresh T. ok is false when
// the key is absent. A value that does not decode as a T (another type was
// Set) gives ok true, the zero T and an error saying why: the key is there,
// its value is not what the caller expects. See README's encoding rules.
func Get[T any](s *Session, key string) (v T, ok bool, err error) {
	s.mu.Lock()
	b, ok := s.attrs[key]
	s.mu.Unlock()
	if !ok {
		return v, false, nil
	}
	return decodeValue[T](key, b)
}

// decodeValue decodes b, the value of key, into a fresh T; the zero T and
// an error if it does not decode.
func decodeValue[T any](key string, b []byte) (v T, ok bool, err error) {
	// Values come from other nodes too: checked before msgpack recurses
	// into them or allocates by their counts.
	if err := wire.CheckMsgpack(b, maxValueDepth); err != nil {
		return v, true, fmt.Errorf("manager: session attribute %q: %w", key, err)
	}
	if integerType[T]() {
		return decodeInteger[T](key, b)
	}
	if err := msgpack.Unmarshal(b, &v); err != nil {
		// msgpack may have filled part of v before it failed: a half
		// value is worse than none.
		var zero T
		return zero, true, fmt.Errorf("manager: session attribute %q: %w", key, err)
	}
	return v, true, nil
}

// Set stores v, msgpack-encoded, under key.
func (s *Session) Set(key string, v any) error {
	if internalKey(key) {
		return fmt.Errorf("manager: session attribute %q: %w", key, ErrReservedKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(key, v)
}

// setLocked is Set for any key, flock's own too; s.mu held. Encoding
// under the lock costs little next to the commit that follows, and keeps
// a read-modify-write (AddFlash) atomic.
func (s *Session) setLocked(key string, v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("manager: session attribute %q: %w", key, err)
	}
	if err := s.changeable(key); err != nil {
		return err
	}
	if size := s.size() - len(s.attrs[key]) + len(key) + len(b); size > s.m.cfg.MaxSessionBytes {
		return fmt.Errorf("manager: session attribute %q: %w: %d bytes, at most %d", key, ErrTooLarge, size, s.m.cfg.MaxSessionBytes)
	}
	s.attrs[key] = b
	s.hashed = false
	s.markDirty(key)
	return nil
}

// changeable reports why the session cannot be changed now, if it cannot;
// s.mu held.
func (s *Session) changeable(key string) error {
	if s.invalid {
		return ErrInvalidated
	}
	if s.tooLate() {
		return fmt.Errorf("manager: session attribute %q: %w", key, ErrCommitted)
	}
	return nil
}

// Delete removes key.
func (s *Session) Delete(key string) error {
	if internalKey(key) {
		return fmt.Errorf("manager: session attribute %q: %w", key, ErrReservedKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(key)
}

// deleteLocked is Delete for any key; s.mu held.
func (s *Session) deleteLocked(key string) error {
	if err := s.changeable(key); err != nil {
		return err
	}
	if _, ok := s.attrs[key]; ok {
		delete(s.attrs, key)
		s.hashed = false
		s.markDirty(key)
	}
	return nil
}

// size is the bytes of the attributes; s.mu must be held.
func (s *Session) size() int {
	n := 0
	for k, v := range s.attrs {
		n += len(k) + len(v)
	}
	return n
}

func (s *Session) markDirty(key string) {
	if !slices.Contains(s.dirty, key) {
		s.dirty = append(s.dirty, key)
	}
}

// Pending reports whether the session has changes not yet committed.
func (s *Session) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isNew || len(s.dirty) > 0 || s.renamedFrom != "" || s.maxChanged
}

// Keys lists the attribute names the application set, sorted (flock's
// own, such as the flash values, are not listed).
func (s *Session) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.attrs))
	for k := range s.attrs {
		if !internalKey(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Invalidate ends the session on every node (logout).
func (s *Session) Invalidate() {
	s.mu.Lock()
	already := s.invalid
	s.invalid = true
	id := s.id
	s.mu.Unlock()
	if !already {
		s.m.invalidated(s, id)
	}
}

// Invalid reports whether the session was invalidated or expired.
func (s *Session) Invalid() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.invalid
}

// RenewID gives the session a new id, keeping its contents: call it after a
// login, so an id planted before the login is worthless (session fixation).
// The new id is replicated, and sent to the client, when the response
// commits.
func (s *Session) RenewID() error {
	return s.m.rename(s, newID(s.m.cfg.Route))
}

// newID returns a random session id for route: 144 random bits, URL-safe.
func newID(route string) string {
	var b [18]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]) + "." + route
}

// Route returns the route part of a session id ("" if it has none).
func Route(id string) string {
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// ValidID reports whether id has the shape of a session id: a base64url
// random part of 24 characters, a dot, and a route of letters, digits, '-'
// or '_'. Anything else from a cookie is ignored, never looked up.
func ValidID(id string) bool {
	i := strings.LastIndexByte(id, '.')
	if i != 24 || len(id)-i-1 < 1 || len(id)-i-1 > 63 {
		return false
	}
	// Bytes, not runes, through a table: it runs a few times per request,
	// and any byte past ASCII is refused either way.
	for j := 0; j < len(id); j++ {
		if !idByte[id[j]] && j != i {
			return false
		}
	}
	return true
}

// idByte is the bytes a session id's parts are made of (read only).
var idByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	return t
}()

// rebindID is the id a failover rewrite gives session id on route. It is
// derived from id, so every node that rewrites the same session picks the
// same one, and it is never an id the session had before: with the random
// part kept, a session rewritten back to its first route would meet its
// own tombstone "moved" under that id, and a node holding it would refuse
// the change. Knowing it takes the old id, which finds the session anyway
// (aliases).
func rebindID(id, route string) string {
	h := sha256.Sum256([]byte("flock-rebind\x00" + id + "\x00" + route))
	return base64.RawURLEncoding.EncodeToString(h[:18]) + "." + route
}

// newerThan reports whether s is past version v.
func (s *Session) newerThan(v uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version > v
}
