package membership

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func member(name string, idByte byte, started time.Time) Member {
	var id ID
	id[0] = idByte
	return Member{ID: id, Name: name, Domain: "default", Addr: netip.MustParseAddrPort("198.51.100.10:4000"), Started: started}
}

func alive(m Member, seq uint64) Heartbeat {
	return Heartbeat{Command: CommandAlive, Seq: seq, Member: m}
}
func leaving(m Member, seq uint64) Heartbeat {
	return Heartbeat{Command: CommandLeaving, Seq: seq, Member: m}
}

// step is one input to the table: a heartbeat or a sweep, at an offset from t0.
type step struct {
	at    time.Duration
	hb    *Heartbeat // nil: sweep
	want  []string   // events, as "type name"
	note  string     // substring of the note, "" for none
	names []string   // members after the step; nil: not checked
}

func hb(h Heartbeat) *Heartbeat { return &h }

func TestTable(t *testing.T) {
	local := member("node1", 1, t0)
	n2 := member("node2", 2, t0)
	n2restart := member("node2", 22, t0.Add(time.Minute))
	n2older := member("node2", 23, t0.Add(-time.Minute))
	n3 := member("node3", 3, t0)
	foreign := member("node9", 9, t0)
	foreign.Domain = "other"
	impostor := member("node1", 7, t0)

	tests := []struct {
		name  string
		steps []step
	}{
		{"join once, repeats are quiet", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}, names: []string{"node2"}},
			{at: 500 * time.Millisecond, hb: hb(alive(n2, 2)), names: []string{"node2"}},
			{at: 600 * time.Millisecond, names: []string{"node2"}},
		}},
		{"own heartbeat is ignored", []step{
			{at: 0, hb: hb(alive(local, 1)), names: []string{}},
		}},
		{"other domain is ignored", []step{
			{at: 0, hb: hb(alive(foreign, 1)), names: []string{}},
		}},
		{"our name from another process is a conflict", []step{
			{at: 0, hb: hb(alive(impostor, 1)), note: "announces this node's name", names: []string{}},
		}},
		{"silence past drop time fails the member", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 0, hb: hb(alive(n3, 1)), want: []string{"joined node3"}},
			{at: 1 * time.Second},
			{at: 1 * time.Second, hb: hb(alive(n3, 2))},
			{at: 2 * time.Second},
			{at: 2900 * time.Millisecond},
			{at: 3000 * time.Millisecond, names: []string{"node2", "node3"}}, // exactly drop time: still there
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}, names: []string{"node3"}},
		}},
		{"a failed member that speaks again is back as rejoined", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 1 * time.Second},
			{at: 2 * time.Second},
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}},
			{at: 3200 * time.Millisecond, hb: hb(alive(n2, 8)), want: []string{"rejoined node2"}, names: []string{"node2"}},
		}},
		{"a member failed long ago comes back as joined", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}},
			{at: 3100*time.Millisecond + failedMemory + time.Second, note: "stalled"}, // one sweep an hour later: forgotten
			{at: 3200*time.Millisecond + failedMemory + time.Second, hb: hb(alive(n2, 9)), want: []string{"joined node2"}, names: []string{"node2"}},
		}},
		{"leaving removes at once and late heartbeats stay ignored", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(leaving(n2, 2)), want: []string{"left node2"}, names: []string{}},
			{at: 110 * time.Millisecond, hb: hb(leaving(n2, 3)), names: []string{}},
			{at: 120 * time.Millisecond, hb: hb(alive(n2, 1)), names: []string{}},
		}},
		{"restart under the same name replaces the old run", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 200 * time.Millisecond, hb: hb(alive(n2restart, 1)), want: []string{"failed node2", "joined node2"}, names: []string{"node2"}},
			{at: 300 * time.Millisecond, hb: hb(alive(n2, 2)), note: "both announce the name", names: []string{"node2"}},
		}},
		{"an older process with a taken name is refused", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2older, 1)), note: "both announce the name", names: []string{"node2"}},
		}},
		{"a local stall does not count against members", []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 0, hb: hb(alive(n3, 1)), want: []string{"joined node3"}},
			{at: 1 * time.Second},
			{at: 11 * time.Second, note: "stalled", names: []string{"node2", "node3"}},
			{at: 11100 * time.Millisecond, hb: hb(alive(n2, 25)), names: []string{"node2", "node3"}},
			{at: 12 * time.Second},
			{at: 13 * time.Second},
			// node3 stays silent: 1s before the stall and 2.1s after it.
			{at: 13100 * time.Millisecond, want: []string{"failed node3"}, names: []string{"node2"}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(local, 3*time.Second, 0)
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				var evs []Event
				var note string
				if s.hb != nil {
					evs, note = tb.observe(*s.hb, now)
				} else {
					evs, _, note = tb.sweep(now)
				}
				var got []string
				for _, e := range evs {
					got = append(got, e.Type.String()+" "+e.Member.Name)
				}
				if strings.Join(got, ",") != strings.Join(s.want, ",") {
					t.Errorf("step %d: events %q, want %q", i, got, s.want)
				}
				if (s.note == "") != (note == "") || !strings.Contains(note, s.note) {
					t.Errorf("step %d: note %q, want one containing %q", i, note, s.note)
				}
				if s.names != nil {
					var names []string
					for _, st := range tb.snapshot() {
						names = append(names, st.Name)
					}
					if strings.Join(names, ",") != strings.Join(s.names, ",") {
						t.Errorf("step %d: members %q, want %q", i, names, s.names)
					}
				}
			}
		})
	}
}

