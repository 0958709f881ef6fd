// Package gorillastore is a gorilla/sessions Store backed by a flock node:
// gorilla users keep their handlers (store.Get, session.Values,
// session.Save, AddFlash/Flashes) and their sessions are replicated between
// the nodes, with no Redis or database to run.
//
//	node, _ := flock.Start(ctx, cfg)
//	store := gorillastore.New(node.Manager())          // or New(m, hashKey) to sign the cookie
//	session, _ := store.Get(r, "session-name")
//	session.Values["user"] = "ann"
//	session.Save(r, w)                                  // replicated before it returns
//
// Each gorilla session (one per name) is one flock session, made with
// flock's own ids, so a sticky load balancer routes on the cookie's suffix
// as it does for flock's cookie. The cookie holds only the id: signed with
// securecookie if New is given key pairs, as FilesystemStore does,
// otherwise the id itself (144 random bits, unguessable either way). The
// values are gob-encoded, as with every gorilla store: gob.Register the
// types you put in them. It is its own module, so flock's core module
// gains no dependency.
package gorillastore

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"

	"github.com/flockhq/flock/manager"
)

// keyValues is the flock attribute that holds the gob-encoded Values.
const keyValues = "gorilla.values"

// Store keeps gorilla sessions in a flock node's manager. It is safe for
// concurrent use; change Options before serving.
type Store struct {
	m      *manager.Manager
	Codecs []securecookie.Codec
	// Options are the cookie's, copied into every new session. MaxAge
	// also sets the flock session's idle timeout when positive.
	Options *sessions.Options
}

// New returns a store backed by m, a started flock manager
// (flock.Node.Manager()). With keyPairs (as for sessions.NewCookieStore)
// the cookie's id is signed, and encrypted if a pair has a block key.
func New(m *manager.Manager, keyPairs ...[]byte) *Store {
	return &Store{
		m:       m,
		Codecs:  securecookie.CodecsFromPairs(keyPairs...),
		Options: &sessions.Options{Path: "/", MaxAge: 86400 * 30, HttpOnly: true, SameSite: http.SameSiteLaxMode},
	}
}

// Get returns the request's session called name, from the request's
// registry: one per request and name, as with gorilla's stores.
func (st *Store) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(st, name)
}

// New returns the session called name of the request's cookie, or a new
// one (IsNew) if the request has none or its id names no live session. A
// cookie that does not decode is an error, with a new session, as with
// gorilla's stores.
func (st *Store) New(r *http.Request, name string) (*sessions.Session, error) {
	session := sessions.NewSession(st, name)
	opts := *st.Options
	session.Options = &opts
	session.IsNew = true
	c, err := r.Cookie(name)
	if err != nil {
		return session, nil
	}
	id, err := st.decodeID(name, c.Value)
	if err != nil {
		return session, err
	}
	s, err := st.m.Load(r.Context(), id)
	if err != nil || s == nil {
		return session, wrap(err)
	}
	if b := s.GetBytes(keyValues); len(b) > 0 {
		if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&session.Values); err != nil {
			return session, fmt.Errorf("gorillastore: session values: %w", err)
		}
	}
	session.ID, session.IsNew = id, false
	return session, nil
}

// Save stores the session's values in flock, replicates them (with sync
// replication, flock's default, the other nodes have them when Save
// returns) and sets the cookie. A MaxAge below zero deletes the session on
// every node and the cookie.
func (st *Store) Save(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	ctx := r.Context()
	if session.Options.MaxAge < 0 {
		if session.ID != "" {
			s, err := st.m.Load(ctx, session.ID)
			if err != nil {
				return wrap(err)
			}
			if s != nil {
				s.Invalidate()
			}
		}
		http.SetCookie(w, sessions.NewCookie(session.Name(), "", session.Options))
		return nil
	}
	var s *manager.Session
	if session.ID != "" {
		var err error
		if s, err = st.m.Load(ctx, session.ID); err != nil {
			return wrap(err)
		}
	}
	if s == nil {
		var err error
		if s, err = st.m.Create(ctx); err != nil {
			return wrap(err)
		}
		session.ID = s.ID()
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(session.Values); err != nil {
		return fmt.Errorf("gorillastore: session values (gob.Register their types): %w", err)
	}
	if err := s.Set(keyValues, buf.Bytes()); err != nil {
		return wrap(err)
	}
	if age := session.Options.MaxAge; age > 0 {
		if err := s.SetMaxInactiveInterval(time.Duration(age) * time.Second); err != nil {
			return wrap(err)
		}
	}
	if err := st.m.Commit(ctx, s); err != nil {
		return wrap(err)
	}
	value, err := st.encodeID(session.Name(), session.ID)
	if err != nil {
		return err
	}
	http.SetCookie(w, sessions.NewCookie(session.Name(), value, session.Options))
	return nil
}

func (st *Store) encodeID(name, id string) (string, error) {
	if len(st.Codecs) == 0 {
		return id, nil
	}
	v, err := securecookie.EncodeMulti(name, id, st.Codecs...)
	if err != nil {
		return "", fmt.Errorf("gorillastore: cookie: %w", err)
	}
	return v, nil
}

func (st *Store) decodeID(name, value string) (string, error) {
	if len(st.Codecs) == 0 {
		if !manager.ValidID(value) {
			return "", fmt.Errorf("gorillastore: cookie %s does not hold a session id", name)
		}
		return value, nil
	}
	var id string
	if err := securecookie.DecodeMulti(name, value, &id, st.Codecs...); err != nil {
		return "", fmt.Errorf("gorillastore: cookie: %w", err)
	}
	return id, nil
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("gorillastore: %w", err)
}
