package manager

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/clock"
	"github.com/flockhq/flock/internal/leakcheck"
)

// alone is one started manager with no members.
func alone(t *testing.T) *Manager {
	t.Helper()
	return newCluster(t, testConfig(), "A").ms[0]
}

func TestTypedGetters(t *testing.T) {
	leakcheck.Check(t)
	m := alone(t)
	when := time.Date(2026, 3, 1, 12, 30, 0, 5, time.FixedZone("X", 5*3600))
	s := create(t, m, map[string]any{
		"str": "hello", "int": 42, "int8": int8(-7), "uint32": uint32(7), "int64": int64(1) << 40,
		"float": 2.5, "float32": float32(0.5), "bool": true, "time": when, "bytes": []byte{1, 2},
		"strAsBytes": "ab", "big": uint64(1) << 63,
	})
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"GetString", s.GetString("str"), "hello"},
		{"GetString absent", s.GetString("nope"), ""},
		{"GetString of an int", s.GetString("int"), ""},
		{"GetInt", s.GetInt("int"), 42},
		{"GetInt of an int8", s.GetInt("int8"), -7},
		{"GetInt of a uint32", s.GetInt("uint32"), 7},
		{"GetInt of a string", s.GetInt("str"), 0},
		{"GetInt absent", s.GetInt("nope"), 0},
		{"GetInt64", s.GetInt64("int64"), int64(1) << 40},
		{"GetInt64 of an int", s.GetInt64("int"), int64(42)},
		{"GetFloat64", s.GetFloat64("float"), 2.5},
		{"GetFloat64 of a float32", s.GetFloat64("float32"), 0.5},
		{"GetFloat64 of an int", s.GetFloat64("int"), 42.0},
		{"GetFloat64 of a bool", s.GetFloat64("bool"), 0.0},
		{"GetBool", s.GetBool("bool"), true},
		{"GetBool of an int", s.GetBool("int"), false},
		{"GetBytes", string(s.GetBytes("bytes")), "\x01\x02"},
		{"GetBytes of a string", string(s.GetBytes("strAsBytes")), "ab"},
		{"GetBytes absent is nil", s.GetBytes("nope") == nil, true},
		{"GetTime same instant", s.GetTime("time").Equal(when), true},
		{"GetTime of a string", s.GetTime("str").IsZero(), true},
		{"Exists", s.Exists("str"), true},
		{"Exists absent", s.Exists("nope"), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
}

func TestPopReplicatesTheDelete(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, map[string]any{"msg": "saved", "n": 3, "t": true, "f": 1.5, "b": []byte("x"), "i64": int64(9)})
	for _, tc := range []struct {
		key  string
		pop  func(*Session) any
		want any
	}{
		{"msg", func(s *Session) any { return s.PopString("msg") }, "saved"},
		{"n", func(s *Session) any { return s.PopInt("n") }, 3},
		{"t", func(s *Session) any { return s.PopBool("t") }, true},
		{"f", func(s *Session) any { return s.PopFloat64("f") }, 1.5},
		{"b", func(s *Session) any { return string(s.PopBytes("b")) }, "x"},
		{"i64", func(s *Session) any { return s.PopInt64("i64") }, int64(9)},
	} {
		sb := load(t, b, s.ID())
		if got := tc.pop(sb); got != tc.want {
			t.Errorf("Pop %s = %#v, want %#v", tc.key, got, tc.want)
		}
		if got := tc.pop(sb); got == tc.want {
			t.Errorf("second Pop %s = %#v, want the zero value", tc.key, got)
		}
		commit(t, b, sb)
		if load(t, a, s.ID()).Exists(tc.key) {
			t.Errorf("%s popped on B, still on A", tc.key)
		}
	}
}

func TestPopAfterTheResponseCommittedKeepsTheValue(t *testing.T) {
	leakcheck.Check(t)
	m := alone(t)
	s := create(t, m, map[string]any{"msg": "hello"})
	s.RequestStarted()
	s.ResponseCommitted()
	defer s.RequestEnded()
	if got := s.PopString("msg"); got != "" {
		t.Errorf("PopString after commit = %q, want \"\" (it could not be deleted)", got)
	}
	if _, _, err := Pop[string](s, "msg"); !errors.Is(err, ErrCommitted) {
		t.Errorf("Pop after commit: %v, want ErrCommitted", err)
	}
	if !s.Exists("msg") {
		t.Error("the value was lost")
	}
	if f := s.Flashes(); f != nil {
		t.Errorf("Flashes after commit = %v", f)
	}
}

func TestPopOfAnotherTypeDeletes(t *testing.T) {
	m := alone(t)
	s := create(t, m, map[string]any{"n": 1})
	if v, ok, err := Pop[string](s, "n"); v != "" || !ok || err == nil {
		t.Errorf("Pop[string] of an int = %q, %v, %v; want \"\", true, an error", v, ok, err)
	}
	if s.Exists("n") {
		t.Error("the key stayed")
	}
}

func TestClearReplicatesAndKeepsRememberMe(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, map[string]any{"x": 1, "y": "two"})
	if err := s.RememberMe(true); err != nil {
		t.Fatal(err)
	}
	if err := s.AddFlash("hi"); err != nil {
		t.Fatal(err)
	}
	commit(t, a, s)
	if err := s.Clear(); err != nil {
		t.Fatal(err)
	}
	commit(t, a, s)
	sb := load(t, b, s.ID())
	if k := sb.Keys(); len(k) != 0 {
		t.Errorf("keys on B after Clear: %v", k)
	}
	if f := sb.Flashes(); f != nil {
		t.Errorf("flashes on B after Clear: %v", f)
	}
	if !sb.Persistent(false) {
		t.Error("Clear dropped the remember-me choice")
	}
	s.Invalidate()
	if err := s.Clear(); !errors.Is(err, ErrInvalidated) {
		t.Errorf("Clear after Invalidate: %v", err)
	}
}

