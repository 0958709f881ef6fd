package valve_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// newManager starts a manager on a node of clustertest's in-memory network,
// alone: it replicates to nobody.
func newManager(t *testing.T, edit func(*manager.Config)) (*manager.Manager, *clustertest.Network) {
	t.Helper()
	network := clustertest.New()
	t.Cleanup(network.Close)
	return startManager(t, network, "n1", edit), network
}

// startManager starts a manager on a new node of network, joined.
func startManager(t *testing.T, network *clustertest.Network, name string, edit func(*manager.Config)) *manager.Manager {
	t.Helper()
	nd := network.AddNode(name)
	nd.Join()
	cfg := manager.DefaultConfig()
	cfg.Route, cfg.JoinWait = name, 0
	if edit != nil {
		edit(&cfg)
	}
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
	return m
}

// counter is the demo handler: it increments "count".
var counter = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	s, err := valve.Session(r)
	if err != nil {
		return
	}
	n, _, _ := manager.Get[int](s, "count")
	s.Set("count", n+1)
	io.WriteString(w, strings.Repeat("x", 1)) // the first write commits
})

func do(t *testing.T, h http.Handler, path, cookie string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "FLOCKSESSIONID" {
			return c
		}
	}
	return nil
}

func TestCookieLifecycle(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, valve.DefaultConfig()).Wrap(counter)

	resp := do(t, h, "/counter", "")
	c := sessionCookie(resp)
	if c == nil || !manager.ValidID(c.Value) || manager.Route(c.Value) != "n1" {
		t.Fatalf("first response cookie %v, want a new session id routed to n1", c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie attributes %+v, want HttpOnly, SameSite=Lax, Path=/", c)
	}
	if resp.Header.Get("Vary") != "Cookie" || resp.Header.Get("Cache-Control") != `no-cache="Set-Cookie"` {
		t.Errorf("headers %v, want Vary: Cookie and Cache-Control: no-cache=\"Set-Cookie\"", resp.Header)
	}

	resp = do(t, h, "/counter", "FLOCKSESSIONID="+c.Value)
	if sessionCookie(resp) != nil {
		t.Error("a known session got its cookie again")
	}
	s, err := m.Load(context.Background(), c.Value)
	if err != nil || s == nil {
		t.Fatalf("Load = %v, %v", s, err)
	}
	if n, _, _ := manager.Get[int](s, "count"); n != 2 {
		t.Errorf("count %d after two requests, want 2", n)
	}
}

func TestBadCookiesStartFresh(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, valve.DefaultConfig()).Wrap(counter)
	for _, cookie := range []string{
		"FLOCKSESSIONID=",
		"FLOCKSESSIONID=garbage",
		"FLOCKSESSIONID=AAAAAAAAAAAAAAAAAAAAAAAA.n1", // well formed, unknown
		"FLOCKSESSIONID=" + strings.Repeat("A", 5000),
		"FLOCKSESSIONID=../../etc/passwd",
		"FLOCKSESSIONID=%00%ff; FLOCKSESSIONID=\x01",
	} {
		resp := do(t, h, "/counter", cookie)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("cookie %q: status %d", cookie, resp.StatusCode)
		}
		if c := sessionCookie(resp); c == nil || !manager.ValidID(c.Value) {
			t.Errorf("cookie %q: no fresh session (%v)", cookie, c)
		}
	}
}

func TestStaticAndReadOnlyCostNoSession(t *testing.T) {
	m, _ := newManager(t, nil)
	cfg := valve.DefaultConfig()
	cfg.StaticFilter = regexp.MustCompile(`\.css$`)
	touched := false
	h := valve.New(m, cfg).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".css") {
			if _, err := valve.Session(r); err == nil {
				touched = true
			}
			return
		}
		if valve.Existing(r) != nil {
			touched = true
		}
		io.WriteString(w, "0")
	}))
	for _, path := range []string{"/style.css", "/peek"} {
		resp := do(t, h, path, "")
		if sessionCookie(resp) != nil || touched {
			t.Errorf("%s created a session", path)
		}
	}
	if m.Len() != 0 {
		t.Errorf("%d sessions after static and read-only requests", m.Len())
	}
}

// recordingStore checks that the valve commits before the response's
// header goes out.
type recordingStore struct {
	valve.Store
	mu     sync.Mutex
	events []string
}

