package membership

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/keyring"
)

func testRing(t testing.TB, b byte) *keyring.Keyring {
	t.Helper()
	r, err := keyring.New(bytes.Repeat([]byte{b}, keyring.Size))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSealedHeartbeat(t *testing.T) {
	r := testRing(t, 1)
	h := sampleHeartbeat()
	now := time.Now()
	p, err := SealHeartbeat(r, h, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) > MaxSealedHeartbeatLen {
		t.Fatalf("%d bytes", len(p))
	}
	for _, secret := range []string{h.Member.Name, h.Member.Domain, string(h.Member.ID[:])} {
		if bytes.Contains(p, []byte(secret)) {
			t.Fatalf("%q readable in a sealed heartbeat", secret)
		}
	}
	got, sent, err := OpenHeartbeat(r, p)
	if err != nil || got != h || !sent.Equal(now.Truncate(0).UTC()) && sent.UnixNano() != now.UnixNano() {
		t.Fatalf("open: %+v %v %v", got, sent, err)
	}
	clear, _ := h.MarshalBinary()

	tests := []struct {
		name string
		ring *keyring.Keyring
		pkt  []byte
		want error
	}{
		{"clear heartbeat to a keyed node", r, clear, ErrUnsealed},
		{"sealed heartbeat to a node without keys", nil, p, ErrSealed},
		{"other key", testRing(t, 2), p, keyring.ErrUnknownKey},
		{"flipped bit", r, flip(p, 30), keyring.ErrForged},
		{"header changed", r, flip(p, 4), ErrMalformed},
		{"command byte set", r, flip(p, 5), ErrMalformed},
		{"truncated", r, p[:len(p)-1], keyring.ErrForged},
		{"header only", r, p[:8], keyring.ErrForged},
		{"too long", r, append(bytes.Clone(p), make([]byte, MaxSealedHeartbeatLen)...), ErrLong},
		{"garbage", r, []byte("not a heartbeat at all, just bytes on the group"), ErrForeign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := OpenHeartbeat(tt.ring, tt.pkt); !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

func flip(p []byte, i int) []byte {
	c := bytes.Clone(p)
	c[i] ^= 1
	return c
}

func TestReplayGuard(t *testing.T) {
	g := newReplayGuard(30 * time.Second)
	now := t0
	a, b := member("node2", 2, t0), member("node3", 3, t0)
	steps := []struct {
		h    Heartbeat
		sent time.Time
		at   time.Time
		want error
	}{
		{alive(a, 1), now, now, nil},
		{alive(a, 1), now, now.Add(time.Second), ErrReplayed}, // the same packet again
		{alive(a, 2), now, now.Add(time.Second), nil},
		{alive(b, 1), now, now.Add(time.Second), nil}, // per member
		{alive(a, 2), now, now.Add(2 * time.Second), ErrReplayed},
		{leaving(a, 3), now.Add(-31 * time.Second), now.Add(2 * time.Second), ErrStale}, // recorded long ago
		{alive(a, 4), now.Add(33 * time.Second), now.Add(2 * time.Second), ErrStale},    // from the future
		{alive(a, 5), now.Add(20 * time.Second), now.Add(2 * time.Second), nil},         // within the skew
	}
	for i, s := range steps {
		if err := g.check(s.h, s.sent, s.at); !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Fatalf("step %d: err %v, want %v", i, err, s.want)
		}
	}

	// Bounded: past maxGuarded members the oldest are forgotten.
	for i := range maxGuarded + 10 {
		var id ID
		id[0], id[1], id[2] = 9, byte(i>>8), byte(i)
		m := member("m", 9, t0)
		m.ID = id
		if err := g.check(alive(m, 1), now, now.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if len(g.last) > maxGuarded {
		t.Fatalf("%d members remembered", len(g.last))
	}
}

// FuzzOpenHeartbeat: with or without a keyring, any packet opens or fails
// cleanly; nothing the fuzzer makes opens under the key. What opens must be
// the seed's sealed heartbeat: each fuzzing process seals its own copy of
// the seed (another nonce), so bytes are not compared.
func FuzzOpenHeartbeat(f *testing.F) {
	r := testRing(f, 1)
	sealedAt := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p, err := SealHeartbeat(r, sampleHeartbeat(), sealedAt)
	if err != nil {
		f.Fatal(err)
	}
	clear, _ := sampleHeartbeat().MarshalBinary()
	f.Add(p)
	f.Add(clear)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if _, _, err := OpenHeartbeat(nil, pkt); err == nil && isSealed(pkt) {
			t.Fatal("a node without keys accepted a sealed heartbeat")
		}
		if h, at, err := OpenHeartbeat(r, pkt); err == nil && (!at.Equal(sealedAt) || h != sampleHeartbeat()) {
			t.Fatalf("a packet the fuzzer made opened under the key: %+v sealed at %v", h, at)
		}
	})
}

// TestMulticastKeyed: keyed members see each other and leave cleanly;
// members without the key, or with another, are neither seen nor see, and
// every refused packet is counted by reason. Loopback only.
func TestMulticastKeyed(t *testing.T) {
	leakcheck.Check(t)
	base := testGroup(t)
	keyed := base
	keyed.Keyring = testRing(t, 1)
	other := base
	other.Keyring = testRing(t, 2)
	a := startNode(t, keyed, "a", "default", 4000)
	b := startNode(t, keyed, "b", "default", 4001)
	plain := startNode(t, base, "plain", "default", 4002)
	stranger := startNode(t, other, "stranger", "default", 4003)

	await(t, a, Joined, "b")
	await(t, b, Joined, "a")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) { // refusals raise no event
		st := a.Stats()
		if st.Refused["unauthenticated"] > 0 && st.Refused["unknown_key"] > 0 && plain.Stats().Refused["unauthenticated"] > 0 {
			t.Logf("a refused %v; plain refused %v", st.Refused, plain.Stats().Refused)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals not counted: a %v, plain %v", st.Refused, plain.Stats().Refused)
		}
	}
	for _, n := range []*node{a, b} {
		if m := n.Members(); len(m) != 1 {
			t.Fatalf("%s sees %v", n.Local().Name, m)
		}
	}
	for _, n := range []*node{plain, stranger} {
		if m := n.Members(); len(m) != 0 {
			t.Fatalf("%s sees %v", n.Local().Name, m)
		}
	}
	// A sealed leave is a Left at once.
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	await(t, a, Left, "b")
}