func TestFlashesTravel(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, nil)
	for _, msg := range []string{"saved", "sent"} {
		if err := s.AddFlash(msg); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, a, s)
	if k := s.Keys(); len(k) != 0 {
		t.Errorf("Keys lists flock's own attributes: %q", k)
	}
	sb := load(t, b, s.ID())
	if got := sb.Flashes(); !slices.Equal(got, []string{"saved", "sent"}) {
		t.Errorf("Flashes on B = %q", got)
	}
	commit(t, b, sb)
	if got := load(t, a, s.ID()).Flashes(); got != nil {
		t.Errorf("Flashes on A after B showed them = %q", got)
	}
	for i := range maxFlashes + 3 {
		if err := s.AddFlash(string(rune('a' + i%26))); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Flashes(); len(got) != maxFlashes || got[len(got)-1] != string(rune('a'+(maxFlashes+2)%26)) {
		t.Errorf("%d flashes kept, last %q; want the newest %d", len(got), got[len(got)-1], maxFlashes)
	}
}

func TestReservedKeys(t *testing.T) {
	m := alone(t)
	s := create(t, m, nil)
	for _, err := range []error{s.Set(keyFlash, []string{"x"}), s.Delete(keyRemember), s.Set("\x00flock.anything", 1)} {
		if !errors.Is(err, ErrReservedKey) {
			t.Errorf("got %v, want ErrReservedKey", err)
		}
	}
	if err := s.Set("\x00other", 1); err != nil {
		t.Errorf("a key outside the prefix: %v", err)
	}
}

func TestRememberMe(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, nil)
	for _, def := range []bool{false, true} {
		if got := s.Persistent(def); got != def {
			t.Errorf("Persistent(%v) with no choice = %v", def, got)
		}
	}
	for _, on := range []bool{true, false} {
		if err := s.RememberMe(on); err != nil {
			t.Fatal(err)
		}
		commit(t, a, s)
		if got := load(t, b, s.ID()).Persistent(!on); got != on {
			t.Errorf("after RememberMe(%v), B says Persistent = %v", on, got)
		}
	}
}

// TestLifetime: a session in use every second still ends at its lifetime,
// on both nodes at the same sweep (its creation time is replicated), and
// ExpiresAt says when.
func TestLifetime(t *testing.T) {
	leakcheck.Check(t)
	clk := clock.NewFake(epoch)
	cfg := clockConfig(clk)
	cfg.Lifetime = 10 * time.Second
	c := newCluster(t, cfg, "A", "B")
	a, b := c.ms[0], c.ms[1]
	s := create(t, a, map[string]any{"x": 1})
	id := s.ID()
	if got, want := s.ExpiresAt(), clk.Now().Add(10*time.Second); !got.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v (creation + lifetime)", got, want)
	}
	ended := map[int]int{} // node -> second the session was gone
	c.seconds(12, func(sec int) {
		for i, m := range []*Manager{a, b} {
			m.mu.RLock()
			_, held := m.sessions[id]
			m.mu.RUnlock()
			if !held {
				if _, seen := ended[i]; !seen {
					ended[i] = sec
				}
				continue
			}
			if sec <= 10 {
				load(t, m, id) // busy: the idle timeout never comes near
			}
		}
	})
	for i := range 2 {
		if ended[i] != 11 {
			t.Errorf("node %d: session gone at second %d, want 11 (the first sweep past the lifetime)", i, ended[i])
		}
	}
	for _, r := range c.recs {
		if evs := r.find("destroyed", id); len(evs) != 1 || evs[0].reason != "expired" {
			t.Errorf("Destroyed %+v, want once, expired", evs)
		}
	}
}

func TestLifetimeNegativeRefused(t *testing.T) {
	cfg := testConfig()
	cfg.Lifetime = -time.Second
	if _, err := New(newFakeNet(t).addNode("A"), cfg); err == nil {
		t.Error("New accepted a negative lifetime")
	}
}

func TestCreateID(t *testing.T) {
	leakcheck.Check(t)
	c := newCluster(t, testConfig(), "A", "B")
	a, b := c.ms[0], c.ms[1]
	const id = "AAAAAAAAAAAAAAAAAAAAAAAA.scs"
	s, err := a.CreateID(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	set(t, s, "k", "v")
	commit(t, a, s)
	if got := load(t, b, id).GetString("k"); got != "v" {
		t.Errorf("B reads %q", got)
	}
	if _, err := b.CreateID(bg, id); !errors.Is(err, ErrSessionExists) {
		t.Errorf("CreateID of a held id: %v", err)
	}
	s.Invalidate()
	if _, err := a.CreateID(bg, id); !errors.Is(err, ErrSessionExists) {
		t.Errorf("CreateID of an ended id: %v", err)
	}
	if _, err := a.CreateID(bg, "not an id"); err == nil {
		t.Error("CreateID accepted a malformed id")
	}
	n := 0
	a.Range(func(*Session) bool { n++; return true })
	if n != 0 {
		t.Errorf("Range saw %d sessions after Invalidate", n)
	}
}
