package sender_test

import (
	"context"
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
	"github.com/flockhq/flock/tlsid"
)

// testCA issues identities for member names from one CA.
type testCA struct{ cert, key []byte }

func newTestCA(t *testing.T) testCA {
	t.Helper()
	c, k, err := tlsid.NewCA("flock test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{c, k}
}

func (ca testCA) identity(t *testing.T, member string) *tlsid.Identity {
	t.Helper()
	id, err := tlsid.Issued(ca.cert, ca.key, member, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Mutual TLS: a caller with a certificate of the cluster's CA that names
// the member its hello claims gets through; any other caller is refused in
// the handshake or at the hello, and counted.
func TestMutualTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	server := ca.identity(t, "a")
	tests := []struct {
		name      string
		client    func(t *testing.T) *tls.Config // nil: no TLS
		ok        bool
		refusedAs string
	}{
		{"member certificate", func(t *testing.T) *tls.Config { return ca.identity(t, "sender").Client() }, true, ""},
		{"no TLS", nil, false, "tls"},
		{"another CA", func(t *testing.T) *tls.Config { return other.identity(t, "sender").Client() }, false, "tls"},
		{"certificate of another member", func(t *testing.T) *tls.Config { return ca.identity(t, "b").Client() }, false, "identity"},
		{"no client certificate", func(t *testing.T) *tls.Config {
			cfg := ca.identity(t, "sender").Client()
			cfg.Certificates = nil
			return cfg
		}, false, "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			got := make(chan []byte, 1)
			a := startReceiver(t, "a", func(_ context.Context, m receiver.Message) ([]byte, error) {
				got <- m.Payload
				return nil, nil
			}, func(cfg *receiver.Config) {
				cfg.TLS = server.Server()
				cfg.FrameTimeout = time.Second
			})
			s := newSender(t, func(cfg *sender.Config) {
				cfg.Timeout = time.Second
				if tt.client != nil {
					cfg.TLS = tt.client(t)
				}
			})
			err := s.Send(context.Background(), []netip.AddrPort{a.addr}, typeData, []byte("secret"), sender.Sync)
			_, perr := s.Ping(context.Background(), a.addr)
			if tt.ok {
				if err != nil || perr != nil {
					t.Fatalf("send %v, ping %v; want both through", err, perr)
				}
				if p := <-got; string(p) != "secret" {
					t.Fatalf("got %q", p)
				}
				return
			}
			if err == nil || perr == nil {
				t.Fatalf("send %v, ping %v; want both refused", err, perr)
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

// A caller holding the cluster's CA refuses a receiver whose certificate
// another CA signed (an impostor at a member's address).
func TestTLSImpostorReceiver(t *testing.T) {
	leakcheck.Check(t)
	ca, other := newTestCA(t), newTestCA(t)
	a := startReceiver(t, "a", func(context.Context, receiver.Message) ([]byte, error) { return nil, nil }, func(cfg *receiver.Config) {
		cfg.TLS = other.identity(t, "a").Server()
	})
	s := newSender(t, func(cfg *sender.Config) {
		cfg.Timeout = time.Second
		cfg.TLS = ca.identity(t, "sender").Client()
	})
	if err := s.Send(context.Background(), []netip.AddrPort{a.addr}, typeData, []byte("secret"), sender.Sync); err == nil {
		t.Fatal("sent to a receiver of another CA")
	}
}
