package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// DNSConfig says what to ask DNS for a cluster's peers.
type DNSConfig struct {
	// Name is looked up for addresses (A and AAAA), each a peer at Port:
	// in Kubernetes, a headless Service that publishes not-ready addresses
	// (a node is not ready until it has joined, so it must be found before).
	Name string
	Port uint16
	// SRV makes Name a SRV name: the peers are its targets at their ports.
	SRV bool
	// HostPorts are more peers as "host:port" (static members given by
	// name), looked up for addresses each time too.
	HostPorts []string
	// Server is the DNS server to ask, "ip:port"; "" asks the system's
	// (/etc/resolv.conf).
	Server string
}

// NewDNSResolver returns a StaticConfig.Resolve that asks DNS for the
// peers every time it is called, so that the records may change. A name
// that does not exist, or has no records, adds no peer and is no error:
// the first node of a cluster finds nobody, and starts alone. Any other
// failure (no answer, a server failure) is an error, so that the caller
// keeps the peers it knew.
func NewDNSResolver(cfg DNSConfig) func(ctx context.Context) ([]netip.AddrPort, error) {
	r := net.DefaultResolver
	if cfg.Server != "" {
		server := cfg.Server
		r = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, server)
			},
		}
	}
	return func(ctx context.Context) ([]netip.AddrPort, error) {
		var out []netip.AddrPort
		var errs []error
		addrs := func(host string, port uint16) {
			ips, err := r.LookupNetIP(ctx, "ip", host)
			if err != nil {
				if !notFound(err) {
					errs = append(errs, fmt.Errorf("%s: %w", host, err))
				}
				return
			}
			for _, ip := range ips {
				out = append(out, netip.AddrPortFrom(ip.Unmap(), port))
			}
		}
		if cfg.Name != "" {
			if cfg.SRV {
				_, srvs, err := r.LookupSRV(ctx, "", "", cfg.Name)
				if err != nil && !notFound(err) {
					errs = append(errs, fmt.Errorf("SRV %s: %w", cfg.Name, err))
				}
				for _, srv := range srvs {
					addrs(srv.Target, srv.Port)
				}
			} else {
				addrs(cfg.Name, cfg.Port)
			}
		}
		for _, hp := range cfg.HostPorts {
			host, p, err := net.SplitHostPort(hp)
			port, perr := strconv.ParseUint(p, 10, 16)
			if err != nil || perr != nil {
				errs = append(errs, fmt.Errorf("%q is not host:port", hp))
				continue
			}
			addrs(host, uint16(port))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("membership: dns: %w", err)
		}
		return out, nil
	}
}

// notFound: the name has no records (NXDOMAIN, or no data).
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
