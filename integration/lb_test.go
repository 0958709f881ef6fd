//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cookieName is flockd's session cookie (the default of [session]).
const cookieName = "FLOCKSESSIONID"

// versionCookie carries the session version the client last saw change
// (valve.VersionCookie): a node with an older copy asks the others first.
const versionCookie = cookieName + "_V"

// Headers the balancer adds to every response, so a scenario can tell who
// served a request and whether the balancer had to retry it.
const (
	hdrBackend = "X-Lb-Backend" // the node that answered
	hdrRetry   = "X-Lb-Retry"   // the first try failed: "unsent" (the request never went out) or "sent" (the node may have applied it)
	hdrFirst   = "X-Lb-First"   // the node the first try went to, when it failed
)

// lbPolicy chooses a backend for a request.
type lbPolicy int

const (
	roundRobin  lbPolicy = iota // the next live node, request after request
	stickyRoute                 // the node the cookie's route names, else round-robin
)

// balancer is a small HTTP load balancer in the test process: it listens
// on 127.0.0.1 and forwards to the nodes' HTTP addresses, dialing through
// each node's namespace. A node is down when a dial or round trip to it
// failed (for a short while after); a failed GET is retried once on the
// next live node.
type balancer struct {
	t        *testing.T
	policy   lbPolicy
	backends []*backend
	byName   map[string]*backend
	next     atomic.Uint64
	srv      *http.Server
	url      *url.URL

	retries atomic.Uint64 // requests sent to a second node
	failed  atomic.Uint64 // requests that failed on both tries
}

type backend struct {
	node      *node
	addr      string // 198.51.100.x:8080
	transport *http.Transport

	mu        sync.Mutex
	downUntil time.Time
	excluded  bool // taken out of the balancer by the scenario (exclude)
}

// downFor is how long a node that failed a request is skipped by
// round-robin; a sticky request for it tries it again after that.
const downFor = 500 * time.Millisecond

// lbTimeout bounds one forwarded round trip: a sync commit waits for the
// other nodes, which may take the sender's timeout (3 s) and a retry when
// one just died.
const lbTimeout = 30 * time.Second

func (b *backend) down(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.excluded || now.Before(b.downUntil)
}

func (b *backend) isExcluded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.excluded
}

// exclude takes the named node out of the balancer (out: true) or puts it
// back: while out, it is down for round-robin and for its sticky users, as
// a balancer that health-checks its backends, or that sits on the other
// side of a cut link, would have it.
func (lb *balancer) exclude(name string, out bool) {
	b := lb.byName[name]
	b.mu.Lock()
	b.excluded = out
	b.mu.Unlock()
}

func (b *backend) markDown() {
	b.mu.Lock()
	b.downUntil = time.Now().Add(downFor)
	b.mu.Unlock()
}

// newBalancer starts a balancer over nodes; it stops when the test ends.
// Load is about to start: it calls loadBegins first.
func newBalancer(t *testing.T, policy lbPolicy, nodes ...*node) *balancer {
	t.Helper()
	loadBegins(t)
	lb := &balancer{t: t, policy: policy, byName: map[string]*backend{}}
	for _, n := range nodes {
		b := &backend{
			node: n,
			addr: n.host.IP.String() + ":8080",
			transport: &http.Transport{
				Proxy:               nil,
				DialContext:         n.host.DialContext,
				MaxIdleConns:        1024,
				MaxIdleConnsPerHost: 512,
				IdleConnTimeout:     30 * time.Second,
				DisableCompression:  true,
			},
		}
		lb.backends = append(lb.backends, b)
		lb.byName[n.name] = b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb.url = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	lb.srv = &http.Server{Handler: lb, ReadHeaderTimeout: 10 * time.Second}
	go lb.srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lb.srv.Shutdown(ctx)
		for _, b := range lb.backends {
			b.transport.CloseIdleConnections()
		}
		t.Logf("balancer: %d requests retried on another node, %d failed", lb.retries.Load(), lb.failed.Load())
	})
	return lb
}

// roundRobin returns the next backend that is not down, skipping skip; if
// every one is down it returns the next one anyway, but never one the
// scenario excluded (unless skip is the only other choice).
func (lb *balancer) roundRobin(skip *backend) *backend {
	now := time.Now()
	var fallback *backend
	for range len(lb.backends) {
		b := lb.backends[int(lb.next.Add(1)-1)%len(lb.backends)]
		if b == skip {
			continue
		}
		if !b.down(now) {
			return b
		}
		if fallback == nil && !b.isExcluded() {
			fallback = b
		}
	}
	if fallback == nil {
		fallback = skip
	}
	if fallback == nil {
		fallback = lb.backends[0] // every node excluded: the scenario's mistake
	}
	return fallback
}

