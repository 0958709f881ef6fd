// Package admin serves a node's admin endpoints (status, sessions, health)
// and defines their JSON, which flockctl reads.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// Node is what the admin endpoints need of a node.
type Node interface {
	Local() membership.Member
	Members() []membership.Status
	MembershipStats() membership.Stats
	TransportStats() ([]sender.PeerStats, receiver.Stats)
	Sessions() []manager.Info
	// SessionInfo is the session of a full id, if the node holds it.
	SessionInfo(id string) (manager.Info, bool)
	ManagerStats() manager.Stats
	Ready() <-chan struct{}
	// CatchingUp: the node is bringing its copies up to date after a
	// stall; /healthz answers 503 meanwhile.
	CatchingUp() bool
	// ReplicationHistogram is manager.Manager.ReplicationHistogram.
	ReplicationHistogram() (buckets []float64, counts []uint64, sum float64, count uint64)
}

// Local is the node itself.
type Local struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Domain  string    `json:"domain"`
	Started time.Time `json:"started"`
}

// Member is another member as the node sees it.
type Member struct {
	Name     string           `json:"name"`
	ID       string           `json:"id"`
	Address  string           `json:"address"`
	State    membership.State `json:"state"`
	LastSeen time.Time        `json:"last_seen"`
	Started  time.Time        `json:"started"`
}

// Heartbeats counts the membership traffic.
type Heartbeats struct {
	Sent          uint64 `json:"sent"`
	Received      uint64 `json:"received"`
	Lost          uint64 `json:"lost"`
	Rejected      uint64 `json:"rejected"`
	ForeignDomain uint64 `json:"foreign_domain"`
	NameConflicts uint64 `json:"name_conflicts"`
	LocalStalls   uint64 `json:"local_stalls"`
	EventsDropped uint64 `json:"events_dropped"`
}

// Peer is the connection to one member.
type Peer struct {
	Address    string `json:"address"`
	Connected  bool   `json:"connected"`
	Queued     int    `json:"queued"`
	Inflight   int    `json:"inflight"`
	Bytes      int64  `json:"bytes"`
	Sent       uint64 `json:"sent"`
	SentBytes  uint64 `json:"sent_bytes"`
	Failed     uint64 `json:"failed"`
	Retried    uint64 `json:"retried"`
	Reconnects uint64 `json:"reconnects"`
}

// Receiver counts what the node received.
type Receiver struct {
	Connections   uint64 `json:"connections"`
	Open          int    `json:"open"`
	Frames        uint64 `json:"frames"`
	Bytes         uint64 `json:"bytes"`
	Messages      uint64 `json:"messages"`
	Duplicates    uint64 `json:"duplicates"`
	Rejected      uint64 `json:"rejected"`
	HandlerErrors uint64 `json:"handler_errors"`
	NoHandler     uint64 `json:"no_handler"`
}

// Transport is the node's connections.
type Transport struct {
	Peers    []Peer   `json:"peers"`
	Receiver Receiver `json:"receiver"`
}

// Status is the document of GET /cluster/status.
type Status struct {
	Local      Local         `json:"local"`
	Membership string        `json:"membership"`
	Sessions   int           `json:"sessions"`
	Manager    manager.Stats `json:"manager"`
	Members    []Member      `json:"members"`
	Heartbeats Heartbeats    `json:"heartbeats"`
	Transport  Transport     `json:"transport"`
}

// NewMux serves the admin endpoints of c: GET /cluster/status,
// /cluster/sessions, /metrics (Prometheus, from a registry of its own: see
// NewRegistry) and the health endpoints of [Health]. Serve it on a
// listener of its own, never the application's, and behind [RequireToken]
// unless that listener is loopback.
//
// /cluster/sessions lists references, never ids (see manager.Ref);
// /cluster/sessions?id=ID answers the one session of a full id an
// operator was given, as a list of zero or one.
func NewMux(c Node, membershipType string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(NewRegistry(c), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) {
		s := Snapshot(c)
		s.Membership = membershipType
		writeJSON(w, s)
	})
	mux.HandleFunc("GET /cluster/sessions", func(w http.ResponseWriter, r *http.Request) {
		if id := r.URL.Query().Get("id"); id != "" {
			out := []manager.Info{}
			if info, ok := c.SessionInfo(id); ok {
				out = append(out, info)
			}
			writeJSON(w, out)
			return
		}
		writeJSON(w, c.Sessions())
	})
	healthRoutes(mux, c)
	return mux
}

// Health serves what a load balancer or an orchestrator asks, and nothing
// else, for the application's listener: GET /healthz and /readyz (200 once
// the node holds the cluster's sessions and is not catching up, else 503)
// and /livez (200 while the process serves).
func Health(c Node) http.Handler {
	mux := http.NewServeMux()
	healthRoutes(mux, c)
	return mux
}

// HealthPaths are the paths [Health] serves.
var HealthPaths = []string{"/healthz", "/readyz", "/livez"}

func healthRoutes(mux *http.ServeMux, c Node) {
	ready := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-c.Ready():
			if c.CatchingUp() {
				http.Error(w, "catching up after a stall", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "state transfer running", http.StatusServiceUnavailable)
		}
	}
	mux.HandleFunc("GET /healthz", ready)
	mux.HandleFunc("GET /readyz", ready)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
}

// RequireToken answers 401 to a request without "Authorization: Bearer
// token", except for the health paths (a load balancer has no token). An
// empty token lets every request through: for a loopback listener only.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(HealthPaths, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		// Hashes of equal length, so the comparison takes the same time
		// whatever the length of what was sent.
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="flock admin"`)
			http.Error(w, "admin token required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Snapshot builds the status document of c.
func Snapshot(c Node) Status {
	l := c.Local()
	s := Status{
		Local:   Local{Name: l.Name, ID: l.ID.String(), Address: l.Addr.String(), Domain: l.Domain, Started: l.Started.UTC()},
		Members: []Member{},
	}
	for _, m := range c.Members() {
		s.Members = append(s.Members, Member{
			Name: m.Name, ID: m.ID.String(), Address: m.Addr.String(), State: m.State,
			LastSeen: m.LastSeen.UTC(), Started: m.Started.UTC(),
		})
	}
	s.Manager = c.ManagerStats()
	s.Sessions = s.Manager.Sessions
	st := c.MembershipStats()
	s.Heartbeats = Heartbeats{
		Sent: st.HeartbeatsSent, Received: st.HeartbeatsReceived, Lost: st.HeartbeatsLost,
		Rejected: st.Rejected, ForeignDomain: st.ForeignDomain, NameConflicts: st.NameConflicts,
		LocalStalls: st.LocalStalls, EventsDropped: st.EventsDropped,
	}
	peers, rs := c.TransportStats()
	s.Transport.Peers = []Peer{}
	for _, p := range peers {
		s.Transport.Peers = append(s.Transport.Peers, Peer{
			Address: p.Addr.String(), Connected: p.Connected, Queued: p.Queued, Inflight: p.Inflight,
			Bytes: p.Bytes, Sent: p.Sent, SentBytes: p.SentBytes, Failed: p.Failed, Retried: p.Retried,
			Reconnects: p.Reconnects,
		})
	}
	s.Transport.Receiver = Receiver{
		Connections: rs.Connections, Open: rs.Open, Frames: rs.Frames, Bytes: rs.Bytes,
		Messages: rs.Messages, Duplicates: rs.Duplicates, Rejected: rs.Rejected,
		HandlerErrors: rs.HandlerErrors, NoHandler: rs.NoHandler,
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the client may have gone; nothing to do about it
}
