package admin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// ListenTries is how many ports Listen tries: the one asked for and the
// ones after it.
const ListenTries = 100

// Listen opens the admin listener on addr (host:port). If the port is
// taken, as by a second node on the same machine, it takes the next free
// one of the following ListenTries-1; the listener's Addr says which.
func Listen(addr string) (net.Listener, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("admin: port %q out of range 1..65535", p)
	}
	var first error
	for i := 0; i < ListenTries && port+i <= 65535; i++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port+i)))
		if err == nil {
			return ln, nil
		}
		if first == nil {
			first = err
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("admin: no free port from %s on (%d tried): %w", addr, ListenTries, first)
}

// Loopback reports whether the listener at addr can be reached from this
// machine only.
func Loopback(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().IsLoopback()
}
