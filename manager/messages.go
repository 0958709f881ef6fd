package manager

import (
	"fmt"
	"slices"

	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/flockhq/flock/cluster"
)

// Message types of the session manager on the cluster.
const (
	typeDelta    = cluster.FirstType + iota // a change to one session
	typeExpire                              // a session expired or was invalidated
	typeTouch                               // last-access times, batched
	typeFetch                               // "send me these sessions"
	typeSessions                            // whole sessions: a fetch answer or a state-transfer batch
	typeState                               // "send me all your sessions" (state transfer)
	typeDigest                              // anti-entropy: "this is what I hold"
	typeDraining                            // "I am shutting down: take my users' routes"
	typeHello                               // a round trip: "do you answer?" (see confirm.go)
)

// draining is the body of typeDraining: nothing but the notice.
type draining struct{}

// TypeName is a readable name for a message type, for metrics and logs:
// the manager's types by name (delta, expire, touch, fetch, sessions,
// state), any other as "type-N".
func TypeName(t cluster.MessageType) string {
	switch t {
	case typeDelta:
		return "delta"
	case typeExpire:
		return "expire"
	case typeTouch:
		return "touch"
	case typeFetch:
		return "fetch"
	case typeSessions:
		return "sessions"
	case typeState:
		return "state"
	case typeDigest:
		return "digest"
	case typeDraining:
		return "draining"
	case typeHello:
		return "hello"
	}
	return "type-" + strconv.Itoa(int(t))
}

// snapshot is a whole session on the wire.
type snapshot struct {
	ID          string            `msgpack:"i"`
	Version     uint64            `msgpack:"v"`
	Origin      string            `msgpack:"o"`
	Created     int64             `msgpack:"c"`
	Access      int64             `msgpack:"a"`
	AccessedBy  string            `msgpack:"ab"`
	MaxInactive int64             `msgpack:"m"`
	Attrs       map[string][]byte `msgpack:"at"`
	// Unsure: the sender's copy holds a change not acknowledged (yet); the
	// receiver keeps it in doubt too (see Session.unsure), so a joiner
	// holds every session but serves such a one only once settled.
	Unsure bool `msgpack:"u,omitempty"`
}

// delta is one committed change: it turns version Base into Version. Base
// 0 creates the session; Full carries the whole session instead of a diff
// (always_save, or a change too tangled to diff).
type delta struct {
	ID   string `msgpack:"i"`
	Old  string `msgpack:"r,omitempty"` // the id before a rename
	Base uint64 `msgpack:"b"`
	// BaseOrigin is the node that made version Base: the change applies
	// only on that exact copy.
	BaseOrigin  string            `msgpack:"bo,omitempty"`
	Version     uint64            `msgpack:"v"`
	Origin      string            `msgpack:"o"`
	Created     int64             `msgpack:"c,omitempty"`
	Access      int64             `msgpack:"a"`
	MaxInactive int64             `msgpack:"m,omitempty"`
	Set         map[string][]byte `msgpack:"s,omitempty"`
	Del         []string          `msgpack:"d,omitempty"`
	Full        bool              `msgpack:"f,omitempty"`
	// Sync: the writer counts this member's answer (sync replication). A
	// change that does not apply on exactly its base is refused, and the
	// writer settles it (a push of its copy to a member behind, its own
	// copy put in doubt when too few applied it); the receiver fetches
	// nothing of a copy that may never be acknowledged.
	Sync bool `msgpack:"y,omitempty"`
}

type expire struct {
	ID      string `msgpack:"i"`
	Version uint64 `msgpack:"v"`
	Reason  string `msgpack:"r"`
}

type touchEntry struct {
	ID     string `msgpack:"i"`
	Access int64  `msgpack:"a"`
}

type touch struct {
	By      string       `msgpack:"b"` // the node that served the requests
	Entries []touchEntry `msgpack:"e"`
}

// fetch asks for sessions by id; the answer is a sessions.
type fetch struct {
	IDs []string `msgpack:"i"`
}

// sessions are whole sessions: the answer to a fetch, a page of a pull, or
// copies an owner pushes to its backup.
type sessions struct {
	Sessions []snapshot `msgpack:"s"`
	Missing  []string   `msgpack:"m,omitempty"`
	Moved    []string   `msgpack:"mv,omitempty"` // ids renamed away: drop any copy under them
	Ended    []ended    `msgpack:"e,omitempty"`  // tombstones: sessions that ended
	Last     bool       `msgpack:"l"`
	// Next is where the next page of a pull starts (after this id).
	Next string `msgpack:"n,omitempty"`
	// Must: the sender counts these copies as applied, so one not
	// installed (this node holds another copy that beats it) is an error.
	Must bool `msgpack:"u,omitempty"`
	// Behind: the answering node is catching up with some member (see
	// view.behind), so its copies may be old: the asker checks them with
	// the other holders before serving them.
	Behind bool `msgpack:"b,omitempty"`
}

// answers reports whether in holds session id or its tombstone.
func (in sessions) answers(id string) bool {
	return slices.ContainsFunc(in.Sessions, func(s snapshot) bool { return s.ID == id }) ||
		slices.ContainsFunc(in.Ended, func(e ended) bool { return e.ID == id })
}

// stateRequest asks for one page of a pull: the sessions after After in id
// order, up to Limit bytes.
type stateRequest struct {
	// Route, if set, asks only for the sessions whose id names this route:
	// a node of backup mode, restarted, recovering what it owned.
	Route string `msgpack:"r,omitempty"`
	After string `msgpack:"a,omitempty"`
	Limit int    `msgpack:"l,omitempty"`
}

func marshal(v any) ([]byte, error) {
	if d, ok := v.(delta); ok {
		return d.appendMsgpack(nil), nil // the hot path: no Encoder, one allocation
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("manager: encode: %w", err)
	}
	return b, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
