// Package valve is flock's net/http middleware, in the manner of Tomcat's
// ReplicationValve and JvmRouteBinderValve: it finds the request's session
// from its cookie (or, configured so, a request header such as
// Mcp-Session-Id), hands it to the handler, and when the response commits
// (first Write or WriteHeader, Flush, Hijack, or the handler's return) it
// sets the cookie (or the response header) and replicates what changed,
// before a byte of the response leaves.
package valve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/manager"
)

// Store is what the valve needs of the session manager.
type Store interface {
	// LoadSeen loads the session of id, which the client has seen at
	// version seen or later (0: unknown); see manager.Manager.LoadSeen.
	LoadSeen(ctx context.Context, id string, seen uint64) (*manager.Session, error)
	Create(ctx context.Context) (*manager.Session, error)
	Commit(ctx context.Context, s *manager.Session) error
	Rebind(s *manager.Session) (bool, error)
}

// Config configures the valve. The cookie settings are those of
// [session] in server.toml.
type Config struct {
	CookieName     string
	CookiePath     string
	CookieDomain   string
	CookieSecure   bool
	CookieHTTPOnly bool
	CookieSameSite http.SameSite // 0: no SameSite attribute
	// CookiePersist makes session cookies persistent (Max-Age: until the
	// session would expire) unless a session's RememberMe says otherwise;
	// false: browser session cookies unless RememberMe(true).
	CookiePersist bool
	// IDHeader, if set, is the request header that carries the session id
	// instead of the cookie: the id is read from it, and sent back in it
	// on the response that creates or renames the session; the version the
	// client has seen travels in VersionHeader(IDHeader). No cookie is set.
	IDHeader string
	// StaticFilter matches request paths that never touch sessions (style
	// sheets, images): they pass straight to the handler.
	StaticFilter *regexp.Regexp
	Logger       logrus.FieldLogger
}

// defaultStatic is the default StaticFilter; isDefaultStatic matches the
// same paths without running a regexp on every request.
const defaultStatic = `\.(css|js|png|jpe?g|gif|ico|svg|woff2?|map)$`

func isDefaultStatic(path string) bool {
	i := strings.LastIndexByte(path, '.')
	if i < 0 {
		return false
	}
	switch path[i+1:] {
	case "css", "js", "png", "jpg", "jpeg", "gif", "ico", "svg", "woff", "woff2", "map":
		return true
	}
	return false
}

// DefaultConfig returns the defaults of server.toml.
func DefaultConfig() Config {
	return Config{
		CookieName:     "FLOCKSESSIONID",
		CookiePath:     "/",
		CookieHTTPOnly: true,
		CookieSameSite: http.SameSiteLaxMode,
		StaticFilter:   regexp.MustCompile(defaultStatic),
	}
}

// ErrSameSiteNone: browsers reject a SameSite=None cookie that is not
// Secure, so every request would start a new session.
var ErrSameSiteNone = errors.New("SameSite=None requires a Secure cookie")

// CheckSameSite reports whether a cookie with this SameSite mode and Secure
// flag will be kept by browsers.
func CheckSameSite(mode http.SameSite, secure bool) error {
	if mode == http.SameSiteNoneMode && !secure {
		return ErrSameSiteNone
	}
	return nil
}

// Validate reports what in c would break sessions.
func (c Config) Validate() error {
	return CheckSameSite(c.CookieSameSite, c.CookieSecure)
}

// Valve wraps handlers with session handling.
type Valve struct {
	store Store
	cfg   Config
	log   logrus.FieldLogger
	// Replication problems are logged at most once per logEvery, with how
	// many were not: a node with a sick peer must not log per request.
	warnings logx.Limiter
	// static is cfg.StaticFilter's test, nil without one.
	static func(path string) bool
	// versionCookie is VersionCookie(cfg.CookieName), made once.
	versionCookie string
}

const logEvery = 10 * time.Second

