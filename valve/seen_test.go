package valve_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// seenStore records the versions the valve says the client has seen.
type seenStore struct {
	valve.Store
	seen []uint64
}

func (s *seenStore) LoadSeen(ctx context.Context, id string, seen uint64) (*manager.Session, error) {
	s.seen = append(s.seen, seen)
	return s.Store.LoadSeen(ctx, id, seen)
}

func versionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == valve.VersionCookie("FLOCKSESSIONID") {
			return c
		}
	}
	return nil
}

// TestVersionCookie: a response that changed the session tells the client
// the version it has seen; the next request passes it to the store; a
// read sends no cookie; a logout deletes it.
func TestVersionCookie(t *testing.T) {
	m, _ := newManager(t, nil)
	store := &seenStore{Store: m}
	mux := http.NewServeMux()
	mux.Handle("/counter", counter)
	mux.HandleFunc("/peek", func(w http.ResponseWriter, r *http.Request) { valve.Existing(r); io.WriteString(w, "ok") })
	mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
		if s := valve.Existing(r); s != nil {
			s.Invalidate()
		}
	})
	h := valve.New(store, valve.DefaultConfig()).Wrap(mux)

	resp := do(t, h, "/counter", "")
	id, v := sessionCookie(resp), versionCookie(resp)
	if id == nil || v == nil || v.Value != "1" || !v.HttpOnly || v.Path != "/" {
		t.Fatalf("first write: session cookie %v, version cookie %v; want version 1, HttpOnly, Path /", id, v)
	}
	tests := []struct {
		path, cookie string
		wantSeen     uint64
		wantVersion  string // "" no version cookie; "-" deleted
	}{
		{"/counter", "FLOCKSESSIONID=" + id.Value + "; FLOCKSESSIONID_V=1", 1, "2"},
		{"/peek", "FLOCKSESSIONID=" + id.Value + "; FLOCKSESSIONID_V=2", 2, ""},
		{"/peek", "FLOCKSESSIONID=" + id.Value + "; FLOCKSESSIONID_V=junk", 0, ""},
		{"/peek", "FLOCKSESSIONID=" + id.Value + "; FLOCKSESSIONID_V=1; FLOCKSESSIONID_V=2", 2, ""},
		{"/counter", "FLOCKSESSIONID=" + id.Value, 0, "3"},
		{"/logout", "FLOCKSESSIONID=" + id.Value + "; FLOCKSESSIONID_V=3", 3, "-"},
	}
	for _, tc := range tests {
		store.seen = nil
		resp := do(t, h, tc.path, tc.cookie)
		if len(store.seen) != 1 || store.seen[0] != tc.wantSeen {
			t.Errorf("%s %q: the store was told %v, want [%d]", tc.path, tc.cookie, store.seen, tc.wantSeen)
		}
		got := versionCookie(resp)
		switch {
		case tc.wantVersion == "" && got != nil:
			t.Errorf("%s %q: version cookie %q set by a read", tc.path, tc.cookie, got.Value)
		case tc.wantVersion == "-" && (got == nil || got.MaxAge >= 0):
			t.Errorf("%s %q: version cookie %v, want it deleted", tc.path, tc.cookie, got)
		case tc.wantVersion != "" && tc.wantVersion != "-" && (got == nil || got.Value != tc.wantVersion):
			t.Errorf("%s %q: version cookie %v, want %s", tc.path, tc.cookie, got, tc.wantVersion)
		}
	}
}
