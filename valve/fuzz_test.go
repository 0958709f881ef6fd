package valve_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// noSessions knows no session and counts the lookups it is asked for.
type noSessions struct{ loads int }

func (c *noSessions) LoadSeen(_ context.Context, id string, _ uint64) (*manager.Session, error) {
	c.loads++
	if !manager.ValidID(id) {
		return nil, errors.New("the valve looked up an invalid id")
	}
	return nil, nil
}

func (c *noSessions) Create(context.Context) (*manager.Session, error) {
	return nil, errors.New("not here")
}
func (c *noSessions) Commit(context.Context, *manager.Session) error { return nil }
func (c *noSessions) Rebind(*manager.Session) (bool, error)          { return false, nil }

// FuzzCookieHeader: whatever the Cookie header, the valve answers (never
// a panic), looks up only well-formed ids and at most four of them (each
// may be a round trip in backup mode).
func FuzzCookieHeader(f *testing.F) {
	for _, seed := range []string{
		"",
		"FLOCKSESSIONID=abc.n1",
		"FLOCKSESSIONID=; FLOCKSESSIONID=x",
		strings.Repeat("FLOCKSESSIONID=0123456789abcdef0123456789abcdef.n2; ", 2000),
		"FLOCKSESSIONID=\x00\xff; other=1",
		"FLOCKSESSIONID=" + strings.Repeat("a", 1<<16),
		"FLOCKSESSIONID=..; FLOCKSESSIONID=.n1.n1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, cookie string) {
		store := &noSessions{}
		h := valve.New(store, valve.DefaultConfig()).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s := valve.Existing(r); s != nil {
				t.Fatal("a session from a store that holds none")
			}
		}))
		req := httptest.NewRequest("GET", "/counter", nil)
		req.Header.Set("Cookie", cookie)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if store.loads > 4 {
			t.Fatalf("%d lookups for one request", store.loads)
		}
	})
}

// FuzzIDHeader: whatever the id header's values, HeaderID returns a valid
// id or one of its three errors, and the valve answers (never a panic),
// looking up at most one well-formed id.
func FuzzIDHeader(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"AAAAAAAAAAAAAAAAAAAAAAAA.n1", ""},
		{" AAAAAAAAAAAAAAAAAAAAAAAA.n1\t", ""},
		{"AAAAAAAAAAAAAAAAAAAAAAAA.n1", "AAAAAAAAAAAAAAAAAAAAAAAA.n2"},
		{"AAAAAAAAAAAAAAAAAAAAAAAA.n1, AAAAAAAAAAAAAAAAAAAAAAAA.n2", ""},
		{strings.Repeat("A", 1<<16), ""},
		{"\x00\xff.n1", "\r\n"},
		{"AAAAAAAAAAAAAAAAAAAAAAAA." + strings.Repeat("r", 64), ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, first, second string) {
		h := http.Header{}
		h.Add("Mcp-Session-Id", first)
		if second != "" {
			h.Add("Mcp-Session-Id", second)
		}
		id, err := valve.HeaderID(h, "Mcp-Session-Id")
		switch {
		case err == nil && !manager.ValidID(id):
			t.Fatalf("HeaderID = %q, not a session id", id)
		case err != nil && id != "":
			t.Fatalf("HeaderID = %q with %v", id, err)
		case err != nil && !errors.Is(err, valve.ErrManyIDs) && !errors.Is(err, valve.ErrBadID):
			t.Fatalf("HeaderID: %v, not one of its errors", err)
		}

		store := &noSessions{}
		cfg := valve.DefaultConfig()
		cfg.IDHeader = "Mcp-Session-Id"
		v := valve.New(store, cfg).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s := valve.Existing(r); s != nil {
				t.Fatal("a session from a store that holds none")
			}
		}))
		req := httptest.NewRequest("GET", "/", nil)
		req.Header = h
		rec := httptest.NewRecorder()
		v.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if store.loads > 1 {
			t.Fatalf("%d lookups for one request", store.loads)
		}
	})
}