func TestTableCountsLostHeartbeats(t *testing.T) {
	tb := newTable(member("node1", 1, t0), 3*time.Second, 0)
	n2 := member("node2", 2, t0)
	for _, seq := range []uint64{1, 2, 5, 4, 6, 10} {
		tb.observe(alive(n2, seq), t0)
	}
	if got := tb.counters.HeartbeatsLost; got != 5 { // 3,4 then 7,8,9; the late 4 does not un-lose it
		t.Errorf("lost = %d, want 5", got)
	}
}

func TestTableProbesBeforeFailing(t *testing.T) {
	local := member("node1", 1, t0)
	n2 := member("node2", 2, t0)
	restarted := member("node2", 22, t0.Add(time.Minute))
	errRefused := errors.New("connection refused")
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	tests := []struct {
		name   string
		answer Member
		err    error
		want   string // event after the probe, "" for none
		state  State
	}{
		{"answered by the same process: stays, suspect", n2, nil, "", Suspect},
		{"no answer: failed", Member{}, errRefused, "failed node2", 0},
		{"answered by a restarted process: the old one failed", restarted, nil, "failed node2", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(local, 3*time.Second, time.Second)
			tb.observe(alive(n2, 1), at(0))
			evs, suspects, _ := tb.sweep(at(3100 * time.Millisecond))
			if len(evs) != 0 || len(suspects) != 1 || suspects[0].ID != n2.ID {
				t.Fatalf("sweep: events %v, suspects %v; want node2 suspected, not failed", evs, suspects)
			}
			// A probe under way is not started twice.
			if _, again, _ := tb.sweep(at(3200 * time.Millisecond)); len(again) != 0 {
				t.Fatalf("probed twice: %v", again)
			}
			if _, ok := tb.suspect(n2.ID, at(3200*time.Millisecond)); ok {
				t.Fatal("suspect started a second probe")
			}
			evs = tb.probed(n2.ID, tc.answer, tc.err, at(3300*time.Millisecond))
			var got string
			for _, e := range evs {
				got = e.Type.String() + " " + e.Member.Name
			}
			if got != tc.want {
				t.Fatalf("after probe: %q, want %q", got, tc.want)
			}
			snap := tb.snapshot()
			if tc.state == 0 {
				if len(snap) != 0 {
					t.Fatalf("members %v, want none", snap)
				}
				return
			}
			if len(snap) != 1 || snap[0].State != tc.state {
				t.Fatalf("members %v, want node2 %v", snap, tc.state)
			}
			// Answered: not probed again until reprobe has passed ...
			if _, s, _ := tb.sweep(at(3800 * time.Millisecond)); len(s) != 0 {
				t.Fatalf("re-probed after 500ms: %v", s)
			}
			if _, s, _ := tb.sweep(at(4400 * time.Millisecond)); len(s) != 1 {
				t.Fatalf("not re-probed after reprobe: %v", s)
			}
			tb.probed(n2.ID, n2, nil, at(4500*time.Millisecond))
			// ... and a heartbeat makes it alive again.
			tb.observe(alive(n2, 9), at(4600*time.Millisecond))
			if s := tb.snapshot(); s[0].State != Alive {
				t.Fatalf("state %v after a heartbeat, want alive", s[0].State)
			}
		})
	}
}
