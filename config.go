package flock

import (
	"fmt"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/tlsid"
	"github.com/flockhq/flock/valve"
)

// partConfigs are the configurations of a node's parts, translated from
// one conf.Config. This is the only place server.toml meets the parts.
type partConfigs struct {
	cluster cluster.Config
	// The membership the cluster builds, kept as values so that a test can
	// compare them (cluster.Config holds it as a function).
	multicast *membership.MulticastConfig
	static    *membership.StaticConfig
	dns       *membership.DNSConfig // the static peers' (or gossip seeds') resolver's, if any
	gossip    *membership.GossipConfig
	manager   manager.Config
	valve     valve.Config
}

// parts validates c and translates it.
func parts(c conf.Config) (partConfigs, error) {
	if err := c.Validate(); err != nil {
		return partConfigs{}, fmt.Errorf("config: %w", err)
	}
	var p partConfigs
	// Validate has checked every value the accessors below parse: they
	// cannot fail on a valid Config.
	host, err := c.Cluster.Receiver.HostAddr()
	if err != nil {
		return partConfigs{}, err
	}
	cc := cluster.DefaultConfig()
	cc.Name, cc.Domain, cc.Zone = c.Server.Name, c.Cluster.Domain, c.Server.Zone
	cc.Host, cc.Port, cc.AutoBind = host, c.Cluster.Receiver.Port, c.Cluster.Receiver.AutoBind

	sn := c.Cluster.Sender
	cc.Sender.Timeout = sn.Timeout.Duration
	cc.Sender.MaxRetries = sn.MaxRetries
	cc.Sender.QueueLimit = sn.QueueLimit.Bytes
	cc.Sender.MaxFrame = int(c.Cluster.Receiver.MaxFrame.Bytes)
	cc.Receiver.MaxFrame = int(c.Cluster.Receiver.MaxFrame.Bytes)
	cc.Receiver.IdleTimeout = c.Cluster.Receiver.IdleTimeout.Duration

	sec := c.Cluster.Security
	keys, err := sec.LoadKeys()
	if err != nil {
		return partConfigs{}, err
	}
	if keys != nil {
		if cc.Keyring, err = keyring.New(keys...); err != nil {
			return partConfigs{}, fmt.Errorf("cluster.security: %w", err)
		}
	}
	cc.Insecure = sec.Insecure
	if t := c.Cluster.TLS; t.Enabled() {
		if cc.TLS, err = tlsid.Load(t.Cert, t.Key, t.CA); err != nil {
			return partConfigs{}, fmt.Errorf("cluster.tls: %w", err)
		}
	}

	mc := c.Cluster.Membership
	switch mc.Type {
	case "multicast":
		group, err := mc.Group()
		if err != nil {
			return partConfigs{}, err
		}
		bind, err := mc.BindAddr()
		if err != nil {
			return partConfigs{}, err
		}
		m := membership.DefaultMulticastConfig()
		m.Group, m.Interface, m.TTL = group, bind, mc.TTL
		m.Frequency, m.DropTime = mc.Frequency.Duration, mc.DropTime.Duration
		m.ProbeTimeout = mc.ProbeTimeout.Duration  // 0: no probe
		m.MaxClockSkew = sec.MaxClockSkew.Duration // the keyring comes from the cluster
		p.multicast = &m
		cc.Membership = cluster.Multicast(m)
	case "static", "dns":
		peers, err := mc.Static.Addrs()
		if err != nil {
			return partConfigs{}, err
		}
		s := membership.DefaultStaticConfig()
		s.Peers = peers
		// Names, of static members or of the DNS type, are looked up at
		// start and every interval, so the records may change.
		d := mc.DNS
		names := mc.Static.Names()
		if mc.Type == "dns" || len(names) > 0 {
			dc := membership.DNSConfig{HostPorts: names, Server: d.Server}
			if mc.Type == "dns" {
				dc.Name, dc.SRV, dc.Port = d.Name, d.SRV, uint16(d.Port)
				if dc.Port == 0 {
					dc.Port = uint16(c.Cluster.Receiver.Port)
				}
			}
			p.dns = &dc
			s.Resolve, s.ResolveEvery = membership.NewDNSResolver(dc), d.Interval.Duration
		}
		s.Frequency, s.DropTime = mc.Frequency.Duration, mc.DropTime.Duration
		if mc.ProbeTimeout.Duration > 0 { // static membership always pings
			s.ProbeTimeout = mc.ProbeTimeout.Duration
		}
		p.static = &s
		cc.Membership = cluster.Static(s)
	case "gossip":
		bind, advertise, err := mc.Gossip.Addrs()
		if err != nil {
			return partConfigs{}, err
		}
		seeds, names, err := mc.Gossip.SeedAddrs()
		if err != nil {
			return partConfigs{}, err
		}
		g := membership.DefaultGossipConfig()
		g.Bind, g.Advertise, g.Seeds = bind, advertise, seeds
		// Seeds given by name, and those a DNS name resolves to, are
		// looked up whenever the seeds are tried.
		d := mc.DNS
		if d.Name != "" || len(names) > 0 {
			dc := membership.DNSConfig{HostPorts: names, Server: d.Server, Name: d.Name, SRV: d.SRV, Port: uint16(d.Port)}
			if dc.Port == 0 {
				dc.Port = bind.Port()
				if advertise.IsValid() {
					dc.Port = advertise.Port()
				}
			}
			p.dns = &dc
			g.Resolve = membership.NewDNSResolver(dc)
		}
		g.ResolveEvery = d.Interval.Duration
		g.Frequency, g.DropTime = mc.Frequency.Duration, mc.DropTime.Duration
		g.TransportProbeTimeout = mc.ProbeTimeout.Duration // 0: gossip alone fails members
		g.Insecure = sec.Insecure
		p.gossip = &g
		cc.Membership = cluster.Gossip(g)
	default:
		return partConfigs{}, fmt.Errorf("cluster.membership.type %q has no implementation", mc.Type)
	}
	p.cluster = cc

	mg := c.Cluster.Manager
	replication, err := cluster.ParseMode(mg.Replication)
	if err != nil {
		return partConfigs{}, fmt.Errorf("cluster.manager.replication: %w", err)
	}
	m := manager.DefaultConfig()
	m.Route = c.Server.Name
	m.Mode, m.Placement = mg.Mode, mg.Placement
	m.PersistDir = mg.PersistDir
	m.SessionTimeout = mg.SessionTimeout.Duration
	m.Lifetime = mg.SessionLifetime.Duration
	m.MaxActive = mg.MaxActive
	m.Replication = replication
	m.StateTransferTimeout = mg.StateTransferTimeout.Duration
	// Two heartbeats: the others answer a new member's first one at once,
	// and one may be lost.
	m.JoinWait = 2 * mc.Frequency.Duration
	m.AlwaysSave = mg.AlwaysSave
	m.NotifyOnReplication = mg.NotifyListenersOnReplication
	m.ExpireInterval = mg.ExpireInterval.Duration
	m.TouchInterval = mg.TouchInterval.Duration
	m.AntiEntropyInterval = mg.AntiEntropyInterval.Duration
	m.SyncMinCopies = mg.SyncMinCopies
	// Validate keeps it within half a frame: a session must fit in one
	// frame, with room for its envelope.
	m.MaxSessionBytes = int(min(mg.MaxSessionSize.Bytes, c.Cluster.Receiver.MaxFrame.Bytes/2))
	// A stall the others may have noticed: membership counts the same.
	m.StallAfter = mc.DropTime.Duration / 2
	m.RequestTimeout = sn.Timeout.Duration
	// A state-transfer page must fit in a frame with room for its envelope.
	m.TransferBatch = int(min(int64(m.TransferBatch), c.Cluster.Receiver.MaxFrame.Bytes/2))
	p.manager = m

	se := c.Session
	filter, err := se.Filter()
	if err != nil {
		return partConfigs{}, err
	}
	same, err := se.SameSite()
	if err != nil {
		return partConfigs{}, err
	}
	v := valve.DefaultConfig()
	v.CookieName, v.CookiePath, v.CookieDomain = se.CookieName, se.CookiePath, se.CookieDomain
	v.CookieSecure, v.CookieHTTPOnly, v.CookieSameSite = se.CookieSecure, se.CookieHTTPOnly, same
	v.StaticFilter = filter
	v.CookiePersist, v.IDHeader = se.CookiePersist, se.IDHeader
	if err := v.Validate(); err != nil {
		return partConfigs{}, err
	}
	p.valve = v
	return p, nil
}
