package sender_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

const typeData = sender.FirstType

func peerInfo(name string, addr netip.AddrPort) membership.Member {
	var id membership.ID
	copy(id[:], name+"-0123456789abcdef")
	return membership.Member{ID: id, Name: name, Domain: "test", Addr: addr, Started: time.Now()}
}

// node is a receiver on loopback with a handler the test supplies.
type node struct {
	r    *receiver.TCP
	addr netip.AddrPort
}

func startReceiver(t *testing.T, name string, h receiver.Handler, edit ...func(*receiver.Config)) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := receiver.DefaultConfig()
	cfg.Local = peerInfo(name, addr)
	for _, e := range edit {
		e(&cfg)
	}
	r := receiver.New(ln, cfg)
	if h != nil {
		r.Handle(typeData, h)
	}
	r.Start()
	t.Cleanup(func() { r.Stop(context.Background()) })
	return &node{r: r, addr: addr}
}

func newSender(t *testing.T, edit ...func(*sender.Config)) *sender.TCP {
	t.Helper()
	cfg := sender.DefaultConfig()
	cfg.Local = peerInfo("sender", netip.MustParseAddrPort("127.0.0.1:1"))
	for _, e := range edit {
		e(&cfg)
	}
	s := sender.New(cfg)
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// payload is random bytes with a header: writer, its sequence, a checksum.
func payload(rng *rand.ChaCha8, writer, seq int) []byte {
	p := make([]byte, 48+rand.New(rng).IntN(64<<10))
	binary.BigEndian.PutUint32(p[0:], uint32(writer))
	binary.BigEndian.PutUint32(p[4:], uint32(seq))
	rng.Read(p[40:])
	sum := sha256.Sum256(p[40:])
	copy(p[8:40], sum[:])
	return p
}

type checker struct {
	mu   sync.Mutex
	next map[uint32]uint32 // per writer: the sequence expected next
	got  int
	errs []string
}

func (c *checker) handle(_ context.Context, m receiver.Message) ([]byte, error) {
	p := m.Payload
	sum := sha256.Sum256(p[40:])
	writer, seq := binary.BigEndian.Uint32(p[0:]), binary.BigEndian.Uint32(p[4:])
	c.mu.Lock()
	defer c.mu.Unlock()
	if string(sum[:]) != string(p[8:40]) {
		c.errs = append(c.errs, fmt.Sprintf("writer %d seq %d: checksum mismatch", writer, seq))
	}
	if want := c.next[writer]; seq != want {
		c.errs = append(c.errs, fmt.Sprintf("writer %d: got seq %d, want %d", writer, seq, want))
	}
	c.next[writer] = seq + 1
	c.got++
	return nil, nil
}

// TestDataIntegrity is Tomcat's TestDataIntegrity, stricter: 20 goroutines
// send 500 checksummed messages each, of random size up to 64 KiB, to two
// peers; every message arrives exactly once and each goroutine's messages
// in the order it sent them.
func TestDataIntegrity(t *testing.T) {
	const writers, perWriter = 20, 500
	for _, mode := range []sender.Mode{sender.Async, sender.Ack, sender.Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			leakcheck.Check(t)
			checks := []*checker{{next: map[uint32]uint32{}}, {next: map[uint32]uint32{}}}
			a := startReceiver(t, "a", checks[0].handle)
			b := startReceiver(t, "b", checks[1].handle)
			s := newSender(t)
			to := []netip.AddrPort{a.addr, b.addr}

			// One goroutine's messages must leave in its order: each
			// sends its next only after the previous was queued.
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var seed [32]byte
					seed[0] = byte(w)
					rng := rand.NewChaCha8(seed)
					for i := range perWriter {
						p := payload(rng, w, i)
						// A full queue fails the send for that peer only:
						// retry just the peers that refused it.
						for dst := to; len(dst) > 0; {
							err := s.Send(context.Background(), dst, typeData, p, mode)
							dst = nil
							var se *sender.Error
							if errors.As(err, &se) {
								for _, pe := range se.Peers {
									if !errors.Is(pe.Err, sender.ErrQueueFull) {
										errs <- err
										return
									}
									dst = append(dst, pe.Addr)
								}
								time.Sleep(time.Millisecond) // back-pressure: the queue is bounded by design
							} else if err != nil {
								errs <- err
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			for i, c := range checks {
				c.mu.Lock()
				if c.got != writers*perWriter || len(c.errs) > 0 {
					t.Errorf("peer %d: %d messages, want %d; errors: %v", i, c.got, writers*perWriter, c.errs[:min(len(c.errs), 5)])
				}
				c.mu.Unlock()
			}
			if st := a.r.Stats(); st.Duplicates != 0 {
				t.Logf("duplicates suppressed: %d", st.Duplicates)
			}
		})
	}
}
