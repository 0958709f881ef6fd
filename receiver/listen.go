// Package receiver accepts cluster traffic from the other members.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// ErrPorts: the ports auto-bind would try are not all valid TCP ports.
var ErrPorts = errors.New("auto-bind ports out of range; they must lie within 1..65535")

// CheckPorts reports whether port, port+1, ... port+autoBind-1 are valid
// TCP ports, with autoBind at least 1. The configuration file's checks
// (package conf) apply it too, so the rule is written once.
func CheckPorts(port, autoBind int) error {
	if port < 1 || autoBind < 1 || port > 65535 || autoBind > 65535 || port+autoBind-1 > 65535 {
		return fmt.Errorf("port %d, auto-bind %d: %w", port, autoBind, ErrPorts)
	}
	return nil
}

// Listen opens the receiver's TCP listener on host at the first free port of
// port, port+1, ... port+autoBind-1, as Tomcat's auto-bind does, so that
// several nodes on one host can share a configuration. Only "address in use"
// moves on to the next port; any other error is returned at once, since it
// would repeat on every port.
func Listen(ctx context.Context, host netip.Addr, port, autoBind int) (net.Listener, error) {
	if err := CheckPorts(port, autoBind); err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	var lc net.ListenConfig
	var lastErr error
	for p := port; p < port+autoBind; p++ {
		l, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host.String(), strconv.Itoa(p)))
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("receiver: listen: %w", err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("receiver: no free port in %d..%d on %v: %w", port, port+autoBind-1, host, lastErr)
}