// New returns a valve over store.
func New(store Store, cfg Config) *Valve {
	log := logx.OrDiscard(cfg.Logger)
	if cfg.CookieName == "" {
		cfg.CookieName = DefaultConfig().CookieName
	}
	v := &Valve{store: store, cfg: cfg, log: log.WithField("component", "valve"), warnings: logx.Limiter{Every: logEvery},
		versionCookie: VersionCookie(cfg.CookieName)}
	switch f := cfg.StaticFilter; {
	case f == nil:
	case f.String() == defaultStatic:
		v.static = isDefaultStatic
	default:
		v.static = f.MatchString
	}
	return v
}

type ctxKey struct{}

// Wrap returns next with sessions.
func (v *Valve) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v.static != nil && v.static(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		st := &state{v: v, w: w, r: r}
		rw := &writer{ResponseWriter: w, st: st}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))
		st.r = r
		next.ServeHTTP(rw, r)
		st.commit()
		st.end()
		if st.failed() && !rw.wrote {
			rw.refuse()
		}
	})
}

// Session returns the request's session, creating one if the request has
// none (or an unknown, expired or malformed id). The error is
// manager.ErrTooManySessions when max_active is reached: the valve then
// answers 503 whatever the handler writes.
func Session(r *http.Request) (*manager.Session, error) {
	st, ok := r.Context().Value(ctxKey{}).(*state)
	if !ok {
		return nil, errors.New("valve: request did not pass through the valve")
	}
	return st.session(true)
}

// Existing returns the request's session, or nil if it has none; it never
// creates one, so read-only pages cost no session.
func Existing(r *http.Request) *manager.Session {
	st, ok := r.Context().Value(ctxKey{}).(*state)
	if !ok {
		return nil
	}
	s, _ := st.session(false)
	return s
}

// state is one request's session handling.
type state struct {
	v *Valve
	w http.ResponseWriter
	r *http.Request

	mu       sync.Mutex
	loaded   bool // the cookie was looked up
	s        *manager.Session
	cookieID string // the id the client sent (cookie or header), if it named s
	// persisted: the cookie the client sent is persistent, as far as the
	// valve knows (the session's choice when it was loaded).
	persisted bool
	// seen is the session version of the client's version cookie; base
	// the version s had when this request got it (0: new).
	seen, base uint64
	refused    bool // max_active refused a new session
	// unreplicated: the change did not reach enough members (the sync
	// rule); the response is a 503, so the user knows it may be lost.
	unreplicated bool
	// unavailable: the session could not be loaded for now (the node is
	// catching up with a member that may hold a newer copy); the response
	// is a 503, and no new session takes its place.
	unavailable error
	committed   bool
}

// failed: the response is a 503 whatever the handler writes.
func (st *state) failed() bool { return st.refused || st.unreplicated || st.unavailable != nil }

func (st *state) session(create bool) (*manager.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.committed {
		// Too late to replicate or to send a cookie: the handler gets what
		// was loaded, never a new session nobody would hear of.
		if st.s == nil && create {
			return nil, errors.New("valve: response already committed; ask for the session before writing")
		}
		return st.s, nil
	}
	if !st.loaded {
		st.loaded = true
		st.load()
	}
	if st.unavailable != nil {
		return nil, st.unavailable
	}
	if st.s != nil && st.s.Invalid() {
		st.use(nil)
	}
	if st.s == nil && create {
		s, err := st.v.store.Create(st.r.Context())
		if err != nil {
			if errors.Is(err, manager.ErrTooManySessions) {
				st.refused = true
			}
			return nil, err
		}
		st.use(s)
	}
	return st.s, nil
}

// maxCookieLookups bounds the session cookies of one request looked up.
const maxCookieLookups = 4

