package valve_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/clock"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

const mcpHeader = "Mcp-Session-Id"

func headerConfig() valve.Config {
	cfg := valve.DefaultConfig()
	cfg.IDHeader = mcpHeader
	return cfg
}

// doHeader sends a GET with the given header values (name, value, name,
// value...).
func doHeader(h http.Handler, kv ...string) *http.Response {
	req := httptest.NewRequest("GET", "/counter", nil)
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Add(kv[i], kv[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHeaderKeyedLifecycle(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, headerConfig()).Wrap(counter)

	resp := doHeader(h)
	id := resp.Header.Get(mcpHeader)
	if !manager.ValidID(id) {
		t.Fatalf("first response: %s = %q, want a new session id", mcpHeader, id)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("cookies set in header mode: %v", resp.Cookies())
	}
	if resp.Header.Get("Vary") != mcpHeader || resp.Header.Get("Cache-Control") != `no-cache="Mcp-Session-Id, Mcp-Session-Id-Version"` {
		t.Errorf("headers %v, want Vary and Cache-Control naming %s", resp.Header, mcpHeader)
	}
	if v := resp.Header.Get(valve.VersionHeader(mcpHeader)); v != "1" {
		t.Errorf("version header %q, want 1", v)
	}

	resp = doHeader(h, mcpHeader, id, valve.VersionHeader(mcpHeader), "1")
	if got := resp.Header.Get(mcpHeader); got != "" {
		t.Errorf("a known session got its id again: %q", got)
	}
	if v := resp.Header.Get(valve.VersionHeader(mcpHeader)); v != "2" {
		t.Errorf("version header %q, want 2", v)
	}
	s, err := m.Load(context.Background(), id)
	if err != nil || s == nil {
		t.Fatalf("Load = %v, %v", s, err)
	}
	if n := s.GetInt("count"); n != 2 {
		t.Errorf("count %d after two requests, want 2", n)
	}

	// A cookie is ignored in header mode.
	resp = do(t, h, "/counter", "FLOCKSESSIONID="+id)
	if got := resp.Header.Get(mcpHeader); got == id || !manager.ValidID(got) {
		t.Errorf("a cookie named the session in header mode: %q", got)
	}
}

func TestHeaderRenameIsEchoed(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, headerConfig()).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := valve.Session(r)
		if err != nil {
			return
		}
		if r.URL.Query().Has("login") {
			if err := s.RenewID(); err != nil {
				t.Error(err)
			}
		}
		s.Set("x", 1)
	}))
	first := doHeader(h).Header.Get(mcpHeader)
	req := httptest.NewRequest("POST", "/?login", nil)
	req.Header.Set(mcpHeader, first)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get(mcpHeader); got == first || !manager.ValidID(got) {
		t.Errorf("after RenewID the response says %s: %q (was %q)", mcpHeader, got, first)
	}
}

func TestBadIDHeadersStartFresh(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, headerConfig()).Wrap(counter)
	known := doHeader(h).Header.Get(mcpHeader)
	for _, tc := range []struct {
		name   string
		values []string
	}{
		{"empty", []string{""}},
		{"garbage", []string{"garbage"}},
		{"unknown", []string{"AAAAAAAAAAAAAAAAAAAAAAAA.n1"}},
		{"too long", []string{strings.Repeat("A", 5000)}},
		{"two values", []string{known, known}},
		{"a list", []string{known + ", " + known}},
		{"control bytes", []string{"\x00\xff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kv []string
			for _, v := range tc.values {
				kv = append(kv, mcpHeader, v)
			}
			resp := doHeader(h, kv...)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get(mcpHeader); got == known || !manager.ValidID(got) {
				t.Errorf("no fresh session: %q", got)
			}
		})
	}
}

