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
func Get[T any](s *Session, key string) (v T, ok bool, err error) { return manager.Get[T](s, key) }
