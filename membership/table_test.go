package membership

import (
	"errors"
	"fmt"
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

func at(m Member, addr string) Member {
	m.Addr = netip.MustParseAddrPort(addr)
	return m
}

// step is one input to the table: a heartbeat, the outcome of a probe or a
// sweep, at an offset from t0.
type step struct {
	at     time.Duration
	hb     *Heartbeat // a heartbeat
	probed *outcome   // else the outcome of a probe; neither: a sweep
	want   []string   // events, as "type name"
	reason string     // substring of the reason of the first event; "" unchecked
	note   string     // substring of the note, "" for none
	probes []string   // members the step asks to probe, as "name#id"
	names  []string   // members after the step; nil: not checked
	who    []string   // members after the step as "name#id"; nil: not checked
}

// outcome is the answer to a probe of member of.
type outcome struct {
	of     Member
	answer Member
	err    error
}

func hb(h Heartbeat) *Heartbeat { return &h }

func tag(m Member) string { return fmt.Sprintf("%s#%d", m.Name, m.ID[0]) }

func TestTable(t *testing.T) {
	local := member("node1", 1, t0)
	n2 := member("node2", 2, t0)
	n2restart := member("node2", 22, t0.Add(time.Minute))
	n2older := member("node2", 23, t0.Add(-time.Minute))
	n3 := member("node3", 3, t0)
	foreign := member("node9", 9, t0)
	foreign.Domain = "other"
	impostor := member("node1", 7, t0) // this node's name, same start, larger id: started after
	// Name clashes where the processes have addresses of their own.
	n2a := at(n2, "198.51.100.10:4000")
	n2moved := at(n2restart, "198.51.100.20:4000")                              // a restart elsewhere (a container's new address)
	n2dup := at(member("node2", 24, t0.Add(time.Minute)), "198.51.100.11:4000") // a second live process, started later
	first := at(member("node1", 8, t0.Add(-time.Minute)), "198.51.100.12:4000") // this node's name, started before it
	tie := at(member("node1", 0, t0), "198.51.100.13:4000")                     // this node's name, same start, smaller id
	tie.ID[1] = 5
	refused := errors.New("connection refused")

	tests := []struct {
		name    string
		probe   bool          // a prober is configured: name clashes are probed
		reprobe time.Duration // silent members are probed before they fail
		steps   []step
	}{
		{name: "join once, repeats are quiet", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}, names: []string{"node2"}},
			{at: 500 * time.Millisecond, hb: hb(alive(n2, 2)), names: []string{"node2"}},
			{at: 600 * time.Millisecond, names: []string{"node2"}},
		}},
		{name: "own heartbeat is ignored", steps: []step{
			{at: 0, hb: hb(alive(local, 1)), names: []string{}},
		}},
		{name: "other domain is ignored", steps: []step{
			{at: 0, hb: hb(alive(foreign, 1)), names: []string{}},
		}},
		{name: "our name from a process started after this one: it is the duplicate", steps: []step{
			{at: 0, hb: hb(alive(impostor, 1)), note: "announces this node's name", names: []string{}},
			{at: 500 * time.Millisecond, hb: hb(alive(at(n2restart, "198.51.100.30:4000"), 1)), want: []string{"joined node2"}},
			{at: 600 * time.Millisecond, hb: hb(alive(at(member("node1", 9, t0.Add(time.Minute)), "198.51.100.31:4000"), 1)), note: "it is the duplicate", names: []string{"node2"}},
		}},
		{name: "our name from a live process started before this one: this one is the duplicate, told once", steps: []step{
			{at: 0, hb: hb(alive(first, 1)), want: []string{"conflict node1"}, reason: "198.51.100.12:4000", names: []string{}}, // the event says it: no note
			{at: 500 * time.Millisecond, hb: hb(alive(first, 2)), note: "this process is the duplicate", names: []string{}},
			{at: 600 * time.Millisecond, hb: hb(leaving(first, 3)), names: []string{}},
		}},
		{name: "our name, same start: the smaller id is first", steps: []step{
			{at: 0, hb: hb(alive(tie, 1)), want: []string{"conflict node1"}},
			{at: 0, hb: hb(alive(impostor, 1)), note: "it is the duplicate"}, // larger id than ours: not first
		}},
		{name: "silence past drop time fails the member", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 0, hb: hb(alive(n3, 1)), want: []string{"joined node3"}},
			{at: 1 * time.Second},
			{at: 1 * time.Second, hb: hb(alive(n3, 2))},
			{at: 2 * time.Second},
			{at: 2900 * time.Millisecond},
			{at: 3000 * time.Millisecond, names: []string{"node2", "node3"}}, // exactly drop time: still there
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}, names: []string{"node3"}},
		}},
		{name: "a failed member that speaks again is back as rejoined", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 1 * time.Second},
			{at: 2 * time.Second},
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}},
			{at: 3200 * time.Millisecond, hb: hb(alive(n2, 8)), want: []string{"rejoined node2"}, names: []string{"node2"}},
		}},
		{name: "a member failed long ago comes back as joined", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 3100 * time.Millisecond, want: []string{"failed node2"}},
			{at: 3100*time.Millisecond + failedMemory + time.Second, note: "stalled"}, // one sweep an hour later: forgotten
			{at: 3200*time.Millisecond + failedMemory + time.Second, hb: hb(alive(n2, 9)), want: []string{"joined node2"}, names: []string{"node2"}},
		}},
		{name: "leaving removes at once and late heartbeats stay ignored", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(leaving(n2, 2)), want: []string{"left node2"}, names: []string{}},
			{at: 110 * time.Millisecond, hb: hb(leaving(n2, 3)), names: []string{}},
			{at: 120 * time.Millisecond, hb: hb(alive(n2, 1)), names: []string{}},
		}},
		// A later run at the old run's very address: only one process can
		// listen there, so the old one is gone. (The old rule replaced the
		// old run on any later start; the late heartbeat of the old run was
		// noted as "both announce the name": it is now a process refused a
		// name a live member holds.)
		{name: "restart at the same address replaces the old run at once", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 200 * time.Millisecond, hb: hb(alive(n2restart, 1)), want: []string{"failed node2", "joined node2"}, reason: "restarted as 16000000 (its address", who: []string{"node2#22"}},
			{at: 300 * time.Millisecond, hb: hb(alive(n2, 2)), note: "of live member", who: []string{"node2#22"}},
		}},
		// With a prober, the same address is not proof: a forged heartbeat
		// can claim it. Whoever answers there decides.
		{name: "restart at the same address, with a prober: replaced when the new run answers there", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 200 * time.Millisecond, hb: hb(alive(n2restart, 1)), note: "of live member", probes: []string{"node2#2"}, who: []string{"node2#2"}},
			{at: 210 * time.Millisecond, probed: &outcome{of: n2, answer: n2restart}, want: []string{"failed node2", "joined node2"}, reason: "restarted as 16000000 (its address is answered by another run", who: []string{"node2#22"}},
		}},
		{name: "a later run forged at a member's address does not evict it while it answers", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 200 * time.Millisecond, hb: hb(alive(n2restart, 1)), note: "of live member", probes: []string{"node2#2"}, who: []string{"node2#2"}},
			{at: 210 * time.Millisecond, probed: &outcome{of: n2, answer: n2}, who: []string{"node2#2"}},
			{at: 500 * time.Millisecond, hb: hb(alive(n2, 2)), who: []string{"node2#2"}},
		}},
		{name: "restart elsewhere replaces the old run once its probe fails", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 200 * time.Millisecond, hb: hb(alive(n2moved, 1)), note: "of live member", probes: []string{"node2#2"}, who: []string{"node2#2"}},
			{at: 300 * time.Millisecond, hb: hb(alive(n2moved, 2)), note: "of live member", who: []string{"node2#2"}}, // one probe at a time
			{at: 1200 * time.Millisecond, probed: &outcome{of: n2a, err: refused}, want: []string{"failed node2", "joined node2"}, reason: "restarted as 16000000 (silent for 1.2s, probe failed: connection refused)", who: []string{"node2#22"}},
		}},
		{name: "restart elsewhere, no prober: the old run's silence lets the new one in", steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 1 * time.Second, hb: hb(alive(n2moved, 1)), note: "of live member", who: []string{"node2#2"}},
			{at: 2 * time.Second},
			{at: 3 * time.Second, hb: hb(alive(n2moved, 5)), note: "of live member", who: []string{"node2#2"}},
			{at: 3100 * time.Millisecond, want: []string{"failed node2", "joined node2"}, who: []string{"node2#22"}},
			{at: 3200 * time.Millisecond, hb: hb(alive(n2moved, 6)), who: []string{"node2#22"}},
		}},
		{name: "a holder already silent is replaced at once", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 3500 * time.Millisecond, hb: hb(alive(n2moved, 1)), want: []string{"failed node2", "joined node2"}, who: []string{"node2#22"}}, // before the sweep saw it
		}},
		{name: "a live duplicate is refused while the holder answers", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2dup, 1)), note: "of live member", probes: []string{"node2#2"}},
			{at: 150 * time.Millisecond, probed: &outcome{of: n2a, answer: n2a}, who: []string{"node2#2"}},
			{at: 500 * time.Millisecond, hb: hb(alive(n2a, 2))},
			{at: 600 * time.Millisecond, hb: hb(alive(n2dup, 2)), note: "of live member", who: []string{"node2#2"}}, // probed lately: not again
			{at: 1 * time.Second},
			{at: 2 * time.Second},
			{at: 3 * time.Second, hb: hb(alive(n2a, 7))},
			{at: 3200 * time.Millisecond, hb: hb(alive(n2dup, 7)), note: "of live member", probes: []string{"node2#2"}}, // a drop time later: again
			{at: 3300 * time.Millisecond, probed: &outcome{of: n2a, answer: n2a}, who: []string{"node2#2"}},
			{at: 3400 * time.Millisecond, who: []string{"node2#2"}},
		}},
		{name: "a holder answered by another process is replaced", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2dup, 1)), probes: []string{"node2#2"}, note: "of live member"},
			{at: 150 * time.Millisecond, probed: &outcome{of: n2a, answer: n3}, want: []string{"failed node2", "joined node2"}, who: []string{"node2#24"}},
		}},
		{name: "a suspect holder that answers its probes is kept", probe: true, reprobe: time.Second, steps: []step{
			// Its heartbeats are lost (multicast cut), the process answers.
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 1 * time.Second},
			{at: 2 * time.Second},
			{at: 3100 * time.Millisecond, probes: []string{"node2#2"}},
			{at: 3200 * time.Millisecond, probed: &outcome{of: n2a, answer: n2a}},
			{at: 3300 * time.Millisecond, hb: hb(alive(n2dup, 1)), note: "of live member", probes: []string{"node2#2"}},
			{at: 3400 * time.Millisecond, probed: &outcome{of: n2a, answer: n2a}, who: []string{"node2#2"}},
			{at: 3500 * time.Millisecond, who: []string{"node2#2"}},
		}},
		{name: "a suspect holder whose probe is under way is replaced", probe: true, reprobe: time.Second, steps: []step{
			// A paused process (SIGSTOP) restarted by its supervisor.
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 1 * time.Second},
			{at: 2 * time.Second},
			{at: 3100 * time.Millisecond, probes: []string{"node2#2"}},
			{at: 3200 * time.Millisecond, hb: hb(alive(n2moved, 1)), want: []string{"failed node2", "joined node2"}, reason: "restarted as 16000000 (silent for 3.2s)", who: []string{"node2#22"}},
			{at: 3300 * time.Millisecond, probed: &outcome{of: n2a, err: refused}, who: []string{"node2#22"}}, // too late: nothing
		}},
		{name: "the leave of the holder frees the name", probe: true, steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2dup, 1)), note: "of live member", probes: []string{"node2#2"}},
			{at: 150 * time.Millisecond, probed: &outcome{of: n2a, answer: n2a}},
			{at: 200 * time.Millisecond, hb: hb(leaving(n2a, 2)), want: []string{"left node2", "joined node2"}, who: []string{"node2#24"}},
			{at: 210 * time.Millisecond, hb: hb(leaving(n2a, 3)), who: []string{"node2#24"}},
		}},
		{name: "a process refused long ago does not take a freed name", steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2dup, 1)), note: "of live member"},
			{at: 3 * time.Second, hb: hb(alive(n2a, 7))},
			{at: 3500 * time.Millisecond, hb: hb(leaving(n2a, 8)), want: []string{"left node2"}, names: []string{}},
			{at: 3600 * time.Millisecond, hb: hb(alive(n2dup, 9)), want: []string{"joined node2"}, who: []string{"node2#24"}},
		}},
		{name: "of two processes refused a name, the one that started first takes it", steps: []step{
			{at: 0, hb: hb(alive(n2a, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2dup, 1)), note: "of live member"},
			{at: 200 * time.Millisecond, hb: hb(alive(n2moved, 1)), note: "of live member"}, // n2moved started before n2dup (ids decide: 22 < 24)
			{at: 300 * time.Millisecond, hb: hb(leaving(n2a, 2)), want: []string{"left node2", "joined node2"}, who: []string{"node2#22"}},
		}},
		// An older process announcing a taken name is refused, as before
		// (the note's words changed).
		{name: "an older process with a taken name is refused", steps: []step{
			{at: 0, hb: hb(alive(n2, 1)), want: []string{"joined node2"}},
			{at: 100 * time.Millisecond, hb: hb(alive(n2older, 1)), note: "of live member", names: []string{"node2"}, who: []string{"node2#2"}},
		}},
		{name: "a local stall does not count against members", steps: []step{
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
			tb := newTable(local, 3*time.Second, tc.reprobe)
			tb.probeClashes = tc.probe
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				var v verdict
				switch {
				case s.hb != nil:
					v = tb.observe(*s.hb, now)
				case s.probed != nil:
					v.events = tb.probed(s.probed.of.ID, s.probed.answer, s.probed.err, now)
				default:
					v.events, v.probes, v.note = tb.sweep(now)
				}
				var got []string
				for _, e := range v.events {
					got = append(got, e.Type.String()+" "+e.Member.Name)
				}
				if strings.Join(got, ",") != strings.Join(s.want, ",") {
					t.Errorf("step %d: events %q, want %q", i, got, s.want)
				}
				if s.reason != "" && (len(v.events) == 0 || !strings.Contains(v.events[0].Reason, s.reason)) {
					t.Errorf("step %d: events %+v, want the first one's reason to contain %q", i, v.events, s.reason)
				}
				if (s.note == "") != (v.note == "") || !strings.Contains(v.note, s.note) {
					t.Errorf("step %d: note %q, want one containing %q", i, v.note, s.note)
				}
				var probes []string
				for _, m := range v.probes {
					probes = append(probes, tag(m))
				}
				if strings.Join(probes, ",") != strings.Join(s.probes, ",") {
					t.Errorf("step %d: probes %q, want %q", i, probes, s.probes)
				}
				var names, who []string
				for _, st := range tb.snapshot() {
					names = append(names, st.Name)
					who = append(who, tag(st.Member))
				}
				if s.names != nil && strings.Join(names, ",") != strings.Join(s.names, ",") {
					t.Errorf("step %d: members %q, want %q", i, names, s.names)
				}
				if s.who != nil && strings.Join(who, ",") != strings.Join(s.who, ",") {
					t.Errorf("step %d: members %q, want %q", i, who, s.who)
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

// TestTableAnswersAndCounts: the table asks for an early heartbeat for a
// newcomer and for a later process that announces this node's name (so it
// learns at once that it is the duplicate), and counts every refused claim.
func TestTableAnswersAndCounts(t *testing.T) {
	local := member("node1", 1, t0)
	tb := newTable(local, 3*time.Second, 0)
	n2 := at(member("node2", 2, t0), "198.51.100.10:4000")
	dup := at(member("node2", 3, t0.Add(time.Second)), "198.51.100.11:4000")
	later := at(member("node1", 4, t0.Add(time.Second)), "198.51.100.12:4000")
	earlier := at(member("node1", 5, t0.Add(-time.Second)), "198.51.100.13:4000")
	for _, tc := range []struct {
		h      Heartbeat
		answer bool
	}{
		{alive(n2, 1), true},       // joined
		{alive(n2, 2), false},      // known
		{alive(dup, 1), false},     // refused
		{alive(later, 1), true},    // this node's name, started after it
		{alive(earlier, 1), false}, // this node's name, started before it: a Conflict
	} {
		if v := tb.observe(tc.h, t0); v.answer != tc.answer {
			t.Errorf("%v: answer %v, want %v", tc.h.Member, v.answer, tc.answer)
		}
	}
	if got := tb.counters.NameConflicts; got != 3 {
		t.Errorf("name conflicts %d, want 3", got)
	}
}

// A flood of heartbeats under new names admits a burst, then joinRate a
// second, never more than maxMembers; the rest are refused and counted.
func TestMemberTableBounds(t *testing.T) {
	tb := newTable(member("node1", 1, t0), 3*time.Second, 0)
	flood := func(from, n int, now time.Time) (admitted int) {
		for i := range n {
			var id ID
			id[0], id[1], id[2] = 2, byte((from+i)>>8), byte(from+i)
			m := Member{ID: id, Name: fmt.Sprintf("fake%d", from+i), Domain: "default", Addr: netip.MustParseAddrPort("198.51.100.99:4000"), Started: t0}
			if v := tb.observe(alive(m, 1), now); len(v.events) > 0 {
				admitted++
			} else if !v.limited {
				t.Fatalf("heartbeat %d neither admitted nor limited: %+v", from+i, v)
			}
		}
		return admitted
	}
	if got := flood(0, 1000, t0); got != joinBurst {
		t.Errorf("a flood at once admitted %d, want the burst %d", got, joinBurst)
	}
	if got := flood(1000, 1000, t0.Add(time.Second)); got != joinRate {
		t.Errorf("a second later admitted %d, want %d", got, joinRate)
	}
	for i := range 20 { // bursts 10 s apart, far more than the cap
		flood(2000+1000*i, 1000, t0.Add(time.Duration(10*(i+1))*time.Second))
	}
	if len(tb.members) != maxMembers {
		t.Errorf("after the bursts: %d members, want the cap %d", len(tb.members), maxMembers)
	}
	if tb.counters.MembersRefused == 0 {
		t.Error("refusals not counted")
	}
	// A member already in the table keeps being heard.
	for _, e := range tb.members {
		if v := tb.observe(alive(e.Member, e.seq+1), t0.Add(time.Minute)); v.limited {
			t.Fatal("a member's own heartbeat refused")
		}
		break
	}
}