func TestHeaderID(t *testing.T) {
	const id = "AAAAAAAAAAAAAAAAAAAAAAAA.n1"
	for _, tc := range []struct {
		name   string
		values []string
		want   error // nil: id
	}{
		{"none", nil, valve.ErrNoID},
		{"one", []string{id}, nil},
		{"spaces around", []string{" " + id + " "}, nil},
		{"two", []string{id, id}, valve.ErrManyIDs},
		{"empty", []string{""}, valve.ErrBadID},
		{"too long", []string{strings.Repeat("A", 89)}, valve.ErrBadID},
		{"malformed", []string{"x.n1"}, valve.ErrBadID},
		{"a list", []string{id + "," + id}, valve.ErrBadID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add(mcpHeader, v)
			}
			got, err := valve.HeaderID(h, mcpHeader)
			if tc.want == nil {
				if err != nil || got != id {
					t.Errorf("HeaderID = %q, %v; want %q", got, err, id)
				}
				return
			}
			if !errors.Is(err, tc.want) || got != "" {
				t.Errorf("HeaderID = %q, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestPersistentCookies: a session cookie by default; RememberMe(true) (or
// cookie_persist) gives it a Max-Age until the session would expire, sent
// again on every response so it slides; RememberMe(false) takes it back.
func TestPersistentCookies(t *testing.T) {
	const timeout = 30 * time.Minute
	m, _ := newManager(t, func(c *manager.Config) { c.SessionTimeout = timeout })
	remember := "" // what the next request does: "on", "off" or nothing
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := valve.Session(r)
		if err != nil {
			return
		}
		switch remember {
		case "on":
			s.RememberMe(true)
		case "off":
			s.RememberMe(false)
		}
	})
	for _, persistDefault := range []bool{false, true} {
		t.Run("cookie_persist="+strconv.FormatBool(persistDefault), func(t *testing.T) {
			cfg := valve.DefaultConfig()
			cfg.CookiePersist = persistDefault
			h := valve.New(m, cfg).Wrap(handler)
			remember = ""
			c := sessionCookie(do(t, h, "/", ""))
			if c == nil {
				t.Fatal("no cookie")
			}
			checkMaxAge := func(step string, c *http.Cookie, persistent bool) {
				t.Helper()
				switch {
				case c == nil:
					t.Errorf("%s: no cookie", step)
				case persistent && (c.MaxAge < int(timeout.Seconds())-5 || c.MaxAge > int(timeout.Seconds()) || c.Expires.IsZero()):
					t.Errorf("%s: Max-Age %d, Expires %v; want about %v", step, c.MaxAge, c.Expires, timeout)
				case !persistent && (c.MaxAge != 0 || !c.Expires.IsZero()):
					t.Errorf("%s: Max-Age %d, Expires %v; want a session cookie", step, c.MaxAge, c.Expires)
				}
			}
			checkMaxAge("first", c, persistDefault)
			cookie := "FLOCKSESSIONID=" + c.Value
			remember = "on"
			checkMaxAge("RememberMe(true)", sessionCookie(do(t, h, "/", cookie)), true)
			remember = ""
			checkMaxAge("next request", sessionCookie(do(t, h, "/", cookie)), true)
			remember = "off"
			checkMaxAge("RememberMe(false)", sessionCookie(do(t, h, "/", cookie)), false)
			remember = ""
			if c := sessionCookie(do(t, h, "/", cookie)); c != nil {
				t.Errorf("a session cookie sent again: %v", c)
			}
		})
	}
}

// TestLifetimeEndsTheSession: past its lifetime a session is not served,
// however recently used.
func TestLifetimeEndsTheSession(t *testing.T) {
	clk := clock.NewFake(time.Now())
	m, _ := newManager(t, func(c *manager.Config) { c.Lifetime, c.Clock = time.Minute, clk })
	h := valve.New(m, valve.DefaultConfig()).Wrap(counter)
	c := sessionCookie(do(t, h, "/", ""))
	cookie := "FLOCKSESSIONID=" + c.Value
	for sec := 15; sec <= 75; sec += 15 { // busy: used every 15 s, never idle
		clk.Advance(15 * time.Second)
		c2 := sessionCookie(do(t, h, "/", cookie))
		switch renewed := c2 != nil && c2.Value != c.Value; {
		case sec <= 60 && renewed:
			t.Errorf("at %ds, within the lifetime, a new session", sec)
		case sec > 60 && !renewed:
			t.Errorf("at %ds, past the lifetime, the session was served (cookie %v)", sec, c2)
		}
	}
}
