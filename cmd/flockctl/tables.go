package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/manager"
)

// The renderers take the current time so that tests can fix the clock.
// Ages of times a node reports are computed with this machine's clock: a
// skew between the two shows in them.

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes tab-separated cells as one table line.
func row(tw io.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func renderStatus(w io.Writer, s admin.Status, now time.Time) {
	l := s.Local
	tw := newTable(w)
	row(tw, "Node:", cell(l.Name))
	row(tw, "ID:", cell(l.ID))
	row(tw, "Address:", cell(l.Address))
	row(tw, "Domain:", cell(l.Domain))
	row(tw, "Started:", age(now, l.Started))
	row(tw, "Membership:", cell(s.Membership))
	row(tw, "Sessions:", fmt.Sprint(s.Sessions))
	row(tw, "State transfer:", transfer(s.Manager))
	h := s.Heartbeats
	row(tw, "Heartbeats:", fmt.Sprintf("%d sent, %d received, %d lost, %d rejected", h.Sent, h.Received, h.Lost, h.Rejected))
	tw.Flush()

	fmt.Fprintf(w, "\nMembers (%d):\n", len(s.Members))
	renderMembers(w, s.Members, now)
	fmt.Fprintf(w, "\nPeers (%d):\n", len(s.Transport.Peers))
	renderPeers(w, s.Transport.Peers)
}

func transfer(m manager.Stats) string {
	state := cell(m.TransferState)
	if m.TransferState == "done" {
		state += fmt.Sprintf(" (%s in %v)", plural(int(m.Transferred), "session"), m.TransferDuration.Round(time.Millisecond))
	}
	return state
}

func renderMembers(w io.Writer, ms []admin.Member, now time.Time) {
	if len(ms) == 0 {
		fmt.Fprintln(w, "no other members")
		return
	}
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b admin.Member) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	tw := newTable(w)
	row(tw, "NAME", "STATE", "ADDRESS", "LAST-SEEN", "ID")
	for _, m := range ms {
		row(tw, cell(m.Name), m.State.String(), cell(m.Address), age(now, m.LastSeen), shortID(m.ID))
	}
	tw.Flush()
}

func renderPeers(w io.Writer, ps []admin.Peer) {
	if len(ps) == 0 {
		fmt.Fprintln(w, "no peers")
		return
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b admin.Peer) int { return cmp.Compare(a.Address, b.Address) })
	tw := newTable(w)
	row(tw, "ADDRESS", "CONNECTED", "QUEUED", "INFLIGHT", "BYTES", "SENT", "FAILED", "RETRIED")
	for _, p := range ps {
		row(tw, cell(p.Address), yesNo(p.Connected), fmt.Sprint(p.Queued), fmt.Sprint(p.Inflight),
			bytesize(p.Bytes), fmt.Sprint(p.Sent), fmt.Sprint(p.Failed), fmt.Sprint(p.Retried))
	}
	tw.Flush()
}

// renderSessions lists sessions most recently accessed first.
func renderSessions(w io.Writer, ss []manager.Info, now time.Time) {
	ss = slices.Clone(ss)
	slices.SortFunc(ss, func(a, b manager.Info) int {
		return cmp.Or(b.LastAccess.Compare(a.LastAccess), cmp.Compare(a.Ref, b.Ref))
	})
	if len(ss) > 0 {
		tw := newTable(w)
		row(tw, "REF", "VERSION", "SIZE", "KEYS", "LAST-ACCESS", "ACCESSED-BY")
		for _, s := range ss {
			row(tw, cell(s.Ref), fmt.Sprint(s.Version), bytesize(int64(s.Size)), fmt.Sprint(s.Keys),
				age(now, s.LastAccess), cell(s.AccessedBy))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, plural(len(ss), "session"))
}

// age is how long ago t was: "0.3s ago", "12s ago", "5m03s ago".
func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return since(now.Sub(t)) + " ago"
}

// since formats a duration for a table: tenths of a second while short,
// then whole seconds, minutes, hours, days. A negative duration (a clock
// skew) shows as zero.
func since(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// shortID is the first 8 hex digits of a member id.
func shortID(id string) string {
	return truncateRunes(cell(id), 8)
}

// truncate shortens s to n runes plus "…".
func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func truncateRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

// cell makes text from the network safe for a table: no tabs, newlines or
// terminal escapes; "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r != ' ' && (unicode.IsControl(r) || !unicode.IsPrint(r)) {
			return '?'
		}
		return r
	}, s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// bytesize formats n bytes: "512 B", "1.5 KiB", "3.2 MiB".
func bytesize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	const units = "KMGTPE"
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}

// plural is "1 session", "3 sessions".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
