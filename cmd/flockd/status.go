package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/flockhq/flock/membership"
)

// clusterView is what the admin endpoints need of a node.
type clusterView interface {
	Local() membership.Member
	Members() []membership.Status
	MembershipStats() membership.Stats
}

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

type statusJSON struct {
	Local      localJSON      `json:"local"`
	Members    []memberJSON   `json:"members"`
	Heartbeats heartbeatsJSON `json:"heartbeats"`
}

func newMux(c clusterView) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, status(c))
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
	st := c.MembershipStats()
	s.Heartbeats = heartbeatsJSON{
		Sent: st.HeartbeatsSent, Received: st.HeartbeatsReceived, Lost: st.HeartbeatsLost,
		Rejected: st.Rejected, ForeignDomain: st.ForeignDomain, NameConflicts: st.NameConflicts,
		LocalStalls: st.LocalStalls, EventsDropped: st.EventsDropped,
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
