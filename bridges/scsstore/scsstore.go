// Package scsstore is an scs.Store backed by a flock node: scs users keep
// their handlers (sessionManager.LoadAndSave, GetString, Put, RenewToken…)
// and replace redisstore with flock. The sessions are replicated between
// the nodes as flock replicates its own, with no Redis to run, and a node
// that dies takes no session with it.
//
//	node, _ := flock.Start(ctx, cfg)
//	sessionManager := scs.New()
//	sessionManager.Store = scsstore.New(node.Manager())
//
// The store implements scs.Store, scs.CtxStore, scs.IterableStore and
// scs.IterableCtxStore. It is its own module, so flock's core module gains
// no dependency.
//
// scs makes its own tokens and keeps the session's data encoded (gob, or
// the Codec you set) in one blob: the store keeps that blob in a flock
// session whose id is derived from the token (a hash: the token never
// leaves the node in a session id, and an id never names a token). Those
// ids carry the route "scs", not a node's name, since any node may see the
// token first: the delta mode (the default) suits it, where every node
// holds every session. In backup mode a route that names no member is
// owned by the member of highest rendezvous weight for the id, so the
// sessions spread over the nodes; a request elsewhere loads and stores
// back.
package scsstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/flockhq/flock/manager"
)

// Route is the route of the flock session ids the store derives.
const Route = "scs"

// Attribute names in the flock session.
const (
	keyData   = "scs.data"
	keyToken  = "scs.token"
	keyExpiry = "scs.expiry" // unix nanoseconds
)

// Store keeps scs sessions in a flock node's manager. It is safe for
// concurrent use.
type Store struct {
	m *manager.Manager
}

// New returns a store backed by m, a started flock manager
// (flock.Node.Manager()).
func New(m *manager.Manager) *Store { return &Store{m: m} }

// ID is the flock session id under which the store keeps token's session,
// for the admin endpoints (/cluster/sessions?id=).
func ID(token string) string {
	h := sha256.Sum256([]byte("flock-scs\x00" + token))
	return base64.RawURLEncoding.EncodeToString(h[:18]) + "." + Route
}

// Find returns the data of token's session; found is false if there is
// none or it has expired.
func (st *Store) Find(token string) ([]byte, bool, error) {
	return st.FindCtx(context.Background(), token)
}

// FindCtx is Find with a context, which bounds a fetch from another node.
func (st *Store) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	s, err := st.m.Load(ctx, ID(token))
	if err != nil || s == nil {
		return nil, false, wrap(err)
	}
	if expired(s, time.Now()) {
		return nil, false, nil
	}
	return s.GetBytes(keyData), true, nil
}

// Commit stores b as token's session data until expiry, and replicates it
// as the node's replication mode says: with "sync" (flock's default), the
// other nodes have it when Commit returns, so the user's next request may
// land on any of them. An error (too few nodes took the change) makes scs
// answer 500, as it does when Redis is down.
func (st *Store) Commit(token string, b []byte, expiry time.Time) error {
	return st.CommitCtx(context.Background(), token, b, expiry)
}

// CommitCtx is Commit with a context.
func (st *Store) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	idle := time.Until(expiry)
	if idle <= 0 {
		return st.DeleteCtx(ctx, token)
	}
	id := ID(token)
	s, err := st.m.Load(ctx, id)
	if err != nil {
		return wrap(err)
	}
	if s == nil {
		if s, err = st.m.CreateID(ctx, id); errors.Is(err, manager.ErrSessionExists) {
			// Another request made it a moment ago, here or on a node that
			// replicated it since.
			s, err = st.m.Load(ctx, id)
		}
		if err != nil || s == nil {
			return wrap(errors.Join(err, errors.New("session vanished while being made")))
		}
	}
	for _, kv := range []struct {
		k string
		v any
	}{{keyData, b}, {keyToken, token}, {keyExpiry, expiry.UnixNano()}} {
		if err := s.Set(kv.k, kv.v); err != nil {
			return wrap(err)
		}
	}
	// flock forgets the session once it is unused until expiry; Find
	// checks the expiry itself, since a Find moves flock's last access.
	if err := s.SetMaxInactiveInterval(idle); err != nil {
		return wrap(err)
	}
	return wrap(st.m.Commit(ctx, s))
}

// Delete ends token's session on every node; no session is not an error.
func (st *Store) Delete(token string) error {
	return st.DeleteCtx(context.Background(), token)
}

// DeleteCtx is Delete with a context.
func (st *Store) DeleteCtx(ctx context.Context, token string) error {
	s, err := st.m.Load(ctx, ID(token))
	if err != nil || s == nil {
		return wrap(err)
	}
	s.Invalidate()
	return nil
}

// All returns the data of every live session this node holds, by token:
// in delta mode, every session of the cluster.
func (st *Store) All() (map[string][]byte, error) {
	return st.AllCtx(context.Background())
}

// AllCtx is All with a context (checked between sessions).
func (st *Store) AllCtx(ctx context.Context) (map[string][]byte, error) {
	out := make(map[string][]byte)
	now := time.Now()
	st.m.Range(func(s *manager.Session) bool {
		if manager.Route(s.ID()) != Route || expired(s, now) {
			return ctx.Err() == nil
		}
		if token := s.GetString(keyToken); token != "" {
			out[token] = s.GetBytes(keyData)
		}
		return ctx.Err() == nil
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scsstore: %w", err)
	}
	return out, nil
}

func expired(s *manager.Session, now time.Time) bool {
	exp := s.GetInt64(keyExpiry)
	return exp == 0 || now.UnixNano() >= exp
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("scsstore: %w", err)
}