func (r *recordingStore) Commit(ctx context.Context, s *manager.Session) error {
	r.mu.Lock()
	r.events = append(r.events, "commit")
	r.mu.Unlock()
	return r.Store.Commit(ctx, s)
}

type orderWriter struct {
	http.ResponseWriter
	rs *recordingStore
}

func (o orderWriter) WriteHeader(code int) {
	o.rs.mu.Lock()
	o.rs.events = append(o.rs.events, "header")
	o.rs.mu.Unlock()
	o.ResponseWriter.WriteHeader(code)
}

func (o orderWriter) Write(b []byte) (int, error) {
	o.WriteHeader(http.StatusOK)
	return o.ResponseWriter.Write(b)
}

func TestCommitBeforeResponse(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"write", func(w http.ResponseWriter, r *http.Request) {
			s, _ := valve.Session(r)
			s.Set("k", 1)
			w.Write([]byte("x"))
		}},
		{"write header", func(w http.ResponseWriter, r *http.Request) {
			s, _ := valve.Session(r)
			s.Set("k", 1)
			w.WriteHeader(http.StatusCreated)
		}},
		{"flush", func(w http.ResponseWriter, r *http.Request) {
			s, _ := valve.Session(r)
			s.Set("k", 1)
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush through the valve: %v", err)
			}
		}},
		{"handler returns without writing", func(w http.ResponseWriter, r *http.Request) {
			s, _ := valve.Session(r)
			s.Set("k", 1)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newManager(t, nil)
			rs := &recordingStore{Store: m}
			h := valve.New(rs, valve.DefaultConfig()).Wrap(tc.handler)
			rec := httptest.NewRecorder()
			h.ServeHTTP(orderWriter{rec, rs}, httptest.NewRequest("GET", "/", nil))
			if len(rs.events) == 0 || rs.events[0] != "commit" {
				t.Errorf("events %v, want the commit first", rs.events)
			}
			if sessionCookie(rec.Result()) == nil {
				t.Error("no cookie")
			}
		})
	}
}

func TestHijackCommits(t *testing.T) {
	m, _ := newManager(t, nil)
	h := valve.New(m, valve.DefaultConfig()).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := valve.Session(r)
		s.Set("k", 1)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack through the valve: %v", err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		rw.Flush()
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(bufio.NewReader(resp.Body))
	resp.Body.Close()
	if string(body) != "hi" {
		t.Errorf("body %q", body)
	}
	if m.Len() != 1 {
		t.Errorf("%d sessions, want the hijacking request's", m.Len())
	}
	for _, info := range m.Sessions() {
		if info.Version != 1 {
			t.Errorf("session version %d, want 1: committed before the hijack", info.Version)
		}
	}
}

func TestMaxActiveIs503(t *testing.T) {
	m, _ := newManager(t, func(c *manager.Config) { c.MaxActive = 1 })
	h := valve.New(m, valve.DefaultConfig()).Wrap(counter)
	if resp := do(t, h, "/counter", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("first session: %d", resp.StatusCode)
	}
	resp := do(t, h, "/counter", "")
	if resp.StatusCode != http.StatusServiceUnavailable || sessionCookie(resp) != nil {
		t.Errorf("past max_active: status %d, cookie %v; want 503 and no cookie", resp.StatusCode, sessionCookie(resp))
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "too many sessions") {
		t.Errorf("body %q, want it to say why", body)
	}
}

func TestInvalidateAndRenew(t *testing.T) {
	m, _ := newManager(t, nil)
	v := valve.New(m, valve.DefaultConfig())
	first := sessionCookie(do(t, v.Wrap(counter), "/", "")).Value

	renew := v.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := valve.Session(r)
		if err := s.RenewID(); err != nil {
			t.Error(err)
		}
	}))
	c := sessionCookie(do(t, renew, "/login", "FLOCKSESSIONID="+first))
	if c == nil || c.Value == first || manager.Route(c.Value) != "n1" {
		t.Fatalf("after RenewID cookie %v, want a new id", c)
	}
	if s, _ := m.Load(context.Background(), first); s != nil {
		t.Error("the old id still finds the session")
	}
	s, _ := m.Load(context.Background(), c.Value)
	if n, _, _ := manager.Get[int](s, "count"); n != 1 {
		t.Errorf("renewed session lost its contents: count %d", n)
	}

	logout := v.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := valve.Session(r)
		s.Invalidate()
	}))
	gone := sessionCookie(do(t, logout, "/logout", "FLOCKSESSIONID="+c.Value))
	if gone == nil || gone.MaxAge >= 0 {
		t.Errorf("logout cookie %v, want it deleted", gone)
	}
	if m.Len() != 0 {
		t.Errorf("%d sessions after logout", m.Len())
	}
}

