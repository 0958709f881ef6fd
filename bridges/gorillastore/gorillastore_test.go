package gorillastore_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/sessions"

	"github.com/flockhq/flock/bridges/gorillastore"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/manager"
)

var _ sessions.Store = (*gorillastore.Store)(nil)

// startManagers starts one flock manager per name on an in-memory network,
// joined and ready; they stop when the test ends.
func startManagers(t *testing.T, names ...string) []*manager.Manager {
	t.Helper()
	network := clustertest.New()
	t.Cleanup(network.Close)
	var ms []*manager.Manager
	for _, name := range names {
		nd := network.AddNode(name)
		nd.Join()
		cfg := manager.DefaultConfig()
		cfg.Route = name
		c := nd.Cluster()
		m, err := manager.New(c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			m.Stop(context.Background())
			c.Stop(context.Background())
		})
		ms = append(ms, m)
	}
	for _, m := range ms {
		<-m.Ready()
	}
	return ms
}

// app is a gorilla/sessions application, unchanged from what it would be
// on another store.
func app(store sessions.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /msg", func(w http.ResponseWriter, r *http.Request) {
		s, err := store.Get(r, "app")
		if err != nil && s == nil {
			http.Error(w, err.Error(), 500)
			return
		}
		b, _ := io.ReadAll(r.Body)
		s.Values["message"] = string(b)
		n, _ := s.Values["count"].(int)
		s.Values["count"] = n + 1
		s.AddFlash("saved")
		if err := s.Save(r, w); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("GET /msg", func(w http.ResponseWriter, r *http.Request) {
		s, _ := store.Get(r, "app")
		flashes := s.Flashes()
		if err := s.Save(r, w); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%v %v %v", s.Values["message"], s.Values["count"], flashes)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		s, _ := store.Get(r, "app")
		s.Options.MaxAge = -1
		if err := s.Save(r, w); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	return mux
}

func call(t *testing.T, c *http.Client, method, url, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return string(b)
}

// TestTwoNodes: gorilla's Get and Save drive the store, with real
// requests; what node A saves, node B reads, flashes included, and a
// MaxAge below zero ends the session on both.
func TestTwoNodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys [][]byte
	}{
		{"plain id cookie", nil},
		{"signed cookie", [][]byte{[]byte("0123456789abcdef0123456789abcdef")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := startManagers(t, "a", "b")
			var urls []string
			for _, m := range ms {
				srv := httptest.NewServer(app(gorillastore.New(m, tc.keys...)))
				t.Cleanup(srv.Close)
				urls = append(urls, srv.URL)
			}
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar} // cookies are per host, not per port: A and B share them

			call(t, c, "PUT", urls[0]+"/msg", "hello")
			if got := call(t, c, "GET", urls[1]+"/msg", ""); got != "hello 1 [saved]" {
				t.Errorf("B reads %q", got)
			}
			if got := call(t, c, "GET", urls[0]+"/msg", ""); got != "hello 1 []" {
				t.Errorf("A reads %q after B showed the flash", got)
			}
			call(t, c, "PUT", urls[1]+"/msg", "again")
			if got := call(t, c, "GET", urls[0]+"/msg", ""); got != "again 2 [saved]" {
				t.Errorf("A reads %q after B's write", got)
			}
			call(t, c, "POST", urls[0]+"/logout", "")
			if got := call(t, c, "GET", urls[1]+"/msg", ""); got != "<nil> <nil> []" {
				t.Errorf("B reads %q after the logout on A", got)
			}
			if n := ms[1].Len(); n != 1 {
				t.Errorf("B holds %d sessions, want 1 (the one made after the logout)", n)
			}
		})
	}
}

func TestBadCookies(t *testing.T) {
	ms := startManagers(t, "a")
	for _, tc := range []struct {
		name    string
		keys    [][]byte
		value   string
		wantErr bool
	}{
		{"not an id", nil, "garbage", true},
		{"unknown id", nil, "AAAAAAAAAAAAAAAAAAAAAAAA.a", false},
		{"unsigned with keys", [][]byte{[]byte("k")}, "AAAAAAAAAAAAAAAAAAAAAAAA.a", true},
		{"huge", nil, strings.Repeat("x", 1<<16), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := gorillastore.New(ms[0], tc.keys...)
			req := httptest.NewRequest("GET", "/", nil)
			req.AddCookie(&http.Cookie{Name: "app", Value: tc.value})
			s, err := store.New(req, "app")
			if s == nil || !s.IsNew || (err != nil) != tc.wantErr {
				t.Errorf("New = %v, %v; want a new session, error %v", s, err, tc.wantErr)
			}
		})
	}
}
