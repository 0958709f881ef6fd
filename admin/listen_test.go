package admin_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/flockhq/flock/admin"
)

// TestListenTakesTheNextFreePort: a second node on the machine gets the
// port after the first's.
func TestListenTakesTheNextFreePort(t *testing.T) {
	first, err := admin.Listen("127.0.0.1:" + strconv.Itoa(freeRun(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := admin.Listen(first.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	p1, p2 := first.Addr().(*net.TCPAddr).Port, second.Addr().(*net.TCPAddr).Port
	if p2 != p1+1 {
		t.Errorf("second listens on %d, want %d", p2, p1+1)
	}
	if !admin.Loopback(first.Addr()) {
		t.Errorf("%s is loopback", first.Addr())
	}
	if _, err := admin.Listen("127.0.0.1:99999"); err == nil {
		t.Error("port 99999 accepted")
	}
}

// freeRun finds a port whose next one is free too (best effort: another
// process may take them between here and the test's listen).
func freeRun(t *testing.T) int {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p >= 65535 {
			continue
		}
		if ln2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			ln2.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}

func TestLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", true},
		{"[::1]:9090", true},
		{"0.0.0.0:9090", false}, // every interface: reachable from the network
		{"[::]:9090", false},
		{"198.51.100.7:9090", false},
	}
	for _, tc := range tests {
		addr, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := admin.Loopback(addr); got != tc.want {
			t.Errorf("Loopback(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
