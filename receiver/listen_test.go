package receiver

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestListenAutoBind(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")

	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	port := base.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name     string
		autoBind int
		wantErr  string
	}{
		{"taken port, no auto-bind", 1, "no free port"},
		{"taken port moves on", 100, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Listen(context.Background(), lo, port, tc.autoBind)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := l.Addr().(*net.TCPAddr).Port
			if got <= port || got >= port+tc.autoBind {
				t.Errorf("bound %d, want in %d..%d", got, port+1, port+tc.autoBind-1)
			}
		})
	}
}

func TestListenRejects(t *testing.T) {
	tests := []struct {
		name           string
		host           string
		port, autoBind int
		want           string
	}{
		{"range past 65535", "127.0.0.1", 65500, 100, "out of range"},
		{"port zero", "127.0.0.1", 0, 1, "out of range"},
		{"address not local", "198.51.100.254", 4000, 100, "listen"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Listen(context.Background(), netip.MustParseAddr(tc.host), tc.port, tc.autoBind)
			if err == nil {
				l.Close()
				t.Fatal("Listen succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
