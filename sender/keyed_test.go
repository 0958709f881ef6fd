package sender_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, keyring.Size) }

func newRing(t *testing.T, keys ...byte) *keyring.Keyring {
	t.Helper()
	var ks [][]byte
	for _, k := range keys {
		ks = append(ks, testKey(k))
	}
	r, err := keyring.New(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKeyedRotationUnderLoad: a keyed sender and receiver rotate from key
// 1 to key 2 in the three steps (add, make first, remove the old) while
// writers send sync messages: every message arrives exactly once, in
// order, and no send fails.
func TestKeyedRotationUnderLoad(t *testing.T) {
	leakcheck.Check(t)
	const writers, perWriter = 4, 300
	sring, rring := newRing(t, 1), newRing(t, 1)
	c := &checker{next: map[uint32]uint32{}}
	a := startReceiver(t, "a", c.handle, func(cfg *receiver.Config) { cfg.Keyring = rring })
	s := newSender(t, func(cfg *sender.Config) { cfg.Keyring = sring })

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	sent := make(chan struct{}, writers*perWriter)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seed [32]byte
			seed[0] = byte(w)
			rng := rand.NewChaCha8(seed)
			for i := range perWriter {
				p := payload(rng, w, i)
				p = p[:min(len(p), 64+i%512)] // small: many frames, many seals
				copyPayloadSum(p)
				if err := s.Send(context.Background(), []netip.AddrPort{a.addr}, typeData, p, sender.Sync); err != nil {
					errs <- err
					return
				}
				sent <- struct{}{}
			}
		}()
	}
	// The three steps, each taken by the receiver first and the sender
	// after, as an operator going node by node would, under traffic.
	steps := [][]byte{{1, 2}, {2, 1}, {2}}
	for i, step := range steps {
		for range writers * perWriter / 4 {
			<-sent
		}
		var keys [][]byte
		for _, k := range step {
			keys = append(keys, testKey(k))
		}
		if err := rring.Set(keys...); err != nil {
			t.Fatal(err)
		}
		if err := sring.Set(keys...); err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d: keys %v", i+1, step)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got != writers*perWriter || len(c.errs) > 0 {
		t.Fatalf("%d messages, want %d; errors: %v", c.got, writers*perWriter, c.errs[:min(len(c.errs), 5)])
	}
	st := s.Stats()
	t.Logf("%d messages through a three-step rotation; reconnects %d, retried %d, refused by the receiver %v",
		c.got, st[0].Reconnects, st[0].Retried, a.r.Stats().Refused)
	if m, err := s.Ping(context.Background(), a.addr); err != nil || m.Name != "a" {
		t.Fatalf("ping after the rotation: %v %v", m.Name, err)
	}
}

// copyPayloadSum fixes the checksum of a payload cut short.
func copyPayloadSum(p []byte) {
	sum := sha256Sum(p[40:])
	copy(p[8:40], sum[:])
}

// TestKeyMismatch: a sender and a receiver that do not hold a common key
// never exchange a message, and the receiver counts why.
func TestKeyMismatch(t *testing.T) {
	tests := []struct {
		name       string
		send, recv []byte // keys; nil: none
		refusedAs  string // the receiver's count
	}{
		{"unkeyed caller, keyed receiver", nil, []byte{1}, "unauthenticated"},
		{"keyed caller, unkeyed receiver", []byte{1}, nil, "unauthenticated"},
		{"different keys", []byte{1}, []byte{2}, "unknown_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			got := make(chan []byte, 1)
			a := startReceiver(t, "a", func(_ context.Context, m receiver.Message) ([]byte, error) {
				got <- m.Payload
				return nil, nil
			}, func(cfg *receiver.Config) {
				if tt.recv != nil {
					cfg.Keyring = newRing(t, tt.recv...)
				}
			})
			s := newSender(t, func(cfg *sender.Config) {
				cfg.Timeout = 500 * time.Millisecond
				if tt.send != nil {
					cfg.Keyring = newRing(t, tt.send...)
				}
			})
			err := s.Send(context.Background(), []netip.AddrPort{a.addr}, typeData, []byte("secret"), sender.Sync)
			if err == nil {
				t.Fatal("the message went through")
			}
			if _, perr := s.Ping(context.Background(), a.addr); perr == nil {
				t.Fatal("the ping went through")
			}
			select {
			case p := <-got:
				t.Fatalf("the handler got %q", p)
			default:
			}
			st := a.r.Stats()
			if st.Refused[tt.refusedAs] == 0 {
				t.Fatalf("refused %v, want some %q; send error: %v", st.Refused, tt.refusedAs, err)
			}
			t.Logf("send: %v; receiver refused %v", err, st.Refused)
		})
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