// load finds the session named by the request's cookies (the first valid
// one that the manager knows), and gives it this node's route if it names
// another node's (that node failed and the load balancer moved the user).
func (st *state) load() {
	st.seen = st.seenVersion()
	tries := 0
	for _, id := range st.sentIDs() {
		if !manager.ValidID(id) {
			continue
		}
		// A browser sends one or two (a path and a domain cookie); a
		// request with thousands must not cost thousands of lookups,
		// each a round trip in backup mode.
		if tries++; tries > maxCookieLookups {
			st.v.log.Debug("more session cookies than are looked up; the rest ignored")
			return
		}
		s, err := st.v.store.LoadSeen(st.r.Context(), id, st.seen)
		if errors.Is(err, manager.ErrCatchingUp) {
			// The session exists and is not lost: the user is asked to
			// come again rather than handed a new, empty one.
			st.unavailable = err
			st.v.log.WithError(err).Debug("session not served: this node is catching up") // counted: catch_up_refused
			return
		}
		if err != nil {
			st.v.log.WithError(err).Warn("session load failed")
			continue
		}
		if s == nil {
			st.v.log.WithField("session", shortID(id)).Debug("cookie names no session this node holds")
			continue
		}
		st.use(s)
		st.cookieID = id
		st.base = s.Version()
		st.persisted = s.Persistent(st.v.cfg.CookiePersist)
		if _, err := st.v.store.Rebind(s); err != nil {
			st.v.log.WithError(err).Warn("route rewrite failed")
		}
		return
	}
}

// commit replicates the session and sets the cookie, once, before the
// response's header is written.
func (st *state) commit() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.committed {
		return
	}
	st.committed = true
	s := st.s
	if s == nil {
		return
	}
	s.ResponseCommitted() // from now on, a Set of this request's is refused
	if err := st.v.store.Commit(st.r.Context(), s); err != nil {
		// Below the sync rule the user is told (503); above it, the
		// members that missed the change are repaired by anti-entropy.
		st.unreplicated = errors.Is(err, manager.ErrTooFewCopies) || errors.Is(err, manager.ErrChangedUnder)
		st.v.warn(err)
	}
	id := s.ID()
	if st.v.cfg.IDHeader != "" {
		st.commitHeader(s, id)
		return
	}
	// maxAge 0 is a browser session cookie; a persistent one lives until
	// the session would expire, and is sent again with every response
	// that used the session, so that it slides with the idle timeout.
	maxAge, persist := 0, !s.Invalid() && s.Persistent(st.v.cfg.CookiePersist)
	if persist {
		maxAge = max(1, int(time.Until(s.ExpiresAt()).Seconds()))
	}
	switch {
	case s.Invalid():
		if st.cookieID != "" {
			st.setCookie("", -1)
		}
		if st.seen != 0 {
			st.setVersionCookie(0, -1)
		}
	case id != st.cookieID && !(st.unreplicated && st.cookieID != ""):
		// A rename (a failover's route rewrite, RenewID) that reached too
		// few members is not announced: the others know the session only
		// under the id the client sent, which it keeps.
		st.setCookie(id, maxAge)
	case st.cookieID != "" && (persist || st.persisted):
		// Persistent, or no longer (RememberMe(false)): the same id with
		// a new lifetime.
		st.setCookie(id, maxAge)
	}
	if v := s.Version(); !s.Invalid() && !st.unreplicated && v != st.base && v > st.seen {
		// The client has seen this version: a node holding an older copy
		// will not serve it that one (read your writes, across nodes).
		st.setVersionCookie(v, maxAge)
	}
}

// commitHeader is commit's end when the id travels in a header: the id
// goes back on the response that creates or renames the session, the
// version when it changed. An invalidated session needs no word: the
// client's next request names an id no node serves.
func (st *state) commitHeader(s *manager.Session, id string) {
	name := st.v.cfg.IDHeader
	invalid := s.Invalid()
	h := st.w.Header()
	sent := false
	if !invalid && id != st.cookieID && !(st.unreplicated && st.cookieID != "") {
		h.Set(name, id)
		sent = true
	}
	if v := s.Version(); !invalid && !st.unreplicated && v != st.base && v > st.seen {
		h.Set(VersionHeader(name), strconv.FormatUint(v, 10))
		sent = true
	}
	if sent {
		// The response depends on the id the request sent; shared caches
		// may keep the page, never the id.
		if !slices.Contains(h.Values("Vary"), name) {
			h.Add("Vary", name)
		}
		h.Set("Cache-Control", `no-cache="`+name+", "+VersionHeader(name)+`"`)
	}
}

