package flock

import (
	"net/http"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// A Session is one user's session. It is safe for concurrent use by the
// requests that share it.
type Session = manager.Session

// ErrTooManySessions is Session's error when the node holds
// cluster.manager.max_active sessions; the node then answers 503 whatever
// the handler writes.
var ErrTooManySessions = manager.ErrTooManySessions

// Errors of Session's methods.
var (
	// ErrCommitted: Set or Delete after the handler wrote its response.
	ErrCommitted = manager.ErrCommitted
	// ErrTooLarge: the session would be too large to replicate.
	ErrTooLarge = manager.ErrTooLarge
	// ErrInvalidated: the session was invalidated (logout).
	ErrInvalidated = manager.ErrInvalidated
	// ErrReservedKey: Set or Delete of a key beginning with "\x00flock.",
	// flock's own attributes (flash values, the remember-me choice).
	ErrReservedKey = manager.ErrReservedKey
)

// Errors of HeaderID, when [session] id_header carries the session id.
var (
	// ErrNoID: the request has no id header.
	ErrNoID = valve.ErrNoID
	// ErrManyIDs: the request has the id header more than once.
	ErrManyIDs = valve.ErrManyIDs
	// ErrBadID: the header's value is not a session id.
	ErrBadID = valve.ErrBadID
)

// SessionOf returns the request's session, creating one if the request has
// none (or an unknown, expired or malformed id). The request must have
// passed through Node.Wrap.
func SessionOf(r *http.Request) (*Session, error) { return valve.Session(r) }

// Existing returns the request's session, or nil if it has none; it never
// creates one, so read-only pages cost no session.
func Existing(r *http.Request) *Session { return valve.Existing(r) }

// Get decodes the value stored under key into a fresh T; ok is false when
// the key is absent. Changing the T never changes the session: Set it back.
// A value that does not decode as a T gives ok true, the zero T and an
// error. For strings, numbers, bools, times and bytes the Session's typed
// getters (GetString, GetInt…) are shorter: they return the zero value
// when the key is absent or holds another type.
func Get[T any](s *Session, key string) (v T, ok bool, err error) { return manager.Get[T](s, key) }

// Pop is Get, and the key deleted in the same step (replicated like
// Delete): a value shown once. If the key cannot be deleted (the response
// has committed) Pop returns the error and the value stays.
func Pop[T any](s *Session, key string) (v T, ok bool, err error) { return manager.Pop[T](s, key) }

// HeaderID returns the session id the request carries in the header called
// name ([session] id_header), or ErrNoID, ErrManyIDs or ErrBadID: a
// header-keyed API answers those with a 400 rather than a new session.
func HeaderID(r *http.Request, name string) (string, error) { return valve.HeaderID(r.Header, name) }
