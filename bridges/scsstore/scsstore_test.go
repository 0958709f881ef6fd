package scsstore_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"

	"github.com/flockhq/flock/bridges/scsstore"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/manager"
)

// The interfaces scs looks for.
var (
	_ scs.Store            = (*scsstore.Store)(nil)
	_ scs.CtxStore         = (*scsstore.Store)(nil)
	_ scs.IterableStore    = (*scsstore.Store)(nil)
	_ scs.IterableCtxStore = (*scsstore.Store)(nil)
)

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

// app is an scs application, unchanged from what it would be on Redis.
func app(sm *scs.SessionManager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /msg", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sm.Put(r.Context(), "message", string(b))
		sm.Put(r.Context(), "count", sm.GetInt(r.Context(), "count")+1)
	})
	mux.HandleFunc("GET /msg", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sm.GetString(r.Context(), "message"))
	})
	mux.HandleFunc("GET /pop", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sm.PopString(r.Context(), "message"))
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.RenewToken(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		sm.Put(r.Context(), "user", "ann")
	})
	mux.HandleFunc("GET /user", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sm.GetString(r.Context(), "user"))
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	return sm.LoadAndSave(mux)
}

// node is an httptest server running the scs application on a flock node.
func node(t *testing.T, m *manager.Manager) *httptest.Server {
	sm := scs.New()
	sm.Store = scsstore.New(m)
	srv := httptest.NewServer(app(sm))
	t.Cleanup(srv.Close)
	return srv
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

// TestTwoNodes: scs's own session manager drives the store; what a request
// on node A writes, the next request, on node B, reads.
func TestTwoNodes(t *testing.T) {
	ms := startManagers(t, "a", "b")
	a, b := node(t, ms[0]), node(t, ms[1])
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar} // cookies are per host, not per port: A and B share them

	call(t, c, "PUT", a.URL+"/msg", "hello from a")
	if got := call(t, c, "GET", b.URL+"/msg", ""); got != "hello from a" {
		t.Errorf("B reads %q", got)
	}
	call(t, c, "PUT", b.URL+"/msg", "hello from b")
	if got := call(t, c, "GET", a.URL+"/msg", ""); got != "hello from b" {
		t.Errorf("A reads %q after B's write", got)
	}
	if got := call(t, c, "GET", b.URL+"/pop", ""); got != "hello from b" {
		t.Errorf("pop on B = %q", got)
	}
	if got := call(t, c, "GET", a.URL+"/msg", ""); got != "" {
		t.Errorf("A still reads %q after B popped it", got)
	}

	// RenewToken: the old token's session is deleted on every node, the
	// new one is found on the other.
	old := scsCookie(jar, a.URL)
	call(t, c, "POST", a.URL+"/login", "")
	if now := scsCookie(jar, a.URL); now == old || now == "" {
		t.Fatalf("token not renewed: %q", now)
	}
	if got := call(t, c, "GET", b.URL+"/user", ""); got != "ann" {
		t.Errorf("B reads user %q after the login on A", got)
	}
	if _, found, _ := scsstore.New(ms[1]).Find(old); found {
		t.Error("the token before RenewToken still finds a session on B")
	}

	all, err := scsstore.New(ms[1]).All()
	if err != nil || len(all) != 1 {
		t.Errorf("All on B = %d sessions, %v; want 1", len(all), err)
	}

	call(t, c, "POST", b.URL+"/logout", "")
	if got := call(t, c, "GET", a.URL+"/user", ""); got != "" {
		t.Errorf("A reads user %q after the logout on B", got)
	}
}

func scsCookie(jar http.CookieJar, raw string) string {
	req := httptest.NewRequest("GET", raw, nil)
	for _, c := range jar.Cookies(req.URL) {
		if c.Name == "session" {
			return c.Value
		}
	}
	return ""
}

func TestStoreContract(t *testing.T) {
	ms := startManagers(t, "a")
	st := scsstore.New(ms[0])
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		token     string
		expiry    time.Duration
		wantFound bool
	}{
		{"live", "token-live", time.Hour, true},
		{"already expired: not stored", "token-past", -time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := st.CommitCtx(ctx, tc.token, []byte("data"), time.Now().Add(tc.expiry)); err != nil {
				t.Fatal(err)
			}
			b, found, err := st.FindCtx(ctx, tc.token)
			if err != nil || found != tc.wantFound || found && string(b) != "data" {
				t.Errorf("Find = %q, %v, %v; want found=%v", b, found, err, tc.wantFound)
			}
		})
	}
	if _, found, err := st.Find("never"); found || err != nil {
		t.Errorf("Find of an unknown token = %v, %v", found, err)
	}
	if err := st.Delete("never"); err != nil {
		t.Errorf("Delete of an unknown token: %v", err)
	}
	// An expiry that passes: Find says not found at once, before flock's
	// own expiry sweeps it away.
	if err := st.Commit("token-short", []byte("x"), time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	s, _ := ms[0].Load(ctx, scsstore.ID("token-short"))
	deadline := time.Unix(0, s.GetInt64("scs.expiry"))
	for time.Now().Before(deadline) {
		time.Sleep(time.Until(deadline)) // wall-clock expiry is what is tested
	}
	if _, found, _ := st.Find("token-short"); found {
		t.Error("found past its expiry")
	}
	if !manager.ValidID(scsstore.ID("any token")) {
		t.Error("derived id is not a flock id")
	}
}
