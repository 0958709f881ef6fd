package membership

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// InterfaceByAddr returns the local interface that has address a: the only
// way flock picks where multicast goes, so it never falls to the routing
// table's default.
func InterfaceByAddr(a netip.Addr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
					return &ifs[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no local interface has address %v", a)
}

// JoinGroup opens a socket bound to the group's address and port that has
// joined the group on ifi. Several processes on one host share the port;
// binding the group address (not 0.0.0.0) keeps out datagrams sent to other
// groups on the same port. The socket sends nothing until told where to.
func JoinGroup(ctx context.Context, group netip.AddrPort, ifi *net.Interface) (*ipv4.PacketConn, error) {
	lc := net.ListenConfig{Control: reuseAddrPort}
	c, err := lc.ListenPacket(ctx, "udp4", group.String())
	if err != nil {
		return nil, err
	}
	p := ipv4.NewPacketConn(c)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: group.Addr().AsSlice()}); err != nil {
		c.Close()
		return nil, fmt.Errorf("join group %v on %s: %w", group.Addr(), ifi.Name, err)
	}
	return p, nil
}

func reuseAddrPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