// route returns the node the request's session cookie names, if it is one
// of the balancer's and not down.
func (lb *balancer) route(r *http.Request) *backend {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 {
		return nil
	}
	b := lb.byName[c.Value[i+1:]]
	if b == nil || b.down(time.Now()) {
		return nil
	}
	return b
}

func (lb *balancer) pick(r *http.Request) *backend {
	if lb.policy == stickyRoute {
		if b := lb.route(r); b != nil {
			return b
		}
	}
	return lb.roundRobin(nil)
}

func (lb *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := lb.pick(r)
	resp, cancel, wrote, err := lb.forward(r, b)
	retry, first := "", b
	if err != nil && r.Method == http.MethodGet && r.Context().Err() == nil {
		b.markDown()
		retry = "unsent"
		if wrote {
			retry = "sent"
		}
		b = lb.roundRobin(first)
		lb.retries.Add(1)
		lb.t.Logf("balancer: %s %s on %s failed (%v, request written: %v); retrying on %s", r.Method, r.URL.Path, first.node.name, err, wrote, b.node.name)
		resp, cancel, _, err = lb.forward(r, b)
	}
	if err != nil {
		b.markDown()
		lb.failed.Add(1)
		http.Error(w, "balancer: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer cancel()
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		if hopHeader(k) {
			continue
		}
		h[k] = vs
	}
	h.Set(hdrBackend, b.node.name)
	if retry != "" {
		h.Set(hdrRetry, retry)
		h.Set(hdrFirst, first.node.name)
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// forward sends r to b. The response is read in full before it is
// returned, so a node that dies mid-body counts as a failed round trip.
// wrote reports whether the request went out on a connection to the node,
// so that the node may have applied it although the round trip failed. It
// is not the same as "not a dial error": on a failure of a reused
// keep-alive connection, the http.Transport itself retries a GET on a new
// connection, and a failing dial then hides that the first copy was sent.
func (lb *balancer) forward(r *http.Request, b *backend) (*http.Response, func(), bool, error) {
	var sent atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			sent.Store(true)
		}
	}}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(r.Context(), trace), lbTimeout)
	out, err := http.NewRequestWithContext(ctx, r.Method, "http://"+b.addr+r.URL.RequestURI(), nil)
	if err != nil {
		cancel()
		return nil, nil, false, err
	}
	for k, vs := range r.Header {
		if !hopHeader(k) {
			out.Header[k] = vs
		}
	}
	resp, err := b.transport.RoundTrip(out)
	if err != nil {
		cancel()
		return nil, nil, sent.Load(), err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		cancel()
		return nil, nil, true, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, cancel, true, nil
}

func hopHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// user is a simulated browser: its own cookie jar, talking to the balancer.
type user struct {
	lb     *balancer
	client *http.Client
}

func (lb *balancer) newUser() *user {
	jar, err := cookiejar.New(nil)
	if err != nil {
		panic(err) // cookiejar.New(nil) cannot fail
	}
	return &user{lb: lb, client: &http.Client{
		Jar:       jar,
		Timeout:   2 * lbTimeout,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, DisableCompression: true},
	}}
}

// reply is one answered request of a user.
type reply struct {
	value   int
	backend string
	retry   string // the balancer's hdrRetry
	first   string // the balancer's hdrFirst
	sent    time.Time
	at      time.Time // when the answer arrived
}

// get sends GET path and parses the answer as the demo's counter.
func (u *user) get(ctx context.Context, path string) (reply, error) {
	rp := reply{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, "GET", u.lb.url.String()+path, nil)
	if err != nil {
		return rp, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return rp, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	rp.at = time.Now()
	rp.backend, rp.retry, rp.first = resp.Header.Get(hdrBackend), resp.Header.Get(hdrRetry), resp.Header.Get(hdrFirst)
	if err != nil {
		return rp, err
	}
	if resp.StatusCode != http.StatusOK {
		return rp, &statusError{fmt.Errorf("GET %s: %s (backend %s, retry %q): %s", path, resp.Status, rp.backend, rp.retry, strings.TrimSpace(string(body))),
			resp.StatusCode, rp.retry}
	}
	if _, err := fmt.Sscan(string(body), &rp.value); err != nil {
		return rp, fmt.Errorf("GET %s: body %q: %w", path, body, err)
	}
	return rp, nil
}

// statusError is an answer other than 200, with whether the balancer had
// retried the request on another node.
type statusError struct {
	error
	code  int
	retry string
}

// cookie returns the session cookie's value in the user's jar ("" if none).
func (u *user) cookie() string {
	for _, c := range u.client.Jar.Cookies(u.lb.url) {
		if c.Name == cookieName {
			return c.Value
		}
	}
	return ""
}

func (u *user) close() { u.client.CloseIdleConnections() }

// routeOf is the node name a session id ends in.
func routeOf(id string) string {
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		return id[i+1:]
	}
	return ""
}