// VersionHeader is the name of the header that carries the version of the
// session the client last saw change, next to the id header named name
// (the version cookie's counterpart). A client that sends it back gets
// its own writes from every node, as a browser with the version cookie
// does; one that does not (most API clients) still does in sync
// replication while every member is healthy.
func VersionHeader(name string) string { return name + "-Version" }

// sentIDs are the session ids the request names: the values of the
// session cookies, or of the id header. A malformed header names none.
func (st *state) sentIDs() []string {
	if name := st.v.cfg.IDHeader; name != "" {
		id, err := HeaderID(st.r.Header, name)
		if err != nil {
			if !errors.Is(err, ErrNoID) {
				st.v.log.WithError(err).Debug("session id header ignored")
			}
			return nil
		}
		return []string{id}
	}
	return cookieValues(st.r.Header, st.v.cfg.CookieName)
}

// cookieValues returns the values of the request's cookies named name, in
// order, quotes taken off as net/http does, at most maxCookieValues. It
// reads the header in place: net/http's parse allocates a Cookie for every
// cookie the browser sends, on every request. What it returns is checked
// by its user (ValidID, ParseUint), so a value net/http would have dropped
// as malformed is refused there instead.
func cookieValues(h http.Header, name string) []string {
	var out []string
	for _, line := range h["Cookie"] {
		for line != "" {
			part, rest, _ := strings.Cut(line, ";")
			line = rest
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=") // "S" alone is S="", as in net/http
			if k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if out = append(out, v); len(out) == maxCookieValues {
				return out
			}
		}
	}
	return out
}

// maxCookieValues bounds the values of one cookie name a request is read
// for: more than a few is an attack, not a browser.
const maxCookieValues = 16

// The errors of HeaderID.
var (
	// ErrNoID: the request has no id header.
	ErrNoID = errors.New("no session id header")
	// ErrManyIDs: the request has the id header more than once; which
	// one the client meant is anyone's guess, so none is used.
	ErrManyIDs = errors.New("more than one session id header")
	// ErrBadID: the header's value is not a session id.
	ErrBadID = errors.New("malformed session id header")
)

// maxIDLen bounds the id header's value: a session id is at most 88
// bytes (24 random, a dot, a route of up to 63).
const maxIDLen = 88

// HeaderID returns the session id of the header called name in h, or
// ErrNoID, ErrManyIDs or ErrBadID (an error that wraps it and says why).
// A handler of a header-keyed API uses it to answer a missing or malformed
// id with a clear 400 rather than a new session.
func HeaderID(h http.Header, name string) (string, error) {
	vs := h.Values(name)
	switch {
	case len(vs) == 0:
		return "", ErrNoID
	case len(vs) > 1:
		return "", fmt.Errorf("%w: %d %s headers", ErrManyIDs, len(vs), name)
	}
	id := strings.TrimSpace(vs[0])
	switch {
	case id == "":
		return "", fmt.Errorf("%w: %s is empty", ErrBadID, name)
	case len(id) > maxIDLen:
		return "", fmt.Errorf("%w: %s is %d bytes, a session id at most %d", ErrBadID, name, len(id), maxIDLen)
	case !manager.ValidID(id):
		return "", fmt.Errorf("%w: %s is not a session id (24 base64url characters, a dot, a route)", ErrBadID, name)
	}
	return id, nil
}

// VersionCookie is the name of the cookie that carries the version of
// the session the client last saw change, next to the session cookie
// named name.
func VersionCookie(name string) string { return name + "_V" }

// seenVersion is the greatest version in the request's version cookies,
// or version headers (at most a few are read); 0 if none.
func (st *state) seenVersion() uint64 {
	var values []string
	if name := st.v.cfg.IDHeader; name != "" {
		values = st.r.Header.Values(VersionHeader(name))
	} else {
		values = cookieValues(st.r.Header, st.v.versionCookie)
	}
	var seen uint64
	for i, s := range values {
		if i == maxCookieLookups {
			break
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64); err == nil {
			seen = max(seen, v)
		}
	}
	return seen
}

