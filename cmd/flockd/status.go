package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// clusterView is what the admin endpoints need of a node.
type clusterView interface {
	Local() membership.Member
	Members() []membership.Status
	MembershipStats() membership.Stats
	TransportStats() ([]sender.PeerStats, receiver.Stats)
	Sessions() []manager.Info
	ManagerStats() manager.Stats
	Ready() <-chan struct{}
}

// node joins the cluster and the manager into what the endpoints read.
type node struct {
	*flock.Cluster
	mgr *manager.Manager
}

func (n node) Sessions() []manager.Info    { return n.mgr.Sessions() }
func (n node) ManagerStats() manager.Stats { return n.mgr.Stats() }
func (n node) Ready() <-chan struct{}      { return n.mgr.Ready() }

type localJSON struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Domain  string    `json:"domain"`
	Started time.Time `json:"started"`
}

type memberJSON struct {
	Name     string           `json:"name"`
	ID       string           `json:"id"`
	Address  string           `json:"address"`
	State    membership.State `json:"state"`
	LastSeen time.Time        `json:"last_seen"`
	Started  time.Time        `json:"started"`
}

type heartbeatsJSON struct {
	Sent          uint64 `json:"sent"`
	Received      uint64 `json:"received"`
	Lost          uint64 `json:"lost"`
	Rejected      uint64 `json:"rejected"`
	ForeignDomain uint64 `json:"foreign_domain"`
	NameConflicts uint64 `json:"name_conflicts"`
	LocalStalls   uint64 `json:"local_stalls"`
	EventsDropped uint64 `json:"events_dropped"`
}

type peerJSON struct {
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

type receiverJSON struct {
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

type transportJSON struct {
	Peers    []peerJSON   `json:"peers"`
	Receiver receiverJSON `json:"receiver"`
}

type statusJSON struct {
	Local      localJSON      `json:"local"`
	Membership string         `json:"membership"`
	Sessions   int            `json:"sessions"`
	Manager    manager.Stats  `json:"manager"`
	Members    []memberJSON   `json:"members"`
	Heartbeats heartbeatsJSON `json:"heartbeats"`
	Transport  transportJSON  `json:"transport"`
}

func newMux(c clusterView, membershipType string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) {
		s := status(c)
		s.Membership = membershipType
		writeJSON(w, s)
	})
	mux.HandleFunc("GET /cluster/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, c.Sessions())
	})
	// For load balancers: 200 once the node holds the cluster's sessions.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-c.Ready():
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "state transfer running", http.StatusServiceUnavailable)
		}
	})
	return mux
}

func status(c clusterView) statusJSON {
	l := c.Local()
	s := statusJSON{
		Local:   localJSON{Name: l.Name, ID: l.ID.String(), Address: l.Addr.String(), Domain: l.Domain, Started: l.Started.UTC()},
		Members: []memberJSON{},
	}
	for _, m := range c.Members() {
		s.Members = append(s.Members, memberJSON{
			Name: m.Name, ID: m.ID.String(), Address: m.Addr.String(), State: m.State,
			LastSeen: m.LastSeen.UTC(), Started: m.Started.UTC(),
		})
	}
	s.Manager = c.ManagerStats()
	s.Sessions = s.Manager.Sessions
	st := c.MembershipStats()
	s.Heartbeats = heartbeatsJSON{
		Sent: st.HeartbeatsSent, Received: st.HeartbeatsReceived, Lost: st.HeartbeatsLost,
		Rejected: st.Rejected, ForeignDomain: st.ForeignDomain, NameConflicts: st.NameConflicts,
		LocalStalls: st.LocalStalls, EventsDropped: st.EventsDropped,
	}
	peers, rs := c.TransportStats()
	s.Transport.Peers = []peerJSON{}
	for _, p := range peers {
		s.Transport.Peers = append(s.Transport.Peers, peerJSON{
			Address: p.Addr.String(), Connected: p.Connected, Queued: p.Queued, Inflight: p.Inflight,
			Bytes: p.Bytes, Sent: p.Sent, SentBytes: p.SentBytes, Failed: p.Failed, Retried: p.Retried,
			Reconnects: p.Reconnects,
		})
	}
	s.Transport.Receiver = receiverJSON(rs)
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the client may have gone; nothing to do about it
}