func TestRouteRewrite(t *testing.T) {
	network := clustertest.New()
	t.Cleanup(network.Close)
	noTransfer := func(c *manager.Config) { c.StateTransferTimeout = 0 }
	m1 := startManager(t, network, "n1", noTransfer)
	m2 := startManager(t, network, "n2", noTransfer)
	network.WaitFor(t, "both managers see each other", func() bool {
		return m1.Stats().Members == 1 && m2.Stats().Members == 1
	})
	v1, v2 := valve.New(m1, valve.DefaultConfig()).Wrap(counter), valve.New(m2, valve.DefaultConfig()).Wrap(counter)

	id := sessionCookie(do(t, v1, "/", "")).Value
	if manager.Route(id) != "n1" {
		t.Fatalf("id %s", id)
	}
	// n1 alive: a request on n2 (round robin) keeps the route.
	if c := sessionCookie(do(t, v2, "/", "FLOCKSESSIONID="+id)); c != nil {
		t.Errorf("route rewritten to %v while n1 is alive", c)
	}
	// n1 dies: the next request on n2 moves the session to n2's route.
	n1 := network.Nodes()[0]
	n1.SetUp(false)
	network.WaitFor(t, "n2 sees n1 fail", func() bool { return m2.Stats().Members == 0 })
	c := sessionCookie(do(t, v2, "/", "FLOCKSESSIONID="+id))
	if c == nil || manager.Route(c.Value) != "n2" || c.Value == id || !manager.ValidID(c.Value) {
		t.Fatalf("cookie %v after failover, want %s routed to n2", c, id)
	}
	s, _ := m2.Load(context.Background(), c.Value)
	if n, _, _ := manager.Get[int](s, "count"); n != 3 {
		t.Errorf("count %d, want 3: the session went on across the failover", n)
	}
}

// failingStore fails every commit as the sync rule does.
type failingStore struct {
	valve.Store
	err error
}

func (f failingStore) Commit(ctx context.Context, s *manager.Session) error {
	f.Store.Commit(ctx, s)
	return f.err
}

// A change that reached fewer members than the sync rule requires is a 503,
// whatever the handler wrote; a shortfall above the rule is not the user's
// problem.
func TestTooFewCopiesIs503(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"too few copies", fmt.Errorf("commit: %w", manager.ErrTooFewCopies), http.StatusServiceUnavailable},
		{"some member missed it", errors.New("send failed: one member"), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newManager(t, nil)
			h := valve.New(failingStore{m, tc.err}, valve.DefaultConfig()).Wrap(counter)
			resp := do(t, h, "/counter", "")
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// A Set or Delete after the response committed (the handler wrote first)
// is refused with ErrCommitted: the change would be in no response and no
// commit. A change made before the write is replicated, once; after the
// handler returns, the session takes changes again (a background job's).
func TestSetAfterCommitRefused(t *testing.T) {
	m, _ := newManager(t, nil)
	rs := &recordingStore{Store: m}
	var id string
	var lateSet, lateDel error
	h := valve.New(rs, valve.DefaultConfig()).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := valve.Session(r)
		s.Set("early", 1)
		w.Write([]byte("x")) // commits
		lateSet = s.Set("late", 2)
		lateDel = s.Delete("early")
		id = s.ID()
	}))
	do(t, h, "/", "")
	for name, err := range map[string]error{"Set": lateSet, "Delete": lateDel} {
		if !errors.Is(err, manager.ErrCommitted) {
			t.Errorf("%s after the response committed = %v, want ErrCommitted", name, err)
		}
	}
	if len(rs.events) != 1 {
		t.Fatalf("commits %v, want the response's only", rs.events)
	}
	s, _ := m.Load(context.Background(), id)
	if s == nil || s.Pending() || s.Version() != 1 {
		t.Fatalf("session after the request: %v", s)
	}
	if _, ok, _ := manager.Get[int](s, "late"); ok {
		t.Error("the refused Set was kept")
	}
	if err := s.Set("job", 1); err != nil {
		t.Errorf("Set outside any request = %v, want nil", err)
	}
}