func (st *state) setVersionCookie(v uint64, maxAge int) {
	value := ""
	if maxAge >= 0 {
		value = strconv.FormatUint(v, 10)
	}
	cfg := st.v.cfg
	c := &http.Cookie{
		Name: st.v.versionCookie, Value: value, Path: cfg.CookiePath, Domain: cfg.CookieDomain,
		Secure: cfg.CookieSecure, HttpOnly: cfg.CookieHTTPOnly, SameSite: cfg.CookieSameSite, MaxAge: maxAge,
	}
	st.addCookie(withExpires(c))
}

// withExpires gives a persistent cookie an Expires attribute next to its
// Max-Age, for the clients that know only Expires (scs sets both).
func withExpires(c *http.Cookie) *http.Cookie {
	if c.MaxAge > 0 {
		c.Expires = time.Now().Add(time.Duration(c.MaxAge) * time.Second).UTC()
	}
	return c
}

// use makes s the request's session, telling it a request uses it (and
// the one it replaces, that this one no longer does); st.mu held.
func (st *state) use(s *manager.Session) {
	if st.s != nil && st.s != s && !st.committed {
		st.s.ResponseCommitted()
		st.s.RequestEnded()
	}
	st.s = s
	if s != nil {
		s.RequestStarted()
	}
}

// end tells the session the handler returned: from then on a change to it
// is an ordinary one again (a background job's).
func (st *state) end() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s != nil {
		st.s.RequestEnded()
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}

func (v *Valve) warn(err error) {
	if ok, suppressed := v.warnings.Allow(time.Now()); ok {
		v.log.WithError(err).WithField("suppressed", suppressed).Warn("session change not replicated to every member")
	}
}

func (st *state) setCookie(value string, maxAge int) {
	cfg := st.v.cfg
	c := &http.Cookie{
		Name: cfg.CookieName, Value: value, Path: cfg.CookiePath, Domain: cfg.CookieDomain,
		Secure: cfg.CookieSecure, HttpOnly: cfg.CookieHTTPOnly, SameSite: cfg.CookieSameSite, MaxAge: maxAge,
	}
	st.addCookie(withExpires(c))
}

func (st *state) addCookie(c *http.Cookie) {
	h := st.w.Header()
	h.Add("Set-Cookie", c.String())
	if !slices.Contains(h.Values("Vary"), "Cookie") {
		h.Add("Vary", "Cookie")
	}
	// Shared caches may keep the page, never the cookie.
	h.Set("Cache-Control", `no-cache="Set-Cookie"`)
}

// writer commits the session before the response does.
type writer struct {
	http.ResponseWriter
	st    *state
	wrote bool // the header went out (or, refused, the 503 did)
}

func (w *writer) begin() bool {
	if w.wrote {
		return !w.st.failed()
	}
	w.st.commit()
	w.wrote = true
	if w.st.failed() {
		w.refuse()
		return false
	}
	return true
}

func (w *writer) refuse() {
	w.wrote = true
	msg := "503 too many sessions on this node; try again later"
	switch {
	case w.st.unavailable != nil:
		msg = "503 this node is catching up with the cluster; try again"
	case w.st.unreplicated:
		msg = "503 the change could not be saved on enough nodes; try again"
	}
	http.Error(w.ResponseWriter, msg, http.StatusServiceUnavailable)
}

func (w *writer) WriteHeader(code int) {
	if w.begin() {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *writer) Write(b []byte) (int, error) {
	if !w.begin() {
		return len(b), nil // the 503 is the response; the handler's body is dropped
	}
	return w.ResponseWriter.Write(b)
}

// Flush commits, then flushes, for streaming handlers.
func (w *writer) Flush() {
	if w.begin() {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Hijack commits, then hands the connection over (websockets).
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.st.commit()
	w.wrote = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.NewResponseController reach the server's writer for
// what the valve does not intercept (deadlines, full duplex).
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
