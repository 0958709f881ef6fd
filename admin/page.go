package admin

import (
	"html/template"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
)

// EventLog keeps the last membership events for the status page.
type EventLog struct {
	mu     sync.Mutex
	events []membership.Event
	limit  int
}

// NewEventLog keeps at most limit events.
func NewEventLog(limit int) *EventLog { return &EventLog{limit: max(limit, 1)} }

// Add records e, forgetting the oldest past the limit.
func (l *EventLog) Add(e membership.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if over := len(l.events) - l.limit; over > 0 {
		l.events = append(l.events[:0], l.events[over:]...)
	}
}

// Recent returns the events, newest first.
func (l *EventLog) Recent() []membership.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]membership.Event, len(l.events))
	for i, e := range l.events {
		out[len(out)-1-i] = e
	}
	return out
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago":   func(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() },
	"short": func(s string) string { return s[:min(len(s), 8)] },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flock: {{.Status.Local.Name}}</title>
<meta http-equiv="refresh" content="5">
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}.suspect,.failed{color:#b00}</style>
</head><body>
<h1>{{.Status.Local.Name}} <small>{{.Status.Local.Address}}, domain {{.Status.Local.Domain}}, {{.Status.Membership}} membership</small></h1>
<p>{{.Status.Sessions}} sessions; state transfer {{.Status.Manager.TransferState}}.</p>
<h2>Members</h2>
<table><tr><th>name</th><th>state</th><th>address</th><th>last seen</th><th>id</th></tr>
{{range .Status.Members}}<tr><td>{{.Name}}</td><td class="{{.State}}">{{.State}}</td><td>{{.Address}}</td><td>{{ago .LastSeen}} ago</td><td>{{short .ID}}</td></tr>
{{else}}<tr><td colspan="5">no other members</td></tr>{{end}}</table>
<h2>Sessions</h2>
<table><tr><th>ref</th><th>version</th><th>size</th><th>last access</th><th>served by</th></tr>
{{range .Sessions}}<tr><td>{{.Ref}}</td><td>{{.Version}}</td><td>{{.Size}} B</td><td>{{ago .LastAccess}} ago</td><td>{{.AccessedBy}}</td></tr>
{{else}}<tr><td colspan="5">none</td></tr>{{end}}</table>
{{if .More}}<p>and {{.More}} more.</p>{{end}}
<h2>Last events</h2>
<table><tr><th>when</th><th>event</th><th>member</th><th>why</th></tr>
{{range .Events}}<tr><td>{{ago .Time}} ago</td><td class="{{.Type}}">{{.Type}}</td><td>{{.Member.Name}} ({{.Member.Addr}})</td><td>{{.Reason}}</td></tr>
{{else}}<tr><td colspan="4">none yet</td></tr>{{end}}</table>
</body></html>
`))

// Page serves the HTML status page: members, sessions (the 100 most
// recently used; never their values) and the last events. It is rendered
// on the server; the browser runs no script.
func Page(n Node, membershipType string, events *EventLog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := Snapshot(n)
		st.Membership = membershipType
		sessions := n.Sessions()
		slices.SortFunc(sessions, func(a, b manager.Info) int { return b.LastAccess.Compare(a.LastAccess) })
		more := 0
		if len(sessions) > 100 {
			more, sessions = len(sessions)-100, sessions[:100]
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		page.Execute(w, map[string]any{"Status": st, "Sessions": sessions, "More": more, "Events": events.Recent()})
	})
}