// A rename whose commit reached too few members (503) does not hand the
// client the new id: only this node knows it, and the client's next
// request on another node would find nothing under it (chaos run of
// 2026-12-02: a user whose session was rewritten on a cut-off node got a
// new, empty session next).
func TestUnreplicatedRenameKeepsCookie(t *testing.T) {
	m, _ := newManager(t, nil)
	first := sessionCookie(do(t, valve.New(m, valve.DefaultConfig()).Wrap(counter), "/", "")).Value
	renew := valve.New(failingStore{m, fmt.Errorf("commit: %w", manager.ErrTooFewCopies)}, valve.DefaultConfig()).
		Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, _ := valve.Session(r)
			if err := s.RenewID(); err != nil {
				t.Error(err)
			}
		}))
	resp := do(t, renew, "/login", "FLOCKSESSIONID="+first)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if c := sessionCookie(resp); c != nil {
		t.Fatalf("cookie %v handed out for a rename nobody else holds", c)
	}
	// A new session whose first commit fell short still gets its cookie:
	// this node holds it, and nobody else knows any id of it.
	fresh := valve.New(failingStore{m, fmt.Errorf("commit: %w", manager.ErrTooFewCopies)}, valve.DefaultConfig()).Wrap(counter)
	if c := sessionCookie(do(t, fresh, "/", "")); c == nil {
		t.Fatal("no cookie for a new session")
	}
}

// catchingUpStore fails every load as a node catching up with a member
// that did not answer does.
type catchingUpStore struct {
	valve.Store
	created int
}

func (c *catchingUpStore) LoadSeen(ctx context.Context, id string, _ uint64) (*manager.Session, error) {
	return nil, fmt.Errorf("load: %w", manager.ErrCatchingUp)
}

func (c *catchingUpStore) Create(ctx context.Context) (*manager.Session, error) {
	c.created++
	return c.Store.Create(ctx)
}

// A session the node cannot check with a member it is catching up with is
// a 503: the user keeps the cookie and is not handed a new, empty session.
func TestCatchingUpIs503(t *testing.T) {
	m, _ := newManager(t, nil)
	first := do(t, valve.New(m, valve.DefaultConfig()).Wrap(counter), "/counter", "")
	c := sessionCookie(first)
	if c == nil {
		t.Fatal("no cookie")
	}
	store := &catchingUpStore{Store: m}
	resp := do(t, valve.New(store, valve.DefaultConfig()).Wrap(counter), "/counter", c.Name+"="+c.Value)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if got := sessionCookie(resp); got != nil {
		t.Errorf("cookie set to %q; the user's session must stay", got.Value)
	}
	if store.created != 0 {
		t.Errorf("%d sessions created in place of one that could not be loaded", store.created)
	}
}

// countingStore counts Load calls.
type countingStore struct {
	valve.Store
	loads int
}

func (c *countingStore) LoadSeen(ctx context.Context, id string, seen uint64) (*manager.Session, error) {
	c.loads++
	return c.Store.LoadSeen(ctx, id, seen)
}

// A request with thousands of session cookies costs a few lookups, not
// thousands (each a round trip to the owner in backup mode).
func TestManyCookiesBounded(t *testing.T) {
	m, _ := newManager(t, nil)
	store := &countingStore{Store: m}
	var cookies []string
	for range 2000 {
		s, err := m.Create(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, "FLOCKSESSIONID="+s.ID()+"x") // valid form, unknown
	}
	req := httptest.NewRequest("GET", "/counter", nil)
	req.Header.Set("Cookie", strings.Join(cookies, "; "))
	rec := httptest.NewRecorder()
	valve.New(store, valve.DefaultConfig()).Wrap(counter).ServeHTTP(rec, req)
	if store.loads > 4 {
		t.Errorf("%d lookups for one request, want at most 4", store.loads)
	}
	t.Logf("2000 session cookies: %d lookups, status %d", store.loads, rec.Code)
}
